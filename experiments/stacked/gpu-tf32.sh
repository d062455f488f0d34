#!/bin/bash
# Device run 3 (2026-11-30): are the GPU's fresh seeds of under3762 lower than this CPU's because of
# cuDNN's TF32? 14 seeds (201-214), one per process (14 processes under MPS, as find's workers),
# TF32 off, 15 epochs on the 50,000 training images, validation every epoch. .devdata/ carried.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/seeds
exec > >(tee "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1 MNIST_DATA_DIR=/tmp/data
mkdir -p /tmp/data/MNIST/raw && for f in .devdata/*.gz; do gunzip -c "$f" > /tmp/data/MNIST/raw/$(basename "$f" .gz); done
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__)"
nvidia-cuda-mps-control -d && echo "MPS on"
timeout -k 5 ${LIMIT:-170} python3 experiments/stacked/seeds.py --device cuda --model under3762 --first-seed 201 \
  --procs 14 --copies 1 --no-tf32 --out /tmp/seeds
tar czf "$OUT/seeds-tf32off.tgz" -C /tmp/seeds .
ls /tmp/seeds
