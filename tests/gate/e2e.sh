#!/usr/bin/env bash
# `ddpbench gate` end to end on the CPU: three rounds of suites/gate-cpu.toml make a baseline
# (`gate --update`), a clean current and a current slowed by debug_step_delay_ms; rounds are
# interleaved (baseline, clean, slow, baseline, ...) so that a change in the machine's load hits all
# three alike. The clean current must gate with exit 0, the slowed one with exit 1 naming its cells,
# and too few repeats with exit 2. Usage: tests/gate/e2e.sh DDPBENCH_BINARY
# The GPU check (scripts/gpu-check gate:SUITE) runs the same with GATE_SUITE (another suite),
# GATE_RULES (ci/gate.toml), GATE_DELAY_MS and GATE_KEEP (a folder that keeps the runs and outputs).
set -euo pipefail
bin=${1:?usage: tests/gate/e2e.sh DDPBENCH_BINARY}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -n "${GATE_KEEP:-}" ]; then
  work=$GATE_KEEP
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/ddpbench-gate-e2e.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
suite=${GATE_SUITE:-$root/suites/gate-cpu.toml}
rules=${GATE_RULES:-$root/tests/gate/cpu-rules.toml}
# CPU steps of 5-50 ms on a (busy) two-core machine: 400 ms is far beyond that, and beyond the rules.
delay_ms=${GATE_DELAY_MS:-400}
sed "/^\[defaults\]/a debug_step_delay_ms = $delay_ms" "$suite" > "$work/gate-slow.toml"

fail() { echo "gate e2e: FAILED: $*" >&2; exit 1; }

# Runs a suite into its own runs folder; prints the run folder.
run_suite() {
  local suite_file=$1 dir=$2
  if ! "$bin" run "$suite_file" --runs-dir "$dir" > "$dir.log" 2>&1; then
    cat "$dir.log" >&2
    fail "ddpbench run $suite_file"
  fi
  echo "$dir"/*/
}

# Runs the gate; checks its exit status; leaves its output in $work/out.
expect_gate() {
  local want=$1; shift
  local rc=0
  "$bin" gate --rules "$rules" "$@" > "$work/out" 2>&1 || rc=$?
  cat "$work/out"
  [ "$rc" -eq "$want" ] || fail "ddpbench gate $* exited $rc, expected $want"
}

start=$(date +%s)
base=() clean=() slow=()
for round in 1 2 3; do
  base+=("$(run_suite "$suite" "$work/base$round")")
  clean+=("$(run_suite "$suite" "$work/clean$round")")
  slow+=("$(run_suite "$work/gate-slow.toml" "$work/slow$round")")
done
echo "gate e2e: 9 runs in $(( $(date +%s) - start )) s"
# The cells every run must have: the suite's, named by the run documents themselves.
mapfile -t cells < <(python3 -c '
import json, sys, glob
for f in sorted(glob.glob(sys.argv[1] + "/cells/*.json")):
    d = json.load(open(f))
    if d.get("status", {}).get("state") != "skipped": print(d["cell"])' "${base[0]}")
[ "${#cells[@]}" -ge 1 ] || fail "the baseline run has no cells"
echo "gate e2e: cells ${cells[*]}"
grep -q "\"debug_step_delay_ms\": $delay_ms" "${slow[0]}"/cells/*.json || fail "the slowed runs do not record debug_step_delay_ms"

"$bin" gate --rules "$rules" --update "${base[@]}" --out "$work/baselines" || fail "gate --update"
baseline=$(ls "$work"/baselines/*.json)
[ "$(echo "$baseline" | wc -l)" -eq 1 ] || fail "gate --update wrote $(echo "$baseline")"

echo "--- clean current against the baseline file: exit 0"
expect_gate 0 --baseline "$baseline" --current "${clean[@]}" --markdown "$work/clean.md" --junit "$work/clean.xml"
grep -q "PASS" "$work/out" || fail "no PASS line"
grep -q "<testsuites" "$work/clean.xml" || fail "no JUnit XML"
if grep -q "<failure" "$work/clean.xml"; then fail "JUnit XML of a clean gate has a failure"; fi

# The slowed runs are another configuration of the same cells (their config records the delay, so
# a cell_id that hashes the configuration differs): matched by cell name, as for --impl A against B.
echo "--- slowed current against the baseline file: exit 1, naming the cells"
GITHUB_STEP_SUMMARY="$work/step-summary.md" expect_gate 1 --match name --baseline "$baseline" --current "${slow[@]}" \
  --markdown "$work/slow.md" --junit "$work/slow.xml"
for cell in "${cells[@]}"; do
  grep "^FAIL: regression in" "$work/out" | grep -qF "$cell" || fail "the FAIL line does not name $cell"
  grep -qF "$cell" "$work/slow.md" || fail "the Markdown summary does not name $cell"
  grep -qF "classname=\"$cell\" name=\"step time p50\"><failure" "$work/slow.xml" || fail "no JUnit failure for $cell"
done
grep -q "REGRESSION" "$work/step-summary.md" || fail "nothing appended to \$GITHUB_STEP_SUMMARY"

echo "--- the same with the baseline given as run folders: exit 1"
expect_gate 1 --match name --baseline "${base[@]}" --current "${slow[@]}"

echo "--- one run is one repeat, too few to gate: exit 2"
expect_gate 2 --baseline "$baseline" --current "${clean[0]}"
grep -q "too few repeats" "$work/out" || fail "exit 2 without saying why"

echo "gate e2e: passed in $(( $(date +%s) - start )) s"
