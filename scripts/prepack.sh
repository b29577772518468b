#!/bin/sh
# npm pack/publish: the published build. dist/src anew without source maps (the .ts sources are not
# shipped) and the linux-x64 glibc prebuild (N-API, so one binary for every Node >= 20) into prebuilds/,
# which node-gyp-build loads when no local build/ exists. Not in git: .gitignore has both.
set -eu
cd "$(dirname "$0")/.."
rm -rf dist/src prebuilds
tsc -p tsconfig.build.json
prebuildify --napi --strip --tag-libc
# prebuildify moves its output out of build/Release; put a copy back for the scripts and tests that use the local build.
mkdir -p build/Release
cp "prebuilds/$(node -p "process.platform + '-' + process.arch")/corral.glibc.node" build/Release/corral.node
