#!/bin/bash
# bf16 against fp32 on validation: two confirmed trials retrained with precision "bf16", their own
# recipes otherwise unchanged, on the search split (50,000 / 10,000) with the three seeds find used
# for them (the search run's seed = the trial number, then confirm's 10001 and 10002), so
# `mnist-nas report` on each study holds the fp32 side (same seeds, consistency score per seed):
#   lin6: find-4k-lin trial 6 (3,976 params, separable, weight average 0.999), fp32 99.23 / 99.21 / 99.28
#   8k2:  find-8k trial 2 (7,416, model6's shape = models/under8k-plain),            fp32 99.33 / 99.21 / 99.33
# One thread per run, the two trials side by side on the 2 cores.
# Usage: MNIST_DATA_DIR=/path/to/data experiments/bf16-check/run.sh
cd "$(dirname "$0")/../.."
d=experiments/bf16-check
lane() {  # tag, budget, seeds...
  local tag=$1 budget=$2; shift 2
  for seed in "$@"; do
    .venv/bin/python study.py train --arch $d/$tag.spec.json --recipe $d/$tag.recipe.json --seed $seed \
      --threads 1 --max-params $budget --out $d/$tag-seed$seed > $d/$tag-seed$seed.log 2>&1
  done
}
lane lin6 4000 6 10001 10002 &
lane 8k2 8000 2 10001 10002 &
wait
