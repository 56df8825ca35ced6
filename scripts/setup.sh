#!/usr/bin/env bash
# One command on a fresh Debian machine: install what kiln needs, then run the main job.
# The main job today: validate the matrix and print the plan of a local release. It grows into
# `kiln release` as the build and release stages land (see README "Status").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
kiln matrix validate
kiln plan --local --build-number "$(git rev-list --count HEAD 2>/dev/null || echo 0)"
