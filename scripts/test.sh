#!/usr/bin/env bash
# The test command: set up if needed, then the unit tests and every notebook under the smoke profile (nbval).
# Outputs of the smoke runs go to a temporary folder, never over the committed figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${COLLM_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  COLLM_DATA_DIR=$(cd ../shared/data && pwd)
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export COLLM_DATA_DIR COLLM_PROFILE=smoke COLLM_WORK_DIR="$scratch/work" COLLM_FIGURES_DIR="$scratch/figures"
export COLLM_CACHE_DIR=${COLLM_CACHE_DIR:-$HOME/.cache/collm} TQDM_MININTERVAL=30 COLLM_PROGRESS=0
# smoke numbers are held to fp32 expectations on every CPU, with or without bf16 units; bf16 against fp32 is
# tests/test_precision.py (set COLLM_PRECISION to run the notebooks in another precision)
export COLLM_PRECISION=${COLLM_PRECISION:-fp32}
# the real-model bf16 tests run on every CPU: emulated (slow, so they are small) where there are no bf16 units
export COLLM_TEST_BF16=${COLLM_TEST_BF16:-1}
.venv/bin/python -m pytest -q -p no:cacheprovider tests notebooks --nbval-lax "$@"
