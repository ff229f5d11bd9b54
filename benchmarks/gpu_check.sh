#!/usr/bin/env bash
# The GPU check of issue 13 (benchmarks/gpu_check.py says what it measures). On the GPU machine,
# from anywhere in the repository:
#
#     bash benchmarks/gpu_check.sh            # results in $OUT, default ./gpu_check_out
#
# Installs the project (no network: --no-deps), then runs every part with its own time limit;
# the whole run stays under about 7 minutes (GPU_CHECK_BUDGET seconds for the parts, default 400).
# Extra arguments go to gpu_check.py (e.g. --only environment,amp_bf16, or --smoke on a CPU).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
export OUT
start=$(date +%s)
if [ "${BNN_SKIP_INSTALL:-0}" != "1" ]; then
    python3 -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip_install.log" 2>&1 \
        || echo "pip install failed (see $OUT/pip_install.log); going on with PYTHONPATH=$PWD" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
budget="${GPU_CHECK_BUDGET:-400}"
# The driver enforces the budget part by part; this outer limit only guards against a hang in it.
timeout --kill-after 10 $((budget + 60)) python3 benchmarks/gpu_check.py --out "$OUT" --budget "$budget" "$@"
rc=$?
echo "gpu_check: exit $rc after $(( $(date +%s) - start )) s; results in $OUT/gpu_check.json" >&2
exit $rc
