#!/bin/sh
# The linux-arm64 glibc prebuild, cross-compiled with Debian's aarch64-linux-gnu-g++
# (scripts/arm64-setup.sh installs it), into <out>/linux-arm64/corral.glibc.node (default out:
# prebuilds/). N-API 8 (binding.gyp's NAPI_VERSION), so the headers of the Node doing the build serve:
# nodedir is npm's if set, else this Node's own include/. Builds in a scratch copy of native/ so
# build/ (the host's addon, which scripts and tests load) is never an arm64 file, not even for a moment.
# On arm64 the addon places children by joining cgroup.procs (the clone3 trampoline is x86_64 only).
set -eu
cd "$(dirname "$0")/.."
out=${1:-$PWD/prebuilds}
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "prebuild-arm64: no aarch64-linux-gnu-g++ (bash scripts/arm64-setup.sh installs it)" >&2
  exit 1
fi
node_prefix=$(dirname "$(dirname "$(command -v node)")")
export npm_config_nodedir="${npm_config_nodedir:-$node_prefix}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/corral-prebuild-arm64.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -r native binding.gyp package.json "$tmp/"
ln -s "$PWD/node_modules" "$tmp/node_modules"
(cd "$tmp" && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ \
  node_modules/.bin/prebuildify --napi --strip --tag-libc --arch arm64 --strip-bin aarch64-linux-gnu-strip)
mkdir -p "$out/linux-arm64"
cp "$tmp/prebuilds/linux-arm64/corral.glibc.node" "$out/linux-arm64/corral.glibc.node"
