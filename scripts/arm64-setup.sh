#!/usr/bin/env bash
# What the linux-arm64 prebuild needs here, on an x86_64 Debian machine, as root (idempotent):
#   - the cross compiler (apt: g++-aarch64-linux-gnu): scripts/prepack.sh then builds the arm64 prebuild;
#   - for test/prebuild-arm64.test.ts, under $CORRAL_ARM64_DIR (default /var/cache/corral-arm64):
#     sysroot/  Debian's arm64 Node and its arm64 libraries, unpacked with dpkg -x (never installed);
#     qemu/     qemu-user from the release's backports, unpacked the same way: Debian 12's own qemu-user
#               (7.2) fails the addon's clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD) with EINVAL, 10.0 runs it.
# The packages are fetched with a private apt configuration (its own sources, lists and an empty dpkg
# status, under $CORRAL_ARM64_DIR/apt while it runs): the machine's dpkg architectures, apt sources
# and installed packages stay as they are.
set -euo pipefail
dir=${CORRAL_ARM64_DIR:-/var/cache/corral-arm64}
if [ "$(id -u)" -ne 0 ]; then echo "arm64-setup: needs root (apt-get)" >&2; exit 1; fi

if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "arm64-setup: installing g++-aarch64-linux-gnu" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 g++-aarch64-linux-gnu >&2
fi
if [ -x "$dir/sysroot/usr/bin/node" ] && [ -x "$dir/qemu/usr/bin/qemu-aarch64" ]; then exit 0; fi

codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
a="$dir/apt"
rm -rf "$a"
mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/sources.list.d" "$a/preferences.d"
: > "$a/status"
key=/usr/share/keyrings/debian-archive-keyring.gpg
for suite in "$codename" "$codename-updates" "$codename-backports"; do
  echo "deb [signed-by=$key] http://deb.debian.org/debian $suite main"
done > "$a/sources.list"
echo "deb [signed-by=$key] http://deb.debian.org/debian-security $codename-security main" >> "$a/sources.list"
# The empty dpkg status (whose directory also holds apt's locks): apt resolves Node's whole arm64
# closure, libc6 included, as if nothing were installed, and only downloads it.
apt_opts=(-o "Dir::State::Lists=$a/lists" -o "Dir::State::status=$a/status" -o "Dir::Etc::SourceList=$a/sources.list"
  -o "Dir::Etc::SourceParts=$a/sources.list.d" -o "Dir::Etc::Preferences=$a/preferences" -o "Dir::Etc::PreferencesParts=$a/preferences.d"
  -o "Dir::Cache=$a/cache" -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root)
echo "arm64-setup: fetching Debian's arm64 Node and qemu-user ($codename-backports) into $dir" >&2
apt-get "${apt_opts[@]}" update -qq >&2
apt-get "${apt_opts[@]}" install -qq -y --download-only --no-install-recommends nodejs:arm64 >&2
(cd "$a/cache/archives" && apt-get "${apt_opts[@]}" download -qq "qemu-user/$codename-backports" >&2)
rm -rf "$dir/sysroot" "$dir/qemu"
for deb in "$a"/cache/archives/*.deb; do
  case "$(basename "$deb")" in
    qemu-user_*) dpkg -x "$deb" "$a/qemu" && mkdir -p "$dir/qemu/usr/bin" && mv "$a/qemu/usr/bin/qemu-aarch64" "$dir/qemu/usr/bin/" ;;
    *) dpkg -x "$deb" "$dir/sysroot" ;;
  esac
done
rm -rf "$a"
"$dir/qemu/usr/bin/qemu-aarch64" -L "$dir/sysroot" "$dir/sysroot/usr/bin/node" \
  -e 'console.log(`arm64-setup: ${process.arch} Node ${process.version} (N-API ${process.versions.napi}) under qemu-aarch64`)' >&2
