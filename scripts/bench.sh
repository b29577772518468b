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
for prog in lifecycle forker killwait; do
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

# Removes the containers of a bench run ("" = of every run), in parallel, retrying for up to 5 minutes.
remove_containers() {
  command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1 || return 0
  local run=$1 ids deadline=$((SECONDS + 300))
  while [ $SECONDS -lt $deadline ]; do
    ids=$( (timeout 60 docker ps -aq --filter "label=corral-bench.run${run:+=$run}"
            timeout 60 docker ps -aq --filter "label=io.corral.agent_id=corral-bench-${run}" ) 2>/dev/null | sort -u || true)
    [ -n "$ids" ] || return 0
    say "removing $(echo "$ids" | wc -l) bench containers"
    echo "$ids" | xargs -r -P 4 -n 20 timeout 300 docker rm -f >/dev/null 2>&1 || true
  done
  say "bench containers are still there after 5 minutes: docker ps -a --filter label=corral-bench.run"
}

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
  # The cpuset host-lock files of this run's parents (the groups are gone: nobody holds them).
  rm -f /run/corral/*-corral-bench-"$CORRAL_BENCH_RUN"*.lock
  remove_containers "$CORRAL_BENCH_RUN"
  rm -f "/tmp/corral-bench-$CORRAL_BENCH_RUN-docker.sock"
  rm -rf /var/tmp/corral-bench-state-* 2>/dev/null || true
}
# What an earlier run that was killed outright may have left: its containers and its cgroups.
remove_containers ""
for d in /sys/fs/cgroup/*/corral-bench-* /sys/fs/cgroup/unified/corral-bench-*; do
  [ -d "$d" ] || continue
  say "removing $d left by an earlier run"
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done
trap cleanup EXIT
trap 'exit 130' INT TERM

node --import tsx scripts/bench/main.ts "$@"
