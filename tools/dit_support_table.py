"""Write docs/dit-support.md: family x key format x (pack, core) modules applied and max error, measured.

Run in a ComfyUI venv (not part of the test suite), from the repository root:
``COMFYUI_PATH=<ComfyUI folder> <venv>/bin/python tools/dit_support_table.py [OUT]``. The numbers
come from ``tests/comfyui/dit_support.measure``, the code tests/comfyui/test_comfyui_dit.py asserts
with: one LoKr file per tiny family (ComfyUI's own model classes) and key format, covering every
Linear weight with lycoris-lora ``LokrModule`` s, applied by our LoKr loader (patch weights, bypass)
and by ComfyUI core (``comfy.sd.load_lora_for_models``).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "comfyui"))

LABELS = {"flux": "Flux.1", "sd3": "SD3 / SD3.5", "lumina2": "Lumina 2", "qwen_image": "Qwen-Image", "wan21": "Wan 2.1"}
FORMAT_LABELS = {
    "lycoris": "`lycoris_` + diffusers (SimpleTuner)", "transformer.": "`transformer.` + diffusers (PEFT, ai-toolkit)",
    "base_model.model.": "`base_model.model.` + diffusers (PEFT)",
    "lora_transformer": "`lora_transformer_` + diffusers (OneTrainer)",
    "diffusion_model.": "`diffusion_model.` + ComfyUI path (ai-toolkit)",
    "lora_unet": "`lora_unet_` + ComfyUI path (kohya, musubi-tuner)",
}


def _cell(applied: int, err: float, n: int) -> str:
    return f"{applied}/{n}" + (f", {err:.1e}" if applied else "")


def main(out: Path) -> None:
    import comfy_env

    comfy_env.setup_comfy()
    import comfyui_version  # type: ignore[import-not-found]
    import dit_models
    import dit_support

    folder = Path(tempfile.mkdtemp()) / "loras"
    dit_support.loras_folder(folder)
    lines = [
        "# LoKr files for DiT models: what applies, measured",
        "",
        f"Measured on ComfyUI {comfyui_version.__version__}, CPU, fp32, by `tools/dit_support_table.py` (the code "
        "`tests/comfyui/test_comfyui_dit.py` asserts with). Each row: a tiny model of the family built with "
        "ComfyUI's own classes, one LoKr file in that key format covering every Linear weight (one lycoris-lora "
        "`LokrModule` per target; fused q / k / v weights get one module per row block in the diffusers formats), "
        "applied at strength 1. Expected ΔW: placed as ComfyUI's own key map places it (its diffusers names, row "
        "blocks and the (shift, scale) swap), and by the pack's DiT name tables where that map has no diffusers "
        "name (Wan, some Lumina 2 modulations).",
        "",
        "Cells: modules applied / modules in the file, then the largest relative error over the applied modules "
        "(max |W - W_expected| / max |ΔW| on the module's rows). *pack* = this pack's LoKr Loader, *core* = "
        "ComfyUI's own LoRA loader (`comfy.sd.load_lora_for_models`, what LoraLoader runs). Bypass errors include "
        "the rounding of the probe used to read a layer's effective weight.",
        "",
        "Regenerate: `COMFYUI_PATH=<ComfyUI> <its venv>/bin/python tools/dit_support_table.py`.",
        "",
        "| family | key format | pack (patch weights) | pack (bypass) | core |",
        "|---|---|---|---|---|",
    ]
    for family in dit_models.FAMILIES:
        for fmt in dit_support.FORMATS:
            row = dit_support.measure(family, fmt, folder)
            n = row["modules"]
            cells = [_cell(*row[w], n) for w in dit_support.WAYS]
            lines.append(f"| {LABELS.get(family, family)} | {FORMAT_LABELS[fmt]} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dit-support.md")
