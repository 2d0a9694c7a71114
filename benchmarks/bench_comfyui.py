"""Our LoKr in a real ComfyUI vs core's loaders: patch time, and forward overhead of patch vs bypass mode.

One LoKr file (kohya names, W1 full (8, 8); W2 split rank 8 on Linear, full on convs; one module per
Linear / 1x1 / 3x3 conv weight of an SD1.5- or SDXL-size UNet: attention, feed-forward, proj, resnet
convs) is applied to one
ModelPatcher (ComfyUI's own classes, random weights) by four variants:

- ``ours patch``:  ``load_lokr`` + ``plan_patches`` + ``apply_plan(apply="patch weights")``
- ``core patch``:  ``load_torch_file`` + ``comfy.sd.load_lora_for_models`` (core's LoraLoader)
- ``ours bypass``: ``apply_plan(apply="bypass")`` (forward hooks; weights never modified)
- ``core bypass``: ``comfy.sd.load_bypass_lora_for_models`` (core's LoraLoaderBypass; ComfyUI 0.28.0)

Per variant: ``prepare`` (read the file, build the patches / injections), ``load`` (ComfyUI's
``patch_model``: weights patched, hooks injected; the base row is the same call with no LoKr),
``forward`` (median ``BaseModel.apply_model`` time over ``--steps`` calls) and the maximum output
difference from ``ours patch``, relative to the LoKr's own effect on the output. Ratio rows: ours / core
per mode, bypass / patch per side. ``overhead/N steps``: load beyond the base load + N x forward beyond
the base forward, i.e. what the LoKr costs a N-step generation. Best of ``--repeat`` rounds (variants
interleaved within a round).

``--mode patch`` is the patch-only part (every ComfyUI from 0.3.64 on); ``--mode bypass`` / ``all`` need
a ComfyUI with ``comfy.sd.load_bypass_lora_for_models`` for the core row (else it is reported n/a).

    COMFYUI_PATH=<ComfyUI> <its python> benchmarks/bench_comfyui.py [--size sd15|sdxl] [--device cpu|cuda]
        [--mode patch|bypass|all] [--repeat 2] [--steps 3] [--latent 8] [--dtype fp16] [--threads 0]

On the CPU the defaults keep it to a few minutes on 2 cores (latent 8x8, batch 1, 3 forward calls, fp32
weights: no per-op cast); ``--size sdxl`` on the CPU needs ``--allow-big-cpu`` (~20 GB in fp32).
``--size tiny`` (the tests' 2-level SD1.5 UNet) is a smoke run.
``--device cuda`` needs tests/comfyui/comfy_env.py to honour ``LOKR_COMFY_DEVICE`` (ComfyUI set up for
that device); the script checks it and says so otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
_COMMON = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
               in_channels=4, model_channels=320, use_temporal_attention=False, use_temporal_resblock=False)
SD15_UNET = dict(_COMMON, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 channel_mult=[1, 2, 4, 4], transformer_depth_middle=1, use_linear_in_transformer=False,
                 context_dim=768, num_heads=8, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 num_head_channels=-1)
SDXL_UNET = dict(_COMMON, num_classes="sequential", adm_in_channels=2816, num_res_blocks=[2, 2, 2],
                 transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4], transformer_depth_middle=10,
                 use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10])
TINY_UNET = dict(SD15_UNET, num_res_blocks=[1, 1], transformer_depth=[1, 1], channel_mult=[1, 2],
                 transformer_depth_output=[1, 1, 1, 1])  # the tests' tiny SD1.5 (smoke runs: --size tiny)
SIZES = {"sd15": ("SD15", SD15_UNET, 77), "sdxl": ("SDXL", SDXL_UNET, 77), "tiny": ("SD15", TINY_UNET, 77)}
DTYPES = {"fp16": "float16", "fp32": "float32", "bf16": "bfloat16"}
VARIANTS = ("ours patch", "core patch", "ours bypass", "core bypass")
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[bench_comfyui {time.perf_counter() - _T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


def _fill_(module: Any, seed: int) -> None:
    """Random weights that keep activations O(1): W ~ N(0, 1/fan_in), norms 1, biases 0."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim <= 1:  # 1-D weights are norm scales, the rest biases
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_((torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5).to(p.dtype))


def build_patcher(size: str, dtype: Any, compute: Any, device: Any) -> Any:
    """A ModelPatcher over an SD1.5- or SDXL-size UNet (ComfyUI's classes), weights ``dtype`` on the CPU.

    ``compute``: ComfyUI's manual-cast dtype (None: compute in ``dtype``); ``device``: its load device.
    """
    import torch
    import comfy.model_patcher
    import comfy.supported_models

    cls_name, unet, _ = SIZES[size]
    cfg = getattr(comfy.supported_models, cls_name)(dict(unet))
    cfg.set_inference_dtype(dtype, compute)
    model = cfg.get_model({}, "model.diffusion_model.", device="cpu")
    _fill_(model.diffusion_model, 0)
    cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)  # dynamic VRAM: its own
    return cls(model, load_device=device, offload_device=torch.device("cpu"))


def lokr_file(patcher: Any, path: str, factor: int = 8, rank: int = 8) -> int:
    """Write a LoKr for every 2-D / 4-D UNet weight; returns the module count.

    W1 full (f, f) everywhere; W2 split rank ``rank`` (alpha rank / 2) on Linear weights, W2 full
    (out / f, in / f, kh, kw) on 1x1 and 3x3 convs: the layouts core's math gets right in both its patch
    and its bypass path (core's bypass ``h()`` cannot run a split W2 on a conv: it convolves with the
    2-D ``w2_b``).
    """
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    sd = {}
    for key, w in patcher.model.state_dict().items():
        if not key.startswith("diffusion_model.") or not key.endswith(".weight") or w.ndim not in (2, 4):
            continue
        out, inp = int(w.shape[0]), int(w.shape[1])
        if out % factor or inp % factor or min(out, inp) < 64:
            continue
        name = "lora_unet_" + key[len("diffusion_model."):-len(".weight")].replace(".", "_")
        sd[f"{name}.lokr_w1"] = torch.randn(factor, factor, generator=g) * 0.05
        if w.ndim == 4:
            sd[f"{name}.lokr_w2"] = torch.randn(out // factor, inp // factor, *w.shape[2:], generator=g) * 0.01
        else:
            sd[f"{name}.lokr_w2_a"] = torch.randn(out // factor, rank, generator=g) * 0.05
            sd[f"{name}.lokr_w2_b"] = torch.randn(rank, inp // factor, generator=g) * 0.05
            sd[f"{name}.alpha"] = torch.tensor(float(rank) / 2)
    save_file(sd, path)
    return len([k for k in sd if k.endswith(".lokr_w1")])


def make_inputs(size: str, latent: int, batch: int, device: Any) -> dict:
    """``apply_model`` inputs: noisy latent, sigma, text context (and SDXL's ``y``), fixed seed, fp32."""
    import torch

    g = torch.Generator().manual_seed(2)
    ctx = SIZES[size][1]["context_dim"]
    kw = {"x": torch.randn(batch, 4, latent, latent, generator=g), "t": torch.full((batch,), 5.0),
          "c_crossattn": torch.randn(batch, SIZES[size][2], ctx, generator=g)}
    adm = SIZES[size][1].get("adm_in_channels")
    if adm:
        kw["y"] = torch.randn(batch, adm, generator=g)
    return {k: v.to(device) for k, v in kw.items()}


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_patch(patcher: Any, device: Any) -> tuple[float, dict]:
    """Seconds for ComfyUI's patch_model on ``patcher`` (all models unloaded first), and sampled patched weights."""
    import torch
    import comfy.model_management as mm

    mm.unload_all_models()
    _sync(device)
    t0 = time.perf_counter()
    patcher.patch_model(device_to=device)
    _sync(device)
    dt = time.perf_counter() - t0
    keys = sorted(patcher.patches)
    sd = patcher.model.state_dict()
    sample = {k: sd[k].detach().float().cpu().clone() for k in keys[:: max(1, len(keys) // 24)]}
    patcher.unpatch_model(torch.device("cpu"))
    return dt, sample


def timed_run(patcher: Any, inputs: dict, steps: int, device: Any) -> tuple[float, float, Any]:
    """(load s, median forward s, last output on the CPU) of ``patcher``, loaded as a sampler loads it.

    ``load_models_gpu`` (weights patched / hooks injected, full or partial load as ComfyUI decides for
    this device and these flags), ``steps`` ``apply_model`` calls, then every model unloaded.
    """
    import torch
    import comfy.model_management as mm

    mm.unload_all_models()
    _sync(device)
    t0 = time.perf_counter()
    mm.load_models_gpu([patcher])
    _sync(device)
    load = time.perf_counter() - t0
    times, out = [], None
    try:
        with torch.inference_mode():
            for _ in range(steps):
                t0 = time.perf_counter()
                out = patcher.model.apply_model(**inputs)
                _sync(device)
                times.append(time.perf_counter() - t0)
        out = out.float().cpu()
    finally:
        mm.unload_all_models()
    return load, statistics.median(times), out


@dataclass
class Row:
    """Best-of-rounds figures of one variant."""

    prepare: list = field(default_factory=list)
    load: list = field(default_factory=list)
    forward: list = field(default_factory=list)
    out: Any = None
    error: str = ""

    def best(self, what: str) -> float:
        return min(getattr(self, what)) if getattr(self, what) else float("nan")


def variant_builders(path: str, base: Any, pack: dict) -> dict[str, Callable[[], Any] | None]:
    """Per variant, a function that reads ``path`` and returns a patched clone of ``base`` (None: unavailable)."""
    import comfy.sd
    import comfy.utils

    io, loaders = pack["io"], pack["planning"]

    def ours(apply: str) -> Callable[[], Any]:
        def build() -> Any:
            plan = loaders.plan_patches(io.load_lokr(path), base, None)
            return loaders.apply_plan(plan, base, None, 1.0, 0.0, apply)[0]
        return build

    def core(fn: Callable) -> Callable[[], Any]:
        return lambda: fn(base, None, comfy.utils.load_torch_file(path, safe_load=True), 1.0, 0.0)[0]

    core_bypass = getattr(comfy.sd, "load_bypass_lora_for_models", None)
    return {"ours patch": ours(loaders.PATCH), "core patch": core(comfy.sd.load_lora_for_models),
            "ours bypass": ours(loaders.BYPASS), "core bypass": core(core_bypass) if core_bypass else None}


def run_forward_bench(a: argparse.Namespace, base: Any, path: str, pack: dict, device: Any) -> dict[str, Row]:
    """Every selected variant (and the unpatched base) over ``a.repeat`` interleaved rounds."""
    builders = variant_builders(path, base, pack)
    wanted = [v for v in VARIANTS if a.mode == "all" or v.endswith(a.mode)]
    rows = {"base": Row(), **{v: Row() for v in wanted}}
    inputs = make_inputs(a.size, a.latent, a.batch, device)
    for _ in range(a.repeat):
        load, fwd, rows["base"].out = timed_run(base, inputs, a.steps, device)
        rows["base"].load.append(load)
        rows["base"].forward.append(fwd)
        rows["base"].prepare.append(0.0)
        log(f"round {_ + 1}: base done")
        for v in wanted:
            row = rows[v]
            log(f"round {_ + 1}: {v}")
            if builders[v] is None:
                row.error = "n/a: this ComfyUI has no comfy.sd.load_bypass_lora_for_models"
                continue
            t0 = time.perf_counter()
            try:
                m = builders[v]()
            except Exception as err:  # e.g. our bypass on a ComfyUI without injections: report, keep going
                row.error = f"n/a: {type(err).__name__}: {err}"[:160]
                continue
            row.prepare.append(time.perf_counter() - t0)
            try:
                load, fwd, row.out = timed_run(m, inputs, a.steps, device)
            except Exception as err:  # e.g. core's bypass on a layout it cannot run
                row.error, row.out = f"forward failed: {type(err).__name__}: {err}"[:160], None
                continue
            finally:
                del m
            row.load.append(load)
            row.forward.append(fwd)
    return rows


def print_forward_table(rows: dict[str, Row], n_steps: int, patched_per_step: bool) -> None:
    """The variant table, the ratio rows and the output differences (markdown).

    ``patched_per_step``: patch mode re-applies the patches in every forward (ComfyUI's dynamic VRAM
    patcher), so its forward difference from the base counts in its overhead.
    """
    base = rows["base"]
    ref = rows.get("ours patch") if rows.get("ours patch") and rows["ours patch"].out is not None else None
    effect = float((ref.out - base.out).abs().max()) if ref else float("nan")
    b_load, b_fwd = base.best("load"), base.best("forward")

    def overhead(r: Row, v: str) -> float:
        """prepare + load beyond the base + N x forward beyond the base; a model patched once at load runs
        the same ops on same-size weights as the base: its forward difference is timing noise, not counted."""
        extra = n_steps * (r.best("forward") - b_fwd) if v.endswith("bypass") or patched_per_step else 0.0
        return r.best("prepare") + (r.best("load") - b_load) + extra

    print(f"| variant | prepare s | load s | forward s | forward / base | overhead s / {n_steps} steps "
          "| max abs diff vs ours patch | / LoKr effect |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| base (no LoKr) | - | {b_load:.3f} | {b_fwd:.4f} | 1.000 | 0 | - | - |")
    for v, r in rows.items():
        if v == "base":
            continue
        if r.error or r.out is None:
            print(f"| {v} | {r.error or 'n/a'} | | | | | | |")
            continue
        diff = float((r.out - ref.out).abs().max()) if ref else float("nan")
        print(f"| {v} | {r.best('prepare'):.3f} | {r.best('load'):.3f} | {r.best('forward'):.4f} | "
              f"{r.best('forward') / b_fwd:.3f} | {overhead(r, v):.2f} | {diff:.2e} | {diff / effect if effect else float('nan'):.1e} |")
    ok = {v: r for v, r in rows.items() if v != "base" and r.out is not None and not r.error}
    if effect == 0:
        print("\nWARNING: the LoKr does not change the output: the differences above prove nothing")
    print(f"\nLoKr effect on the output (max |ours patch - base|): {effect:.3e}")
    pairs = [("ours / core, patch", "ours patch", "core patch"), ("ours / core, bypass", "ours bypass", "core bypass"),
             ("bypass / patch, ours", "ours bypass", "ours patch"), ("bypass / patch, core", "core bypass", "core patch")]
    print("\n| ratio | prepare | load beyond base | forward beyond base | overhead / "
          f"{n_steps} steps |\n|---|---|---|---|---|")

    def q(x: float, y: float) -> str:
        return f"{x / y:.2f}" if abs(y) > 1e-9 else "-"

    for label, num, den in pairs:
        if num not in ok or den not in ok:
            continue
        n, d = ok[num], ok[den]
        counted = patched_per_step or (num.endswith("bypass") and den.endswith("bypass"))
        fwd = q(n.best('forward') - b_fwd, d.best('forward') - b_fwd) if counted else "-"
        print(f"| {label} | {q(n.best('prepare'), d.best('prepare'))} | "
              f"{q(n.best('load') - b_load, d.best('load') - b_load)} | "
              f"{fwd} | {q(overhead(n, num), overhead(d, den))} |")


def run_patch_bench(a: argparse.Namespace, base: Any, path: str, pack: dict, device: Any) -> None:
    """The patch-time table (prepare + patch_model) of ours vs core's LoraLoader, and the weight difference."""
    builders = variant_builders(path, base, pack)
    res: dict[str, list] = {"ours": [], "core": []}
    samples: dict[str, dict] = {}
    for _ in range(a.repeat):
        for side in ("ours", "core"):
            t0 = time.perf_counter()
            m = builders[f"{side} patch"]()
            prep = time.perf_counter() - t0
            dt, samples[side] = timed_patch(m, device)
            res[side].append((prep, dt))
            del m
    diff = max(float(((samples["ours"][k] - samples["core"][k]).abs().max() /
                      samples["core"][k].abs().max().clamp_min(1e-12))) for k in samples["core"])
    best = {s: (min(p for p, _ in v), min(d for _, d in v)) for s, v in res.items()}
    print("| side | prepare s | patch s | total s |\n|---|---|---|---|")
    for s in ("ours", "core"):
        p, d = best[s]
        print(f"| {s} | {p:.3f} | {d:.3f} | {p + d:.3f} |")
    (po, do), (pc, dc) = best["ours"], best["core"]
    print(f"| core / ours | {pc / po:.2f} | {dc / do:.2f} | {(pc + dc) / (po + do):.2f} |")
    print(f"\nmax relative difference of patched weights (ours vs core, {len(samples['core'])} sampled): {diff:.2e}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="sd15", help="UNet size (default sd15)")
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    ap.add_argument("--mode", choices=["patch", "bypass", "all"], default="all",
                    help="patch: patch-time table + patch forward; bypass: bypass rows; all: every variant")
    ap.add_argument("--repeat", type=int, default=2, help="rounds; best of them is reported")
    ap.add_argument("--steps", type=int, default=0, help="forward calls per variant and round (0: 3 CPU, 10 CUDA)")
    ap.add_argument("--latent", type=int, default=0, help="latent side (0: 8 CPU; 64 sd15 / 128 sdxl CUDA)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", choices=["auto", *sorted(DTYPES)], default="auto",
                    help="UNet weight dtype (auto: fp32 on the CPU, fp16 on CUDA)")
    ap.add_argument("--compute", choices=["same", *sorted(DTYPES)], default="same",
                    help="compute dtype: ComfyUI's manual cast of the weights per op (same: no cast)")
    ap.add_argument("--overhead-steps", type=int, default=20, help="N of the 'overhead / N steps' column")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--allow-big-cpu", action="store_true", help="allow --size sdxl on the CPU")
    return ap.parse_args(argv)


def setup(device_name: str) -> tuple[Any, dict]:
    """ComfyUI set up for ``device_name`` through tests/comfyui/comfy_env.py; (torch device, pack modules)."""
    os.environ["LOKR_COMFY_DEVICE"] = device_name
    sys.path.insert(0, str(ROOT / "tests" / "comfyui"))
    import comfy_env

    comfy_env.setup_comfy()
    import torch
    import comfy.model_management as mm

    got = mm.get_torch_device()
    if got.type != device_name:
        raise SystemExit(f"bench_comfyui.py: ComfyUI runs on {got.type}, not {device_name}: tests/comfyui/comfy_env.py "
                         "must honour LOKR_COMFY_DEVICE (see docs/benchmarks.md)")
    comfy_env.load_pack()
    pack = {n: importlib.import_module(f"{comfy_env.PACK_NAME}.{m}") for n, m in
            (("io", "lokr_core.formats.io"), ("planning", "nodes.planning"))}
    return torch.device(got), pack


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not os.environ.get("COMFYUI_PATH"):
        print("bench_comfyui.py: set COMFYUI_PATH to a ComfyUI folder (the one holding main.py)", file=sys.stderr)
        return 2
    if a.device == "auto":
        import torch
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.size == "sdxl" and a.device == "cpu" and not a.allow_big_cpu:
        print("bench_comfyui.py: --size sdxl on the CPU takes ~6 GB and long; add --allow-big-cpu", file=sys.stderr)
        return 2
    device, pack = setup(a.device)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = device.type == "cuda"
    a.steps = a.steps or (10 if cuda else 3)
    a.latent = a.latent or ((64 if a.size == "sd15" else 128) if cuda else 8)
    a.dtype = a.dtype if a.dtype != "auto" else ("fp16" if cuda else "fp32")
    dtype = getattr(torch, DTYPES[a.dtype])
    compute = dtype if a.compute == "same" else getattr(torch, DTYPES[a.compute])
    log("building the UNet")
    base = build_patcher(a.size, dtype, None if compute == dtype else compute, device)
    from comfyui_version import __version__ as comfy_version  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench_lokr.safetensors")
        n = lokr_file(base, path)
        params = sum(p.numel() for p in base.model.diffusion_model.parameters()) / 1e6
        print(f"bench_comfyui: ComfyUI {comfy_version}, torch {torch.__version__}, {a.size} UNet ({params:.0f} M "
              f"params, weights {a.dtype}, compute {str(compute).replace('torch.', '')}), {n} LoKr modules (W1 full 8x8; W2 split "
              f"rank 8 on Linear, full on convs), device {device}, torch threads {torch.get_num_threads()}, best of {a.repeat}; forward: "
              f"batch {a.batch}, latent {a.latent}x{a.latent}, median of {a.steps} apply_model calls\n")
        if a.mode == "patch":
            run_patch_bench(a, base, path, pack, device)
            print()
        rows = run_forward_bench(a, base, path, pack, device)
    dynamic = type(base).__name__ == "ModelPatcherDynamic"
    print(f"patcher: {type(base).__name__} (patch mode {'re-applies patches every forward' if dynamic else 'patches once at load'})\n")
    print_forward_table(rows, a.overhead_steps, dynamic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
