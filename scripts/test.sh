#!/usr/bin/env bash
# The whole test suite on a fresh machine of this kind, as root: installs what it needs (apt packages,
# npm packages, dockerd), builds, runs the host suite on the real kernel, then the cgroups-v2 lane.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then echo "test: corral's tests need root (real cgroups, real processes)" >&2; exit 1; fi
bash scripts/setup-host.sh
bash scripts/docker-up.sh
status=0
npx --no-install ava || status=$?
bash scripts/check-leftovers.sh || status=$((status ? status : 1))
if [ "$status" -ne 0 ]; then exit "$status"; fi
if [ -f scripts/test-v2.sh ]; then bash scripts/test-v2.sh; fi
