"""Benchmark: merging a full-coverage LoKr into an SD1.5-size UNet, lokr_core vs PEFT.

A random SD1.5 UNet (tests/models.SD15_UNET) gets a PEFT LoKr adapter on every Linear and Conv2d
(random factors); the same adapter directory is then merged three ways, each in a fresh
subprocess so memory numbers do not mix:

- ``peft``:      ``PeftModel.from_pretrained(unet, adapter).merge_and_unload()`` on a UNet in
  memory (the reference for in-memory merges);
- ``apply``:     ``lokr_core.apply_lokr(unet, load_lokr(adapter), mode="merge")`` on the same in-memory UNet;
- ``peft_file``: checkpoint file to merged file with PEFT: ``load_file`` -> UNet ->
  ``PeftModel.from_pretrained`` -> ``merge_and_unload`` -> ``save_file`` (the reference for file merges);
- ``stream``:    ``lokr_core.merge_checkpoint(unet.safetensors, [(adapter, 1.0)], out.safetensors)``:
  file to file, tensor by tensor.

Per method: wall time of the merge alone, and peak extra memory during it (resident set size
sampled every 2 ms on CPU: anonymous RSS, so the checkpoint file's page cache is not counted; ``torch.cuda.max_memory_allocated`` on CUDA), as absolute numbers and
as ratios to the PEFT counterpart (``apply`` / ``peft``, ``stream`` / ``peft_file``). The merged weights of every method are compared with PEFT's (max relative error).

    .venv/bin/python benchmarks/bench_merge.py                # CPU, SD1.5 size
    .venv/bin/python benchmarks/bench_merge.py --device cuda  # where a GPU exists
    .venv/bin/python benchmarks/bench_merge.py --config tiny  # quick smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("LYCORIS_KERNEL_BACKEND", "torch")

METHODS = ("peft", "apply", "peft_file", "stream")
COUNTERPART = {"peft": "peft", "apply": "peft", "peft_file": "peft_file", "stream": "peft_file"}


# ------------------------------------------------------------------------------------ measurement
def _rss_bytes() -> int:
    """Anonymous resident memory (Linux ``RssAnon``): what the process itself allocated. Pages of
    files it maps (the checkpoint read through safetensors' mmap) are page cache, not counted.
    Elsewhere: the whole RSS (psutil)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Context manager: peak extra memory (bytes) during the block. CPU: RSS sampled every 2 ms
    (the sampler thread adds no allocations of note); CUDA: max_memory_allocated."""

    def __init__(self, device: str):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> "PeakMemory":
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = _rss_bytes()
            self._max = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss_bytes()) - self._base


# ------------------------------------------------------------------------------------------- setup
def _config(name: str) -> dict:
    import models

    return {"sd15": models.SD15_UNET, "tiny": models.TINY_UNET}[name]


def _targets(unet) -> list[str]:
    from torch import nn

    return [n for n, m in unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def prepare(work: Path, config: str, rank: int, seed: int) -> dict:
    """Write the base UNet (safetensors, fp32) and a PEFT LoKr adapter on every Linear/Conv2d."""
    from peft import LoKrConfig, get_peft_model
    from safetensors.torch import save_file

    from lokr_core.commands.demo_run import randomize_adapters

    import models

    unet = models.unet(_config(config), seed=seed)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(work / "unet.safetensors"))
    n_params = sum(v.numel() for v in unet.state_dict().values())
    targets = _targets(unet)
    cfg = LoKrConfig(r=rank, alpha=rank, target_modules=targets, init_weights=False, use_effective_conv2d=True)
    model = get_peft_model(unet, cfg)
    randomize_adapters(model, seed + 1, std=0.02)
    model.save_pretrained(str(work / "adapter"))
    return {"modules": len(targets), "base_params": n_params}


def _load_unet(work: Path, config: str, device: str):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_config(config))
    # clone: weights in ordinary memory, not copy-on-write pages of the file's mmap (which an
    # in-place merge would fault in one by one, and which would count as "extra" memory)
    state = {k: v.clone() for k, v in load_file(str(work / "unet.safetensors"), device=device).items()}
    unet.load_state_dict(state, assign=True)
    return unet.eval()


def _check_keys(state: dict, keys: list[str]) -> dict:
    return {k: state[k].detach().float().cpu() for k in keys}


# ------------------------------------------------------------------------------------------ worker
def worker(method: str, work: Path, config: str, device: str, out_json: Path) -> None:
    """Run one method in this (fresh) process and write {seconds, peak_bytes} to ``out_json``."""
    import torch

    torch.set_grad_enabled(False)
    check = json.loads((work / "check_keys.json").read_text())
    if method == "peft":
        from peft import PeftModel

        unet = _load_unet(work, config, device)
        model = PeftModel.from_pretrained(unet, str(work / "adapter")).to(device)
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            merged = model.merge_and_unload()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        state = merged.state_dict()
    elif method == "apply":
        from lokr_core.ops.apply import apply_lokr
        from lokr_core.formats.io import load_lokr

        unet = _load_unet(work, config, device)
        weights = load_lokr(work / "adapter")
        weights.validate_all()  # read the factors before timing (PEFT has them in memory too)
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            apply_lokr(unet, weights, mode="merge")
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        state = unet.state_dict()
    elif method == "peft_file":
        from diffusers import UNet2DConditionModel
        from peft import PeftModel
        from safetensors.torch import load_file, save_file

        out = work / "merged_peft.safetensors"
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            with torch.device("meta"):
                unet = UNet2DConditionModel(**_config(config))
            unet.load_state_dict(load_file(str(work / "unet.safetensors"), device=device), assign=True)
            merged = PeftModel.from_pretrained(unet, str(work / "adapter")).to(device).merge_and_unload()
            save_file({k: v.contiguous() for k, v in merged.state_dict().items()}, str(out))
            seconds = time.perf_counter() - t0
        del merged, unet
        state = load_file(str(out))
        out.unlink()
    elif method == "stream":
        from safetensors.torch import load_file

        from lokr_core.ops.merge import merge_checkpoint

        out = work / "merged.safetensors"
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            merge_checkpoint(work / "unet.safetensors", [(work / "adapter", 1.0)], out, device=device)
            seconds = time.perf_counter() - t0
        state = load_file(str(out))
        out.unlink()
    else:
        raise SystemExit(f"unknown method {method!r}")
    torch.save(_check_keys(state, check), work / f"check_{method}.pt")
    out_json.write_text(json.dumps({"seconds": seconds, "peak_bytes": int(mem.peak)}))


# ------------------------------------------------------------------------------------------ driver
def _run_worker(method: str, work: Path, config: str, device: str) -> dict:
    out_json = work / f"result_{method}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--work", str(work),
           "--config", config, "--device", device]
    subprocess.run(cmd, check=True)
    return json.loads(out_json.read_text())


def _max_rel_err(a: dict, b: dict) -> float:
    err = 0.0
    for k in b:
        scale = max(float(b[k].abs().max()), 1e-12)
        err = max(err, float((a[k] - b[k]).abs().max()) / scale)
    return err


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--config", default="sd15", choices=["sd15", "tiny"])
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.work), args.config, args.device, Path(args.work) / f"result_{args.worker}.json")
        return 0

    import torch

    methods = [m for m in args.methods.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="bench_merge_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        info = prepare(work, args.config, args.rank, args.seed)
        from safetensors import safe_open

        with safe_open(str(work / "unet.safetensors"), "pt") as fh:
            keys = [k for k in fh.keys() if k.endswith(".weight") and len(fh.get_slice(k).get_shape()) >= 2]
        check = keys[:: max(1, len(keys) // 24)]
        (work / "check_keys.json").write_text(json.dumps(check))
        print(f"# setup {time.perf_counter() - t0:.1f} s: {args.config} UNet, {info['modules']} LoKr modules "
              f"(every Linear + Conv2d), r={args.rank}, device {args.device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads", flush=True)
        results = {m: _run_worker(m, work, args.config, args.device) for m in methods}
        ref = torch.load(work / "check_peft.pt") if "peft" in results else None
        print("\n| method | merge time (s) | time / PEFT counterpart | peak extra memory (MiB) | memory / PEFT "
              "counterpart | max rel. err vs PEFT |")
        print("|---|---|---|---|---|---|")
        for m, r in results.items():
            err = _max_rel_err(torch.load(work / f"check_{m}.pt"), ref) if ref is not None else float("nan")
            base = results.get(COUNTERPART[m])
            tr = r["seconds"] / base["seconds"] if base else float("nan")
            mr = r["peak_bytes"] / base["peak_bytes"] if base and base["peak_bytes"] > 0 else float("nan")
            print(f"| {m} | {r['seconds']:.2f} | {tr:.2f} | {r['peak_bytes'] / 2**20:.0f} | {mr:.3f} | {err:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
