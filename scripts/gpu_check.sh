#!/usr/bin/env bash
# The GPU check: GPU-marked tests, inference speed (ade20k, batches 1 and 16: reference, fused,
# bf16, CUDA graphs, compiled) and the training-step ablation (batch 16), with tables and
# OUT_DIR/summary.md. Under 8 minutes on one H100 (each step has a time limit below).
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# Uses the python3 on PATH as it is: no venv, no network. It needs torch, torchvision, numpy,
# scipy, pandas, matplotlib, seaborn, tabulate, tqdm, fvcore (+ iopath, yacs) and pytorch-fid;
# wheels of the missing pure-Python ones in ./.whl are installed into a temporary folder first.
# Without CUDA it runs the same steps small (synthetic preset, batch 1, one thread; about 3
# minutes on 2 busy cores) and says what it skipped.
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash scripts/gpu_check.sh OUT_DIR" >&2
    exit 2
fi
mkdir -p "$1" && OUT=$(cd "$1" && pwd)   # before cd: OUT_DIR is relative to the caller's folder
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "gpu_check: no python3 on PATH" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if compgen -G ".whl/*.whl" >/dev/null; then
    echo "[gpu_check] installing $(ls .whl/*.whl | wc -l) wheels from .whl into a temporary folder"
    python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --target "$tmp/site" .whl/*.whl \
        || { echo "gpu_check: installing .whl/*.whl failed" >&2; exit 1; }
    export PYTHONPATH="$tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
missing=$(python3 -W ignore::FutureWarning - <<'EOF'
import importlib.util
names = ["torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "seaborn", "tabulate", "tqdm",
         "fvcore", "iopath", "yacs", "pytorch_fid"]
missing = [n for n in names if importlib.util.find_spec(n) is None]
if not missing:
    try:
        import analysis.speed.variants, analysis.quality.metrics, fvcore.nn, pytorch_fid.inception  # noqa: F401
    except ModuleNotFoundError as exc:
        missing = [exc.name]
print(" ".join(missing))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: $(python3 --version) at $(command -v python3) lacks: $missing; install them" \
         "(pip install fvcore iopath yacs pytorch-fid tabulate) or put their wheels in ./.whl" >&2
    exit 1
fi
CUDA=$(python3 -c 'import torch; print(int(torch.cuda.is_available()))')
echo "[gpu_check] $(python3 -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__},",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'); writing to $OUT"
: >"$OUT/steps.tsv"

# step NAME LIMIT_S NOTE COMMAND...: run with a time limit, log to OUT/NAME.log, record the outcome.
step() {
    local name=$1 limit=$2 note=$3 start rc status
    shift 3
    echo "[gpu_check] $name (limit ${limit}s): $*"
    start=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep --line-buffered -v -E 'Warning|warnings\.warn' \
        | cut -c1-160
    rc=${PIPESTATUS[0]}
    case $rc in
        0) status=ok ;;
        124) status="timed out after ${limit}s" ;;
        *) status="failed (exit $rc, see $name.log)" ;;
    esac
    echo "[gpu_check] $name: $status in $(($(date +%s) - start))s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - start))" "$note" >>"$OUT/steps.tsv"
}

skip() {
    echo "[gpu_check] $1: skipped ($2)"
    printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$OUT/steps.tsv"
}

if pytest_error=$(python3 -c 'import pytest' 2>&1); then
    gpu_files=$(grep -rl --include='test_*.py' 'mark.gpu' tests | sort)
    step gpu-tests 60 "pytest -m gpu on $(echo $gpu_files | wc -w) files" \
        python3 -m pytest -q -p no:cacheprovider -o addopts=-ra -m gpu $gpu_files
    cp "$OUT/gpu-tests.log" "$OUT/gpu_tests.txt"
else
    skip gpu-tests "pytest cannot be imported by $(command -v python3): $(echo "$pytest_error" | tail -n 1)"
fi

if [ "$CUDA" = 1 ]; then
    step speed 90 "ade20k, batches 1 and 16, every eager variant" \
        python3 -m analysis.speed.variants --out "$OUT/speed" --presets ade20k --batch-sizes 1 16 --repeats 20 --warmup 3
    step speed-compiled 225 "ade20k, batches 1 and 16, with torch.compile" \
        python3 -m analysis.speed.variants --out "$OUT/speed-compiled" --presets ade20k --batch-sizes 1 16 --repeats 10 \
        --warmup 2 --compile
    step train 90 "training-step ablation, ade20k, batch 16" \
        python3 -m analysis.speed.variants --out "$OUT/train" --presets ade20k --batch-sizes 1 --repeats 1 --warmup 1 \
        --train --train-batch-size 16 --train-repeats 5
else
    echo "[gpu_check] no CUDA device: CUDA-only variants skipped (bf16 autocast reference, CUDA graphs," \
         "compiled with CUDA graphs); CPU-sized steps instead: preset synthetic (64x64) at batch 1 on one" \
         "thread (not ade20k at batches 1 and 16), training ablation for CLADE only; timings are not comparable"
    step speed 150 "CPU: synthetic preset, batch 1, 1 thread (GPU: ade20k, batches 1 and 16)" \
        python3 -m analysis.speed.variants --out "$OUT/speed" --presets synthetic --batch-sizes 1 --repeats 2 --warmup 1 \
        --threads 1
    skip speed-compiled "CPU: torch.compile takes minutes here; the CUDA run compiles with CUDA graphs"
    step train 180 "CPU: training-step ablation, synthetic preset, CLADE, batch 1 (GPU: ade20k, all norms, batch 16)" \
        python3 -m analysis.speed.variants --out "$OUT/train" --presets synthetic --norms clade --batch-sizes 1 --repeats 1 \
        --warmup 1 --threads 1 --train --train-batch-size 1 --train-repeats 1
fi
python3 scripts/gpu_summary.py "$OUT"
! grep -q $'\t\(failed\|timed out\)' "$OUT/steps.tsv"
