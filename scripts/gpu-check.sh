#!/usr/bin/env bash
# gpu-check.sh - the prepared check of ember's CUDA backend on a machine with an NVIDIA GPU.
#
# For each CUDA version (12.4 and 13.3 by default) it takes ember from the Linux archive
# (ubuntu-cuda-<v>-x64: built here with `kiln build`, or taken from a release directory with
# --release), then for each model:
#   1. runs ember-cli greedy (--temp 0) with --backend cuda and with --backend cpu (the same
#      archive's CPU path) and compares the generated ids (first divergence reported) and the
#      first step's logits (--logits-out): max |cuda - cpu| divided by the CPU logits' range;
#   2. runs ember-bench pp512/tg128 with --backend cuda;
# then llama.cpp's llama-bench (llama.cpp from the llama-cpp-python 0.3.36 sdist, the peer of
# scripts/peer.sh, built with GGML_CUDA=ON) on the same models, and prints one markdown summary
# table, written with a JSON report to --out. Everything runs under one time budget
# (--timeout, default 600 s); steps that no longer fit are skipped and reported.
#
# Logit bound (max |diff| / logit range, first step): 1e-2 for quantized weights (Q4_*, and the
# same for Q5_*, Q6_K, Q8_0), 1e-3 for F32/F16/BF16. GPU kernels sum in another order (and
# may quantize activations), so bit equality with the CPU is not expected; greedy ids must
# still be equal.
#
# Every step appends one JSON line to OUT/results.jsonl; the report is rendered from that file
# alone (--report-only FILE renders a recorded one), so the report is testable without a GPU.
#
# Exit status: 0 all comparisons pass, 1 a comparison or step failed, 2 usage, 3 no NVIDIA GPU
# (nvidia-smi missing or listing none), 4 setup (release refused, model missing, build failed).
# See docs/gpu-check.md. Never yet run on a GPU by this project.
set -euo pipefail

PEER_VERSION=0.3.36
ALL_CUDA="12.4 13.3"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
PROMPT="The capital of France is"
N_PREDICT=48

usage() {
  cat <<'EOF'
usage: scripts/gpu-check.sh [--release DIR] [--model FILE]... [--cuda 12.4,13.3]
                            [--peer DIR|--no-peer] [--out DIR] [--timeout SECONDS]
                            [--dry-run] [-h|--help]
       scripts/gpu-check.sh --report-only RESULTS_FILE [--out DIR]

Check ember's CUDA backend on this machine's NVIDIA GPU: CUDA against CPU tokens and
first-step logits, ember-bench pp512/tg128 against llama.cpp CUDA's llama-bench.

  --release DIR       take ember from DIR's ubuntu-cuda-<v>-x64 archives, verified against
                      DIR/SHA256SUMS first (default: build them with kiln build)
  --model FILE        a GGUF model; repeatable (default: smollm2-135m-q4_1.gguf in
                      $EMBER_MODELS or ~/.cache/ember/models; scripts/models.py fetch)
  --cuda LIST         comma-separated CUDA versions out of 12.4,13.3 (default: both)
  --peer DIR          a llama.cpp CUDA build with llama-bench (DIR/bin/llama-bench or
                      DIR/llama-bench); default: build one from the llama-cpp-python
                      0.3.36 sdist with GGML_CUDA=ON
  --no-peer           no llama.cpp comparison
  --out DIR           where the results, report.md and report.json go (default: build/gpu-check)
  --timeout SECONDS   time budget for everything (default 600); steps past it are skipped
  --dry-run           print the plan, each step's command, and exit; needs no GPU
  --report-only FILE  render the report from a recorded results file (JSON lines) and exit
  -h, --help          this help

Exit status: 0 pass, 1 a check failed, 2 usage, 3 no NVIDIA GPU, 4 setup error.
EOF
}

die_usage() {
  echo "gpu-check: $*" >&2
  usage >&2
  exit 2
}

die_setup() {
  echo "gpu-check: $*" >&2
  exit 4
}

# --- report rendering: results file (JSON lines) -> markdown table + JSON -------------------
# Record kinds: gpu {name, driver, compute_cap}; compare {cuda, model, status, tokens_equal,
# n_tokens, first_divergence, max_logit_diff, bound, reason}; bench {cuda, model, status,
# pp_tok_s, tg_tok_s, reason}; peer {status: built|not built|disabled, reason};
# peer_bench {model, status, pp_tok_s, tg_tok_s, reason}; skipped {step, reason}.
# Prints the markdown on stdout, writes OUT_DIR/report.md and report.json, and returns 0 when
# every compare record passed (and at least one ran), else 1.
render_report() {
  local results=$1 out_dir=$2
  mkdir -p "$out_dir"
  "$PY" - "$results" "$out_dir" <<'PYEOF'
import json, os, sys

results, out_dir = sys.argv[1], sys.argv[2]
recs = []
with open(results, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        line = line.strip()
        if not line:
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"gpu-check: {results}:{n}: not a JSON line ({e})")

def rate(v):
    return "-" if v is None else f"{v:.1f}"

def ratio(a, b):
    return "-" if a is None or b in (None, 0) else f"{a / b:.2f}"

gpu = next((r for r in recs if r.get("kind") == "gpu"), None)
peer = next((r for r in recs if r.get("kind") == "peer"), None)
peer_bench = {r["model"]: r for r in recs if r.get("kind") == "peer_bench"}
bench = {(r["cuda"], r["model"]): r for r in recs if r.get("kind") == "bench"}
compares = [r for r in recs if r.get("kind") == "compare"]
skipped = [r for r in recs if r.get("kind") == "skipped"]

keys = []
for r in recs:
    if r.get("kind") in ("compare", "bench"):
        k = (r["cuda"], r["model"])
        if k not in keys:
            keys.append(k)

rows, lines = [], []
if gpu:
    lines.append(f"GPU: {gpu.get('name')}, driver {gpu.get('driver')}, "
                 f"compute capability {gpu.get('compute_cap')}")
if peer is None:
    peer_line = "peer: not run"
elif peer.get("status") == "built":
    peer_line = f"peer: llama.cpp CUDA (llama-cpp-python {peer.get('version', '')} sdist)".rstrip()
    if peer.get("reason"):
        peer_line += f", {peer['reason']}"
else:
    peer_line = f"peer: {peer.get('status')} ({peer.get('reason', '')})"
lines.append(peer_line)
lines.append("")
lines.append("| CUDA | model | tokens | max logit diff / range | bound | logits | "
             "pp512 tok/s | tg128 tok/s | peer pp512 | peer tg128 | pp ratio | tg ratio |")
lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
passed = bool(compares)
for cuda, model in keys:
    c = next((r for r in compares if (r["cuda"], r["model"]) == (cuda, model)), None)
    b = bench.get((cuda, model), {})
    p = peer_bench.get(model, {})
    ok = False
    if c is None:
        tokens, diff, bound, logits = "not run", "-", "-", "-"
    elif c.get("status") != "ok":
        tokens = f"{c.get('status')} ({c.get('reason', '')})"
        diff, bound, logits = "-", "-", "-"
    else:
        if c.get("tokens_equal"):
            tokens = f"equal ({c.get('n_tokens')})"
        else:
            tokens = f"first divergence at step {c.get('first_divergence')}"
        d, bd = c.get("max_logit_diff"), c.get("bound")
        diff = "-" if d is None else f"{d:.2e}"
        bound = "-" if bd is None else f"{bd:.0e}"
        logits_ok = d is not None and bd is not None and d <= bd
        logits = "within" if logits_ok else "OVER"
        ok = bool(c.get("tokens_equal")) and logits_ok
    if not ok:
        passed = False
    pp, tg = b.get("pp_tok_s"), b.get("tg_tok_s")
    if b and b.get("status") != "ok":
        pp_s = tg_s = f"{b.get('status')}"
    else:
        pp_s, tg_s = rate(pp), rate(tg)
    ppp, ptg = p.get("pp_tok_s"), p.get("tg_tok_s")
    if p and p.get("status") != "ok":
        ppp_s = ptg_s = f"{p.get('status')}"
    else:
        ppp_s, ptg_s = rate(ppp), rate(ptg)
    lines.append(f"| {cuda} | {model} | {tokens} | {diff} | {bound} | {logits} | {pp_s} | "
                 f"{tg_s} | {ppp_s} | {ptg_s} | {ratio(pp, ppp)} | {ratio(tg, ptg)} |")
    rows.append({"cuda": cuda, "model": model, "compare": c, "bench": b or None,
                 "peer_bench": p or None, "pass": ok,
                 "pp_ratio": None if pp is None or not ppp else pp / ppp,
                 "tg_ratio": None if tg is None or not ptg else tg / ptg})
if not keys:
    lines.append("| - | - | no results | - | - | - | - | - | - | - | - | - |")
for s in skipped:
    lines.append(f"skipped: {s.get('step')} ({s.get('reason')})")
lines.append("")
lines.append(f"verdict: {'PASS' if passed else 'FAIL'}")
text = "\n".join(lines) + "\n"
sys.stdout.write(text)
with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
    f.write(text)
report = {"gpu": gpu, "peer": peer, "rows": rows, "skipped": skipped, "pass": passed}
with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
sys.exit(0 if passed else 1)
PYEOF
}

# --- arguments ---------------------------------------------------------------------------------
release="" cuda_list="12.4,13.3" peer_dir="" no_peer=0 out_dir="" timeout_s=600 dry_run=0
report_only=""
models=()
need_value() {
  [[ $# -ge 2 && -n $2 ]] || die_usage "$1 needs a value"
  [[ $2 != -* ]] || die_usage "$1 needs a value, not the option '$2'"
}
while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --release) need_value "$@"; release=$2; shift 2 ;;
    --model) need_value "$@"; models+=("$2"); shift 2 ;;
    --cuda) need_value "$@"; cuda_list=$2; shift 2 ;;
    --peer) need_value "$@"; peer_dir=$2; shift 2 ;;
    --no-peer) no_peer=1; shift ;;
    --out) need_value "$@"; out_dir=$2; shift 2 ;;
    --timeout) need_value "$@"; timeout_s=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --report-only) need_value "$@"; report_only=$2; shift 2 ;;
    *) die_usage "unknown option '$1'" ;;
  esac
done

out_dir=${out_dir:-$ROOT/build/gpu-check}

if [[ -n $report_only ]]; then
  [[ -f $report_only ]] || die_usage "--report-only: '$report_only' is not a file"
  render_report "$report_only" "$out_dir"
  exit $?
fi

[[ $timeout_s =~ ^[1-9][0-9]{0,5}$ ]] \
  || die_usage "--timeout: '$timeout_s' is not a whole number of seconds (1 to 999999)"
[[ $cuda_list =~ ^[^,]+(,[^,]+)*$ ]] \
  || die_usage "--cuda: '$cuda_list' is not one of: ${ALL_CUDA// /, } or a comma-separated list of them"
cudas=()
IFS=, read -r -a _cuda_items <<<"$cuda_list"
[[ ${#_cuda_items[@]} -gt 0 ]] || die_usage "--cuda: empty list (use 12.4, 13.3 or 12.4,13.3)"
for v in "${_cuda_items[@]}"; do
  case " $ALL_CUDA " in
    *" $v "*) ;;
    *) die_usage "--cuda: '$v' is not one of: ${ALL_CUDA// /, }" ;;
  esac
  case " ${cudas[*]:-} " in *" $v "*) ;; *) cudas+=("$v") ;; esac
done
if [[ -n $peer_dir && $no_peer -eq 1 ]]; then
  die_usage "--peer and --no-peer exclude each other"
fi
if [[ -n $release && ! -d $release ]]; then
  die_usage "--release: '$release' is not a directory"
fi
if [[ ${#models[@]} -eq 0 ]]; then
  models=("${EMBER_MODELS:-$HOME/.cache/ember/models}/smollm2-135m-q4_1.gguf")
fi

if [[ -x $ROOT/.venv/bin/kiln ]]; then KILN=$ROOT/.venv/bin/kiln; else KILN=kiln; fi

# the logit bound for a model file, from the type in its name (see the header)
logit_bound() {
  local name
  name=$(basename "$1" | tr '[:upper:]' '[:lower:]')
  case $name in
    *f32*|*f16*) echo 1e-3 ;; # F16 and BF16
    *) echo 1e-2 ;;
  esac
}

# --- release: verify the archives before anything else (also under --dry-run: it only reads) --
declare -A archive=()
if [[ -n $release ]]; then
  [[ -f $release/SHA256SUMS ]] || die_setup "--release: $release/SHA256SUMS is missing"
  for v in "${cudas[@]}"; do
    line=$(grep -E "^[0-9a-f]{64} [ *]ember-b[0-9]+-bin-ubuntu-cuda-${v//./\\.}-x64\.tar\.gz$" \
      "$release/SHA256SUMS" || true)
    [[ -n $line && $(wc -l <<<"$line") -eq 1 ]] \
      || die_setup "--release: $release/SHA256SUMS lists no single ubuntu-cuda-$v-x64 archive"
    name=${line:66}
    if ! (cd "$release" && sha256sum -c --strict --quiet - <<<"$line") >&2; then
      die_setup "--release: $release/$name does not match SHA256SUMS; refusing it"
    fi
    archive[$v]=$release/$name
  done
fi

# --- the plan ------------------------------------------------------------------------------------
work=$out_dir/work
results=$out_dir/results.jsonl
peer_cache=${EMBER_PEER_CACHE:-$HOME/.cache/ember/peer}/cuda-$PEER_VERSION

plan_step() { printf '%s\n' "$*"; }
if [[ $dry_run -eq 1 ]]; then
  plan_step "gpu-check plan (dry run; budget ${timeout_s} s, output in $out_dir)"
  plan_step "1. detect the GPU: nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader"
  if [[ -n $release ]]; then
    for v in "${cudas[@]}"; do
      plan_step "2. unpack CUDA $v (verified against $release/SHA256SUMS): tar -xzf ${archive[$v]} -C $work/cuda-$v"
    done
  else
    sel=()
    for v in "${cudas[@]}"; do sel+=("ubuntu-cuda-$v-x64"); done
    plan_step "2. build: $KILN build --out $work/dist ${sel[*]}"
    for v in "${cudas[@]}"; do
      plan_step "   unpack CUDA $v: tar -xzf $work/dist/ember-b*-bin-ubuntu-cuda-$v-x64.tar.gz -C $work/cuda-$v"
    done
  fi
  for v in "${cudas[@]}"; do
    for m in "${models[@]}"; do
      b=$(logit_bound "$m")
      plan_step "3. CUDA $v, $(basename "$m"): compare tokens and logits (bound $b of the logit range)"
      for be in cuda cpu; do
        plan_step "   $work/cuda-$v/bin/ember-cli -m $m -p '$PROMPT' -n $N_PREDICT --temp 0 --ignore-eos --json --backend $be --logits-out $work/cuda-$v/$(basename "$m").$be.logits"
      done
      plan_step "4. CUDA $v, $(basename "$m"): $work/cuda-$v/bin/ember-bench -m $m -p 512 -n 128 --backend cuda --json"
    done
  done
  if [[ $no_peer -eq 1 ]]; then
    plan_step "5. peer: disabled (--no-peer)"
  else
    if [[ -n $peer_dir ]]; then
      plan_step "5. peer: llama-bench from $peer_dir"
    else
      plan_step "5. peer: build llama.cpp CUDA from the llama-cpp-python $PEER_VERSION sdist into $peer_cache:"
      plan_step "   $PY -m pip download --no-deps --no-binary llama-cpp-python -d $peer_cache/sdist llama-cpp-python==$PEER_VERSION"
      plan_step "   tar -xzf $peer_cache/sdist/llama_cpp_python-$PEER_VERSION.tar.gz -C $peer_cache/src"
      plan_step "   cmake -S $peer_cache/src/llama_cpp_python-$PEER_VERSION/vendor/llama.cpp -B $peer_cache/build -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DGGML_NATIVE=ON -DCMAKE_CUDA_ARCHITECTURES=native -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"
      plan_step "   cmake --build $peer_cache/build --target llama-bench -j $(nproc)"
    fi
    for m in "${models[@]}"; do
      plan_step "   llama-bench -m $m -p 512 -n 128 -ngl 99 -o json"
    done
  fi
  plan_step "6. report: $out_dir/report.md and $out_dir/report.json (from $results)"
  exit 0
fi

# --- the run ---------------------------------------------------------------------------------------
start=$SECONDS
left() { echo $((timeout_s - (SECONDS - start))); }

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU: nvidia-smi (the NVIDIA driver's tool) is not on PATH;" \
       "this check needs a machine with an NVIDIA GPU and its driver (--dry-run shows the plan)" >&2
  exit 3
fi
gpu_line=$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null \
  | head -n 1 || true)
if [[ -z $gpu_line ]]; then
  echo "gpu-check: no NVIDIA GPU: 'nvidia-smi --query-gpu=name,driver_version,compute_cap" \
       "--format=csv,noheader' listed none" >&2
  exit 3
fi
for m in "${models[@]}"; do
  [[ -f $m ]] || die_setup "model $m not found (python3 scripts/models.py fetch downloads the Q4_1 one)"
done

rm -rf "$work"
mkdir -p "$work"
: >"$results"
# record a JSON object made from KEY=VALUE arguments (numbers, true/false/null stay bare)
rec() {
  "$PY" - "$@" >>"$results" <<'PYEOF'
import json, re, sys
d = {}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    if v in ("true", "false", "null") or re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", v):
        d[k] = json.loads(v)
    else:
        d[k] = v
print(json.dumps(d))
PYEOF
}
IFS=, read -r g_name g_driver g_cap <<<"$gpu_line"
rec kind=gpu "name=${g_name# }" "driver=${g_driver# }" "compute_cap=${g_cap# }"
echo "gpu-check: GPU: $gpu_line" >&2

# run a command under what is left of the budget; 124 when it ran out
budgeted() {
  local l
  l=$(left)
  if [[ $l -le 0 ]]; then return 124; fi
  timeout "$l" "$@"
}

# build or take the archives
if [[ -z $release ]]; then
  sel=()
  for v in "${cudas[@]}"; do sel+=("ubuntu-cuda-$v-x64"); done
  echo "gpu-check: $KILN build --out $work/dist ${sel[*]}" >&2
  if ! budgeted "$KILN" build --out "$work/dist" "${sel[@]}" >"$work/kiln-build.log" 2>&1; then
    tail -n 30 "$work/kiln-build.log" >&2
    die_setup "kiln build failed or ran out of time (log: $work/kiln-build.log)"
  fi
  for v in "${cudas[@]}"; do
    found=("$work"/dist/ember-b*-bin-ubuntu-cuda-"$v"-x64.tar.gz)
    [[ -f ${found[0]} ]] || die_setup "kiln build made no ubuntu-cuda-$v-x64 archive"
    archive[$v]=${found[0]}
  done
fi

compare() { # cuda_version model
  local v=$1 m=$2 dir=$work/cuda-$1 base bound be
  base=$(basename "$m")
  bound=$(logit_bound "$m")
  for be in cuda cpu; do
    if ! budgeted "$dir/bin/ember-cli" -m "$m" -p "$PROMPT" -n "$N_PREDICT" --temp 0 --ignore-eos \
        --json --backend "$be" --logits-out "$dir/$base.$be.logits" \
        >"$dir/$base.$be.json" 2>"$dir/$base.$be.err"; then
      rec kind=compare "cuda=$v" "model=$base" status=failed "reason=ember-cli --backend $be failed, see $dir/$base.$be.err"
      return
    fi
  done
  "$PY" - "$v" "$base" "$bound" "$dir/$base.cpu.json" "$dir/$base.cuda.json" \
      "$dir/$base.cpu.logits" "$dir/$base.cuda.logits" >>"$results" <<'PYEOF' \
    || rec kind=compare "cuda=$v" "model=$base" status=failed "reason=could not read ember-cli's output in $dir"
import array, json, sys
v, model, bound, cpu_j, cuda_j, cpu_l, cuda_l = sys.argv[1:]
cpu, gpu = json.load(open(cpu_j)), json.load(open(cuda_j))
rec = {"kind": "compare", "cuda": v, "model": model, "bound": float(bound)}
if gpu.get("backend") != "cuda":
    rec.update(status="failed", reason=f"ran on {gpu.get('backend')}, not cuda (no fallback allowed)")
    print(json.dumps(rec)); sys.exit()
a, b = cpu["generated_ids"], gpu["generated_ids"]
div = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
if div is None and len(a) != len(b):
    div = min(len(a), len(b))
la, lb = array.array("f"), array.array("f")
la.frombytes(open(cpu_l, "rb").read()); lb.frombytes(open(cuda_l, "rb").read())
if sys.byteorder != "little":
    la.byteswap(); lb.byteswap()
if len(la) != len(lb) or not la:
    rec.update(status="failed", reason=f"logit counts differ: cpu {len(la)}, cuda {len(lb)}")
    print(json.dumps(rec)); sys.exit()
span = (max(la) - min(la)) or 1.0
diff = max(abs(x - y) for x, y in zip(la, lb)) / span
rec.update(status="ok", tokens_equal=div is None, n_tokens=len(a), first_divergence=div,
           max_logit_diff=diff, device=gpu.get("device"))
print(json.dumps(rec))
PYEOF
}

bench() { # cuda_version model
  local v=$1 m=$2 dir=$work/cuda-$1 base
  base=$(basename "$m")
  if ! budgeted "$dir/bin/ember-bench" -m "$m" -p 512 -n 128 --backend cuda --json \
      >"$dir/$base.bench.json" 2>"$dir/$base.bench.err"; then
    rec kind=bench "cuda=$v" "model=$base" status=failed "reason=see $dir/$base.bench.err"
    return
  fi
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[3])); print(json.dumps({"kind":"bench","cuda":sys.argv[1],"model":sys.argv[2],"status":"ok" if d.get("backend")=="cuda" else "not on cuda","pp_tok_s":d["pp_tok_s"],"tg_tok_s":d["tg_tok_s"]}))' \
    "$v" "$base" "$dir/$base.bench.json" >>"$results" \
    || rec kind=bench "cuda=$v" "model=$base" status=failed "reason=could not read $dir/$base.bench.json"
}

for v in "${cudas[@]}"; do
  mkdir -p "$work/cuda-$v"
  tar -xzf "${archive[$v]}" -C "$work/cuda-$v" --strip-components=1
  for m in "${models[@]}"; do
    if [[ $(left) -lt 10 ]]; then
      rec kind=skipped "step=CUDA $v $(basename "$m") compare" "reason=time budget of ${timeout_s} s spent"
    else
      compare "$v" "$m"
    fi
    if [[ $(left) -lt 10 ]]; then
      rec kind=skipped "step=CUDA $v $(basename "$m") ember-bench" "reason=time budget of ${timeout_s} s spent"
    else
      bench "$v" "$m"
    fi
  done
done

# the peer: llama.cpp CUDA from the llama-cpp-python sdist (scripts/peer.sh's source of llama.cpp)
llama_bench=""
build_peer() {
  local src log=$peer_cache/build.log
  mkdir -p "$peer_cache"
  if [[ -x $peer_cache/build/bin/llama-bench ]]; then
    llama_bench=$peer_cache/build/bin/llama-bench; return 0
  fi
  if ! command -v nvcc >/dev/null 2>&1 && [[ -z ${CUDACXX:-} ]]; then
    peer_reason="no CUDA toolkit: nvcc not on PATH and CUDACXX unset"; return 1
  fi
  if ! compgen -G "$peer_cache/sdist/llama_cpp_python-$PEER_VERSION.tar.gz" >/dev/null; then
    if ! budgeted "$PY" -m pip download --no-deps --no-binary llama-cpp-python \
        --disable-pip-version-check -q -d "$peer_cache/sdist" "llama-cpp-python==$PEER_VERSION" >"$log" 2>&1; then
      peer_reason="pip download of the llama-cpp-python $PEER_VERSION sdist failed, see $log"; return 1
    fi
  fi
  rm -rf "$peer_cache/src" "$peer_cache/build"
  mkdir -p "$peer_cache/src"
  tar -xzf "$peer_cache/sdist/llama_cpp_python-$PEER_VERSION.tar.gz" -C "$peer_cache/src"
  src=$peer_cache/src/llama_cpp_python-$PEER_VERSION/vendor/llama.cpp
  if ! budgeted cmake -S "$src" -B "$peer_cache/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
      -DGGML_NATIVE=ON -DCMAKE_CUDA_ARCHITECTURES=native -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >>"$log" 2>&1 \
     || ! budgeted cmake --build "$peer_cache/build" --target llama-bench -j "$(nproc)" >>"$log" 2>&1; then
    peer_reason="cmake build with GGML_CUDA=ON failed or ran out of time, see $log"; return 1
  fi
  llama_bench=$peer_cache/build/bin/llama-bench
}

peer_reason=""
if [[ $no_peer -eq 1 ]]; then
  rec kind=peer "status=disabled" "reason=--no-peer"
elif [[ -n $peer_dir ]]; then
  for c in "$peer_dir/bin/llama-bench" "$peer_dir/llama-bench"; do
    [[ -x $c ]] && { llama_bench=$c; break; }
  done
  if [[ -n $llama_bench ]]; then
    rec kind=peer status=built "version=$PEER_VERSION" "reason=from --peer $peer_dir"
  else
    rec kind=peer "status=not built" "reason=no llama-bench in $peer_dir"
  fi
elif [[ $(left) -lt 30 ]]; then
  rec kind=peer "status=not built" "reason=time budget of ${timeout_s} s spent"
elif build_peer; then
  rec kind=peer status=built "version=$PEER_VERSION"
else
  rec kind=peer "status=not built" "reason=$peer_reason"
fi

if [[ -n $llama_bench ]]; then
  for m in "${models[@]}"; do
    base=$(basename "$m")
    if [[ $(left) -lt 10 ]]; then
      rec kind=skipped "step=peer llama-bench $base" "reason=time budget of ${timeout_s} s spent"
      continue
    fi
    if budgeted "$llama_bench" -m "$m" -p 512 -n 128 -ngl 99 -o json >"$work/$base.peer.json" \
        2>"$work/$base.peer.err"; then
      "$PY" -c '
import json, sys
d = json.load(open(sys.argv[2]))
pp = next((r["avg_ts"] for r in d if r.get("n_prompt") and not r.get("n_gen")), None)
tg = next((r["avg_ts"] for r in d if r.get("n_gen") and not r.get("n_prompt")), None)
print(json.dumps({"kind": "peer_bench", "model": sys.argv[1], "status": "ok",
                  "pp_tok_s": pp, "tg_tok_s": tg}))' "$base" "$work/$base.peer.json" >>"$results"
    else
      rec kind=peer_bench "model=$base" status=failed "reason=see $work/$base.peer.err"
    fi
  done
fi

rc=0
render_report "$results" "$out_dir" || rc=$?
exit "$rc"
