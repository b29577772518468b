#!/usr/bin/env bash
# scripts/v2vm/guest-docker.sh up|down — a Docker daemon of the v2 guest's own, for the docker test
# files the lane runs there (scripts/v2vm/guest-tests.sh calls `up` before ava and `down` after the
# leftover check). Refuses to run outside the guest: it mounts over / and owns the daemon's socket.
#
# up    starts dockerd (which starts its own containerd) from the host's binaries (Debian's docker.io,
#       visible through the guest's read-only 9p root), waits until it answers, checks that it runs
#       containers on cgroup v2, and imports the busybox test image (scripts/build-test-image.sh).
#       The guest has no NAT and no bridge module loaded: --iptables=false --ip6tables=false
#       --bridge=none (the tests use network mode none). overlay2 cannot stack on the guest's overlay
#       root, so the storage driver is vfs on a tmpfs of its own, which also keeps the host's
#       /var/lib/docker (the lower layer of the guest's /) out of the daemon's sight.
#       No systemd in the guest: dockerd takes the cgroupfs cgroup driver.
# down  fails if the daemon holds any container (every test must remove its own), stops it (bounded),
#       and fails if a container's cgroup outlived it.
#
# Exit: 0 ok; 1 the daemon could not be started / stopped, runs on cgroup v1, or left something (the
# reason on stderr, with the tail of its log); 4 (up only) the docker binaries are not installed on the
# host: the docker files then skip, and the lane says so.
# Env: V2_DOCKERD_WAIT_S (bound on the daemon's start and stop, default 300: TCG under host load),
#      V2_DOCKERD_ARGS (extra dockerd flags).
set -uo pipefail
[[ -n ${V2VM_GUEST-} ]] || { echo "guest-docker: runs only inside the v2 VM (scripts/v2vm/guest-tests.sh)" >&2; exit 2; }
cd "$(dirname "$0")/../.." || exit 1
D=/run/v2vm-dockerd           # tmpfs of the guest's /run: pid file, log, exec root
DATA=/var/lib/v2vm-docker     # its own tmpfs (mounted by up)
WAIT_S=${V2_DOCKERD_WAIT_S:-300}
say() { echo "[v2 guest $(awk '{ printf "%.0f", $1 }' /proc/uptime)s] guest-docker: $*" >&2; }
die() { say "$*"; if [[ -s $D/dockerd.log ]]; then say "last lines of the dockerd log:"; tail -n 25 "$D/dockerd.log" | sed 's/^/  /' >&2; fi; exit 1; }
answers() { timeout 20 docker info >/dev/null 2>&1; }
daemon_pid() { local p; p=$(cat "$D/dockerd.pid" 2>/dev/null) && [[ $(cat "/proc/$p/comm" 2>/dev/null) == dockerd ]] && echo "$p"; }

up() {
  local missing=() b
  for b in dockerd containerd containerd-shim-runc-v2 runc docker; do command -v "$b" >/dev/null || missing+=("$b"); done
  if ((${#missing[@]})); then say "not on this host: ${missing[*]} (install docker.io there)"; exit 4; fi
  [[ -z $(daemon_pid) ]] || die "a dockerd of ours runs already (pid $(daemon_pid))"
  mkdir -p "$D" "$DATA" || die "cannot create $D and $DATA"
  mountpoint -q "$DATA" || mount -t tmpfs -o mode=711 v2vm-docker "$DATA" || die "cannot mount a tmpfs at $DATA"
  local t0=$SECONDS
  # setsid: the daemon is no child of the shell that runs ava (a signal to that group leaves it alone);
  # the guest's stage 2 kills whatever is left at power-off, `down` stops it before that.
  # shellcheck disable=SC2086  # V2_DOCKERD_ARGS is a list of flags
  setsid dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
    --data-root="$DATA" --exec-root="$D/exec" --pidfile="$D/dockerd.pid" -H unix:///var/run/docker.sock \
    ${V2_DOCKERD_ARGS:-} < /dev/null > "$D/dockerd.log" 2>&1 &
  local pid=$!
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; die "dockerd exited during start-up (status $?)"; fi
    ((SECONDS - t0 < WAIT_S)) || die "dockerd did not answer within ${WAIT_S}s"
    sleep 1
  done
  local v d
  v=$(timeout 20 docker info --format '{{.CgroupVersion}}' 2>/dev/null) d=$(timeout 20 docker info --format '{{.CgroupDriver}}' 2>/dev/null)
  [[ $v == 2 ]] || die "dockerd reports cgroup version '${v}', not 2: the guest is meant to be v2-only"
  say "dockerd $(dockerd --version | sed 's/^Docker version //') answers after $((SECONDS - t0))s: cgroup v$v, $d driver, storage $(timeout 20 docker info --format '{{.Driver}}' 2>/dev/null)"
  t0=$SECONDS
  timeout 600 bash scripts/build-test-image.sh || die "could not import the test image (scripts/build-test-image.sh)"
  say "test image ready after $((SECONDS - t0))s"
}

down() {
  local rc=0 pid ids t0=$SECONDS
  pid=$(daemon_pid) || { say "no dockerd of ours is running"; return 1; }
  if answers; then
    ids=$(timeout 30 docker ps -aq --no-trunc)
    if [[ -n $ids ]]; then
      say "leftover: containers still in the daemon after the tests:"
      timeout 30 docker ps -a --format '  {{.ID}} {{.Names}} {{.Status}} {{.Label "corral-test.file"}}' >&2
      rc=1
      # shellcheck disable=SC2086
      timeout 120 docker rm -f -v $ids >/dev/null 2>&1
    fi
  else
    say "dockerd no longer answers"; rc=1
  fi
  kill -TERM "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS - t0 >= WAIT_S)); then say "dockerd did not stop within ${WAIT_S}s of SIGTERM; killing it"; kill -KILL "$pid"; rc=1; break; fi
    sleep 0.2
  done
  # Containers under the daemon's own parent (cgroupfs: /sys/fs/cgroup/docker/<id>) or anywhere else.
  local left
  left=$(find /sys/fs/cgroup -mindepth 1 -type d -regex '.*/[0-9a-f]\{64\}' 2>/dev/null)
  if [[ -n $left ]]; then say "leftover: container cgroups after dockerd stopped:"; printf '  %s\n' $left >&2; rc=1; fi
  umount "$DATA" 2>/dev/null
  ((rc)) || say "dockerd stopped after $((SECONDS - t0))s; no container or container cgroup left"
  return "$rc"
}

case ${1-} in
  up) up ;;
  down) down ;;
  *) echo "usage: guest-docker.sh up|down" >&2; exit 2 ;;
esac
