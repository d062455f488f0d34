#!/bin/bash
# models/under4k (find-4k-lin trial 26) retrained on all 60,000 with seeds beyond verify's 1-3, the
# test set scored every epoch, as verify does: whether a user's next seed holds too. These are
# test-set uses of an already chosen model (nothing is chosen by them). One thread per run.
# Usage: MNIST_DATA_DIR=/path/to/data experiments/under4k-extra/run.sh 4 [5 ...]
cd "$(dirname "$0")/../.."
d=experiments/under4k-extra
for seed in "$@"; do
  .venv/bin/python study.py train --arch $d/spec.json --recipe $d/recipe.json --final --seed $seed \
    --threads 1 --max-params 4000 --out $d/seed$seed > $d/seed$seed.log 2>&1 &
done
wait
