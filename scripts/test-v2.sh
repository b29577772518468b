#!/usr/bin/env bash
# scripts/test-v2.sh [FILE...]  (npm run test:v2 [-- FILE...]) — the cgroups-v2-only lane.
#
# Runs the kernel-facing test files INSIDE a VM whose only cgroup hierarchy is cgroup2 with every
# controller enabled (scripts/v2vm/run.sh: Debian kernel 6.1 under QEMU, the host's / shared read-only
# with a tmpfs overlay), so corral detects mode v2 and takes its real v2 paths: corral.slice,
# <allocId>-<task>.scope, cpusets computed in-process, memory.max/OOM, cpu.weight, cgroup.kill, clone3.
# Kernel-facing = every test/**/*.test.ts except the docker ones (test/docker*.test.ts, test/docker/),
# which assume the host's dockerd and image store, but with the docker files written for the guest
# (test/docker*-v2.test.ts): for those the guest starts a dockerd of its own (scripts/v2vm/guest-docker.sh),
# the real v2 path of a container's cgroup parent. Chosen at run time; FILE... (or V2_TESTS="a b") runs
# just those (a docker file among them starts the guest's dockerd).
#
# Outcome, in one line on stdout at the end:
#   PASSED / FAILED (tests failed in the guest: ava's status; the guest timed out: 124; the VM died: 125)
#   SKIPPED, exit 0, where the lane cannot run here at all (not root, not x86_64, QEMU or the guest
#   kernel unobtainable, QEMU would not start): the host suite alone decides then.
# Env: V2VM_TIMEOUT (s, whole VM run, default 1800 = the lane's 30-minute budget: the CLI files run a Node process per corral call, ~10 s each under emulation), V2VM_CPUS (2),
#      V2VM_MEM (MiB, 4096), CORRAL_SKIP_V2=1 (skip), V2_AVA_ARGS (default "--timeout=10m --concurrency=1"),
#      V2_NODE_OPTIONS (extra NODE_OPTIONS in the guest), and the rest of scripts/v2vm/run.sh's V2VM_*.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
t0=$(date +%s%N)
el() { awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.0f", (b - a) / 1e9 }'; }
say() { echo "test-v2: $*" >&2; }
skip() { echo "test-v2: SKIPPED — $* (the cgroups-v2 lane cannot run here; the host suite alone decides)"; exit 0; }
fail() { local rc=$1; shift; echo "test-v2: FAILED — $* ($(el)s)"; exit "$rc"; }

[[ -z ${CORRAL_SKIP_V2-} ]] || skip "CORRAL_SKIP_V2 is set"
(($(id -u) == 0)) || skip "not root (the VM needs root to install QEMU, cache the kernel and share /)"
[[ $(uname -m) == x86_64 ]] || skip "not an x86_64 host ($(uname -m))"

# --- the test files --------------------------------------------------------------------------
files=()
if (($#)); then files=("$@")
elif [[ -n ${V2_TESTS-} ]]; then read -ra files <<< "$V2_TESTS"
else
  while IFS= read -r f; do files+=("$f"); done < <(
    # package.test.ts packs and installs from the npm registry: not kernel-facing, and the guest has no network.
    # contract.test.ts runs every scenario against docker too, most of them kernel-blind and slow under
    # emulation; raw_exec's kernel paths are covered in the guest by raw-exec*.test.ts.
    find test \( -name '*.test.ts' -not -name 'docker*' -not -name 'package.test.ts' -not -name 'contract.test.ts' -not -path 'test/docker/*' \
      -o -name 'docker*-v2.test.ts' \) -not -path '*/node_modules/*' | sort)
fi
((${#files[@]})) || fail 1 "no kernel-facing test files under test/"
for f in "${files[@]}"; do [[ -f $f ]] || fail 2 "no such test file: $f"; done

# --- what the guest needs from the host's (read-only) tree ---------------------------------------
[[ -x node_modules/.bin/ava || -f node_modules/ava/entrypoints/cli.mjs ]] || fail 1 "node_modules is missing: run npm ci (or scripts/setup-host.sh) first"
if [[ ! -f build/Release/corral.node ]] && compgen -G 'native/*.cc' >/dev/null; then
  say "build/Release/corral.node is missing: building it (npx node-gyp rebuild)"
  timeout -k 10 900 npx --no-install node-gyp rebuild >&2 || fail 1 "could not build the native addon"
fi
[[ -f build/Release/corral.node ]] || fail 1 "build/Release/corral.node is missing (npx node-gyp rebuild)"

# The guest's /tmp shows the host's (its lower layer): a concurrent run's live sandboxes there are not
# this lane's leftovers. A run id of its own (npm test passes its own) keeps check-leftovers to ours.
export CORRAL_TEST_RUN_ID=${CORRAL_TEST_RUN_ID:-v2$(date +%H%M%S)$(printf '%04x' $((RANDOM)))}

# --- the VM: prepare (tools, cached kernel), then run the tests in it ------------------------------
export V2VM_TIMEOUT=${V2VM_TIMEOUT:-1800} V2VM_CPUS=${V2VM_CPUS:-2} V2VM_MEM=${V2VM_MEM:-4096}
st=$(mktemp "${TMPDIR:-/tmp}/test-v2.status.XXXXXX") || fail 1 "mktemp failed"
trap 'rm -f "$st"' EXIT
field() { sed -n "s/^$1=//p" "$st"; }

V2VM_STATUS_FILE=$st bash scripts/v2vm/run.sh --prepare
prc=$?
if ((prc != 0)); then
  [[ $(field result) == unavailable ]] && skip "$(field reason)"
  fail "$prc" "preparing the VM failed: $(field reason)"
fi

say "${#files[@]} file(s) in a cgroups-v2-only guest (${V2VM_CPUS} vCPUs, ${V2VM_MEM} MiB, bound ${V2VM_TIMEOUT}s): ${files[*]}"
V2VM_STATUS_FILE=$st bash scripts/v2vm/run.sh -C "$ROOT" -- bash scripts/v2vm/guest-tests.sh "${files[@]}"
rc=$?
result=$(field result)
times="boot $(field boot_s)s, guest $(field guest_s)s, lane $(el)s"
case $result in
  exit)
    if ((rc == 0)); then echo "test-v2: PASSED — ${#files[@]} file(s) on cgroups v2 ($times)"; exit 0; fi
    fail "$rc" "tests failed in the cgroups-v2 guest (status $rc; $times)" ;;
  timeout) fail 124 "the cgroups-v2 guest timed out: $(field reason)" ;;
  unavailable) skip "$(field reason)" ;;
  *) fail "$((rc ? rc : 125))" "the cgroups-v2 VM failed: $(field reason)" ;;
esac
