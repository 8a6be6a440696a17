#!/usr/bin/env bash
# The GPU check of the trainer, as one prepared script for a lent GPU (15 minutes in all).
#
# Prints, into $OUT (the device tool's result folder) or runs/gpu_check: the GPU, the trainer
# against the diffusers-example reference at batch 16 and 128 with the paper's network, DDPM
# sampling speed, peak GPU memory, the projected time of the whole paper protocol, and a short
# paper-profile run of Task A (resumable: run the script again on the same warm machine and the
# run continues from its last checkpoint).  About 8 minutes; each part has its own timeout.
#
# The GPU image has torch, numpy, matplotlib, safetensors, tqdm, sympy but not diffusers (the
# `small` preset and the reference loop need it).  Before the call, on the development machine:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       diffusers==0.42.1 importlib_metadata
# and call the device tool with carry [".whl"] and the command `bash benchmarks/gpu_check.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c 'import diffusers' 2>/dev/null || echo "diffusers missing: the reference loop will fail"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

# 1. Speed (about 4 minutes): paper preset, bf16 + compile by default on CUDA (each compiled run
#    first compares its gradients with eager ones, train.check_compiled: a "compile rejected"
#    line means inductor miscompiled the network here, as it did on CPU, and the run is eager).
timeout 300 python3 benchmarks/train.py --preset paper --batches 16 128 --repeats 1 \
  --sample-batch 1000 --project 2>&1 | grep -v UserWarning | tee "$out/bench.txt"

# 2. The paper profile on Task A for 3 minutes of training (a checkpoint is written when the time
#    is up); its progress bar gives images/s under the real data and checkpointing.
timeout 280 python3 -m rulelib train --task A --profile paper --out runs/gpu_paper \
  --time-limit 3 2>&1 | tr '\r' '\n' | grep -v UserWarning | tail -n 20 | tee "$out/train_A.txt"
ls runs/gpu_paper/A/checkpoints | tee -a "$out/train_A.txt"
