#!/bin/bash
# Depthwise-separable convolutions, first look: sep-s1 (3,636 parameters; under5k's 3-block layout,
# every 3x3 after the first as depthwise 3x3 + 1x1, widths 8 / 16-20-24 / 24-24) trained with
# models/under5k's recipe (experiments/under5k-extra/recipe.json) on the validation split (50,000 /
# 10,000), seeds 10001 and 10002 (the confirm stage's), one thread per run, both at once.
# Compare: under5k itself (4,736) in experiments/ema-check/seed1000?-ema0.log, same seeds and recipe.
cd "$(dirname "$0")/../.."
for seed in 10001 10002; do
  .venv/bin/python study.py train --arch experiments/separable-check/s1.json --recipe experiments/under5k-extra/recipe.json \
    --seed $seed --threads 1 --max-params 4000 --out experiments/separable-check/s1-seed$seed \
    > experiments/separable-check/s1-seed$seed.log 2>&1 &
done
wait
