#!/usr/bin/env bash
# The one prepared GPU check (benchmarks/gpu_check.py): every CUDA path measured, one report, < 8 minutes.
#
#   tools/gpu_check.sh --fetch-wheels   # here, with pip and PyPI: save the wheels the GPU image lacks into .whl/
#   tools/gpu_check.sh [ARGS...]        # on the GPU machine: install .whl/*.whl if present, run, report to $OUT
#   tools/gpu_check.sh --dry-run        # anywhere: every part on the CPU at tiny sizes, same report shape
#
# ARGS go to benchmarks/gpu_check.py (--dry-run, --only PART..., --deadline S). The report (gpu_check.json,
# gpu_check.md) and the log go to $OUT if set (the device tool's folder), else build/gpu_check.
# The Python part has a deadline of 440 s and is killed at 470 s: the whole call stays under 8 minutes.
#
# Prepared device call (the H200 image has torch, transformers, tokenizers, triton; not snac, not vLLM):
#   run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=500)
# (the script stops itself by 480 s; of the 15 device minutes that leaves time to rerun one part with
#  run(command="bash tools/gpu_check.sh --only orpheus_3b --deadline 200", carry=[".whl"], timeout_s=240))
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = "--fetch-wheels" ]; then
    # snac is pure Python (its needs - torch, numpy, einops, huggingface-hub - are on the image)
    exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl snac==1.2.1
fi

OUT_DIR=${OUT:-build/gpu_check}
mkdir -p "$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
    SITE=$(mktemp -d /tmp/gpu_check_site.XXXX)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH="$SITE"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem \
    --format=csv 2>&1 | tee "$OUT_DIR/nvidia-smi.txt"
set -o pipefail
timeout -k 10 470 "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/log.txt"
rc=$?
[ "$rc" = 124 ] && echo "gpu_check: killed at 470 s; $OUT_DIR/gpu_check.json holds the parts that finished" >&2
exit "$rc"
