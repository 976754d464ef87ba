#!/usr/bin/env bash
# The GPU run: step overhead, memory and target sparsity on one accelerator, in a few minutes.
#
# Run from the repository root on a machine with a GPU and a CUDA build of jax installed
# (pip install -U "jax[cuda12]"), or let it install one into a fresh venv with INSTALL=1:
#
#     bash benchmarks/gpu.sh                # figures go to out/gpu/ (JSON and logs)
#     INSTALL=1 bash benchmarks/gpu.sh      # first: python -m venv + pip install .[bench] jax[cuda12]
#     QUICK=1 bash benchmarks/gpu.sh        # every script's --quick (a smoke run, any machine)
#
# Expected on a GPU: the prox adds no bytes to a memory-bound step, so l1_prox's ratio to its
# base optimizer should be about 1.0. Record the figures in benchmarks/RESULTS.md with the GPU
# named (nvidia-smi -L is printed first). Nothing in the tests depends on a GPU.
set -euo pipefail

OUT="${OUT:-out/gpu}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"

if [[ "${INSTALL:-0}" == "1" ]]; then
  "$PYTHON" -m venv "$OUT/venv"
  # shellcheck disable=SC1091
  . "$OUT/venv/bin/activate"
  PYTHON=python
  pip install -q ".[bench]" "jax[cuda12]"
fi

(nvidia-smi -L || echo "no nvidia-smi") | tee "$OUT/device.txt"
"$PYTHON" -c "import jax; print(jax.devices())" | tee -a "$OUT/device.txt"

run() {  # name, args...: one benchmark, its JSON and log under $OUT
  local name=$1
  shift
  echo "== $name $*"
  "$PYTHON" "benchmarks/$name.py" "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log"
}

if [[ "${QUICK:-0}" == "1" ]]; then
  run step_overhead --quick
  run memory --quick
  run target_sparsity --quick
  exit 0
fi

# Step overhead: the layouts (16M in one leaf, 8M in 128 leaves), 10 interleaved pairs.
run step_overhead --reps 10 --target-every 1,100 --target-every-plain 100
# Memory: peak bytes at 100M parameters (float32 and bfloat16).
run memory --params 100000000
# Target sparsity on the digits MLP (accuracy; on a GPU mostly a check that it runs and agrees).
run target_sparsity --seeds 3
echo "done: $OUT"
