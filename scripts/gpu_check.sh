#!/usr/bin/env bash
# The GPU check of tcl-ssl (docs/benchmarks/gpu.md): on one GPU machine, within 8 minutes,
#   environment        nvidia-smi, torch / CUDA / cuDNN versions, the GPU
#   pytest-cuda        pytest -m cuda (the tests that need a GPU)
#   bench-loss         tcl-ssl bench loss, dense and tiled TCL, SupCon and the floor up to N = 65,536
#   bench-augment      tcl-ssl bench augment at 32 and 224 px
#   bench-train-32     tcl-ssl bench train, 32 px (CIFAR stem), batch 512, bf16-mixed
#   bench-train-224    tcl-ssl bench train, 224 px, batch 512, bf16-mixed
#   synthetic-data     a synthetic CIFAR-10-sized image folder (50,000 + 10,000 32 px PNGs), no download
#   pretrain           tcl-ssl pretrain, 2 epochs on it, batch 512
# and one report of every figure: OUT/report.json and OUT/report.md (python -m tcl_ssl.bench.gpu_report).
#
# Usage: scripts/gpu_check.sh [--cpu] [--out DIR]
#   --out DIR   where everything goes (default gpu-check-<UTC time>); each step under DIR/steps/<name>/:
#               command.txt, output.log, status.json (exit_code, seconds, timeout_s) and its results
#   --cpu       every step on the CPU with tiny sizes: a dry run of the plumbing (the test suite's)
# Each step has a timeout (exit code 124 when it hits it) and the whole check a budget; a failing
# step is recorded and the next one runs; the exit status is 1 if any step failed.
# Environment: PYTHON (default python) runs everything; the repository root is this script's parent.
set -euo pipefail
export LC_ALL=C # printf and awk write decimal points

usage() { sed -n '13,19p' "$0" | sed 's/^# \{0,1\}//'; }

cpu=0
out=""
while (($#)); do
    case "$1" in
    --cpu) cpu=1 ;;
    --out)
        [[ $# -ge 2 && -n "$2" ]] || { echo "gpu_check.sh: --out needs a directory" >&2; exit 2; }
        out=$2
        shift
        ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
PYTHON=${PYTHON:-python}
out=${out:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [[ -d "$out/steps" ]]; then
    echo "gpu_check.sh: $out already holds a check (steps/); give a new --out" >&2
    exit 2
fi
tcl_ssl=("$PYTHON" -m tcl_ssl.cli)

if ((cpu)); then
    mode=cpu
    budget=300 # seconds for the whole check
    device=cpu
    export OMP_NUM_THREADS=1 # a dry run: no thread contention on a small shared machine
    export CUDA_VISIBLE_DEVICES=""
else
    mode=gpu
    budget=480
    device=cuda
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check.sh: CUDA is not available to torch ($("$PYTHON" -c 'import torch; print("torch", torch.__version__, "built for CUDA", torch.version.cuda)' 2>&1)); run it on a GPU machine, or pass --cpu for a dry run" >&2
        exit 2
    fi
fi
export TCL_SSL_CACHE="$out/cache" # decoded-image caches stay inside the check's folder
started=$(date +%s)
deadline=$((started + budget - 10)) # 10 s left for the report
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
printf '{"mode": "%s", "budget_s": %d, "started": "%s", "commit": "%s", "root": "%s"}\n' \
    "$mode" "$budget" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" "$root" >"$out/check.json"

failed=()

# run_step NAME LIMIT_S COMMAND...: run COMMAND with its output in steps/NAME/output.log, at most
# LIMIT_S seconds (less if the check's budget runs short), and record its exit code and time.
run_step() {
    local name=$1 limit=$2
    shift 2
    local dir="$out/steps/$name"
    mkdir -p "$dir"
    printf '%q ' "$@" >"$dir/command.txt"
    echo >>"$dir/command.txt"
    local left=$((deadline - $(date +%s)))
    ((left < limit)) && limit=$left
    local code=0 start end
    start=$(date +%s.%N)
    if ((limit <= 0)); then
        echo "not run: the check's budget of $budget s is spent" >"$dir/output.log"
        code=124
        limit=0
    else
        timeout --kill-after=5 "$limit" "$@" >"$dir/output.log" 2>&1 || code=$?
    fi
    end=$(date +%s.%N)
    local seconds
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    printf '{"exit_code": %d, "seconds": %s, "timeout_s": %d, "timed_out": %s}\n' \
        "$code" "$seconds" "$limit" "$([[ $code == 124 || $code == 137 ]] && echo true || echo false)" >"$dir/status.json"
    printf '%-16s exit %3d  %7.1f s\n' "$name" "$code" "$seconds"
    if ((code != 0)); then
        failed+=("$name")
        tail -n 5 "$dir/output.log" | sed 's/^/    /'
    fi
    return 0
}

steps="$out/steps"
echo "GPU check ($mode) of $root at $commit into $out; budget $budget s"

run_step environment 15 "$PYTHON" -m tcl_ssl.bench.gpu_report environment "$steps/environment/environment.json"

run_step pytest-cuda 75 "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider \
    --junitxml="$steps/pytest-cuda/junit.xml" tests

if ((cpu)); then
    loss_sizes=(--sizes 64,128 --repeats 1)
    augment_sizes=(--num-images 8 --batch-size 8)
    train_sizes=(--num-images 4 --batch-size 2 --steps 1 --warmup 1 --num-workers 1 --dataset random)
    precision=32-true
    synthetic=(--train 200 --test 100 --processes 1)
    pretrain_sizes=(--epochs 1 --batch-size 32 --accelerator cpu)
else
    loss_sizes=(--sizes 4096,16384,65536)
    augment_sizes=(--num-images 256 --batch-size 128)
    train_sizes=(--num-images 4096 --batch-size 512 --steps 20 --warmup 5)
    precision=bf16-mixed
    synthetic=()
    pretrain_sizes=(--epochs 2 --batch-size 512 --accelerator gpu --devices 1)
fi

run_step bench-loss 50 "${tcl_ssl[@]}" bench loss "${loss_sizes[@]}" --losses tcl,tcl-tiled,supcon,floor,floor-tiled \
    --max-n tcl=16384 --max-n supcon=16384 --max-n floor=16384 --device "$device" \
    --json "$steps/bench-loss/result.json"

run_step bench-augment 120 "${tcl_ssl[@]}" bench augment --image-sizes 32 224 "${augment_sizes[@]}" \
    --device "$device" --json "$steps/bench-augment/result.json"

for size in 32 224; do
    limit=$((size == 32 ? 45 : 55))
    run_step "bench-train-$size" "$limit" "${tcl_ssl[@]}" bench train --image-size "$size" "${train_sizes[@]}" \
        --sources memory --precision "$precision" --device "$device" --json "$steps/bench-train-$size/result.json"
done

run_step synthetic-data 20 "$PYTHON" -m tcl_ssl.bench.synthetic_folder "$out/synthetic-cifar10" "${synthetic[@]}"

run_step pretrain 85 "${tcl_ssl[@]}" pretrain --dataset "$out/synthetic-cifar10" "${pretrain_sizes[@]}" \
    --protocols knn --no-plots --out "$steps/pretrain/run"

echo
"$PYTHON" -m tcl_ssl.bench.gpu_report assemble "$out" >/dev/null || failed+=(report)
total=$(($(date +%s) - started))
echo "report: $out/report.md and report.json; $total s in all"
if ((${#failed[@]})); then
    echo "failed steps: ${failed[*]}" >&2
    exit 1
fi
