#!/usr/bin/env bash
# The prepared GPU check, for a session lent an NVIDIA GPU: run it at once, from the repo root.
#
#     benchmarks/gpu_check.sh            # about 3-5 minutes on a fresh machine (set-up included)
#
# 1. set-up (make setup: the CUDA build of torch when nvidia-smi works), and a check that torch
#    sees the GPU;
# 2. the CUDA tests (pytest -m gpu): CTF on CUDA = CPU, one E-step on CUDA = CPU, a batch job on
#    CUDA agrees with the CPU (tests/engine/test_cuda.py);
# 3. E-step throughput at box 128, K = 50, 6 Å (benchmarks/estep_throughput.py);
# 4. a 100,000-particle batch job, K = 50, box 64 (benchmarks/big_batch_job.py).
# Each step is timed and has its own time limit; the figures are printed as JSON lines and
# collected in $GPU_CHECK_OUT (default: gpu_check.jsonl in the work folder).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
WORK=${GPU_CHECK_DIR:-$(mktemp -d -t cryoclass_gpu_check.XXXX)}
OUT=${GPU_CHECK_OUT:-$WORK/gpu_check.jsonl}
PY=.venv/bin/python
mkdir -p "$WORK"
: > "$OUT"

step() {  # step NAME LIMIT_S COMMAND...: run, time, stop at LIMIT_S
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  if timeout "$limit" "$@"; then status=ok; else status="failed ($?)"; FAILED=1; fi
  echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $(( $(date +%s) - t0 ))}" \
    | tee -a "$OUT"
}
FAILED=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || { echo "gpu_check: no working nvidia-smi: not a GPU machine"; exit 2; }
step "set-up (make setup)" 150 make setup
$PY -c "import torch, sys; ok = torch.cuda.is_available(); \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
torch.cuda.get_device_name(0) if ok else 'NOT AVAILABLE'); sys.exit(0 if ok else 3)" \
  || { echo "gpu_check: torch cannot use the GPU (CPU build installed? rm -rf .venv)"; exit 3; }
step "CUDA tests (pytest -m gpu)" 90 $PY -m pytest -q -m gpu -p no:cacheprovider tests
step "E-step throughput, box 128, K 50, 6 A" 60 \
  bash -c "$PY benchmarks/estep_throughput.py --box 128 --apix 1.5 --classes 50 --res 6 --n 5000 \
           | tee $WORK/estep_throughput.json"
step "batch job, 100,000 particles, K 50" 180 \
  bash -c "$PY benchmarks/big_batch_job.py --work $WORK --n 100000 --base 5000 -K 50 \
           | tail -1 | tee -a $OUT"
echo "gpu_check: $(( $(date +%s) - START )) s in all; figures in $OUT"
exit $FAILED
