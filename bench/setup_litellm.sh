#!/usr/bin/env bash
# Create bench/.venv-litellm with LiteLLM's proxy, kept apart from the project's own environment.
# Usage: bash bench/setup_litellm.sh [PYTHON]   (PYTHON defaults to python3; needs 3.9+)
# bench/run.py uses it when bench/.venv-litellm/bin/litellm exists, and skips LiteLLM otherwise.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-litellm"
python="${1:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet 'litellm[proxy]'
"$venv/bin/litellm" --version || true
echo "LiteLLM proxy installed in $venv"
