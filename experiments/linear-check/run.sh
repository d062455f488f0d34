#!/bin/bash
# Linear depthwise (Xception's form) against the separable pair with its own ReLU/BN: find-4k-sep's
# trials 44, 28 and 29 (3,212 / 3,917 / 3,884 parameters) with every depthwise 3x3 made linear
# (3,028 / 3,675 / 3,642:
# the depthwise BNs are gone), each with its own trial's recipe, on the validation split (50,000 /
# 10,000), seeds 10001 and 10002: the seeds find's confirm stage retrains the originals with, so
# `mnist-nas report --study-name find-4k-sep --storage sqlite:///results/find-4k-sep.db` holds the
# other side of the comparison (same code, same seeds). One thread per run, two runs at once.
# Usage: MNIST_DATA_DIR=/path/to/data experiments/linear-check/run.sh 28   (or 44, 29)
cd "$(dirname "$0")/../.."
n=${1:?trial number: 44, 28 or 29}
for seed in 10001 10002; do
  .venv/bin/python study.py train --arch experiments/linear-check/trial$n-linear.json \
    --recipe experiments/linear-check/trial$n-recipe.json --seed $seed --threads 1 --max-params 4000 \
    --out experiments/linear-check/trial$n-linear-seed$seed > experiments/linear-check/trial$n-linear-seed$seed.log 2>&1 &
done
wait
