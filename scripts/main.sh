#!/usr/bin/env bash
# The main job: set up if needed, then run every notebook in order for a profile (default: cpu) with the
# embedded default LLM. Executed copies go to data/notebook_runs/<profile>/, figures and tables to figures/.
#   bash scripts/main.sh                      # cpu profile
#   COLLM_PROFILE=gpu bash scripts/main.sh    # the full protocol on one GPU
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${COLLM_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export COLLM_DATA_DIR=$(cd ../shared/data && pwd)
fi
.venv/bin/python -m collm_lib.runner --profile "${COLLM_PROFILE:-cpu}" "$@"
