#!/usr/bin/env bash
# The CUDA path proved in under 8 minutes on one GPU: correctness first, speed last, numbers checked, and a
# summary table at the end (benchmarks/gpu_check.py lists the steps). Without a GPU it says so in one line
# and exits 0 once the plan's commands parse.
#
# Usage, from anywhere:  bash benchmarks/gpu_check.sh   (PYTHON=... chooses the interpreter; OUT=folder keeps the log)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
