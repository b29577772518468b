#!/usr/bin/env bash
# Makes sure a Docker daemon answers on this machine, as root, for corral's docker tests:
#  - installs docker.io (Debian) when dockerd is missing;
#  - starts dockerd in the background when none answers `docker info`, logging to $CORRAL_DOCKERD_LOG
#    (default /var/log/corral-dockerd.log), and waits (bounded) until it answers;
#  - then builds the local test image (scripts/build-test-image.sh; no registry is needed).
# The daemon is left running. Exits non-zero with one clear line when the daemon cannot be brought up.
#
# Settings: the defaults (overlay2, iptables, bridge) work on this kind of VM (kernel 6.x, hybrid
# cgroups). If overlay2 is refused the daemon is restarted once with --storage-driver=vfs; when
# iptables is missing, --iptables=false --bridge=none (tests use networkMode "none").
# CORRAL_DOCKERD_ARGS adds flags of your own; CORRAL_DOCKER_WAIT_S bounds the wait (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

LOG=${CORRAL_DOCKERD_LOG:-/var/log/corral-dockerd.log}
# A dockerd that was stopped with many containers spends minutes cleaning up stale sandboxes at start.
WAIT_S=${CORRAL_DOCKER_WAIT_S:-300}
export DEBIAN_FRONTEND=noninteractive

say() { echo "docker-up: $*" >&2; }
answers() { timeout 10 docker info >/dev/null 2>&1; }

if [ "$(id -u)" -ne 0 ]; then say "must run as root (installs packages, starts dockerd)"; exit 1; fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || { say "apt-get update failed"; exit 1; }
    apt_updated=1
  fi
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >&2 || { say "apt-get install $* failed"; exit 1; }
}

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  say "dockerd or docker missing: installing docker.io"
  apt_install docker.io
fi
command -v dockerd >/dev/null 2>&1 || { say "dockerd still missing after installing docker.io"; exit 1; }

# dockerd keeps the pid of the containerd it manages in this file. After a dockerd that was killed,
# the file can name a pid the system has since reused for something else: dockerd then takes that
# process for containerd and times out waiting for its socket ("containerd is still running").
clear_stale_containerd_pid() {
  local f=/var/run/docker/containerd/containerd.pid p
  [ -f "$f" ] || return 0
  pgrep -x dockerd >/dev/null 2>&1 && return 0
  p=$(cat "$f" 2>/dev/null || true)
  if [ -z "$p" ] || [ "$(cat "/proc/$p/comm" 2>/dev/null)" != containerd ]; then
    say "removing a stale $f (pid ${p:-none} is not containerd)"
    rm -f "$f"
  fi
}

start_dockerd() {
  # $@: extra flags
  mkdir -p "$(dirname "$LOG")"
  LOG_OFFSET=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
  clear_stale_containerd_pid
  say "starting dockerd $* (log: $LOG)"
  # setsid + nohup: the daemon outlives this script and the test run that called it.
  # shellcheck disable=SC2086
  setsid nohup dockerd "$@" ${CORRAL_DOCKERD_ARGS:-} >>"$LOG" 2>&1 < /dev/null &
  local pid=$!
  local deadline=$((SECONDS + WAIT_S))
  while [ $SECONDS -lt $deadline ]; do
    if answers; then say "dockerd answers (pid $pid)"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      # It may have exited because another dockerd took the socket in the meantime.
      answers && return 0
      say "dockerd exited early; last log lines:"; tail -n 15 "$LOG" >&2 || true
      return 1
    fi
    sleep 1
  done
  say "dockerd did not answer within ${WAIT_S}s; last log lines:"; tail -n 15 "$LOG" >&2 || true
  kill "$pid" 2>/dev/null || true
  return 2  # slow, not broken: no fallback flags
}

# What this start wrote to the log (the log is appended to across runs).
new_log() { tail -c +$((LOG_OFFSET + 1)) "$LOG" 2>/dev/null; }

if ! answers; then
  if pgrep -x dockerd >/dev/null 2>&1; then
    # A daemon is starting (or stuck): give it the same bounded wait before starting another.
    say "a dockerd process exists but does not answer yet; waiting up to ${WAIT_S}s"
    deadline=$((SECONDS + WAIT_S))
    until answers; do
      if [ $SECONDS -ge $deadline ]; then say "the running dockerd does not answer; see its log ($LOG) or stop it"; exit 1; fi
      sleep 1
    done
  else
    flags=()
    if ! command -v iptables >/dev/null 2>&1; then flags+=(--iptables=false --bridge=none); fi
    rc=0; start_dockerd "${flags[@]}" || rc=$?
    if [ $rc -eq 2 ]; then say "dockerd could not be started"; exit 1; fi
    if [ $rc -ne 0 ]; then
      if new_log | grep -qiE 'overlay|storage.driver|graphdriver'; then
        say "retrying with --storage-driver=vfs"
        start_dockerd "${flags[@]}" --storage-driver=vfs || { say "dockerd could not be started"; exit 1; }
      elif new_log | grep -qiE 'iptables|bridge' && [ ${#flags[@]} -eq 0 ]; then
        say "retrying with --iptables=false --bridge=none"
        start_dockerd --iptables=false --bridge=none || { say "dockerd could not be started"; exit 1; }
      else
        say "dockerd could not be started"; exit 1
      fi
    fi
  fi
fi

bash scripts/build-test-image.sh
