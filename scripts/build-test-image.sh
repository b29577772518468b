#!/usr/bin/env bash
# Builds the local test image corral-test/busybox:latest with no registry: a rootfs holding Debian's
# static busybox (package busybox-static) with its applets as symlinks, imported with `docker import`.
# Skipped when the image already exists. CORRAL_TEST_IMAGE overrides the tag.
set -euo pipefail
IMAGE=${CORRAL_TEST_IMAGE:-corral-test/busybox:latest}
export DEBIAN_FRONTEND=noninteractive
say() { echo "build-test-image: $*" >&2; }

if timeout 20 docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi

BB=/bin/busybox
if ! [ -x "$BB" ] || ! "$BB" --list >/dev/null 2>&1 || ldd "$BB" >/dev/null 2>&1; then
  # Missing, or dynamically linked (package busybox): the static build is needed inside the image.
  say "installing busybox-static"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends busybox-static >&2
  BB=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
fi
[ -x "$BB" ] || { say "no static busybox found"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,tmp,etc,proc,sys,dev,alloc,local,secrets,root}
chmod 1777 "$root/tmp"
cp "$BB" "$root/bin/busybox"
# One process makes every applet link (/bin/<applet> -> /bin/busybox): an `ln` per applet costs
# about a minute in the emulated v2 guest (scripts/v2vm/guest-docker.sh builds the image there).
# In the chroot, busybox cannot read /proc/self/exe and links to its argv[0].
chroot "$root" /bin/busybox --install -s /bin
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
tar -C "$root" -cf "$work/rootfs.tar" .
timeout 120 docker import \
  --change 'CMD ["/bin/sh"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$work/rootfs.tar" "$IMAGE" >/dev/null
say "built $IMAGE"
