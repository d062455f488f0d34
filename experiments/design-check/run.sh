#!/bin/bash
# Is the missing tenth under 3,000 parameters in the design? (issue 26's under3k) Each variant of
# experiments/design-check/make.py trained with under3762's recipe (recipe.json, from
# search/prior.json), 15 epochs on the 50,000 training images, scored on validation every epoch;
# seeds 20001 and up, which no study uses (find's confirm seeds are 10001 and up, its verify seeds
# 1 and up), so a design chosen here meets fresh seeds when find confirms it. One thread per run,
# WORKERS runs at once (default 2). A run whose metrics.json exists is skipped: rerun to resume.
# Usage: MNIST_DATA_DIR=/path/to/data PY=.venv/bin/python experiments/design-check/run.sh "SEEDS" VARIANT...
cd "$(dirname "$0")/../.."
OUTDIR=${OUTDIR:-experiments/design-check}
PY=${PY:-.venv/bin/python}
seeds=$1; shift
# ACT=silu (or gelu, hardswish): every ReLU swapped for it (train_act.py), runs named VARIANT-ACT.
# MAXP: the --max-params of the runs (default 3001; round 4's u3567 runs with MAXP=3600).
# RECIPE=NAME: train with recipe-NAME.json instead of recipe.json, runs named VARIANT-NAME (round 6).
run() {
  local v=$1 seed=$2 name=$1${ACT:+-$ACT}${RECIPE:+-$RECIPE}
  local out="$OUTDIR/runs/$name-seed$2" cmd="study.py"
  [ -n "$ACT" ] && cmd="experiments/design-check/train_act.py $ACT"
  [ -f "$out/metrics.json" ] && return 0
  mkdir -p "$OUTDIR/runs"
  $PY $cmd train --arch experiments/design-check/specs/$v.json --recipe experiments/design-check/recipe${RECIPE:+-$RECIPE}.json \
    --seed $seed --threads 1 --max-params ${MAXP:-3001} --out "$out" > "$out.log" 2>&1
  echo "$(date -u +%H:%M) $name seed $seed exit $?"
}
for seed in $seeds; do
  for v in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "${WORKERS:-2}" ]; do sleep 5; done
    run $v $seed &
  done
done
wait
