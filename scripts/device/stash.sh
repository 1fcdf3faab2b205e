#!/usr/bin/env bash
# On the GPU box, call 1 of 2: keep upload 1 in /tmp (it survives while the machine stays warm, ~30 s between calls).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /tmp/collm-stash
cp -r .dev/upload1/. /tmp/collm-stash/
ls -la /tmp/collm-stash
