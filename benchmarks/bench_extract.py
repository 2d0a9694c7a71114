"""Time and error of LoKr extraction on SD1.5-sized weights (random pair with a known LoKr inside).

For every distinct adapted weight shape of the SD1.5 UNet (diffusers config, built on the ``meta``
device: no download, no memory) and of the CLIP-L text encoder, one weight is made:
base = N(0, 0.02^2); tuned = base + ΔW_true + noise, where ΔW_true = kron(W1, W2) of a random LoKr
of the same rank / layout (1% of ||base||) and noise = ``--noise`` * ||ΔW_true|| of Gaussian noise.
``extract_lokr`` is run on that pair (state dicts, in memory) once without and once with the LoRA
comparison. The table shows per shape: how many weights of that shape SD1.5 has, the extraction
time per weight, the LoKr relative error (the noise sets its floor: about ``--noise``), the error
of a LoRA with the same parameter count, and the extrapolated time for the whole model.

    .venv/bin/python benchmarks/bench_extract.py [--rank 8] [--device cpu|cuda] [--noise 0.05]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def sd15_shapes() -> Counter:
    """{(component, shape): count} of the weights extraction adapts in SD1.5 (UNet + CLIP-L)."""
    import models
    from lokr_core.ops.extract import _targets_for_key

    shapes: Counter = Counter()
    unet = models.unet(models.SD15_UNET, device="meta")
    for k, v in unet.state_dict().items():
        if _targets_for_key("unet/" + k, tuple(v.shape), "diffusers", False, False):
            shapes[("unet", tuple(v.shape))] += 1
    clip = models.clip_text(models.CLIP_L, device="meta")
    for k, v in clip.state_dict().items():
        if _targets_for_key("text_encoder/" + k, tuple(v.shape), "diffusers", False, False):
            shapes[("te", tuple(v.shape))] += 1
    return shapes


def known_lokr_delta(shape: tuple[int, ...], rank: int, conv: str, gen: torch.Generator, factor: int = -1
                     ) -> torch.Tensor:
    """ΔW of a random LoKr with the layout extraction will use (so a perfect fit exists)."""
    from lokr_core.tensor.decompose import factors_for_w, plan_layout
    from lokr_core.tensor.kron import kron_delta

    lay = plan_layout(shape, rank, factor, tucker=(conv == "tucker"))
    w1 = torch.randn(lay.w1_shape, generator=gen)
    w2 = torch.randn(lay.w2_shape, generator=gen)
    f = factors_for_w(w1, w2, lay)  # truncates W2 to the rank: the LoKr is exactly representable
    return kron_delta(f, shape)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--factor", type=int, default=-1, help="factorization limit (-1: most balanced)")
    p.add_argument("--conv", default="tucker", choices=["tucker", "flat"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=2, help="best of N timings per shape")
    p.add_argument("--noise", type=float, default=0.05, help="noise norm relative to ||ΔW_true||")
    p.add_argument("--shapes", type=int, default=12,
                   help="time the N shapes with the most parameters in total (count x size; 0 = all 42)")
    args = p.parse_args(argv)
    from lokr_core.ops.extract import extract_lokr

    gen = torch.Generator().manual_seed(0)
    shapes = sd15_shapes()
    items = sorted(shapes.items(), key=lambda kv: -kv[1] * torch.Size(kv[0][1]).numel())
    if args.shapes:
        items = items[: args.shapes]
    covered = sum(c for _, c in items)
    cover_params = sum(c * torch.Size(s).numel() for (_, s), c in items)
    all_params = sum(c * torch.Size(s).numel() for (_, s), c in shapes.items())
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, rank {args.rank}, "
          f"factor {args.factor}, conv {args.conv}, noise {args.noise}; {sum(shapes.values())} adapted weights in SD1.5 "
          f"({len(shapes)} distinct shapes); timing one weight for each of {len(items)} shapes covering {covered} "
          f"weights, {100 * cover_params / all_params:.0f}% of the adapted parameters\n")
    head = (f"{'part':<4} {'shape':<22} {'count':>5} {'fit s':>7} {'w/LoRA s':>8} {'layout':<10} {'params':>8} "
            f"{'LoKr err':>8} {'LoRA r':>6} {'LoRA err':>8} {'total s':>8}")
    print(head)
    print("-" * len(head))
    total_fit = total_all = 0.0
    weighted = Counter()
    for (part, shape), count in items:
        base = torch.randn(shape, generator=gen) * 0.02
        delta = known_lokr_delta(shape, args.rank, args.conv, gen, args.factor)
        delta *= 0.01 * float(base.norm()) / float(delta.norm())
        noise = torch.randn(shape, generator=gen)
        noise *= args.noise * float(delta.norm()) / float(noise.norm())
        key = ("model.diffusion_model.x.weight" if part == "unet"
               else "cond_stage_model.transformer.text_model.encoder.layers.0.x.weight")
        a, b = {key: base}, {key: base + delta + noise}
        fit = lora = math.inf
        for _ in range(args.repeat):  # best of N: the shared CPU makes single timings noisy
            t0 = time.perf_counter()
            extract_lokr(a, b, args.rank, args.factor, conv=args.conv, device=args.device, compare_lora=False)
            _sync(args.device)
            t1 = time.perf_counter()
            _, rep = extract_lokr(a, b, args.rank, args.factor, conv=args.conv, device=args.device,
                                  compare_lora=True)
            _sync(args.device)
            t2 = time.perf_counter()
            fit, lora = min(fit, t1 - t0), min(lora, t2 - t1)
        t0, t1, t2 = 0.0, fit, fit + lora
        row = rep["modules"][0]
        total_fit += count * (t1 - t0)
        total_all += count * (t2 - t1)
        for k in ("rel_error", "lora_rel_error"):
            weighted[k] += count * row[k]
        weighted["n"] += count
        print(f"{part:<4} {str(shape):<22} {count:>5} {t1 - t0:>7.3f} {t2 - t1:>8.3f} {row['layout']:<10} "
              f"{row['params']:>8} {row['rel_error']:>8.4f} {row['lora_rank']:>6} {row['lora_rel_error']:>8.4f} "
              f"{count * (t1 - t0):>8.1f}")
    n = weighted["n"]
    print(f"\nextrapolated to the {n} weights of these shapes: fit {total_fit:.1f} s, fit + LoRA comparison {total_all:.1f} s; "
          f"mean LoKr error {weighted['rel_error'] / n:.4f} (noise floor ~{args.noise / (1 + args.noise**2) ** 0.5:.4f}), "
          f"mean equal-size LoRA error {weighted['lora_rel_error'] / n:.4f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")
    sys.exit(main())
