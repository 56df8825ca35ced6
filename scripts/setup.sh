#!/usr/bin/env bash
# One command on a fresh Debian machine: install what kiln needs, then run the main job, a local
# release: build, verify and package every entry that builds on this host, then assemble a
# signed release in ./release (archives, wheels, manifest.json, SHA256SUMS + minisign signature,
# SBOM, RELEASE_NOTES.md, install.sh / install.ps1).
#
# Signing key: $KILN_SIGNING_KEY (a minisign secret key file) when set; otherwise a throwaway
# key is made for this run (setup says so) and deleted when it ends: its public key is the
# release's minisign.pub. Windows binaries are Authenticode-signed with a throwaway
# certificate kept in kiln's cache unless KILN_AUTHENTICODE_KEY/_CERT name one (the release
# notes say which). The ci-only entries (ROCm
# and SYCL: their compilers are in no registry reachable from here) are listed as missing in the
# notes; every other entry, the GPU ones included, is built, verified and released.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
kiln matrix validate

key="${KILN_SIGNING_KEY:-}"
if [[ -z "$key" ]]; then
  keydir=$(mktemp -d)
  trap 'rm -rf "$keydir"' EXIT
  minisign -G -W -p "$keydir/throwaway.pub" -s "$keydir/throwaway.key" >/dev/null
  key="$keydir/throwaway.key"
  echo "setup: KILN_SIGNING_KEY is not set: signing with a throwaway key made for this run"
fi

# ci-only entries build on their CI runners (the generated release workflow).
kiln release --out release --signing-key "$key" --no-git-tag --allow-dirty \
  --allow-missing '*-rocm-*' '*-sycl-*' 'win-hip-*'
