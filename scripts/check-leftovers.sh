#!/usr/bin/env bash
# scripts/check-leftovers.sh — after the suite: nothing of the suite's own is left.
#
# Looks ONLY at the suite's own names (test/helpers/names.ts): cgroup parents, temp dirs and
# containers named/labelled `corral-test-<run>-...`, where <run> is CORRAL_TEST_RUN_ID when set
# (scripts/test.sh sets one per run), else any run. It never looks at the default `corral` /
# `corral.slice` parents, /var/lib/corral or containers without the test label: a live corral agent
# (or a `corral run`) working on this machine is not the suite's business and is never touched.
#
# Prints each leftover on stderr and exits 1 if there is any; read-only (it removes nothing).
set -u
prefix="corral-test-${CORRAL_TEST_RUN_ID:+$CORRAL_TEST_RUN_ID-}"
left=0
report() { echo "leftover: $*" >&2; left=1; }

# Cgroups: a test parent (at any depth, in any hierarchy) left behind, with or without processes.
while IFS= read -r d; do
  [ -n "$d" ] || continue
  n=$(wc -l < "$d/cgroup.procs" 2>/dev/null || echo 0)
  report "cgroup $d${n:+ ($n processes)}"
done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 4 -type d -name "${prefix}*" -prune 2>/dev/null)

# Processes whose command line names one of the suite's parents or state dirs (a `corral run`
# child of a CLI test, a helper process), other than this script's own pipeline.
while IFS= read -r p; do
  [ -n "$p" ] || continue
  report "process $p: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-200)"
done < <(pgrep -f -- "$prefix" 2>/dev/null | grep -vx -e "$$" -e "$BASHPID" || true)

# State dirs and other temp files of the sandboxes.
for f in "${TMPDIR:-/tmp}/${prefix}"*; do
  [ -e "$f" ] && report "temp path $f"
done

# Containers labelled by the suite (corral-test.file=corral-test-<run>-...), running or not.
if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    case ${line#* } in "$prefix"*) report "container ${line%% *}" ;; esac
  done < <(timeout 20 docker ps -a --filter label=corral-test.file --format '{{.ID}}/{{.Names}}/{{.Status}} {{.Label "corral-test.file"}}')
fi
exit $left
