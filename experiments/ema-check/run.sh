#!/bin/bash
# Weight averaging (ema) vs none, side by side on this machine's 2 cores: models/under5k's design and
# recipe (experiments/under5k-extra/), validation split (50,000 / 10,000), seeds 10001 and 10002 (the
# confirm stage's), one thread per run, two runs at a time.
cd "$(dirname "$0")/../.."
for seed in 10001 10002; do
  for ema in 0 0.999; do
    .venv/bin/python study.py train --arch experiments/under5k-extra/spec.json --recipe experiments/under5k-extra/recipe.json \
      --seed $seed --ema $ema --threads 1 --max-params 5000 --out experiments/ema-check/seed$seed-ema$ema \
      > experiments/ema-check/seed$seed-ema$ema.log 2>&1 &
  done
  wait
done
