#!/usr/bin/env bash
# The CUDA path end to end, in under 8 minutes on one H100/H200-class GPU, with a table of figures:
#   1. the machine (GPUs, driver, torch);
#   2. train.py's step on synthetic batches: resnet50 at 256x128, fp32 vs bf16 vs bf16 + channels_last
#      (+ torch.compile) — benchmarks/train_speed.py;
#   3. the input pipelines on real JPEG files (the toy Market): DataLoader alone vs the full step, per-picture
#      vs decoded-once, and extraction — benchmarks/pipeline_speed.py (bf16);
#   4. the stages themselves: train.py with --bf16 --compile --input_pipeline device, then test.py; and, with
#      two GPUs or more, the same run under torchrun with NCCL on every GPU.
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
step() { printf '\n== %s\n' "$1" | tee -a "$LOG"; shift; "$@" 2>&1 | grep -v -E 'it/s\]|img/s\]' | tee -a "$LOG"; }

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
if [ "$GPUS" -ge 2 ]; then
  step "torchrun, NCCL on $GPUS GPUs" timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node "$GPUS" \
      "$OLDPWD/train.py" "${RUN[@]}" --name gpu_check_ddp --batchsize $((128 * GPUS)) --sync_bn
else
  echo "one GPU: the NCCL run of several processes needs two or more (CI runs the same path with gloo)" | tee -a "$LOG"
fi
printf '\ndone; the log is %s\n' "$LOG"
