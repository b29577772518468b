#!/usr/bin/env bash
# scripts/v2vm/guest-tests.sh FILE... — the v2 lane's in-guest half (run by scripts/test-v2.sh through
# scripts/v2vm/run.sh; it refuses to run anywhere else). In the guest, / is the host's root (read-only
# 9p) under a tmpfs overlay, so node, node_modules, the built addon and the sources are the host's, and
# every write (tsx's cache in /tmp, ava's in node_modules/.cache) lands in guest RAM and is discarded.
#
# 1. says what the guest is (kernel, vCPUs, memory, cgroup2 controllers) and checks it is v2-only;
# 2. loads the native addon with plain node (fast; a broken build fails here with a clear message);
# 3. runs ava on FILE... with timeouts raised for the emulated guest, one test file at a time;
#    the docker files among them (test/docker*) run after the others, in a second ava run, with a
#    dockerd of the guest's own up around it (scripts/v2vm/guest-docker.sh up/down; the files learn of
#    it from CORRAL_TEST_DOCKER=required): the other files (cli-docker, examples) see no dockerd there,
#    as before. Stopping it fails the lane if a container or a container's cgroup is left; a dockerd
#    that does not start fails it too (loudly), unless the docker binaries are not on the host;
# 4. runs the stress script (scripts/asan/stress.ts, release addon) for V2_STRESS_ROUNDS rounds (300, about 90 s; 0: skip);
# 5. runs scripts/check-leftovers.sh: the tests must leave nothing under corral* on v2 either.
# Exit: ava's status, or 1 (check-leftovers, the dockerd's start or stop), or 3 when this is not a v2-only guest.
set -uo pipefail
[[ -n ${V2VM_GUEST-} ]] || { echo "guest-tests: runs only inside the v2 VM (use npm run test:v2)" >&2; exit 2; }
now() { date +%s%N; }
el() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
say() { echo "[v2 guest $(awk '{ printf "%.0f", $1 }' /proc/uptime)s] $*"; }

fstype=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)
say "kernel $(uname -r), $(nproc) vCPUs, $(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo)," \
    "/sys/fs/cgroup is $fstype, controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
if [[ $fstype != cgroup2fs ]] || awk '$3 == "cgroup" { f = 1 } END { exit !f }' /proc/self/mounts; then
  say "not a v2-only guest (cgroup v1 hierarchies mounted, or /sys/fs/cgroup is not cgroup2)"; exit 3
fi

t=$(now)
node -e '
  const n = require("./build/Release/corral.node");
  const magic = n.statfsType("/sys/fs/cgroup");
  if (magic !== 0x63677270) throw new Error("statfsType(/sys/fs/cgroup) = 0x" + magic.toString(16) + ", not cgroup2");
  console.log("addon loaded (" + Object.keys(n).length + " exports), statfs(/sys/fs/cgroup) is cgroup2");
' 2>&1 | sed 's/^/  /' || { say "the native addon does not load in the guest"; exit 1; }
say "node + addon check took $(el "$t")s"

# Timeouts: ava's (inactivity) timeout is raised from the package's 2m; one file at a time keeps the
# two emulated vCPUs for the test itself. Tests may read CORRAL_TEST_SLOWDOWN to stretch their own waits.
export CORRAL_TEST_LANE=v2vm CORRAL_TEST_SLOWDOWN=${CORRAL_TEST_SLOWDOWN:-20}
V2_STRESS_ROUNDS=${V2_STRESS_ROUNDS:-300}
if [[ -n ${V2_NODE_OPTIONS-} ]]; then export NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }$V2_NODE_OPTIONS"; fi
# A crash must say where it happened: core dumps into guest RAM (the guest is thrown away, so the
# lane prints what they are), and the kernel's segfault lines (they name the faulting object and
# offset, e.g. "segfault at 0 ip ... in corral.node[7f..+1a000]") after the run.
mkdir -p /tmp/cores && ulimit -c unlimited 2>/dev/null && echo '/tmp/cores/core.%e.%p.%s' > /proc/sys/kernel/core_pattern 2>/dev/null ||
  say "core dumps not enabled (ulimit or core_pattern refused)"
dmesg -c >/dev/null 2>&1 || true
# ava_run FILE...: one ava run; sets rc (0 if it passed) — only ever from 0 to non-zero.
ava_run() {
  local t arc crashed others
  say "ava ${V2_AVA_ARGS:---timeout=10m --concurrency=1} on $# file(s): $*"
  t=$(now)
  # shellcheck disable=SC2086  # V2_AVA_ARGS is a list of flags
  node node_modules/ava/entrypoints/cli.mjs ${V2_AVA_ARGS:---timeout=10m --concurrency=1} "$@" 2>&1 | tee /tmp/ava-v2.out
  arc=${PIPESTATUS[0]}
  say "ava exited $arc after $(el "$t")s"
  # KNOWN OPEN BUG (2026-11-23): now and then a test file's worker dies of SIGSEGV in this guest early
  # in its run (raw-exec, native-teardown, docker-cpusets-v2 so far), never on the host, and never
  # again on the re-run. The first core dump (2026-12-02) has the main thread idle in epoll, no corral
  # thread started yet, and the fault at address 0 on the one thread left once the known ones (V8's
  # platform workers, libuv's pool, the inspector, the delayed-task scheduler) are counted: the ESM
  # loader-hooks worker that `--import=tsx` starts, running JIT code. So not corral's native code, as
  # far as that dump shows; running compiled JS in the guest (no hooks thread) would confirm it. Until
  # then a file whose worker was killed by a signal (and nothing else failed) is re-run once, and the
  # lane says so loudly. Any other failure, or a second crash, fails the lane.
  if ((arc)); then
    crashed=$(sed -n 's/^ *✘ \(test\/[^ ]*\.test\.ts\) exited due to \(SIG[A-Z]*\).*/\1/p' /tmp/ava-v2.out | sort -u)
    others=$(grep '✘' /tmp/ava-v2.out | grep -vc 'exited due to SIG' || true)
    if [[ -n $crashed && $others == 0 ]]; then
      say "CRASH: worker of $(echo $crashed) killed by a signal (known open bug); re-running once"
      # shellcheck disable=SC2086
      if node node_modules/ava/entrypoints/cli.mjs ${V2_AVA_ARGS:---timeout=10m --concurrency=1} $crashed; then
        say "CRASH then PASS on re-run: $(echo $crashed) — the lane passes, but the crash is a real bug to find"
        arc=0
      fi
    fi
  fi
  ((rc)) || rc=$arc
}

rc=0 plain=() dockerfiles=()
for f in "$@"; do if [[ ${f#./} == test/docker* ]]; then dockerfiles+=("$f"); else plain+=("$f"); fi; done
((${#plain[@]} == 0)) || ava_run "${plain[@]}"
if ((${#dockerfiles[@]})); then
  t=$(now)
  say "docker: starting the guest's own dockerd for ${dockerfiles[*]}"
  bash scripts/v2vm/guest-docker.sh up
  case $? in
    0)
      say "docker: dockerd and the test image ready after $(el "$t")s"
      export CORRAL_TEST_DOCKER=required; ava_run "${dockerfiles[@]}"; unset CORRAL_TEST_DOCKER
      # While the dockerd still answers: check-leftovers looks for the suite's containers too.
      bash scripts/check-leftovers.sh || { say "check-leftovers (docker files): the tests left something behind (see above)"; ((rc)) || rc=1; }
      bash scripts/v2vm/guest-docker.sh down || { say "FAILED: stopping the guest's dockerd found leftovers or failed (see above)"; ((rc)) || rc=1; }
      say "docker: $(el "$t")s in all (dockerd start, image, tests, stop)" ;;
    4) say "DOCKER FILES NOT RUN: the docker binaries are not installed on the host (see above): ${dockerfiles[*]}" ;;
    *) say "FAILED: the guest's dockerd could not be started (see above); ${dockerfiles[*]} not run"; ((rc)) || rc=1 ;;
  esac
fi

# The stress lane's script (scripts/asan/stress.ts) with the release addon, on the real v2-only kernel:
# rounds of concurrent spawns, exec, signals, group kills by cgroup.kill and cgroup.freeze, waits,
# rmdirs, spawns into frozen groups and worker threads exiting with watches open; the fd count and
# our children must be as before. A crash here is recorded below like one in the tests.
if ((V2_STRESS_ROUNDS > 0)); then
  say "stress: ${V2_STRESS_ROUNDS} rounds (UV_THREADPOOL_SIZE=1)"
  t=$(now)
  if UV_THREADPOOL_SIZE=1 node --import tsx scripts/asan/stress.ts "$V2_STRESS_ROUNDS" 2>&1 | sed 's/^/  /'; then
    say "stress: clean after $(el "$t")s"
  else
    say "stress: FAILED after $(el "$t")s"; ((rc)) || rc=1
  fi
fi

# Every crash of this run, wherever it happened (a re-run that passed included).
segv=$(dmesg 2>/dev/null | grep -iE 'segfault|general protection|traps:|trap invalid opcode' || true)
cores=$(ls /tmp/cores 2>/dev/null || true)
if [[ -n $segv || -n $cores ]]; then
  say "CRASH RECORD: kernel lines:"; printf '%s\n' "$segv" | sed 's/^/  /'
  say "CRASH RECORD: core files (in guest RAM, gone with the guest): $(echo $cores)"
  if command -v gdb >/dev/null; then
    for c in /tmp/cores/*; do say "bt of $c"; gdb -q -batch -ex "thread apply all bt 12" "$(command -v node)" "$c" 2>&1 | grep -v "^\[New LWP" | head -160 | sed 's/^/  /'; done
  fi
fi

if bash scripts/check-leftovers.sh; then say "check-leftovers: nothing left under corral*"
else say "check-leftovers: the tests left cgroups behind (see above)"; ((rc)) || rc=1; fi
exit "$rc"
