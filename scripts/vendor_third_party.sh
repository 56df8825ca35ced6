#!/usr/bin/env bash
# Re-create runtime/third_party/ (the C sources ember-server is built from: civetweb for HTTP,
# cJSON for JSON) from Debian 13's source packages, byte for byte.
#
#   scripts/vendor_third_party.sh            download, check, patch, rewrite runtime/third_party/
#   scripts/vendor_third_party.sh --check    the same into a temporary folder, then compare it
#                                            with runtime/third_party/ (exit 1 on a difference)
#   --downloads DIR                          keep the tarballs in DIR (and reuse them from there)
#
# For each library: fetch Debian's upstream tarball (.orig) and its debian/ tarball from
# deb.debian.org, refuse any whose sha256 differs from the pin below, unpack both, apply, in the
# order of debian/patches/series, the patches that touch a file we take (the others must touch
# none: checked), and copy those files and the upstream licence into runtime/third_party/<dir>/.
# SOURCES.json records what was taken from where (versions, URLs, sha256s of the tarballs, the
# patches and every vendored file); tests/unit/test_third_party.py checks the files against it
# without the network. runtime/third_party/README.md and .gitattributes are written by hand and
# left alone.
#
# Needs bash, curl, sha256sum, tar with xz, patch and python3 (for the JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_POOL="http://deb.debian.org/debian/pool/main"
DEST="runtime/third_party"

mode="write"
downloads=""
while (($#)); do
  case "$1" in
    --check) mode=check ;;
    --downloads) downloads="${2:?--downloads needs a folder}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "vendor_third_party.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in curl sha256sum tar xz patch python3; do
  command -v "$tool" >/dev/null || { echo "vendor_third_party.sh: needs $tool" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -n "$downloads" ]] || downloads="$work/downloads"
mkdir -p "$downloads" "$work/out"
records="$work/records.tsv"   # kind<TAB>component<TAB>fields..., read by the JSON writer below
: >"$records"

# fetch URL SHA256: the file in $downloads, downloaded unless a copy with that sha256 is there
fetch() {
  local url=$1 sum=$2 file
  file="$downloads/$(basename "$url")"
  if [[ ! -f "$file" ]] || ! echo "$sum  $file" | sha256sum -c --status; then
    curl -fsSL --retry 3 -o "$file.part" "$url"
    mv "$file.part" "$file"
  fi
  if ! echo "$sum  $file" | sha256sum -c --status; then
    echo "vendor_third_party.sh: $url: sha256 $(sha256sum "$file" | cut -d' ' -f1), pinned $sum" >&2
    exit 1
  fi
  printf '%s\n' "$file"
}

# touched PATCH: the files a patch changes, relative to the source root (-p1)
touched() {
  sed -n 's/^+++ \([^[:space:]]*\).*/\1/p' "$1" | cut -d/ -f2- | sort -u
}

# vendor NAME DIR UPSTREAM_URL VERSION DEB_VERSION ORIG ORIG_SHA DEBTAR DEBTAR_SHA
#        FILES PATCHES   (FILES: "source-path:vendored-name ..."; PATCHES: "name|type|resolves|what;...")
vendor() {
  local name=$1 dir=$2 upstream=$3 version=$4 deb_version=$5 orig_url=$6 orig_sum=$7
  local deb_url=$8 deb_sum=$9 files=${10} patches=${11}
  local orig deb src
  orig=$(fetch "$orig_url" "$orig_sum")
  deb=$(fetch "$deb_url" "$deb_sum")
  mkdir -p "$work/src/$name"
  tar -xf "$orig" -C "$work/src/$name"
  src=$(find "$work/src/$name" -mindepth 1 -maxdepth 1 -type d)
  [[ $(wc -l <<<"$src") == 1 ]] || { echo "$orig: not one top folder" >&2; exit 1; }
  tar -xf "$deb" -C "$src"
  {
    printf 'component\t%s\t%s\t%s\t%s\t%s\n' "$name" "$dir" "$upstream" "$version" "$deb_version"
    printf 'tarball\t%s\t%s\t%s\n' "$name" "$orig_url" "$orig_sum"
    printf 'tarball\t%s\t%s\t%s\n' "$name" "$deb_url" "$deb_sum"
  } >>"$records"

  local -A taken=() plan=()
  local pair spec
  for pair in $files; do taken[${pair%%:*}]=1; done
  IFS=';' read -r -a specs <<<"$patches"
  for spec in "${specs[@]}"; do plan[${spec%%|*}]=$spec; done

  # every patch of the series: applied when it is in the plan; otherwise it must touch none
  # of the files we take, or the plan is out of date
  local patch file hit applied=()
  while IFS= read -r patch; do
    patch=${patch%%#*}; patch=${patch%% *}
    [[ -n "$patch" ]] || continue
    file="$src/debian/patches/$patch"
    if [[ -n "${plan[$patch]:-}" ]]; then
      (cd "$src" && patch -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch -s <"$file")
      IFS='|' read -r _ ptype resolves what <<<"${plan[$patch]}"
      printf 'patch\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$patch" \
        "$(sha256sum "$file" | cut -d' ' -f1)" "yes" "$ptype" "$resolves" "$what" >>"$records"
      applied+=("$patch")
    else
      hit=""
      while IFS= read -r rel; do [[ -n "${taken[$rel]:-}" ]] && hit+=" $rel"; done < <(touched "$file")
      if [[ -n "$hit" ]]; then
        echo "vendor_third_party.sh: $name: debian/patches/$patch changes$hit, which is" \
             "vendored, but is not in the plan of this script" >&2
        exit 1
      fi
      printf 'patch\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$patch" \
        "$(sha256sum "$file" | cut -d' ' -f1)" "no" "" "" \
        "changes only $(touched "$file" | paste -sd' ' - | sed 's/ /, /g'), none of it vendored" >>"$records"
    fi
  done <"$src/debian/patches/series"
  for spec in "${!plan[@]}"; do
    if [[ ! " ${applied[*]} " == *" $spec "* ]]; then
      echo "vendor_third_party.sh: $name: $spec is not in debian/patches/series" >&2
      exit 1
    fi
  done

  mkdir -p "$work/out/$dir"
  for pair in $files; do
    cp "$src/${pair%%:*}" "$work/out/$dir/${pair#*:}"
    chmod 0644 "$work/out/$dir/${pair#*:}"
    printf 'file\t%s\t%s/%s\t%s\n' "$name" "$dir" "${pair#*:}" "${pair%%:*}" >>"$records"
  done
}

# civetweb 1.16: the server core and the .inl files civetweb.c includes whatever the options
# (md5, sort, match, response, handle_form); the others (TLS, Lua, Duktape, zlib, HTTP/2,
# websockets, timers) are only included for features ember-server leaves off.
vendor civetweb civetweb "https://github.com/civetweb/civetweb" "1.16" "1.16+dfsg-2+deb13u1" \
  "$DEBIAN_POOL/c/civetweb/civetweb_1.16+dfsg.orig.tar.xz" \
  41dbfd68cd3b914ce440a5813f21058813b61a972600cc04fb8233a0d2d04fe4 \
  "$DEBIAN_POOL/c/civetweb/civetweb_1.16+dfsg-2+deb13u1.debian.tar.xz" \
  1e5f56ab5592026dc5cd90302cfaa5a66b889f8959440e64dc0e373d18165ebb \
  "src/civetweb.c:civetweb.c include/civetweb.h:civetweb.h src/md5.inl:md5.inl
   src/sort.inl:sort.inl src/match.inl:match.inl src/response.inl:response.inl
   src/handle_form.inl:handle_form.inl LICENSE.md:LICENSE.md" \
  "webdav-uploads|unofficial||Debian (from Orthanc): mg_disable_keep_alive() and the WebDAV methods LOCK, UNLOCK, PROPPATCH;CVE-2025-55763.patch|backport|CVE-2025-55763|heap overflow in the directory URI slash redirection (upstream c584455 and d532196);0001-Make-parsing-of-URL-encoded-forms-more-robust.patch|backport|CVE-2025-9648|infinite loop in mg_handle_form_request on a malformed URL-encoded form (upstream e947ee9)"

# cJSON 1.7.18: the parser and printer (cJSON_Utils, JSON Pointer/Patch, is not used).
vendor cJSON cjson "https://github.com/DaveGamble/cJSON" "1.7.18" "1.7.18-3.1+deb13u1" \
  "$DEBIAN_POOL/c/cjson/cjson_1.7.18.orig.tar.gz" \
  3aa806844a03442c00769b83e99970be70fbef03735ff898f4811dd03b9f5ee5 \
  "$DEBIAN_POOL/c/cjson/cjson_1.7.18-3.1+deb13u1.debian.tar.xz" \
  f6daf5b8b2ccd6ca1f96e4b6fcd7a0e3907f820f75b197367b2ced345d01881d \
  "cJSON.c:cJSON.c cJSON.h:cJSON.h LICENSE:LICENSE" \
  "0001-allocate-memory-for-the-temporary-buffer.patch|backport|CVE-2023-26819|parse_number: a heap buffer for numbers longer than the stack buffer, so valid long numbers are no longer rejected (upstream 6d373bf)"

# SOURCES.json from the records, in a fixed order and format.
python3 - "$records" "$work/out" <<'EOF'
import hashlib
import json
import sys
from pathlib import Path

records, out = Path(sys.argv[1]), Path(sys.argv[2])
# Where each licence goes in the release archives and wheels (kiln.package.vendored).
SHIP_AS = {"civetweb": "civetweb.md", "cJSON": "cJSON.txt"}
LICENSE = {"civetweb": "MIT", "cJSON": "MIT"}
components: dict[str, dict] = {}
for line in records.read_text(encoding="utf-8").splitlines():
    kind, name, *f = line.split("\t")
    if kind == "component":
        directory, upstream, version, deb_version = f
        components[name] = {
            "name": name, "directory": directory, "upstream": upstream, "version": version,
            "license": LICENSE[name], "debian": {"source": name.lower(), "version": deb_version,
                                                 "release": "13 (trixie)"},
            "tarballs": [], "patches": [], "files": [],
        }
    elif kind == "tarball":
        components[name]["tarballs"].append({"url": f[0], "sha256": f[1]})
    elif kind == "patch":
        patch, sha, applied, ptype, resolves, what = f
        item = {"name": patch, "sha256": sha, "applied": applied == "yes", "what": what}
        if applied == "yes":
            item["type"] = ptype
            item["resolves"] = resolves or None
        components[name]["patches"].append(item)
    elif kind == "file":
        path, origin = f
        sha = hashlib.sha256((out / path).read_bytes()).hexdigest()
        components[name]["files"].append({"path": path, "from": origin, "sha256": sha})
        if Path(path).name.startswith("LICENSE"):
            components[name]["license_file"] = path
            components[name]["license_ship_as"] = SHIP_AS[name]
doc = {
    "about": "C sources vendored under runtime/third_party/ for ember-server, taken from Debian "
             "source packages with the Debian patches that change them. Written by "
             "scripts/vendor_third_party.sh; checked by tests/unit/test_third_party.py.",
    "components": list(components.values()),
}
(out / "SOURCES.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
EOF

if [[ "$mode" == check ]]; then
  if diff -r --exclude=README.md --exclude=.gitattributes "$work/out" "$DEST" >"$work/diff"; then
    echo "runtime/third_party/ is what the pinned sources and patches make"
  else
    cat "$work/diff" >&2
    echo "vendor_third_party.sh: runtime/third_party/ differs from what the pinned sources" \
         "and patches make (run without --check to rewrite it)" >&2
    exit 1
  fi
else
  mkdir -p "$DEST"
  for item in "$work/out"/*; do
    rm -rf "${DEST:?}/$(basename "$item")"
    cp -R "$item" "$DEST/"
  done
  echo "wrote $DEST/ ($(cd "$work/out" && find . -type f | wc -l) files)"
fi
