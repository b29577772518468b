#!/bin/sh
# npm pack/publish: the published build. dist/src anew without source maps (the .ts sources are not
# shipped) and the prebuilds (N-API, so one binary per platform for every Node >= 20) into prebuilds/,
# which node-gyp-build loads when no local build/ exists. Not in git: .gitignore has both.
#   linux-x64 glibc     always (this machine's compiler)
#   linux-arm64 glibc   when aarch64-linux-gnu-g++ is on the PATH (scripts/prebuild-arm64.sh) and
#                       CORRAL_PREBUILD_ARM64 is not 0; without it the package still packs, and arm64
#                       installs compile from source
set -eu
cd "$(dirname "$0")/.."
rm -rf dist/src prebuilds
tsc -p tsconfig.build.json
if [ "${CORRAL_PREBUILD_ARM64:-1}" != 0 ] && command -v aarch64-linux-gnu-g++ >/dev/null; then
  sh scripts/prebuild-arm64.sh prebuilds
else
  echo "prepack: no linux-arm64 prebuild ($( [ "${CORRAL_PREBUILD_ARM64:-1}" = 0 ] && echo CORRAL_PREBUILD_ARM64=0 || echo 'no aarch64-linux-gnu-g++: bash scripts/arm64-setup.sh'))" >&2
fi
prebuildify --napi --strip --tag-libc
# prebuildify moves its output out of build/Release; put a copy back for the scripts and tests that use the local build.
mkdir -p build/Release
cp "prebuilds/$(node -p "process.platform + '-' + process.arch")/corral.glibc.node" build/Release/corral.node
