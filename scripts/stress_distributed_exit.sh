#!/usr/bin/env bash
# Runs the 2-process (gloo, CPU) training of tests/train/tiny_stage.py N times, optionally beside LOAD busy loops,
# and counts the runs that fail. It found the exit-time SIGABRT that src/unclip/train/process_exit.py avoids:
# 5 of 60 runs under LOAD=2 before that fix, 0 of 80 after.
#
#   scripts/stress_distributed_exit.sh [N=30]        LOAD=2 to load the CPU as CI's machine may be
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-30}
LOAD=${LOAD:-0}
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 "$LOAD"); do (while :; do :; done) & done
"$PY" -c "import sys; sys.path.insert(0, 'tests/train'); from pathlib import Path; from tiny_stage import make_folder; \
make_folder(Path('$work/data'), n=24, corrupt=1)"
fails=0
for i in $(seq 1 "$N"); do
  rm -rf "$work/run"
  if ! PYTHONPATH=src OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 \
      --master_port $((29500 + RANDOM % 2000)) tests/train/tiny_stage.py train tiny --data "folder:$work/data" \
      --no-progress --steps 12 --batch-size 8 --set model.dropout=0 --out "$work/run" > "$work/log" 2>&1; then
    fails=$((fails + 1))
    echo "run $i failed:"; grep -m 3 "terminate\|Error" "$work/log"
  fi
done
echo "$fails of $N runs failed"
[ "$fails" -eq 0 ]
