#!/usr/bin/env bash
# Builds the addon with AddressSanitizer + UBSan into build-asan/ (never touches build/Release).
# The result is build-asan/build/Release/corral.node; load it with CORRAL_ADDON=<that path> and run
# node with LD_PRELOAD of gcc's libasan (node itself is not instrumented). See scripts/asan/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build-asan
mkdir -p "$out"
rm -rf "$out/native"
cp -r native "$out/native"
# binding.gyp with the sanitizer flags added to the one target (sources stay the same list).
node -e '
const fs = require("fs");
const g = eval("(" + fs.readFileSync("binding.gyp", "utf8") + ")");
const t = g.targets[0];
const san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-g"];
t.cflags_cc = t.cflags_cc.filter((f) => f !== "-O2").concat(["-O1"], san);
t.cflags = (t.cflags || []).concat(san);
t.ldflags = (t.ldflags || []).concat(["-fsanitize=address,undefined"]);
t.include_dirs = [require("path").dirname(require.resolve("node-addon-api/package.json"))];
fs.writeFileSync(process.argv[1] + "/binding.gyp", JSON.stringify(g, null, 2));
' "$out"
(cd "$out" && npx --no-install node-gyp rebuild >build.log 2>&1) || { tail -40 "$out/build.log"; exit 1; }
echo "asan addon: $out/build/Release/corral.node"
