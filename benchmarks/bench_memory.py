"""Benchmark: peak memory of ``merge_checkpoint`` and ``extract_lokr`` on a full-size checkpoint, against
a bound (largest tensor x a small constant) and against PEFT's load-merge-save of the same.

A UNet checkpoint of the chosen size (``--size sdxl``: the SDXL UNet, 2.57 G parameters, every key and
shape of the real model, random fp16 weights; ``sd15``; ``tiny``) is written to a temp folder one
tensor at a time, with a PEFT LoKr adapter (random factors, r=8, PEFT's factor layout from
``lokr_core.tensor.shapes.plan_factors``) on every Linear and Conv2d. Then, each in a fresh
subprocess so memory numbers do not mix:

- ``merge``:      ``merge_checkpoint(base.safetensors, [(adapter, 1.0)], merged.safetensors)``;
- ``extract``:    ``extract_lokr(base.safetensors, merged.safetensors, rank=8, out=...)`` (the LoKr
  back out of the merged checkpoint; no LoRA comparison, no input hashing);
- ``peft_merge``: PEFT's load-merge-save of the same inputs: ``load_file`` -> diffusers UNet (meta
  device, ``assign=True``: no second copy) -> ``PeftModel.from_pretrained`` -> ``merge_and_unload``
  -> ``save_file``. PEFT has no streamed path; this is the nearest honest equivalent.

Per method: the peak above the process baseline (taken after imports, right before the call) of
``RssAnon`` (memory the process allocated) and of ``VmRSS`` (also counting pages of the files it
maps: safetensors reads through mmap, and those clean file pages stay counted while the file is
open although the kernel can drop them at any time), sampled every 2 ms by a thread reading
/proc/self/status; the bound = ``--k`` (default 8) x the largest tensor's bytes; wall time.

    .venv/bin/python benchmarks/bench_memory.py                         # SDXL size, all methods
    .venv/bin/python benchmarks/bench_memory.py --size sd15 --methods merge,extract
    .venv/bin/python benchmarks/bench_memory.py --size tiny             # quick smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")

METHODS = ("merge", "extract", "peft_merge")
RANK = 8


# ------------------------------------------------------------------------------------ measurement
def _status() -> dict[str, int]:
    """{"RssAnon": bytes, "VmRSS": bytes} of this process (Linux /proc/self/status)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name = line.split(":", 1)[0]
            if name in ("RssAnon", "VmRSS"):
                out[name] = int(line.split()[1]) * 1024
    return out


class PeakRss:
    """Context manager: peak RssAnon / VmRSS above their values at entry, sampled every 2 ms."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.peak = {"RssAnon": 0, "VmRSS": 0}

    def __enter__(self) -> "PeakRss":
        self._base = _status()
        self._max = dict(self._base)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            for k, v in _status().items():
                self._max[k] = max(self._max[k], v)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for k, v in _status().items():
            self._max[k] = max(self._max[k], v)
        self.peak = {k: self._max[k] - self._base[k] for k in self._base}


# ------------------------------------------------------------------------------------------- setup
def _config(size: str) -> dict:
    from lokr_core.commands.demo_run import TINY_UNET_CONFIG
    from lokr_core.keymap.families import SD15_UNET, SDXL_UNET

    return {"sdxl": SDXL_UNET, "sd15": SD15_UNET, "tiny": TINY_UNET_CONFIG}[size]


def _meta_unet(size: str):
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**_config(size))


def prepare(work: Path, size: str, seed: int) -> dict:
    """Write base.safetensors (fp16, diffusers keys, one tensor at a time) and adapter/ (PEFT LoKr)."""
    import torch
    from torch import nn

    from lokr_core.base.st_writer import header_bytes, tensor_bytes
    from lokr_core.tensor.shapes import plan_factors
    from lokr_core.tuner.config import LoKrConfig
    from safetensors.torch import save_file

    unet = _meta_unet(size)
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    entries = [(k, "F16", s, math.prod(s) * 2) for k, s in shapes.items()]
    g = torch.Generator().manual_seed(seed)
    with open(work / "base.safetensors", "wb") as fh:
        fh.write(header_bytes(entries, {"format": "pt"}))
        for k, s in shapes.items():
            fh.write(tensor_bytes((torch.randn(s, generator=g) * 0.02).half()))
    layers = {n: m for n, m in unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    factors = {}
    for name, layer in layers.items():
        plan = plan_factors(tuple(layer.weight.shape), RANK, conv_dims=2 if isinstance(layer, nn.Conv2d) else 0)
        for field, shape in plan.shapes.items():
            factors[f"base_model.model.{name}.lokr_{field}"] = torch.randn(shape, generator=g) * 0.05
    (work / "adapter").mkdir()
    save_file(factors, str(work / "adapter" / "adapter_model.safetensors"))
    LoKrConfig(r=RANK, alpha=RANK, target_modules=sorted(layers)).save_pretrained(work / "adapter")
    largest = max(entries, key=lambda e: e[3])
    return {"params": sum(math.prod(s) for s in shapes.values()), "tensors": len(shapes), "modules": len(layers),
            "largest_key": largest[0], "largest_bytes": largest[3],
            "checkpoint_bytes": (work / "base.safetensors").stat().st_size}


# ------------------------------------------------------------------------------------------ worker
def worker(method: str, work: Path, size: str) -> dict:
    """Run one method in this (fresh) process; {seconds, RssAnon, VmRSS} (peaks above baseline)."""
    import torch

    torch.set_grad_enabled(False)
    if method == "merge":
        from lokr_core.ops.merge import merge_checkpoint

        call = lambda: merge_checkpoint(work / "base.safetensors", [(work / "adapter", 1.0)],  # noqa: E731
                                        work / "merged.safetensors", device="cpu")
    elif method == "extract":
        from lokr_core.ops.extract import extract_lokr

        call = lambda: extract_lokr(work / "base.safetensors", work / "merged.safetensors", RANK,  # noqa: E731
                                    device="cpu", compare_lora=False, hash_sources=False,
                                    out=work / "extracted.safetensors")
    elif method == "peft_merge":
        from peft import PeftModel
        from safetensors.torch import load_file, save_file

        def call() -> None:
            unet = _meta_unet(size)
            unet.load_state_dict(load_file(str(work / "base.safetensors")), assign=True)
            merged = PeftModel.from_pretrained(unet, str(work / "adapter")).merge_and_unload()
            save_file({k: v.contiguous() for k, v in merged.state_dict().items()}, str(work / "peft.safetensors"))
    else:
        raise SystemExit(f"unknown method {method!r}")
    with PeakRss() as mem:
        t0 = time.perf_counter()
        call()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, **mem.peak}


# ------------------------------------------------------------------------------------------ driver
def _run_worker(method: str, work: Path, size: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--work", str(work), "--size", size]
    subprocess.run(cmd, check=True)
    return json.loads((work / f"result_{method}.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="sdxl", choices=["sdxl", "sd15", "tiny"])
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    p.add_argument("--k", type=float, default=8.0, help="the bound: k x the largest tensor's bytes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", help="work folder (default: a temp folder, removed at the end)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = worker(args.worker, Path(args.work), args.size)
        (Path(args.work) / f"result_{args.worker}.json").write_text(json.dumps(res))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    if "extract" in methods and "merge" not in methods:
        methods.insert(0, "merge")  # extract reads the merged checkpoint
    with tempfile.TemporaryDirectory(prefix="bench_memory_", dir=args.dir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        info = prepare(work, args.size, args.seed)
        print(f"{args.size}: {info['params'] / 1e9:.2f} G parameters in {info['tensors']} fp16 tensors "
              f"({info['checkpoint_bytes'] / 2**30:.2f} GiB), {info['modules']} LoKr modules r={RANK}; largest "
              f"tensor {info['largest_key']} = {info['largest_bytes'] / 2**20:.1f} MiB; prepared in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        bound = args.k * info["largest_bytes"]
        rows = {}
        for m in methods:
            rows[m] = _run_worker(m, work, args.size)
            print(f"  {m}: {rows[m]}", flush=True)
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    print(f"\nbound = {args.k:g} x largest tensor = {mib(bound)} MiB\n")
    print("| method | time (s) | peak RssAnon (MiB) | / bound | peak VmRSS (MiB) | / bound | RssAnon / PEFT |")
    print("|---|---|---|---|---|---|---|")
    peft = rows.get("peft_merge", {}).get("RssAnon")
    for m, r in rows.items():
        rel = f"{r['RssAnon'] / peft:.3f}" if peft else "-"
        print(f"| {m} | {r['seconds']:.1f} | {mib(r['RssAnon'])} | {r['RssAnon'] / bound:.2f} | {mib(r['VmRSS'])} | "
              f"{r['VmRSS'] / bound:.2f} | {rel} |")
    over = [m for m, r in rows.items() if m != "peft_merge" and r["RssAnon"] > bound]
    print("\nwithin the bound" if not over else f"\nOVER THE BOUND: {over}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
