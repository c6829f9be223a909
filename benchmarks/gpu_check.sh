#!/usr/bin/env bash
# The CUDA path end to end, in under 8 minutes on one H100/H200-class GPU, with a table of figures:
#   1. the machine (GPUs, driver, torch);
#   2. train.py's step on synthetic batches: resnet50 at 256x128, fp32 vs bf16 vs bf16 + channels_last
#      (+ torch.compile) — benchmarks/train_speed.py;
#   3. the input pipelines on real JPEG files (the toy Market): DataLoader alone vs the full step, per-picture
#      vs decoded-once, and extraction — benchmarks/pipeline_speed.py (bf16);
#   4. the stages themselves: train.py with --bf16 --compile --input_pipeline device, then test.py; then the
#      same run under torchrun with NCCL, one process per GPU (one on a one-GPU machine), resumed, and
#      test.py sharded over the same processes.
# Targets (issue 14): >= 3,000 training img/s and >= 10,000 extraction img/s for resnet50 at 256x128.
#
# Usage, from the repository root:  bash benchmarks/gpu_check.sh        (PYTHON=... to choose the interpreter)
# It uses the interpreter as it is (a lent GPU machine cannot install packages); OUT=folder keeps the log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
LOG="${OUT:-$WORK}/gpu_check.log"
export PYTHONUNBUFFERED=1
FAILED=()
# one step: its output in the log without the progress bars; a failed step is noted and the next one runs,
# so that one call on a lent GPU shows every problem at once
step() {
  local name="$1"; shift
  printf '\n== %s\n' "$name" | tee -a "$LOG"
  "$@" 2>&1 | tr '\r' '\n' | { grep -v -E 'it/s\]|img/s\]' || true; } | tee -a "$LOG" || FAILED+=("$name")
}

step "machine" bash -c "nvidia-smi -L; $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.device_count(), \"GPU(s)\")'"
GPUS="$($PY -c 'import torch; print(torch.cuda.device_count())')"
if [ "$GPUS" -lt 1 ]; then echo "no CUDA GPU visible: nothing to check" | tee -a "$LOG"; exit 1; fi

step "toy Market (real JPEG files)" bash -c "$PY toy_data.py --out $WORK --dataset market --train_ids 300 --workers 8 \
    && $PY prepare.py --download_path $WORK/Market"
DATA="$WORK/Market/pytorch"

step "train.py's step, synthetic batches (fp32 / bf16 / channels_last / compile)" \
    timeout 180 $PY benchmarks/train_speed.py --gpu_ids 0 --batchsize 128 --steps 30
step "input pipelines and extraction on real pictures (bf16)" \
    timeout 150 $PY benchmarks/pipeline_speed.py --gpu_ids 0 --data_dir "$DATA" --batchsize 128 --steps 30 \
    --num_workers 8 --bf16 --no_processes

RUN=(--name gpu_check --data_dir "$DATA" --backbone resnet50 --no_pretrained --batchsize 128 --lr 0.05
     --total_epoch 2 --bf16 --compile --input_pipeline device --num_workers 8 --seed 0)
cd "$WORK"
step "train.py, one GPU: bf16 + compile + decoded-once pipeline" \
    timeout 120 $PY "$OLDPWD/train.py" --gpu_ids 0 "${RUN[@]}"
step "test.py: extraction and evaluation" \
    timeout 60 $PY "$OLDPWD/test.py" --gpu_ids 0 --name gpu_check --test_dir "$DATA" --batchsize 512 --num_workers 8
# one process per GPU through a process group: NCCL for CUDA tensors, gloo for CPU ones (with one GPU, one
# process still checks the group, DistributedDataParallel, SyncBatchNorm's conversion and the sharded test)
step "torchrun, $GPUS process(es) with NCCL: train.py --sync_bn --resume, then test.py" bash -c \
    "timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node $GPUS $OLDPWD/train.py ${RUN[*]} \
         --name gpu_check_ddp --batchsize $((128 * GPUS)) --total_epoch 1 --sync_bn \
     && timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node $GPUS $OLDPWD/train.py ${RUN[*]} \
         --name gpu_check_ddp --batchsize $((128 * GPUS)) --sync_bn --resume \
     && timeout 60 $PY -m torch.distributed.run --standalone --nproc_per_node $GPUS $OLDPWD/test.py --gpu_ids 0 \
         --name gpu_check_ddp --test_dir $DATA --batchsize 512 --num_workers 8 --output ddp_result.mat"
printf '\ndone; the log is %s\n' "$LOG"
if [ "${#FAILED[@]}" -gt 0 ]; then printf 'FAILED: %s\n' "${FAILED[@]}" | tee -a "$LOG"; exit 1; fi
echo "every step passed" | tee -a "$LOG"
