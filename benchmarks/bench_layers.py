"""Forward speed of LoKr layers on realistic Stable Diffusion shapes: the base layer, ours unmerged
(``auto``: one op with W + ΔW), ours ``bypass`` (factors applied to x, no ΔW, for Linear / 1x1;
other convs fall back to ΔW) and peft 0.21.2's unmerged LoKr layer (base(x) + op(x, ΔW)).

    .venv/bin/python benchmarks/bench_layers.py [--device cuda] [--dtype float16] [--repeat 7] [--r 8]
                                                 [--clock wall|process] [--threads N]

All layers of one row share the same base weights and the same factor values (ours are built from
the same seed as PEFT's and checked equal). Times are medians of ``--repeat`` timed calls after a
warm-up, rounds interleaved so load on a shared machine hits every column alike. Prints one table:
milliseconds per forward and ratios vs the base layer and vs PEFT (< 1 means faster than PEFT).

``--clock process`` (the CPU default) measures the CPU time this process used instead of wall time:
on a machine shared with other jobs, wall time mostly measures the scheduler. CUDA always uses
wall time with synchronisation.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# (name, base layer factory, input shape) : SD1.5-like shapes, batch 2 x 1024 tokens / 2 x 320 x 64 x 64
CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("Linear 320->320 (attn1 to_q)", lambda: nn.Linear(320, 320), (2, 1024, 320)),
    ("Linear 768->320 (attn2 to_k)", lambda: nn.Linear(768, 320), (2, 1024, 768)),
    ("Linear 1280->1280 (to_q)", lambda: nn.Linear(1280, 1280), (2, 1024, 1280)),
    ("Linear 768->3072 (CLIP fc1)", lambda: nn.Linear(768, 3072), (2, 1024, 768)),
    ("Conv1x1 320->320 (proj_in)", lambda: nn.Conv2d(320, 320, 1), (2, 320, 32, 32)),
    ("Conv3x3 320->320 64x64", lambda: nn.Conv2d(320, 320, 3, padding=1), (2, 320, 64, 64)),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_interleaved(fns: dict[str, Callable[[], torch.Tensor]], repeat: int, device: torch.device,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median milliseconds per call of each fn; one warm-up call each, then ``repeat`` rounds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            _sync(device)
            t0 = clock()
            fn()
            _sync(device)
            times[k].append((clock() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def build(factory: Callable[[], nn.Module], r: int, alpha: float, device: torch.device, dtype: torch.dtype,
          decompose_both: bool):
    """(base, ours, PEFT's) with identical base weights and factors."""
    from peft import LoKrConfig as PeftLoKrConfig
    from peft.tuners.lokr import layer as peft_layer

    from lokr_core.tuner.layers import wrap_layer

    torch.manual_seed(0)
    base = factory()
    cfg = PeftLoKrConfig(r=r, alpha=alpha, init_weights=False, decompose_both=decompose_both)
    cls = {nn.Linear: peft_layer.Linear, nn.Conv2d: peft_layer.Conv2d, nn.Conv1d: peft_layer.Conv1d}[type(base)]
    torch.manual_seed(1)
    peft = cls(copy.deepcopy(base), "default", cfg, r=r, alpha=alpha)
    torch.manual_seed(1)
    ours = wrap_layer(copy.deepcopy(base), "default", r, alpha, cfg)
    for name, p in peft.named_parameters():
        assert torch.equal(p, dict(ours.named_parameters())[name]), name
    mods = [m.to(device=device, dtype=dtype).eval() for m in (base, ours, peft)]
    for m in mods:
        m.requires_grad_(False)
    return mods


def run(device: torch.device, dtype: torch.dtype, repeat: int, r: int, decompose_both: bool,
        clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    rows = []
    for name, factory, xshape in CASES:
        base, ours, peft = build(factory, r, 1.0 * r, device, dtype, decompose_both)
        x = torch.randn(*xshape, device=device, dtype=dtype)
        bypass = copy.deepcopy(ours)
        bypass.forward_mode = "bypass"
        with torch.inference_mode():
            want = peft(x)
            err = max(float((m(x) - want).abs().max() / want.abs().max().clamp_min(1e-12)) for m in (ours, bypass))
            t = _time_interleaved({"base": lambda: base(x), "ours": lambda: ours(x),
                                   "bypass": lambda: bypass(x), "peft": lambda: peft(x)}, repeat, device, clock)
        rows.append(dict(name=name, bypass_path=bypass.forward_path("default"), rel_err=err,
                         layout=ours.factors("default").layout, **t))
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'layer':<30} {'layout':<9} {'base ms':>8} {'ours ms':>8} {'bypass ms':>9} {'peft ms':>8} "
            f"{'ours/base':>9} {'ours/peft':>9} {'byp/base':>8} {'byp/peft':>8} {'max rel err':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        byp = f"{r['bypass']:9.2f}" + ("" if r["bypass_path"] == "bypass" else "*")
        lines.append(f"{r['name']:<30} {r['layout']:<9} {r['base']:8.2f} {r['ours']:8.2f} {byp:<9} {r['peft']:8.2f} "
                     f"{r['ours'] / r['base']:9.2f} {r['ours'] / r['peft']:9.2f} {r['bypass'] / r['base']:8.2f} "
                     f"{r['bypass'] / r['peft']:8.2f} {r['rel_err']:11.1e}")
    lines.append("ours = default unmerged forward (one op with W + ΔW); * = bypass not possible here (3x3), ΔW used; "
                 "max rel err = max |ours - peft| / max |peft| over both modes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per layer and mode (median reported)")
    ap.add_argument("--r", type=int, default=8, help="LoKr rank (alpha = r)")
    ap.add_argument("--decompose-both", action="store_true", help="also split W1 (PEFT decompose_both)")
    ap.add_argument("--clock", choices=["wall", "process"], default=None,
                    help="wall time or this process's CPU time (default: process on CPU, wall on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_layers: --device cuda asked for but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    clock_name = args.clock or ("wall" if device.type == "cuda" else "process")
    if device.type == "cuda" and clock_name == "process":
        print("bench_layers: --clock process measures CPU time only; use wall time on CUDA", file=sys.stderr)
        return 2
    clock = time.perf_counter if clock_name == "wall" else time.process_time
    rows = run(device, getattr(torch, args.dtype), args.repeat, args.r, args.decompose_both, clock)
    print(f"device={device} dtype={args.dtype} r={args.r} decompose_both={args.decompose_both} "
          f"threads={torch.get_num_threads()} repeat={args.repeat} clock={clock_name} torch={torch.__version__}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
