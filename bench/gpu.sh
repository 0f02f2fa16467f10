#!/usr/bin/env bash
# The whole GPU check of issue 18 as one command for the lent GPU machine, in under 10 minutes on an H100:
#
#   setup            the carried .device/ (bash ../shared/tools/device-prep.sh makes it here): sources
#                    .device/setup.sh (wheels of the pinned transformers, datasets, seqeval, ... into /tmp/site,
#                    MiniLM as $MINILM, CoNLL-2003 at ../shared/data); else installs carried wheels
#                    (.device/whl, .whl); reports the machine and the size of what was carried
#   cuda-tests       pytest -m cuda (the files that hold such tests): pass/fail/skip counts, failures
#   speed-minilm     bench/speed.py --gpu: stock recipe vs ours, MiniLM, whole CoNLL-2003, 3 epochs, batch 32
#   speed-bert-base  the same, a bert-base-shaped random encoder, 1 epoch, batch 32
#   predict          bench/predict_speed.py: NerPredictor vs pipeline(aggregation_strategy="simple") at batch
#                    1/32/128, on the model speed-minilm trained (else MiniLM with a random head)
#
# Every step runs under `timeout` with its own limit (plus the seconds earlier steps left unused), inside one
# deadline for the whole check, so that one slow step cannot eat the call; the report says which steps ran
# (ok/failed), timed out or were skipped.
# The report (gpu-check.json, also printed at the end), the log (gpu-check.log) and each step's own JSON
# go to $OUT (out/gpu-check when $OUT is unset): 5 files, within what the device tool brings back.
#
#   GPU machine (device tool `run`, carry [".device"], timeout_s 600):  bash bench/gpu.sh
#   here, on the CPU, a rehearsal with tiny sizes (a few minutes):      bash bench/gpu.sh --smoke
#
# --smoke installs nothing (this machine's environment has the packages; the carried wheels are for the GPU
# machine's Python 3.12), runs every step with CPU sizes and skips only what needs CUDA (the cuda tests
# skip themselves). Options: --only STEP... (setup always runs), --limit STEP=SECONDS, --deadline SECONDS,
# and after -- arguments for both bench/speed.py runs, e.g. -- --extra_variant "ours+compile=--torch_compile true".
# Exit code 0 when every selected step ran and passed.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
PY=${PYTHON:-python3}
STEPS=(cuda-tests speed-minilm speed-bert-base predict)
CARRY_LIMIT=$((64 * 1024 * 1024))

command_line="bash bench/gpu.sh${*:+ $*}"
mode=gpu only=() speed_extra=() deadline=
declare -A limit given
while (($#)); do
  case $1 in
    --smoke) mode=smoke ;;
    --only) shift; while (($#)) && [[ $1 != --* ]]; do only+=("$1"); shift; done; continue ;;
    --limit) [[ ${2:-} =~ ^[a-z-]+=[0-9]+$ ]] || { echo "gpu.sh: --limit STEP=SECONDS, not '${2:-}'" >&2; exit 2; }
             given[${2%%=*}]=${2#*=}; shift ;;
    --deadline) [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "gpu.sh: --deadline SECONDS, not '${2:-}'" >&2; exit 2; }
                deadline=$2; shift ;;
    --) shift; speed_extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown argument '$1'; see bash bench/gpu.sh --help" >&2; exit 2 ;;
  esac
  shift
done
for step in "${only[@]}" "${!given[@]}"; do
  [[ " setup ${STEPS[*]} " == *" $step "* ]] || { echo "gpu.sh: no step '$step' (steps: setup ${STEPS[*]})" >&2; exit 2; }
done
# Seconds per step, and a deadline for the whole check (bench/RESULTS.md, GPU, says what the first H100 run took).
if [[ $mode == smoke ]]; then  # CPU sizes on a shared 2-core machine: minutes, not seconds
  limit=([setup]=60 [cuda-tests]=180 [speed-minilm]=300 [speed-bert-base]=300 [predict]=240)
  deadline=${deadline:-1080}
else
  # From the first H100 run (bench/RESULTS.md): the cuda tests ~230 s, MiniLM stock 73 s + ours, bert-base
  # stock 40 s + ours, prediction ~60 s. Under the device tool's 600 s per call, with timeout_s 600.
  limit=([setup]=40 [cuda-tests]=240 [speed-minilm]=160 [speed-bert-base]=100 [predict]=60)
  deadline=${deadline:-560}  # the device tool's 600 s less the start of Python, the report and transfers
fi
for step in "${!given[@]}"; do limit[$step]=${given[$step]}; done
OUT=${OUT:-$root/out/gpu-check}
mkdir -p "$OUT" || exit 1
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
# This run's files only: a local $OUT may hold an earlier run's.
rm -f "$OUT/gpu-check.json" "$OUT/gpu-check.log" "$OUT/speed_${mode}_"*.json "$OUT/predict_${mode}.json"
export OUT HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# One line per step: name, status (ok, failed, timed_out, skipped), seconds, limit, exit code, note.
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$work/steps.tsv"; }

selected() { ((${#only[@]} == 0)) || [[ " ${only[*]} " == *" $1 "* ]]; }

# run_step NAME COMMAND...: COMMAND under timeout, within the step's limit plus what earlier steps left unused
# (saved), and within the time left before the deadline.
saved=0
run_step() {
  local name=$1 left step_limit t0 used rc=0 status=ok note=
  shift
  left=$((deadline - SECONDS))
  step_limit=$((limit[$name] + saved))
  ((step_limit > left)) && step_limit=$left
  if ((left < 10)); then
    record "$name" skipped 0 "${limit[$name]}" "" "no time left before the ${deadline} s deadline"
    return
  fi
  echo "=== $name: $* (limit ${step_limit} s, at ${SECONDS} s)"
  t0=$SECONDS
  # The step is a function of this file, exported; timeout stops the step's whole process group.
  timeout -k 10 "$step_limit" bash -c '"$@"' _ "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    status=timed_out note="stopped after ${step_limit} s"
  elif ((rc != 0)); then
    status=failed note="exit code $rc"
  fi
  used=$((SECONDS - t0))
  saved=$((saved + limit[$name] - used > 0 ? saved + limit[$name] - used : 0))
  record "$name" "$status" "$used" "$step_limit" "$rc" "$note"
  echo "=== $name: $status after $used s"
}

# Bytes that travel with a device call: tracked and untracked-not-ignored files, and the carried .device/.
carried_bytes() {
  local files device=0
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    files=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    [[ -d .device ]] && device=$(du -sb .device | cut -f1)
    echo "$((${files:-0} + device)) git ls-files + .device"
  else  # the device machine's copy may hold no git metadata: what is here is what travelled
    echo "$(du -sb --exclude=.git . | cut -f1) du of the tree"
  fi
}

# Set-up. Runs in a timed child; the variables it exports come back through a file.
setup() {
  local bytes counted
  read -r bytes counted < <(carried_bytes)
  bytes=${bytes:-0}
  printf '{"paths": [".device"], "bytes": %s, "limit_bytes": %s, "counted": "%s", "wheels": [%s]}\n' \
    "$bytes" "$CARRY_LIMIT" "$counted" \
    "$(ls .device/whl/*.whl .whl/*.whl 2>/dev/null | sed 's/.*/"&"/' | paste -sd, -)" > "$work/carry.json"
  echo "carried: $((bytes / 1048576)) MiB of the 64 MiB a device call may carry ($counted)"
  ((bytes < CARRY_LIMIT)) || echo "WARNING: over the device tool's 64 MiB: carry less (DEVICE_DATA, DEVICE_EXTRA)"
  if [[ $mode == smoke ]]; then
    if [[ -f .device/setup.sh ]]; then
      bash -n .device/setup.sh && echo "smoke: .device/setup.sh parses; not sourced here (its wheels are for the GPU machine)"
    else
      echo "smoke: no .device/ here (bash ../shared/tools/device-prep.sh makes it); this machine's packages are used"
    fi
  elif [[ -f .device/setup.sh ]]; then
    timeout -k 5 "${limit[setup]}" bash -c '
      before=$(export -p)
      source .device/setup.sh || exit 1
      diff <(printf "%s\n" "$before") <(export -p) | sed -n "s/^> declare -x /export /p" > "$1"' _ "$work/setup.env" || return 1
  else
    local wheels
    mapfile -t wheels < <(ls .device/whl/*.whl .whl/*.whl 2>/dev/null)
    ((${#wheels[@]})) || { echo "setup: nothing carried: run bash ../shared/tools/device-prep.sh here and carry [\".device\"]"; return 1; }
    timeout -k 5 "${limit[setup]}" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "${wheels[@]}" || return 1
    echo "export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}" > "$work/setup.env"
  fi
}

machine_info() {
  timeout -k 5 60 "$PY" - "$work/machine.json" <<'PY'
import json, os, platform, subprocess, sys
from importlib import metadata
info = {"python": platform.python_version(), "cores": os.cpu_count()}
for name in ("torch", "transformers", "tokenizers", "datasets", "accelerate", "seqeval", "safetensors", "huggingface_hub"):
    try:
        info[name] = metadata.version(name)
    except metadata.PackageNotFoundError:  # a finding of the set-up: reported, not raised
        info[name] = None
import torch
info["cuda"] = torch.cuda.is_available()
if info["cuda"]:
    info.update(gpu=torch.cuda.get_device_name(), capability=".".join(map(str, torch.cuda.get_device_capability())),
                bf16=torch.cuda.is_bf16_supported(), cuda_runtime=torch.version.cuda)
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
with open("/proc/cpuinfo", encoding="utf-8") as f:
    info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())
try:
    info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    info["uncommitted_files"] = len(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.splitlines())
except OSError:
    info["commit"] = None
json.dump(info, open(sys.argv[1], "w"), indent=1)
print("machine:", json.dumps(info))
PY
}

cuda_tests() {
  local files extra=()
  mapfile -t files < <(grep -l 'mark\.cuda' tests/test_*.py)
  # Only the files with cuda tests: the others import packages the GPU machine lacks (google_crc32c, ...).
  "$PY" -c "import pytest_timeout" 2>/dev/null && extra=(--timeout 120)  # a hung test fails alone
  # pytest_times prints each test's seconds as it finishes (a step stopped at its limit still shows them).
  PYTHONPATH="bench${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -v -p no:cacheprovider -p pytest_times -m cuda -rfEs --durations 10 --continue-on-collection-errors \
    --junitxml="$work/pytest.xml" "${extra[@]}" "${files[@]}" 2>&1 | tee "$work/pytest.out"
  return "${PIPESTATUS[0]}"
}

speed() {  # speed MODEL [more bench/speed.py arguments]
  local args=(--models "$1" --variants stock ours --out "$OUT/speed_${mode}_${1//-/_}.json")
  [[ $1 == minilm ]] && args+=(--keep "$work/minilm-ours")
  [[ -n ${MINILM:-} ]] && args+=(--minilm "$MINILM")
  if [[ $mode == gpu ]]; then
    args+=(--gpu)
  elif [[ $1 == minilm ]]; then
    args+=(--train_samples 64 --eval_samples 32 --epochs 1)
  else
    args+=(--train_samples 32 --eval_samples 16 --epochs 1 --eval_batch_size 16)
  fi
  "$PY" bench/speed.py "${args[@]}" "${@:2}"
}

predict() {
  local args=(--batch_sizes 1 32 128 --repeat 1 --out "$OUT/predict_${mode}.json")
  [[ -f $work/minilm-ours/config.json ]] && args+=(--model "$work/minilm-ours")
  [[ -n ${MINILM:-} ]] && args+=(--minilm "$MINILM")
  if [[ $mode == gpu ]]; then args+=(--sentences 0); else args+=(--sentences 64); fi
  # The tokenizer's own threads, as a user's process has them (setup.sh turns them off for forked workers).
  TOKENIZERS_PARALLELISM=true "$PY" bench/predict_speed.py "${args[@]}"
}

# The report from what the steps left; written after every step, so that a stopped call still has one.
report() {
  MODE=$mode WORK=$work STARTED=$started DEADLINE=$deadline COMMAND=$command_line ELAPSED=$SECONDS FINAL=${1:-0} \
    "$PY" - <<'PY'
import glob, json, os, re, xml.etree.ElementTree as ET
from datetime import datetime, timezone

out, work, mode = os.environ["OUT"], os.environ["WORK"], os.environ["MODE"]


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


steps = []
if os.path.exists(f"{work}/steps.tsv"):
    for line in open(f"{work}/steps.tsv", encoding="utf-8"):
        name, status, seconds, limit, code, note = line.rstrip("\n").split("\t")
        steps.append({"step": name, "status": status, "seconds": int(seconds), "limit_s": int(limit),
                      "exit_code": int(code) if code else None, "note": note})

tests = None
if os.path.exists(f"{work}/pytest.xml"):
    tests = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skip_reasons": {}}
    for case in ET.parse(f"{work}/pytest.xml").iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            tests["passed"] += 1
        elif outcome.tag == "skipped":
            tests["skipped"] += 1
            reason = (outcome.get("message") or "").split(": ", 1)[-1]
            tests["skip_reasons"][reason] = tests["skip_reasons"].get(reason, 0) + 1
        else:
            tests["failed" if outcome.tag == "failure" else "errors"] += 1
            tests["failures"].append({"test": name, "message": (outcome.get("message") or "")[:400]})
elif os.path.exists(f"{work}/pytest.out"):  # stopped before pytest wrote its XML: count what it printed
    text = open(f"{work}/pytest.out", encoding="utf-8", errors="replace").read()
    tests = {key: len(re.findall(rf"::\S+ {word}", text)) for key, word in
             (("passed", "PASSED"), ("failed", "FAILED"), ("errors", "ERROR"), ("skipped", "SKIPPED"))}
    tests["note"] = "counted from pytest's output: the step stopped before pytest's summary"

FIGURES = ("epochs", "train_samples_per_second", "speedup_vs_stock", "train_tokens_per_second", "fed_token_ratio", "mfu",
           "wall_s", "train_runtime_s", "eval_sentences_per_second", "predict_sentences_per_second",
           "peak_gpu_memory_gb", "peak_rss_gb", "dev_f1", "test_f1", "runs")
speed = {}
for path in sorted(glob.glob(f"{out}/speed_{mode}_*.json")):
    saved = load(path)
    for median in (saved or {}).get("medians", []):
        entry = speed.setdefault(median["model"], {"file": os.path.basename(path)})
        entry[median["variant"]] = {key: median.get(key) for key in FIGURES if median.get(key) is not None}

predict = load(f"{out}/predict_{mode}.json")
if predict:
    predict = {"setup": predict["setup"], "word_tag_agreement": predict["word_tag_agreement"],
               "runs": [{key: row.get(key) for key in ("run", "sentences", "sentences_per_second", "x_pipeline_same_batch", "test_f1")
                         if row.get(key) is not None} for row in predict["results"]]}


def goal(text, target, measured, met):
    return {"goal": text, "target": target, "measured": measured, "met": None if measured is None else met}


def figure(model, variant, key):
    return speed.get(model, {}).get(variant, {}).get(key)


goals = []
for model, target in (("bert-base", 10), ("minilm", 5)):
    measured = figure(model, "ours", "speedup_vs_stock")
    goals.append(goal(f"{model}: ours' training samples/s over the stock recipe's", f">= {target}x", measured,
                      measured is not None and measured >= target))
    ours, stock = figure(model, "ours", "dev_f1"), figure(model, "stock", "dev_f1")
    goals.append(goal(f"{model}: ours' dev F1 no lower than the stock recipe's", "ours >= stock",
                      None if ours is None or stock is None else {"ours": ours, "stock": stock},
                      ours is not None and stock is not None and ours >= stock))
wall = figure("minilm", "ours", "wall_s")
goals.append(goal("minilm: whole run of ours (load, train, eval, predict)", "< 15 s", wall, wall is not None and wall < 15))
best = max((row["sentences_per_second"] for row in (predict or {}).get("runs", []) if row["run"].startswith("NerPredictor.tag")), default=None)
goals.append(goal("prediction, CoNLL-2003 test sentences/s (NerPredictor.tag, best batch/precision)", ">= 10000", best,
                  best is not None and best >= 10000))

carry = load(f"{work}/carry.json")
if carry:
    carry.update(mib=round(carry["bytes"] / 2**20, 1), fits=carry["bytes"] < carry["limit_bytes"])
report = {
    "check": "bench/gpu.sh", "mode": mode, "command": os.environ["COMMAND"], "started": os.environ["STARTED"],
    "written": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "elapsed_s": int(os.environ["ELAPSED"]),
    "deadline_s": int(os.environ["DEADLINE"]), "finished": os.environ["FINAL"] == "1",
    # Every step ran and passed, but for those left out with --only.
    "all_steps_ok": all(step["status"] == "ok" or step["note"] == "not selected (--only)" for step in steps),
    "machine": load(f"{work}/machine.json"), "carry": carry, "steps": steps, "cuda_tests": tests, "speed": speed,
    "predict": predict, "goals": goals,
    "note": "CPU smoke rehearsal: tiny sizes, CPU figures; the goals are for the GPU run" if mode == "smoke" else None,
    "files": sorted(os.path.basename(p) for p in glob.glob(f"{out}/*")),
}
with open(f"{out}/gpu-check.json.tmp", "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
os.replace(f"{out}/gpu-check.json.tmp", f"{out}/gpu-check.json")
if os.environ["FINAL"] == "1":  # the same JSON, one line per key, so that the device tool's output tail holds it
    print("{\n" + ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in report.items()) + "\n}")
    raise SystemExit(0 if report["all_steps_ok"] else 1)
PY
}

main() {
  echo "=== bench/gpu.sh ($mode) in $root, report and log in $OUT, deadline ${deadline} s"
  local t0=$SECONDS rc=0 status=ok note= reason=
  setup || rc=$?
  [[ -f $work/setup.env ]] && source "$work/setup.env"
  ((rc == 0)) || status=failed note="set-up failed (exit code $rc)"
  machine_info || { ((rc == 0)) && status=failed note="no Python with torch: $PY"; }
  record setup "$status" $((SECONDS - t0)) "${limit[setup]}" "$rc" "$note"
  saved=$((limit[setup] > SECONDS - t0 ? limit[setup] - (SECONDS - t0) : 0))
  report
  if [[ $status != ok ]]; then
    reason="the set-up failed"
  elif [[ $mode == gpu ]] && ! "$PY" -c 'import json,sys; sys.exit(not json.load(open(sys.argv[1]))["cuda"])' "$work/machine.json"; then
    reason="no CUDA device is visible (bash bench/gpu.sh --smoke rehearses on a CPU)"
  fi
  for step in "${STEPS[@]}"; do
    if ! selected "$step"; then
      record "$step" skipped 0 "${limit[$step]}" "" "not selected (--only)"
    elif [[ -n $reason ]]; then
      record "$step" skipped 0 "${limit[$step]}" "" "$reason"
    else
      case $step in
        cuda-tests) run_step "$step" cuda_tests ;;
        speed-minilm) run_step "$step" speed minilm "${speed_extra[@]}" ;;
        speed-bert-base) run_step "$step" speed bert-base "${speed_extra[@]}" ;;
        predict) run_step "$step" predict ;;
      esac
    fi
    report
  done
  report 1  # its exit code: 0 when every selected step ran and passed
}

# timeout runs bash functions through a child shell: export them and what they read.
export -f cuda_tests speed predict
export mode work PY
main 2>&1 | tee "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
