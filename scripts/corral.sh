#!/usr/bin/env bash
# The main job: set up (build deps, npm ci, addon, TypeScript) when needed, then run the corral CLI
# with the given arguments, e.g. `npm run corral -- run --memory 256M -- sh -c 'echo hi'`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$root/build/Release/corral.node" ] || [ ! -f "$root/dist/src/cli/main.js" ]; then
  bash "$root/scripts/setup-host.sh" >&2
fi
exec "$root/bin/corral" "$@"
