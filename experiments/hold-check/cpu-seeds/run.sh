#!/bin/bash
# Fresh seeds of under3762 on this CPU (lone runs: search.stacked with one copy, which is train()),
# to set beside the 28 trained stacked on a GPU with TF32 (fresh-seeds.json): same recipe, same
# split, seeds 129 on, two at a time, one thread each. Run from a checkout pinned to a commit.
# Usage: MNIST_DATA_DIR=... PY=.venv/bin/python OUT=experiments/hold-check/cpu-seeds bash run.sh 129 131 133 135
for first in "$@"; do
  $PY experiments/stacked/seeds.py --device cpu --model under3762 --first-seed $first --procs 2 --copies 1 --out "$OUT"
done
