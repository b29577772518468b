#!/usr/bin/env bash
# scripts/sweep-stale.sh — before a run: remove what killed earlier test runs left behind.
#
# Only the suite's own names (test/helpers/names.ts): top-level cgroup parents `corral-test-*` in every
# cgroup hierarchy, and their cpuset lock files /run/corral/cpuset-<root>-corral-test-*.lock. Never the
# defaults (`corral`, `corral.slice`), never another prefix: a live corral agent is not the suite's.
#
# A name is stale only when nothing can still be using it:
#   - it carries the pid of its creator — `corral-test-<run>-<tag>-<pid>-<n>` (uniqueName: the ava
#     worker's pid), or `corral-test-...-<pid>` — and no process with that pid exists;
#   - and its run id is not a live run: scripts/test.sh registers its run id in $REG
#     (/run/corral-test-runs/<id>, holding its pid) for as long as it runs, so a run whose worker
#     crashed keeps its leftovers for its own leftover check instead of having them swept by another.
# Names without a creator pid are left alone (not ours to judge). Engineers running `npx ava` beside a
# run are safe: their workers' pids are alive.
# For a stale parent: everything in it thawed, SIGKILLed until empty, directories removed (bounded);
# its lock file removed once no group of that name remains and no one holds the flock.
# Prints one line per removal; exit 0 unless something stale could not be removed (then 1).
# --dry-run: only lists what it would remove.
set -u
dry=""; [ "${1-}" = --dry-run ] && dry=1
REG=${CORRAL_TEST_RUNS_DIR:-/run/corral-test-runs}
LOCK_DIR=/run/corral
rc=0

alive() { [ -n "$1" ] && [ -d "/proc/$1" ]; }

# Run ids of live scripts/test.sh runs (stale registrations are dropped).
live_runs=()
if [ -d "$REG" ]; then
  for f in "$REG"/*; do
    [ -f "$f" ] || continue
    if alive "$(cat "$f" 2>/dev/null)"; then live_runs+=("$(basename "$f")"); else rm -f "$f"; fi
  done
fi

# stale NAME: true when NAME (a corral-test-* parent, `.slice` allowed) carries a dead creator pid and
# belongs to no live run.
stale() {
  local name=${1%.slice} pid id
  case $name in corral-test-*) ;; *) return 1 ;; esac
  [[ $name =~ -([0-9]+)-[0-9]+$ ]] || [[ $name =~ -([0-9]+)$ ]] || return 1
  pid=${BASH_REMATCH[1]}
  alive "$pid" && return 1
  for id in "${live_runs[@]}"; do
    case $name in "corral-test-$id-"*) return 1 ;; esac
  done
  return 0
}

mapfile -t roots < <(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts | sort -u)

# Stale parent names present in any hierarchy.
declare -A parents=()
for r in "${roots[@]}"; do
  for d in "$r"/corral-test-*; do
    [ -d "$d" ] || continue
    n=${d##*/}
    stale "$n" && parents[$n]=1
  done
done

for n in "${!parents[@]}"; do
  if [ -n "$dry" ]; then echo "sweep: would remove stale test parent $n"; continue; fi
  dirs=()
  for r in "${roots[@]}"; do [ -d "$r/$n" ] && dirs+=("$r/$n"); done
  # Thaw first, in every hierarchy: a frozen process cannot die and keeps its other groups busy.
  for top in "${dirs[@]}"; do
    while IFS= read -r d; do
      [ -f "$d/freezer.state" ] && echo THAWED > "$d/freezer.state" 2>/dev/null
      [ -f "$d/cgroup.freeze" ] && echo 0 > "$d/cgroup.freeze" 2>/dev/null
    done < <(find "$top" -type d 2>/dev/null)
  done
  killed=0
  for top in "${dirs[@]}"; do
    while IFS= read -r d; do
      for _ in $(seq 1 500); do   # ≤ ~5 s per group
        mapfile -t pids < <(cat "$d/cgroup.procs" 2>/dev/null)
        ((${#pids[@]})) || break
        [ -f "$d/cgroup.kill" ] && echo 1 > "$d/cgroup.kill" 2>/dev/null
        for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null && killed=$((killed + 1)); done
        sleep 0.01
      done
      for _ in $(seq 1 200); do rmdir "$d" 2>/dev/null && break; [ -d "$d" ] || break; sleep 0.01; done
    done < <(find "$top" -depth -type d 2>/dev/null)
    if [ -d "$top" ]; then echo "sweep: could not remove $top" >&2; rc=1; fi
  done
  echo "sweep: removed stale test parent $n (${#dirs[@]} hierarchies, $killed SIGKILLs)"
done

# Lock files of stale test parents whose groups are gone everywhere, when no one holds the flock.
for f in "$LOCK_DIR"/cpuset-*-corral-test-*.lock; do
  [ -f "$f" ] || continue
  n=${f##*/}; n=${n%.lock}; n=corral-test-${n#*-corral-test-}
  stale "$n" || continue
  present=""
  for r in "${roots[@]}"; do [ -d "$r/$n" ] && present=1; done
  [ -z "$present" ] || [ -n "$dry" ] || continue
  if [ -n "$dry" ]; then echo "sweep: would remove stale lock file $f"; continue; fi
  if flock -n -E 99 "$f" true 2>/dev/null; then rm -f "$f" && echo "sweep: removed stale lock file $f"; fi
done
exit $rc
