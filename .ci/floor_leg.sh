#!/usr/bin/env bash
# Dependency-floor CI leg for optax_l1: run the core test suite at the oldest verified
# (jax, jaxlib, optax) and test tools pinned to the versions verified with them.
# Call from the repository root. Env overrides: PYTHON (default python3), FLOOR_VENV,
# PYTEST_WORKERS (default 2; -n for pytest-xdist), NICE (default none; e.g. "nice -n 19").
set -euo pipefail

PYTHON="${PYTHON:-python3}"
VENV="${FLOOR_VENV:-/tmp/optax_l1_floor_venv}"
WORKERS="${PYTEST_WORKERS:-2}"
NICE="${NICE-}"

# The floor (verified 2026-12-01: jax 0.7.2 lacks jax.enable_x64, optax 0.2.4 lacks optax.tree).
# Keep pyproject's dependencies at these.
FLOOR_PINS=(
  "jax==0.8.0"
  "jaxlib==0.8.0"
  "optax==0.2.5"
)
# Test tools, pinned to the set verified with the floor (flax/chex are the ones that
# track jax; newer flax requires newer jax).
TOOL_PINS=(
  "flax==0.12.0"
  "chex==0.1.92"
  "numpy==2.4.6"
  "ml_dtypes==0.6.0"
  "scipy==1.17.1"
  "scikit-learn==1.9.1"
  "hypothesis==6.170.17"
  "pytest==9.2.0"
  "pytest-xdist==3.8.0"
)
CORE_TESTS=(
  tests/operators_test.py
  tests/penalty_test.py
  tests/transforms_test.py
  tests/adaptive_test.py
  tests/target_test.py
  tests/step_test.py
  tests/runtime_test.py
  tests/checks_test.py
  tests/tree_test.py
  tests/architecture_test.py
  tests/gauntlet_test.py
  tests/sharding_test.py
  tests/sklearn_lasso_test.py
  tests/suggest_test.py
)

if [[ ! -f pyproject.toml || ! -d optax_l1 ]]; then
  echo "floor_leg.sh: run from the optax_l1 repository root" >&2
  exit 2
fi

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
$NICE "$PY" -m pip install --quiet --upgrade pip
$NICE "$PY" -m pip install --quiet "${FLOOR_PINS[@]}" "${TOOL_PINS[@]}"
$NICE "$PY" -m pip install --quiet --no-deps .

# Fail loudly if the resolver moved anything off the floor.
"$PY" - "${FLOOR_PINS[@]}" <<'PY'
import sys
from importlib.metadata import version
bad = [p for p in sys.argv[1:] if version(p.split("==")[0]) != p.split("==")[1]]
if bad:
    sys.exit(f"floor pins not honoured: {bad}")
print("floor:", ", ".join(f"{p.split('==')[0]} {version(p.split('==')[0])}" for p in sys.argv[1:]))
PY

# flax 0.12.0 (the newest flax for jax 0.8.0) probes two names jax 0.8 deprecates; pytest turns
# warnings into errors, so those two third-party warnings are ignored here (and only here).
$NICE "$PY" -m pytest -p no:cacheprovider -n "$WORKERS" -q -rfEs \
  -W "ignore:jax.array_ref is deprecated:DeprecationWarning" \
  -W "ignore:jax.ArrayRef is deprecated:DeprecationWarning" \
  -k "not coupled_units and not n_of_m" "${CORE_TESTS[@]}"  # structures: main suite only
