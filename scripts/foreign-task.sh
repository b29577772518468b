#!/usr/bin/env bash
# scripts/foreign-task.sh start|check|stop STATEFILE — the proof that the suite leaves a live corral
# agent alone (scripts/test.sh runs it around the host lanes).
#
#   start  runs `corral run` with the DEFAULTS (cgroup parent `corral` / `corral.slice`, state dir
#          /var/lib/corral): a two-process task that lives until stopped, exactly what a user's own
#          corral run beside the suite looks like. Records its CLI pid, task pids, group dirs and the
#          checksum of its state file in STATEFILE.
#   check  everything recorded is untouched: the CLI and every task process alive (same start time)
#          and still in each of its groups, the groups there, the state file byte-identical.
#   stop   ends it as its user would (SIGTERM to `corral run`), checks corral removed its group and
#          record; removes by hand whatever is left (only what `start` made), and the default parent /
#          state dir only when `start` created them and they are empty.
# Exit 0 when all is as it should be; 1 (with the reason on stderr) otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
cmd=${1:-}; sf=${2:-}
[[ -n $cmd && -n $sf ]] || { echo "usage: $0 start|check|stop STATEFILE" >&2; exit 2; }
SLOW=${CORRAL_TEST_SLOWDOWN:-1}
say() { echo "foreign-task: $*" >&2; }
starttime() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }
# Polls "$@" every 0.1 s for up to $1 seconds (stretched by CORRAL_TEST_SLOWDOWN).
until_ok() { local n=$(( $1 * 10 * SLOW )); shift; while ((n-- > 0)); do "$@" && return 0; sleep 0.1; done; "$@"; }

case $cmd in
start)
  alloc=$(cat /proc/sys/kernel/random/uuid)
  created=""
  [[ -e /var/lib/corral ]] || created+=" /var/lib/corral"
  pre_parents=$(find /sys/fs/cgroup -maxdepth 3 -type d \( -name corral -o -name corral.slice \) 2>/dev/null | sort)
  pre_locks=$(find /run/corral -maxdepth 1 -name '*-corral.lock' 2>/dev/null | sort)
  out=$(mktemp "${TMPDIR:-/tmp}/foreign-task.XXXXXX")
  # Its own session: the suite's signals to process groups or sessions would never reach it by accident.
  setsid node bin/corral.js run --alloc-id "$alloc" --name foreign -- sh -c 'sleep 86400 & exec sleep 86401' </dev/null >"$out" 2>&1 &
  cli=$!
  groups() { find /sys/fs/cgroup -mindepth 2 -maxdepth 5 -type d -name "$alloc-foreign*" 2>/dev/null | sort; }
  record() { grep -l -- "$alloc" /var/lib/corral/tasks/* 2>/dev/null | head -1; }
  ready() {
    local g; g=$(groups | head -1)
    [[ -n $g && -n $(record) ]] && (( $(wc -l < "$g/cgroup.procs") == 2 )) && grep -q '"running"\|"pid"' "$(record)"
  }
  if ! until_ok 60 ready; then
    say "the foreign task did not start: $(tail -5 "$out")"; kill -TERM "$cli" 2>/dev/null; exit 1
  fi
  g1=$(groups | head -1)
  rec=$(record)
  post_parents=$(find /sys/fs/cgroup -maxdepth 3 -type d \( -name corral -o -name corral.slice \) 2>/dev/null | sort)
  created+=" $(comm -13 <(echo "$pre_parents") <(echo "$post_parents") | tr '\n' ' ')"
  # The default parent's cpuset lock file, when this task's corral made it.
  created+=" $(comm -13 <(echo "$pre_locks") <(find /run/corral -maxdepth 1 -name '*-corral.lock' 2>/dev/null | sort) | tr '\n' ' ')"
  {
    echo "alloc=$alloc"; echo "cli=$cli"; echo "cli_start=$(starttime "$cli")"; echo "out=$out"
    echo "pids='$(sort -n "$g1/cgroup.procs" | tr '\n' ' ')'"
    echo "starts='$(for p in $(cat "$g1/cgroup.procs"); do echo -n "$p:$(starttime "$p") "; done)'"
    echo "groups='$(groups | tr '\n' ' ')'"
    echo "record=$rec"; echo "record_sum=$(sha256sum < "$rec" | cut -d' ' -f1)"
    echo "created='$created'"
  } > "$sf"
  say "started: corral run (pid $cli) in the default parent, task pids $(sort -n "$g1/cgroup.procs" | tr '\n' ' ')in $(groups | wc -l) groups, record $rec"
  ;;
check)
  # shellcheck disable=SC1090
  source "$sf" || exit 1
  bad=0
  fail() { say "TOUCHED: $*"; bad=1; }
  [[ $(starttime "$cli") == "$cli_start" ]] || fail "corral run (pid $cli) is gone"
  for ps in $starts; do [[ $(starttime "${ps%%:*}") == "${ps#*:}" ]] || fail "task process ${ps%%:*} is gone"; done
  for g in $groups; do
    if [[ ! -d $g ]]; then fail "group $g removed"; continue; fi
    [[ $(sort -n "$g/cgroup.procs" | tr '\n' ' ') == "$pids" ]] || fail "group $g holds '$(sort -n "$g/cgroup.procs" | tr '\n' ' ')', not '$pids'"
  done
  if [[ ! -f $record ]]; then fail "state file $record removed"
  elif [[ $(sha256sum < "$record" | cut -d' ' -f1) != "$record_sum" ]]; then fail "state file $record changed"; fi
  ((bad)) && exit 1
  say "untouched: corral run $cli, task pids $pids, $(echo $groups | wc -w) groups, record $record"
  ;;
stop)
  # shellcheck disable=SC1090
  source "$sf" || exit 1
  bad=0
  if [[ $(starttime "$cli") == "$cli_start" ]]; then
    kill -TERM "$cli"
    until_ok 30 bash -c "! kill -0 $cli 2>/dev/null" || { say "corral run $cli did not end on SIGTERM"; bad=1; }
  fi
  for g in $groups; do [[ -d $g ]] && { say "corral left its group $g: removing it"; bad=1; }; done
  [[ -f $record ]] && { say "corral left its state file $record: removing it"; bad=1; }
  # Remove what is left of the foreign task only (its own pids, groups and record).
  for ps in $starts; do [[ $(starttime "${ps%%:*}") == "${ps#*:}" ]] && kill -KILL "${ps%%:*}"; done
  [[ $(starttime "$cli") == "$cli_start" ]] && kill -KILL "$cli"
  for g in $groups; do [[ -d $g ]] && until_ok 10 rmdir "$g" 2>/dev/null; done
  rm -f "$record" "$out"
  # The default parents and state dir: only those start created, and only when empty (rmdir refuses
  # otherwise: someone else may have started using them meanwhile).
  for c in $created; do
    if [[ $c == /var/lib/corral ]]; then rm -f /var/lib/corral/agent-id; rmdir /var/lib/corral/tasks /var/lib/corral 2>/dev/null
    elif [[ $c == *.lock ]]; then flock -n "$c" true 2>/dev/null && rm -f "$c" # never one another process holds
    else find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null; fi
  done
  rm -f "$sf"
  ((bad)) && exit 1
  say "stopped: corral removed its task's group and record"
  ;;
*) echo "usage: $0 start|check|stop STATEFILE" >&2; exit 2 ;;
esac
