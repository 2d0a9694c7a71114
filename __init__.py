"""comfyui-lokr: ComfyUI entry point (custom_nodes/<any folder name>/__init__.py).

ComfyUI imports this file as a package named after the folder's path, so ``nodes`` and
``lokr_core`` are its subpackages and every import in them is relative: the pack loads under any
folder name. Importing it registers the node classes (``NODE_CLASS_MAPPINGS``), their display
names, the web extension folder and, when ComfyUI's server is running, the ``/lokr/*`` HTTP
routes. A module that fails to import fails the pack, which ComfyUI logs ("Cannot import ...").
Nothing heavy is imported: the node modules import torch (already loaded by ComfyUI) and
lokr_core's small modules; diffusers / transformers are never imported. ``import lokr_core`` from
the repository root does not run this file.
"""
from .nodes import node_mappings, routes

NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings()
WEB_DIRECTORY = "./web"
routes.register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
