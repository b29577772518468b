#!/usr/bin/env bash
# Installs what corral needs to build on a fresh Debian machine of this kind (compiler, make, python3 for
# node-gyp; npm packages), then builds the addon and the TypeScript. Idempotent and quiet when all is there.
# Docker (scripts/docker-up.sh) and the bench's tools (scripts/bench.sh) install their own.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then echo "setup-host: missing ${need[*]} and not root to install them" >&2; exit 1; fi
  echo "setup-host: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}" >&2
fi

# npm ci runs our own install script (node-gyp rebuild of native/) and prepare (tsc).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund >&2
else
  npx --no-install node-gyp rebuild >&2
  npx --no-install tsc -p tsconfig.json >&2
fi
