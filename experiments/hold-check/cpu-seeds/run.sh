#!/bin/bash
# Fresh seeds of a shipped model on this CPU (lone runs: search.stacked with one copy, which is
# train()): under3762's, to set beside the 28 trained stacked on a GPU with TF32 (fresh-seeds.json),
# and a second model's (MODEL=under4k: its GPU seeds were cut at epoch 8). Same recipe and split
# as the model's, seeds FIRST and FIRST+1 two at a time, one thread each. Run from a checkout
# pinned to a commit.
# Usage: MNIST_DATA_DIR=... PY=.venv/bin/python OUT=experiments/hold-check/cpu-seeds [MODEL=under3762] bash run.sh 129 131 133 135
for first in "$@"; do
  $PY experiments/stacked/seeds.py --device cpu --model ${MODEL:-under3762} --first-seed $first --procs 2 --copies 1 --out "$OUT"
  echo "$(date -u +%H:%M) ${MODEL:-under3762} seeds $first-$((first + 1)) done"
done
