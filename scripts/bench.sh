#!/usr/bin/env bash
# `npm run bench`: corral's six benchmarks in one go (issue 5), as root, on this kind of machine.
#   bash scripts/bench.sh [--only lifecycle,spawnmem,kill,cpuset,docker,memory] [--quick] [--record]
# Set-up first (idempotent): cgroup-tools (cgcreate/cgexec/cgdelete), a C compiler, npm packages,
# corral's addon and TypeScript when not built, the C baselines (compiled into build/bench), and
# dockerd via scripts/docker-up.sh for the docker rows (skipped with the reason if it cannot come up).
# Then scripts/bench/main.ts runs each bench in its own Node process, prints the table and writes
# bench-results/latest.{json,md}. Everything the bench creates — cgroups under corral-bench-* parents,
# processes, containers labelled corral-bench.run or carrying the bench's io.corral.agent_id — is removed at the end, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench: $*" >&2; }
if [ "$(id -u)" -ne 0 ]; then say "needs root (real cgroups, real processes, dockerd)"; exit 1; fi
export DEBIAN_FRONTEND=noninteractive

# ---- set-up -----------------------------------------------------------------------------------
need=()
command -v cgexec >/dev/null || need+=(cgroup-tools)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v make >/dev/null || need+=(make)
command -v g++ >/dev/null || need+=(g++)
command -v python3 >/dev/null || need+=(python3)
command -v ps >/dev/null || need+=(procps) # tree-kill runs ps
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >&2
fi
if [ ! -d node_modules/tsx ] || [ ! -d node_modules/execa ] || [ ! -d node_modules/tree-kill ] || [ ! -d node_modules/dockerode ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --ignore-scripts >&2
fi
if [ ! -f build/Release/corral.node ]; then
  say "building corral's native addon"
  npx --no-install node-gyp rebuild >&2
fi

mkdir -p build/bench
for prog in lifecycle forker; do
  if [ ! -x "build/bench/$prog" ] || [ "scripts/bench/$prog.c" -nt "build/bench/$prog" ]; then
    cc -O2 -Wall -o "build/bench/$prog" "scripts/bench/$prog.c"
  fi
done

# 5000 processes in one group: no pids limit or ulimit may stand in the way.
ulimit -u unlimited 2>/dev/null || ulimit -u 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true
if [ "$(cat /proc/sys/kernel/pid_max)" -lt 32768 ]; then echo 32768 > /proc/sys/kernel/pid_max; fi
if [ "$(cat /proc/sys/kernel/threads-max)" -lt 20000 ]; then echo 20000 > /proc/sys/kernel/threads-max; fi

want_docker=1
case " $* " in *" --only "*) [[ "$*" == *docker* ]] || want_docker=0 ;; esac
if [ "$want_docker" = 1 ]; then
  if ! bash scripts/docker-up.sh; then
    say "docker could not be brought up: the docker rows will be skipped"
    export CORRAL_BENCH_NO_DOCKER="scripts/docker-up.sh failed (see its message above)"
  fi
fi

# ---- run ----------------------------------------------------------------------------------------
export CORRAL_BENCH_RUN="${CORRAL_BENCH_RUN:-$$}"
export CORRAL_BENCH_BIN="$PWD/build/bench"

cleanup() {
  # Last resort after main.ts's own clean-up: this run's cgroups, its containers.
  local d
  for d in /sys/fs/cgroup/*/corral-bench-"$CORRAL_BENCH_RUN"* /sys/fs/cgroup/unified/corral-bench-"$CORRAL_BENCH_RUN"*; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d 2>/dev/null | while read -r g; do
      [ -f "$g/freezer.state" ] && echo THAWED > "$g/freezer.state" 2>/dev/null
      [ -f "$g/cgroup.kill" ] && echo 1 > "$g/cgroup.kill" 2>/dev/null
      for p in $(cat "$g/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$g" 2>/dev/null && break; sleep 0.1; done
    done
  done
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    local ids
    ids=$( (timeout 30 docker ps -aq --filter "label=corral-bench.run=$CORRAL_BENCH_RUN"
            timeout 30 docker ps -aq --filter "label=io.corral.agent_id=corral-bench-$CORRAL_BENCH_RUN") 2>/dev/null | sort -u || true)
    if [ -n "$ids" ]; then
      say "removing $(echo "$ids" | wc -l) leftover bench containers"
      echo "$ids" | xargs -r -n 50 timeout 120 docker rm -f >/dev/null 2>&1 || true
    fi
  fi
  rm -rf /var/tmp/corral-bench-state-* 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node --import tsx scripts/bench/main.ts "$@"
