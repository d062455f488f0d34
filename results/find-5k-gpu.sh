#!/bin/bash
# How results/find-5k-gpu.db was made: one run on a lent GPU machine (one NVIDIA H100, 16 cores),
# whose python3 holds torch but not optuna and friends. Carried beside the repo: .whl/ (optuna
# 5.0.0, alembic, colorlog, greenlet, Mako, SQLAlchemy, torchinfo wheels for Python 3.12) and
# .devdata/ (the four MNIST files, gzip'd). What it writes under $OUT comes back: the log, the
# study's database and its artifacts as a tarball, snapshotted every 30 s so a cut-off run still
# returns a resumable study. Resume anywhere (CPU too) with the same `find` command: finished
# stages are kept, a stage stopped mid-way keeps its finished seeds.
set -u
# Dry run here: PY=.venv/bin/python DEVICE=cpu SKIP_PIP=1 DATA=... WORKERS=2 BUDGET=150 SEARCH_SECONDS=30
#   EXTRA="--train-limit 2000 --epochs 3" OUT=/tmp/out bash results/find-5k-gpu.sh   (in a scratch clone)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s); BUDGET=${BUDGET:-510}   # seconds this script may run in all
exec > >(tee "$OUT/run.log") 2>&1
PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}   # overridable for a dry run on a CPU machine
[ -n "${SKIP_PIP:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MNIST_DATA_DIR=${DATA:-/tmp/data}
[ -n "${DATA:-}" ] || { mkdir -p /tmp/data/MNIST/raw && for f in .devdata/*.gz; do gunzip -c "$f" > /tmp/data/MNIST/raw/$(basename "$f" .gz); done; }
nvidia-smi -L; nproc
$PY -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 4
# MPS lets the workers' small kernels run side by side instead of time-slicing whole contexts
if [ "$DEVICE" = cuda ] && nvidia-cuda-mps-control -d; then
  timeout 60 $PY -c "import torch; torch.zeros(1, device='cuda'); print('MPS on')" || { echo quit | nvidia-cuda-mps-control; echo "MPS off"; }
fi
# the CUDA tests, beside the study (they are small)
[ -n "${SKIP_TESTS:-}" ] || (timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_device.py > "$OUT/pytest.log" 2>&1; echo "pytest exit $?" >> "$OUT/pytest.log") &
DB=results/find-5k-gpu.db; ART=results/find-5k-gpu.artifacts
snap() {
  [ -f $DB ] || return 0
  $PY -c "import sqlite3; s = sqlite3.connect('$DB', timeout=60); d = sqlite3.connect('$OUT/db.tmp'); s.backup(d); d.close()" \
    && mv "$OUT/db.tmp" "$OUT/find-5k-gpu.db"
  [ -d $ART ] && tar czf "$OUT/art.tmp" $ART && mv "$OUT/art.tmp" "$OUT/find-5k-gpu.artifacts.tgz"
  return 0
}
(while sleep 30; do snap; done) &
SNAPPER=$!
LEFT=$(( BUDGET - ($(date +%s) - T0) - 25 ))
echo "find gets ${LEFT}s"
timeout -s INT -k 20 $LEFT $PY study.py find --device $DEVICE --workers ${WORKERS:-14} ${EXTRA:-} \
  --study-name find-5k-gpu --storage sqlite:///$DB --space results/space-under-5k-gpu.json \
  --enqueue results/points-under-5k-gpu.json --no-enqueue --max-params 5000 \
  --n-trials 400 --timeout ${SEARCH_SECONDS:-250} --top 4 --seeds 3 --min-robust 99.1 -o models/under5k.pt2
echo "find exit $? after $(( $(date +%s) - T0 ))s"
kill $SNAPPER 2>/dev/null; wait $SNAPPER 2>/dev/null
snap
[ -f models/under5k.pt2 ] && tar czf "$OUT/under5k.tgz" models/under5k.*
echo "done after $(( $(date +%s) - T0 ))s"
