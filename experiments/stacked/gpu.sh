#!/bin/bash
# The one device run for the stacked path (issue 24 part 5, issue 26's check at scale): on a lent GPU
# machine, in the repository root, with .devdata/ (the four MNIST files, gzip'd) carried beside it.
# 1. tests/test_stacked.py, its CUDA case included; 2. bench.py: today's path (processes under MPS,
# one model each) against stacks, model-epochs per hour, one run; 3. seeds.py: as many seeds of
# under3762 and under4k as the time left allows, 15 epochs each on the validation split.
# Everything lands under $OUT: run.log, bench.json, gpu-util.csv, seeds.tgz (one JSON per process).
# Dry run on a CPU (scratch copy): DEVICE=cpu DATA=/work/shared/data BUDGET=200 QUICK=1 OUT=/tmp/out bash experiments/stacked/gpu.sh
set -u
OUT=${OUT:-/tmp/out}; SEEDS=/tmp/seeds; mkdir -p "$OUT" $SEEDS  # at most 8 files come back: seeds travel as one tarball
T0=$(date +%s); BUDGET=${BUDGET:-540}
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
exec > >(tee "$OUT/run.log") 2>&1
PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 MNIST_DATA_DIR=${DATA:-/tmp/data}
[ -n "${DATA:-}" ] || { mkdir -p /tmp/data/MNIST/raw && for f in .devdata/*.gz; do gunzip -c "$f" > /tmp/data/MNIST/raw/$(basename "$f" .gz); done; }
nvidia-smi -L 2>/dev/null; nproc; git log -1 --format='commit %h %cd' 2>/dev/null
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 4
if [ "$DEVICE" = cuda ]; then
  nvidia-cuda-mps-control -d && timeout 60 $PY -c "import torch; torch.zeros(1, device='cuda'); print('MPS on')" \
    || { echo quit | nvidia-cuda-mps-control; echo "MPS off"; }
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT/gpu-util.csv" 2>/dev/null &
fi
if [ -n "${QUICK:-}" ]; then IMAGES=2000; EPOCHS=2; LAYOUTS=1x1,2x1,1x2; SEED_EPOCHS="--epochs 2 --images 2000"; RESERVE=60
else IMAGES=10000; EPOCHS=3; LAYOUTS=1x1,14x1,1x16,1x64,4x32,14x8; SEED_EPOCHS=""; RESERVE=220; fi

echo "== tests ($(left)s left)"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_stacked.py 2>&1 | tail -4

echo "== bench ($(left)s left)"
timeout $(( $(left) - RESERVE )) $PY experiments/stacked/bench.py --device $DEVICE --model under3762 \
  --images $IMAGES --epochs $EPOCHS --layouts $LAYOUTS --json "$OUT/bench.json"

# the seeds run takes the fastest stacked layout the bench measured, with as many copies per process
# as the time left allows for two models (the bench's rate, at 10,000 images and a full validation
# each epoch, understates a 50,000-image epoch's: sizing by it is cautious)
read P C RATE < <($PY - $(left) "$OUT/bench.json" <<'PYEOF'
import json, sys
left, path = int(sys.argv[1]), sys.argv[2]
try: rows = [r for r in json.load(open(path)) if not r['layout'].endswith('x1')]
except Exception: rows = []
r = max(rows, key=lambda r: r['model_epochs_per_hour'], default={'layout': '4x16', 'model_epochs_per_hour': 0})
p, c = (int(v) for v in r['layout'].split('x'))
# (2026-11-30 this floored at 2 copies on 14 processes: 28 seeds each where ~11 fitted, under4k cut)
fit = int(r['model_epochs_per_hour'] * max(left - 60, 0) / 2 / 3600 / 15 * 0.8)  # seeds per model
p = max(1, min(p, fit // 2))  # at least 2 copies a process; fewer processes, not more seeds than fit
print(p, max(2, min(c, fit // p)), int(r['model_epochs_per_hour']))
PYEOF
)
FIRST=101
for MODEL in under3762 under4k; do
  L=$(left); [ "$L" -gt 40 ] || { echo "no time for $MODEL"; break; }
  timeout -k 5 $(( L - 25 )) $PY experiments/stacked/seeds.py --device $DEVICE --model $MODEL \
    --first-seed $FIRST --procs $P --copies $C --out $SEEDS $SEED_EPOCHS
  tar czf "$OUT/seeds.tgz" -C $SEEDS .
done
ls $SEEDS
echo "done after $(( $(date +%s) - T0 ))s"
