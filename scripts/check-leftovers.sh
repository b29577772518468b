#!/usr/bin/env bash
# After the suite: no task cgroup, no cgroup holding processes under a corral* parent, no corral container.
# Prints what it finds and exits 1 if anything is left.
set -u
left=0
while read -r d; do
  [ -n "$d" ] || continue
  if [ -s "$d/cgroup.procs" ]; then echo "leftover: cgroup $d holds processes" >&2; left=1
  elif echo "$d" | grep -qE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'; then echo "leftover: cgroup $d" >&2; left=1; fi
done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 6 -type d -path '*corral*' 2>/dev/null)
if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
  while read -r line; do [ -n "$line" ] && { echo "leftover: container $line" >&2; left=1; }; done \
    < <(timeout 20 docker ps -a --filter label=io.corral.alloc_id --format '{{.ID}} {{.Names}} {{.Status}}')
fi
exit $left
