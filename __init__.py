"""comfyui-lokr: ComfyUI entry point (custom_nodes/<any folder name>/__init__.py).

Relative imports only, so the pack loads under any folder name. Importing it registers the node
classes (``NODE_CLASS_MAPPINGS``), their display names, the web extension folder and, when
ComfyUI's server is running, the ``/lokr/*`` HTTP routes. Nothing heavy is imported: the node
modules import torch (already loaded by ComfyUI) and lokr_core's small modules; diffusers /
transformers are never imported. ``import lokr_core`` from the repository root does not run this
file.
"""
from .nodes import node_mappings

NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings()
WEB_DIRECTORY = "./web"


def _register_routes() -> None:
    try:
        from .nodes import routes
    except Exception:  # the web part is optional; the nodes work without it
        import logging
        logging.getLogger("comfyui-lokr").warning("comfyui-lokr: web routes not loaded", exc_info=True)
        return
    routes.register()


_register_routes()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
