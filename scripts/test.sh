#!/usr/bin/env bash
# The whole test suite on a fresh machine of this kind, as root: installs what it needs (apt packages,
# npm packages, dockerd), builds, then runs the lanes:
#   host   ava on the real kernel (every test file but *.exclusive.test.ts), then the
#          *.exclusive.test.ts files alone, one at a time (tests that disturb what every other test
#          shares, e.g. pausing dockerd), then scripts/check-leftovers.sh
#   asan   `npm run test:asan` (the native addon under AddressSanitizer), when package.json has it
#   v2     scripts/test-v2.sh (the cgroups-v2-only VM), when the lanes before it passed
# after scripts/sweep-stale.sh has removed what killed earlier runs left (test names of dead runs only),
# around a proof that the suite leaves a live corral agent alone: scripts/foreign-task.sh starts a
# task with the DEFAULT cgroup parent and state dir before the host lane, checks it untouched after
# the asan lane, and stops it.
# Ends with one line, `N passed, N failed`, summing the tests of every lane (from ava's output);
# a lane that fails without a failing test (a crashed worker, leftovers, a touched foreign task)
# counts as one failure. Exit 0 only when every lane passed.
# Env: CORRAL_TEST_RUN_ID (default: a new one; names every cgroup/dir/container of this run),
#      CORRAL_SKIP_V2=1 (no v2 lane), CORRAL_SKIP_ASAN=1 (no asan lane), CORRAL_SKIP_FOREIGN=1 (no
#      foreign-task proof), CORRAL_TEST_RUNS_DIR (where live runs register, default
#      /run/corral-test-runs), CORRAL_SKIP_SETUP=1 (no setup-host/docker-up: repeated runs on a checkout
#      already built, e.g. the loaded runs), and CORRAL_TEST_SLOWDOWN (stretches every wait's bound).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then echo "test: corral's tests need root (real cgroups, real processes)" >&2; exit 1; fi
if [ -z "${CORRAL_SKIP_SETUP-}" ]; then
  bash scripts/setup-host.sh
  bash scripts/docker-up.sh
fi

CORRAL_TEST_RUN_ID=${CORRAL_TEST_RUN_ID:-$(date +%H%M%S)$(printf '%04x' $((RANDOM)))}
export CORRAL_TEST_RUN_ID
logs=$(mktemp -d "${TMPDIR:-/tmp}/corral-ci-logs.XXXXXX")
foreign_stopped=""
# This run is live while this script runs: scripts/sweep-stale.sh (another run's start) leaves its names alone.
runs_dir=${CORRAL_TEST_RUNS_DIR:-/run/corral-test-runs}
mkdir -p "$runs_dir" && echo $$ > "$runs_dir/$CORRAL_TEST_RUN_ID"
# However the run ends (a lane's abort included), the foreign task is stopped, the logs and the registration removed.
trap '[ -z "${foreign-}" ] || [ -n "$foreign_stopped" ] || bash scripts/foreign-task.sh stop "$foreign" >/dev/null 2>&1 || true; rm -rf "$logs"; rm -f "$runs_dir/$CORRAL_TEST_RUN_ID"' EXIT
echo "test: run id $CORRAL_TEST_RUN_ID (every cgroup parent, state dir and container of this run is named corral-test-$CORRAL_TEST_RUN_ID-...)"

total_pass=0 total_fail=0 status=0 summary=()
# count LOG RC: sets pass/fail from ava's default reporter output (✔ lines, ✘ [fail] lines, crashed
# workers, timeouts, uncaught exceptions and unhandled rejections).
count() {
  local clean; clean=$(sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null || true)  # a lost log counts via the exit code
  pass=$(grep -cE '^\s*✔ ' <<< "$clean" || true)
  pass=$((pass - $(grep -cE '^\s*✔ \[expected fail\]' <<< "$clean" || true)))
  fail=$(grep -cE '^\s*✘ \[(fail|unexpected pass)\]:' <<< "$clean" || true)
  fail=$((fail + $(grep -cE '^\s*✘ .* exited (due to|with a non-zero exit code)' <<< "$clean" || true)))
  fail=$((fail + $(sed -nE 's/^\s*([0-9]+) (uncaught exceptions?|unhandled rejections?|tests? remained pending after a timeout)$/\1/p' <<< "$clean" | awk '{ s += $1 } END { print s + 0 }')))
  if ((fail == 0)) && grep -qE '✘ Timed out while running tests' <<< "$clean"; then fail=1; fi
  if (($2 != 0 && fail == 0)); then fail=1; fi
  # A lane that passed in the end (the v2 lane re-runs a crashed file once and says so) has no failure.
  if (($2 == 0 && fail != 0)); then note=" ($fail failure(s) then a passing re-run: see the log)"; fail=0; else note=""; fi
}
# lane NAME CMD...: runs CMD (output to the terminal and a log), adds its counts to the totals.
lane() {
  local name=$1 rc=0 t0=$SECONDS; shift
  echo "test: --- lane $name: $*"
  "$@" 2>&1 | tee "$logs/$name.log" || rc=${PIPESTATUS[0]}
  count "$logs/$name.log" "$rc"
  total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail))
  summary+=("$name: $pass passed, $fail failed, exit $rc, $((SECONDS - t0)) s$note")
  ((rc == 0)) || status=1
  return 0
}
# check NAME CMD...: a step that is not a test lane; failing counts as one failure.
check() {
  local name=$1 rc=0; shift
  "$@" || rc=$?
  if ((rc != 0)); then total_fail=$((total_fail + 1)) status=1; summary+=("$name: FAILED (exit $rc)"); else summary+=("$name: ok"); fi
}

# What killed earlier runs left (their test parents, groups and lock files; never a live run's, never
# a non-test name) would otherwise pile up run after run: removed first.
check "stale test groups swept" bash scripts/sweep-stale.sh

foreign=""
if [ -z "${CORRAL_SKIP_FOREIGN-}" ]; then
  foreign="$logs/foreign.env"
  check "foreign task started" bash scripts/foreign-task.sh start "$foreign"
  [ -f "$foreign" ] || foreign=""
fi

lane host npx --no-install ava
mapfile -t exclusive < <(find test -name '*.exclusive.test.ts' -not -path '*/node_modules/*' | sort)
if ((${#exclusive[@]})); then lane host-exclusive npx --no-install ava --concurrency=1 "${exclusive[@]}"; fi
check "host leftovers" bash scripts/check-leftovers.sh
if [ -z "${CORRAL_SKIP_ASAN-}" ] && [ -n "$(npm pkg get scripts.test:asan 2>/dev/null | tr -d '{}"' )" ]; then lane asan npm run --silent test:asan; fi

if [ -n "$foreign" ]; then
  check "foreign task untouched" bash scripts/foreign-task.sh check "$foreign"
  check "foreign task stopped cleanly" bash scripts/foreign-task.sh stop "$foreign"
  foreign_stopped=1
fi

if [ -f scripts/test-v2.sh ]; then
  if ((status == 0)); then lane v2 bash scripts/test-v2.sh
  else summary+=("v2: not run (an earlier lane failed)"); fi
fi

echo "test: --- summary"
for s in "${summary[@]}"; do echo "test:   $s"; done
echo "$total_pass passed, $total_fail failed"
exit "$status"
