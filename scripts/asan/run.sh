#!/usr/bin/env bash
# The sanitizer lane (`npm run test:asan`): the addon built with AddressSanitizer + UBSan into
# build-asan/ (build/Release is left alone), then, all under the sanitizers and UV_THREADPOOL_SIZE=1:
#   1. the native and raw_exec tests (ava; its own summary is printed);
#   2. scripts/asan/stress.ts (STRESS_ROUNDS rounds, default 300: concurrent spawn, exec into the same
#      group, signals, group kill by cgroup.kill / freeze-v2 / freezer-v1, wait-empty, rmdir, spawns into
#      frozen groups, worker threads exiting with watches open; fd count and children checked at the end).
# Node itself is not instrumented, so gcc's libasan is preloaded (it must come first); leak detection is
# off (Node's own allocations at exit are not ours to judge). Any sanitizer report fails the run.
# Exits non-zero on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ]; then echo "test:asan: needs root (real cgroups, real processes)" >&2; exit 1; fi

bash scripts/asan/build.sh
addon="$PWD/build-asan/build/Release/corral.node"
libasan="$(gcc -print-file-name=libasan.so)"
log_dir="$(mktemp -d /tmp/corral-asan-XXXXXX)"
export CORRAL_ADDON="$addon"
export UV_THREADPOOL_SIZE=1
# log_path: every process under the sanitizer writes its report to its own file, checked below
# (a report in an ava worker would otherwise only show as a crashed test file).
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:handle_segv=0:allow_user_segv_handler=1:detect_stack_use_after_return=0:log_path=$log_dir/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$log_dir/ubsan"

status=0
tests=(test/native*.test.ts)
for f in test/raw-exec*.test.ts; do [ -f "$f" ] && tests+=("$f"); done
tests+=(test/task-store.test.ts) # the record writes run in the addon (writeRecordAsync)
echo "test:asan: ${tests[*]} (addon $addon, UV_THREADPOOL_SIZE=1)"
LD_PRELOAD="$libasan" npx --no-install ava --timeout=5m "${tests[@]}" || status=$?
if [ "$status" -eq 0 ]; then
  echo "test:asan: stress (${STRESS_ROUNDS:-300} rounds)"
  LD_PRELOAD="$libasan" node --import tsx scripts/asan/stress.ts "${STRESS_ROUNDS:-300}" || status=$?
fi
reports=$(find "$log_dir" -type f 2>/dev/null | wc -l)
if [ "$reports" -gt 0 ]; then
  echo "test:asan: $reports sanitizer report(s):" >&2
  for r in "$log_dir"/*; do echo "--- $r" >&2; head -60 "$r" >&2; done
  status=${status/#0/1}
fi
rm -rf "$log_dir"
if [ "$status" -ne 0 ]; then echo "test:asan: FAILED" >&2; exit "$status"; fi
echo "test:asan: clean (no sanitizer report; native and raw_exec tests and stress passed)"
