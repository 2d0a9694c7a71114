#!/usr/bin/env bash
# GPU check of the pack in a real ComfyUI 0.28.0 on a CUDA machine (issue 10):
#   1. tests/comfyui once per VRAM configuration (GPU_CHECK_CONFIGS):
#        dynamic   no flag: dynamic VRAM, 0.28.0's default on NVIDIA with torch >= 2.8
#        static    --disable-dynamic-vram (estimate-based loading, ModelPatcher)
#        lowvram   --lowvram --disable-dynamic-vram (partial loading: weights patched as they stream in)
#        lowvram-dynamic   --lowvram alone (dynamic VRAM stays on; not in the default list)
#   2. benchmarks/bench_comfyui.py --device cuda --mode all (ours vs core, patch and bypass) for each
#      <config>:<size> of GPU_CHECK_BENCH (default: SD1.5 and SDXL sizes, dynamic VRAM on and off);
#   3. a summary (machine, versions, test counts per configuration, benchmark tables): $OUT/summary.md.
#
# Usage: benchmarks/gpu_check.sh [--cpu] [--dry-run]
#   --cpu      the same flow on the CPU (no CUDA needed; lowvram configurations are skipped because ComfyUI
#              refuses --lowvram with --cpu; benchmark on the tiny UNet): proves the script end to end.
#   --dry-run  check the prerequisites, print every command, run none of the tests / benchmarks.
#
# What it needs (environment):
#   COMFYUI_PATH    a ComfyUI 0.28.0 folder (the one holding main.py) to reuse; with
#   COMFYUI_PYTHON  the python of that ComfyUI's environment (default: $COMFYUI_PATH/../venv/bin/python).
#                   Its torch must be a CUDA build (torch.cuda.is_available()); the script reinstalls torch
#                   from TORCH_SPEC / TORCH_INDEX_URL when it is not (see below).
#   Without COMFYUI_PATH a bench is built in BENCH (default ~/.cache/lokr-comfyui-0.28.0-cuda) by the
#   project's ComfyUI setup script, SETUP_COMFYUI (default: setup_comfyui.sh in the tools folder beside
#   the checkout), which unpacks the ComfyUI 0.28.0 source archive and makes a venv with the test tools.
#   That script pins the CPU build of torch 2.13.0, so afterwards torch is replaced by a CUDA build:
#     TORCH_SPEC      (default torch==2.13.0: on PyPI the Linux x86_64 wheel is the CUDA 12 build)
#     TORCH_INDEX_URL (optional, e.g. https://download.pytorch.org/whl/cu128; default: pip's own index)
#   Only PyPI is needed (pip); nothing else is downloaded.
#   OUT             output folder (default ${TMPDIR:-/tmp}/lokr-gpu-check-<date>): logs, junit XML, summary.md
#   GPU_CHECK_CONFIGS  default "dynamic static lowvram" (--cpu: "dynamic static")
#   GPU_CHECK_BENCH    default "dynamic:sd15 dynamic:sdxl static:sd15 static:sdxl" (--cpu: "dynamic:tiny")
#   GPU_CHECK_TESTS    pytest targets (default tests/comfyui minus the device-independent web-panel test;
#                      GPU_CHECK_WEB=1 keeps it: it needs chromium)
#   BENCH_ARGS         extra bench_comfyui.py arguments (default "--repeat 3"; --cpu: "--repeat 1 --steps 1 --threads 1")
#   GPU_CHECK_TIMEOUT  seconds per pytest / bench run (default 1800)
#   GPU_CHECK_INSTALL=0  do not `pip install -e` this checkout into that python (default: install it when
#                      its `import lokr_core` is not this checkout)
# The tests select the device through tests/comfyui/comfy_env.py: LOKR_COMFY_DEVICE=cuda|cpu and
# LOKR_COMFY_ARGS (ComfyUI flags, as main.py takes them); each run's first step checks that ComfyUI really
# runs on that device with those flags (and reports whether dynamic VRAM started).
# Exit status: 0 when every test run passed (none failed or errored, some ran) and every benchmark ran.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2

CPU=0
DRY=0
for arg in "$@"; do
  case "$arg" in
    --cpu) CPU=1 ;;
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
DEVICE=cuda
[ "$CPU" = 1 ] && DEVICE=cpu
OUT=${OUT:-${TMPDIR:-/tmp}/lokr-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
TIMEOUT=${GPU_CHECK_TIMEOUT:-1800}
export PIP_DISABLE_PIP_VERSION_CHECK=1
STATUS=0
RESULTS=()

say() { echo "[gpu_check] $*"; }
die() { echo "[gpu_check] $*" >&2; exit 2; }
run() {  # run a command (or only print it with --dry-run); the command line goes to the log too
  say "\$ $*"
  [ "$DRY" = 1 ] && return 0
  "$@"
}

# Flags of one configuration (LOKR_COMFY_ARGS); empty output + status 1: unknown.
config_flags() {
  case "$1" in
    dynamic) echo "" ;;
    static) echo "--disable-dynamic-vram" ;;
    lowvram) echo "--lowvram --disable-dynamic-vram" ;;
    lowvram-dynamic) echo "--lowvram" ;;
    *) return 1 ;;
  esac
}

# --- 1. ComfyUI and its python ---
if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || die "COMFYUI_PATH=$COMFYUI_PATH holds no main.py"
  PY=${COMFYUI_PYTHON:-$(dirname "$COMFYUI_PATH")/venv/bin/python}
  [ -x "$PY" ] || die "no python at $PY: set COMFYUI_PYTHON to the python of that ComfyUI's environment"
else
  SETUP=${SETUP_COMFYUI:-$ROOT/../shared/tools/setup_comfyui.sh}
  [ -f "$SETUP" ] || die "COMFYUI_PATH is not set and there is no ComfyUI setup script at $SETUP.
  Either point COMFYUI_PATH at a ComfyUI 0.28.0 folder and COMFYUI_PYTHON at its python (with a CUDA torch),
  or set SETUP_COMFYUI to the project's setup_comfyui.sh (it needs the ComfyUI 0.28.0 source archive)."
  BENCH=${BENCH:-${XDG_CACHE_HOME:-$HOME/.cache}/lokr-comfyui-0.28.0-cuda}
  if [ "$DRY" = 1 ]; then
    say "\$ COMFYUI_VERSION=0.28.0 BENCH=$BENCH bash $SETUP"
  else
    say "building ComfyUI 0.28.0 in $BENCH (log: $OUT/setup.log)"
    COMFYUI_VERSION=0.28.0 BENCH="$BENCH" bash "$SETUP" >"$OUT/setup.log" 2>&1 \
      || { tail -n 30 "$OUT/setup.log" >&2; die "the setup script failed (log: $OUT/setup.log)"; }
  fi
  COMFYUI_PATH="$BENCH/ComfyUI"
  PY="$BENCH/venv/bin/python"
fi
export COMFYUI_PATH COMFYUI_PYTHON="$PY"
COMFY_VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$COMFYUI_PATH/comfyui_version.py" 2>/dev/null)
say "ComfyUI ${COMFY_VERSION:-?} at $COMFYUI_PATH, python $PY, device $DEVICE, output $OUT"
case "$COMFY_VERSION" in 0.28.*) ;; *) say "WARNING: this check is written for ComfyUI 0.28.0 (dynamic VRAM flags)";; esac

# --- 2. a CUDA torch ---
torch_info() { "$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tail -n 1; }
if [ "$DRY" = 0 ] || [ -x "$PY" ]; then TORCH=$(torch_info); else TORCH="(not built yet)"; fi
say "torch: $TORCH"
if [ "$CPU" = 0 ] && ! echo "$TORCH" | grep -q "available True"; then
  INDEX=()
  [ -n "${TORCH_INDEX_URL:-}" ] && INDEX=(--index-url "$TORCH_INDEX_URL")
  say "torch has no CUDA here: installing ${TORCH_SPEC:-torch==2.13.0} (a CUDA build) into the ComfyUI venv"
  run "$PY" -m pip uninstall -y -q torch
  run "$PY" -m pip install -q "${INDEX[@]}" "${TORCH_SPEC:-torch==2.13.0}" || die "installing a CUDA torch failed"
  if [ "$DRY" = 0 ]; then
    TORCH=$(torch_info)
    say "torch: $TORCH"
    echo "$TORCH" | grep -q "available True" || die "torch still sees no CUDA device ($TORCH): is this a CUDA machine
  with a driver (nvidia-smi)? Set TORCH_SPEC / TORCH_INDEX_URL to a CUDA build that suits the driver."
  fi
fi

# --- 3. this pack in that python (GPU_CHECK_INSTALL=0: leave that python as it is) ---
if [ "${GPU_CHECK_INSTALL:-1}" = 0 ]; then
  say "GPU_CHECK_INSTALL=0: not installing the pack ($("$PY" -c 'import lokr_core; print(lokr_core.__file__)' 2>&1 | tail -n 1))"
elif [ "$DRY" = 1 ] || ! "$PY" -c "import lokr_core, sys; sys.exit(not lokr_core.__file__.startswith('$ROOT/'))" 2>/dev/null; then
  run "$PY" -m pip install -q --no-deps -e "$ROOT" || die "pip install -e $ROOT failed"
fi

# --- 4. tests/comfyui per VRAM configuration ---
if [ "$CPU" = 1 ]; then
  CONFIGS=${GPU_CHECK_CONFIGS:-dynamic static}
  BENCHES=${GPU_CHECK_BENCH:-dynamic:tiny}
  BENCH_ARGS=${BENCH_ARGS:---repeat 1 --steps 1 --threads 1}
else
  CONFIGS=${GPU_CHECK_CONFIGS:-dynamic static lowvram}
  BENCHES=${GPU_CHECK_BENCH:-dynamic:sd15 dynamic:sdxl static:sd15 static:sdxl}
  BENCH_ARGS=${BENCH_ARGS:---repeat 3}
fi
if [ -n "${GPU_CHECK_TESTS:-}" ]; then
  read -r -a TESTS <<<"$GPU_CHECK_TESTS"
elif [ "${GPU_CHECK_WEB:-0}" = 1 ]; then
  TESTS=(tests/comfyui)
else
  TESTS=(tests/comfyui --ignore=tests/comfyui/test_web_panel.py)
fi

# What ComfyUI runs on under LOKR_COMFY_DEVICE / LOKR_COMFY_ARGS (through comfy_env.setup_comfy, as the tests).
preflight() {
  LOKR_COMFY_DEVICE=$DEVICE LOKR_COMFY_ARGS="$1" timeout 300 "$PY" - <<'EOF'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "comfyui"))
import comfy_env
comfy_env.setup_comfy()
import comfy.model_management as mm
import comfy.model_patcher
try:
    import comfy.memory_management as mem
    dyn = bool(getattr(mem, "aimdo_enabled", False))
except ImportError:
    dyn = False
from comfy.cli_args import args, parser
import shlex
flags = shlex.split(os.environ["LOKR_COMFY_ARGS"])
parsed = parser.parse_args((["--cpu"] if os.environ["LOKR_COMFY_DEVICE"] == "cpu" else []) + flags)
lost = [f"--{k.replace('_', '-')}" for k, v in vars(parsed).items()
        if v != parser.get_default(k) and getattr(args, k, None) != v]
if lost:
    sys.exit(f"ComfyUI's args lack {' '.join(lost)}: tests/comfyui/comfy_env.py must honour LOKR_COMFY_ARGS")
dev = mm.get_torch_device()
want = os.environ["LOKR_COMFY_DEVICE"]
print(f"device {dev} ({mm.get_torch_device_name(dev)}), vram_state {mm.vram_state.name}, dynamic VRAM "
      f"{'on' if dyn else 'off'}, CoreModelPatcher {getattr(comfy.model_patcher, 'CoreModelPatcher', None).__name__}")
if dev.type != want:
    sys.exit(f"ComfyUI runs on {dev.type}, not {want}: tests/comfyui/comfy_env.py must honour LOKR_COMFY_DEVICE")
EOF
}

# pytest counts from a junit file: "<passed> passed, <failed> failed, <errors> errors, <skipped> skipped"
junit_counts() {
  "$PY" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET

cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
n = {k: sum(c.find(k) is not None for c in cases) for k in ("failure", "error", "skipped")}
print(f"{len(cases) - sum(n.values())} passed, {n['failure']} failed, {n['error']} errors, {n['skipped']} skipped")
EOF
}

for cfg in $CONFIGS; do
  flags=$(config_flags "$cfg") || die "unknown configuration $cfg in GPU_CHECK_CONFIGS (dynamic static lowvram lowvram-dynamic)"
  if [ "$CPU" = 1 ] && [[ "$flags" == *--lowvram* ]]; then
    RESULTS+=("| tests | $cfg | \`$flags\` | skipped: ComfyUI refuses --lowvram with --cpu |")
    continue
  fi
  say "== tests/comfyui, $cfg: LOKR_COMFY_DEVICE=$DEVICE LOKR_COMFY_ARGS=\"$flags\""
  if [ "$DRY" = 1 ]; then
    say "\$ LOKR_COMFY_DEVICE=$DEVICE LOKR_COMFY_ARGS=\"$flags\" $PY -m pytest -q -p no:cacheprovider ${TESTS[*]} --junitxml=$OUT/junit-$cfg.xml"
    continue
  fi
  if ! pre=$(preflight "$flags" 2>"$OUT/preflight-$cfg.err"); then
    tail -n 5 "$OUT/preflight-$cfg.err" >&2
    RESULTS+=("| tests | $cfg | \`$flags\` | NOT RUN: ComfyUI set-up failed: $(tail -n 1 "$OUT/preflight-$cfg.err") |")
    STATUS=1
    continue
  fi
  say "   $pre"
  rc=0
  LOKR_COMFY_DEVICE=$DEVICE LOKR_COMFY_ARGS="$flags" LOKR_SCREENSHOTS=0 timeout "$TIMEOUT" \
    "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" --junitxml="$OUT/junit-$cfg.xml" >"$OUT/tests-$cfg.log" 2>&1 || rc=$?
  tail -n 3 "$OUT/tests-$cfg.log"
  counts="no junit file"
  [ -f "$OUT/junit-$cfg.xml" ] && counts=$(junit_counts "$OUT/junit-$cfg.xml")
  case "$counts" in 0\ passed,\ 0\ failed,\ 0\ errors*|"no junit file") counts="$counts: NO TESTS RAN"; [ "$rc" != 0 ] || rc=1 ;; esac
  [ "$rc" = 0 ] || STATUS=1
  RESULTS+=("| tests | $cfg | \`$flags\` | $counts (pytest exit $rc); $pre |")
done

# --- 5. benchmarks ---
BENCH_OUT=()
for item in $BENCHES; do
  cfg=${item%%:*}
  size=${item#*:}
  flags=$(config_flags "$cfg") || die "unknown configuration $cfg in GPU_CHECK_BENCH"
  extra=()
  [ "$CPU" = 1 ] && [ "$size" = sdxl ] && extra=(--allow-big-cpu)
  read -r -a bargs <<<"$BENCH_ARGS"
  cmd=("$PY" benchmarks/bench_comfyui.py --device "$DEVICE" --size "$size" --mode all "${extra[@]}" "${bargs[@]}")
  say "== bench $size, $cfg: LOKR_COMFY_ARGS=\"$flags\" ${cmd[*]}"
  [ "$DRY" = 1 ] && continue
  log="$OUT/bench-$cfg-$size"
  rc=0
  LOKR_COMFY_ARGS="$flags" timeout "$TIMEOUT" "${cmd[@]}" >"$log.md" 2>"$log.err" || rc=$?
  if [ "$rc" = 0 ]; then
    RESULTS+=("| bench | $cfg | \`$flags\` | $size: ran (table below) |")
  else
    STATUS=1
    tail -n 5 "$log.err" >&2
    RESULTS+=("| bench | $cfg | \`$flags\` | $size: FAILED (exit $rc): $(tail -n 1 "$log.err") |")
  fi
  BENCH_OUT+=("### bench_comfyui.py --size $size, $cfg (\`LOKR_COMFY_ARGS=\"$flags\"\`), exit $rc"$'\n\n'"\`LOKR_COMFY_ARGS=\"$flags\" COMFYUI_PATH=... python ${cmd[*]:1}\`"$'\n\n'"$(cat "$log.md")")
done

# --- 6. summary ---
[ "$DRY" = 1 ] && { say "dry run: nothing run; output folder $OUT"; exit 0; }
{
  echo "# gpu_check.sh summary ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "- repository: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- ComfyUI ${COMFY_VERSION:-?} at $COMFYUI_PATH; device $DEVICE; torch: $TORCH"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
  fi
  echo "- tests: ${TESTS[*]}"
  echo
  echo "| what | configuration | ComfyUI flags | result |"
  echo "|---|---|---|---|"
  printf '%s\n' "${RESULTS[@]}"
  echo
  for b in "${BENCH_OUT[@]}"; do printf '%s\n\n' "$b"; done
} >"$SUMMARY"
cat "$SUMMARY"
say "summary: $SUMMARY (exit $STATUS)"
exit "$STATUS"
