#!/usr/bin/env bash
# scripts/v2vm/run.sh — run a command as root inside a throwaway VM whose only cgroup hierarchy is
# cgroup2 (cgroups v2, no v1 at all), with this machine's files visible.
#
#   run.sh [-C DIR | DIR] [--] COMMAND [ARGS...]   boot, run COMMAND in DIR (default $PWD), power off
#   run.sh --prepare                               install the host tools and build the cache; no boot
#   run.sh --help
#
# What the guest is
#   - Debian's stock generic kernel (the one linux-image-amd64 points at; 6.1 on bookworm) booted
#     directly by QEMU (uncompressed ELF vmlinux via PVH: no bootloader, no in-guest decompression),
#     with `cgroup_no_v1=all`; cgroup2 is mounted at /sys/fs/cgroup with nsdelegate and every
#     available controller (cpuset cpu io memory hugetlb pids rdma misc) enabled in the root's
#     cgroup.subtree_control. Kernel 6.1 has clone3(CLONE_INTO_CGROUP) and cgroup.kill; it lacks the
#     newer cpuset files (e.g. cpuset.cpus.exclusive, 6.7+).
#     The "cloud" kernel flavour has no 9p at all; the generic one has it as modules, which go into
#     a small cached initramfs together with busybox-static.
#   - This machine's / is shared READ-ONLY over virtio-9p (mount_tag hostroot, msize 512000,
#     cache=loose) with a tmpfs overlay on top, so the guest's / is writable; every write is lost at
#     power-off and nothing on the host is modified. Host binaries (node, npx, bash, ...), the
#     project, its node_modules and its built addon are therefore usable as they are.
#   - COMMAND runs as root (PID 1's child) in DIR with the caller's exported environment; its
#     stdout and stderr (merged) stream out on our stdout. stdin is /dev/null.
#
# Speed (measured on this machine kind): /dev/kvm here is PVM-style (kvm_pvm) and cannot run a stock
# kernel, so the guest runs under QEMU's software emulation (TCG, multi-threaded). Boot to COMMAND is
# about 3-4 s; the first run also downloads the kernel and builds the cache (about 15 s). Inside the
# guest JS runs about 10-15x and process spawning about 50x slower than on the host, and the first
# `node` start reads its files over 9p (about 4 s). Under load from other work on the 2 host cores it
# gets 2-5x worse (ava start-up on a trivial file: 25 s idle, up to 130 s loaded). Run the
# kernel-facing tests in here, not everything (scripts/test-v2.sh; scripts/v2vm/README.md).
#
# Exit status
#   COMMAND's own status when the guest ran it to the end;
#   124  the guest did not finish within V2VM_TIMEOUT (the tail of the console log goes to stderr);
#   125  the VM failed (no status from the guest; the console tail goes to stderr) — or it could not
#        be used at all (not root, tools not installable, no kernel obtainable, QEMU would not start);
#        V2VM_STATUS_FILE tells those apart;
#   2    usage error.
# V2VM_STATUS_FILE=path: written on every exit path with `key=value` lines:
#   result=exit|timeout|vm-failed|unavailable  status=N  reason=TEXT  boot_s=S (guest uptime when
#   COMMAND started)  guest_s=S (guest uptime at COMMAND's end)  wall_s=S (this script, all of it).
#
# Environment
#   V2VM_TIMEOUT   seconds the VM may run, boot included (900)
#   V2VM_CPUS      vCPUs (2)            V2VM_MEM  guest RAM in MiB (2048; the tmpfs overlay lives in it)
#   V2VM_ACCEL     kvm|tcg (tcg unless kvm_intel/kvm_amd is loaded; PVM's /dev/kvm is not usable)
#   V2VM_CPU       QEMU -cpu model (host for kvm, max for tcg)
#   V2VM_CACHE     cache directory (/var/cache/v2vm; delete it to rebuild, or bump CACHE_FORMAT)
#   V2VM_KERNEL_DEB  a linux-image-*.deb to use instead of downloading one (offline machines)
#   V2VM_SETUP_TIMEOUT  bound on each apt step and on the cache build (300 s each)
#   V2VM_LOCK_TIMEOUT   how long to wait for another run building the cache (600 s)
#   V2VM_VERBOSE=1 progress and timings on stderr
#
# Robustness: every step is bounded (apt-get with network and lock timeouts under `timeout`, the cache
# build under a lock so concurrent runs neither corrupt nor duplicate it, QEMU under `timeout` with a
# kill-after). Temporary directories and QEMU are removed/killed on every exit path (normal end,
# error, Ctrl-C, SIGTERM, SIGHUP); QEMU also dies with its `timeout` parent (PR_SET_PDEATHSIG).
set -euo pipefail

CACHE_FORMAT=2   # bump when the cached initramfs/kernel layout changes: forces a rebuild
ME=${0##*/}
t0=$(date +%s%N)

usage() { sed -n '2,6s/^# \{0,1\}//p' "$0" >&2; exit 2; }
PREPARE=
DIR=$PWD
case ${1-} in
  -h|--help) usage ;;
  --prepare) PREPARE=1; shift ;;
  -C) (($# >= 2)) || usage; DIR=$2; shift 2 ;;
  *) if (($# >= 2)) && [[ -d $1 ]]; then DIR=$1; shift; fi ;;  # also: run.sh DIR COMMAND...
esac
if [[ ${1-} == -- ]]; then shift; fi
if [[ -z $PREPARE ]] && (($# == 0)); then usage; fi
DIR=$(cd "$DIR" && pwd -P)

TIMEOUT=${V2VM_TIMEOUT:-900} CPUS=${V2VM_CPUS:-2} MEM=${V2VM_MEM:-2048}
CACHE=${V2VM_CACHE:-/var/cache/v2vm}
SETUP_TIMEOUT=${V2VM_SETUP_TIMEOUT:-300} LOCK_TIMEOUT=${V2VM_LOCK_TIMEOUT:-600}
ACCEL=${V2VM_ACCEL:-tcg}
if [[ -z ${V2VM_ACCEL-} && -w /dev/kvm ]] && [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]]; then
  ACCEL=kvm  # NB: a PVM-style /dev/kvm (kvm_pvm) cannot run a stock kernel at usable speed: tcg then
fi

log() { if [[ -n ${V2VM_VERBOSE-} ]]; then echo "v2vm: $*" >&2; fi; }
secs() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e9 }'; }

# --- outcome reporting ----------------------------------------------------------------------
RESULT= STATUS= REASON= BOOT_S= GUEST_S=
write_status() {
  [[ -n ${V2VM_STATUS_FILE-} ]] || return 0
  printf 'result=%s\nstatus=%s\nreason=%s\nboot_s=%s\nguest_s=%s\nwall_s=%s\n' \
    "$RESULT" "$STATUS" "$REASON" "$BOOT_S" "$GUEST_S" "$(secs $(($(date +%s%N) - t0)))" \
    > "$V2VM_STATUS_FILE" 2>/dev/null || true
}
# The VM cannot be used here at all (as opposed to: it ran and failed).
unavailable() { RESULT=unavailable REASON=$* STATUS=125; echo "v2vm: unavailable: $*" >&2; exit 125; }

# --- cleanup on every exit path ----------------------------------------------------------------
T= B= QPID=
cleanup() {
  if [[ -n $QPID ]]; then  # `timeout` forwards TERM to QEMU; then make sure through QEMU's pidfile
    kill -TERM "$QPID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$QPID" 2>/dev/null || true
    wait "$QPID" 2>/dev/null || true
  fi
  if [[ -n $T && -s $T/qemu.pid ]]; then
    local qp; qp=$(cat "$T/qemu.pid" 2>/dev/null || true)
    if [[ -n $qp ]] && [[ $(cat "/proc/$qp/comm" 2>/dev/null) == qemu-system-* ]]; then kill -KILL "$qp" 2>/dev/null || true; fi
  fi
  [[ -z $B ]] || rm -rf "$B"
  [[ -z $T ]] || rm -rf "$T"
}
on_exit() {
  local rc=$?
  set +e
  cleanup
  if [[ -z $RESULT ]]; then  # an unexpected error or a signal: still say what happened
    if [[ -n $PREPARE && $rc == 0 ]]; then RESULT=prepared STATUS=0
    else RESULT=vm-failed STATUS=$rc REASON=${REASON:-"run.sh exited with status $rc before the guest finished"}; fi
  fi
  write_status
  exit "$rc"
}
trap on_exit EXIT
trap 'REASON="interrupted (SIGINT)"; exit 130' INT
trap 'REASON="terminated (SIGTERM)"; exit 143' TERM
trap 'REASON="hung up (SIGHUP)"; exit 129' HUP

# --- 1. host tools -------------------------------------------------------------------------
(($(id -u) == 0)) || unavailable "needs root (installs packages, writes $CACHE, shares / with the guest)"
APT_OPTS=(-qq -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30 -o Acquire::Retries=2
          -o DPkg::Lock::Timeout=120)
apt_update() {
  log "apt-get update"
  timeout -k 10 "$SETUP_TIMEOUT" apt-get "${APT_OPTS[@]}" update >&2
}

# Everything that changes shared state (apt, the cache) runs under one lock, re-checked inside.
with_lock() {
  mkdir -p "$CACHE" || unavailable "cannot create $CACHE"
  exec 9> "$CACHE/.lock"
  if ! flock -n 9; then
    log "waiting (at most ${LOCK_TIMEOUT}s) for another run holding $CACHE/.lock"
    flock -w "$LOCK_TIMEOUT" 9 || unavailable "timed out after ${LOCK_TIMEOUT}s waiting for $CACHE/.lock (another run building the cache?)"
  fi
  "$@"
  flock -u 9; exec 9>&-
}

missing_tools() {
  pkgs=()
  command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
  command -v depmod >/dev/null || pkgs+=(kmod)
  command -v xz >/dev/null || pkgs+=(xz-utils)
  ((${#pkgs[@]} == 0))
}
install_tools() {
  missing_tools && return 0
  command -v apt-get >/dev/null || unavailable "missing ${pkgs[*]} and no apt-get to install them"
  log "installing ${pkgs[*]}"
  apt_update || unavailable "apt-get update failed or timed out (${SETUP_TIMEOUT}s); cannot install ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive timeout -k 10 "$SETUP_TIMEOUT" \
    apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${pkgs[@]}" >&2 ||
    unavailable "could not install ${pkgs[*]} (apt-get failed or timed out after ${SETUP_TIMEOUT}s)"
  missing_tools || unavailable "still missing after install: ${pkgs[*]}"
}
missing_tools || with_lock install_tools

# --- 2. cache: kernel, busybox, base initramfs with the virtio/9p/overlay modules ----------
cache_ok() { [[ -s $CACHE/vmlinux && -s $CACHE/base.cpio.gz && -x $CACHE/busybox && $(cat "$CACHE/stamp" 2>/dev/null) == "format=$CACHE_FORMAT "* ]]; }

build_cache() {
  cache_ok && return 0
  local tb; tb=$(date +%s%N)
  log "building $CACHE (format $CACHE_FORMAT)"
  rm -rf "$CACHE"/build.*  # a build interrupted by SIGKILL (we hold the lock: nobody else is building)
  B=$(mktemp -d "$CACHE/build.XXXXXX")
  local kdeb
  if [[ -n ${V2VM_KERNEL_DEB-} ]]; then
    [[ -s $V2VM_KERNEL_DEB ]] || unavailable "V2VM_KERNEL_DEB=$V2VM_KERNEL_DEB does not exist"
    kdeb=$V2VM_KERNEL_DEB
  fi
  # linux-image-amd64 is a metapackage; its first "linux-image-<version>" dependency is the kernel.
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
  fetch() {  # apt-get download of the kernel (unless given) and busybox-static, bounded
    local k=; [[ -n ${kdeb-} ]] || k=$(kpkg)
    [[ -n ${kdeb-} || -n $k ]] || return 1
    (cd "$B" && timeout -k 10 "$SETUP_TIMEOUT" apt-get "${APT_OPTS[@]}" -o APT::Sandbox::User=root download $k busybox-static >&2)
  }
  if ! fetch; then  # stale package lists (a newer kernel ABI replaced the one we know) or none yet
    apt_update || unavailable "apt-get update failed or timed out (${SETUP_TIMEOUT}s); no guest kernel"
    fetch || unavailable "could not download the guest kernel ($(kpkg || true)) and busybox-static with apt-get download"
  fi
  [[ -n ${kdeb-} ]] || kdeb=$(ls "$B"/linux-image-*.deb | head -1)
  dpkg-deb -x "$kdeb" "$B/k" && dpkg-deb -x "$B"/busybox-static_*.deb "$B/bb" || unavailable "cannot unpack the downloaded packages"
  local kver; kver=$(ls "$B/k/lib/modules" | head -1)
  [[ -n $kver && -f $B/k/boot/vmlinuz-$kver ]] || unavailable "no kernel image in $kdeb"
  depmod -b "$B/k" "$kver"
  mkdir -p "$B/i"/{bin,mod,dev,proc,sys,lower,rw,newroot}; cp "$B/bb/bin/busybox" "$B/i/bin/"
  : > "$B/i/mod/order"
  modprobe -d "$B/k" -S "$kver" -a --show-depends virtio_pci 9pnet_virtio 9p overlay |
    awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r m; do
      cp "$m" "$B/i/mod/"; echo "${m##*/}" >> "$B/i/mod/order"; done
  grep -q '^9p\.ko' "$B/i/mod/order" || unavailable "kernel $kver has no 9p module (the cloud flavour has none; the generic one does)"
  # Uncompressed ELF vmlinux: QEMU boots it via PVH, skipping a slow XZ decompression under TCG.
  local z=$B/k/boot/vmlinuz-$kver off
  off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$z" | head -1 | cut -d: -f1)
  [[ -n $off ]] || unavailable "kernel $kver is not XZ-compressed; cannot extract vmlinux"
  tail -c +$((off + 1)) "$z" | xz -dc > "$B/vmlinux" 2>/dev/null || true  # (trailing data is expected)
  [[ $(head -c 4 "$B/vmlinux") == $'\x7fELF' ]] || unavailable "cannot extract an ELF vmlinux from $z"
  (cd "$B/i" && find . | ../bb/bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$B/base.cpio.gz"
  truncate -s %4 "$B/base.cpio.gz"  # a cpio appended later must start 4-byte aligned
  # Publish: each mv is atomic; the stamp goes last, so a half-written cache is never "ok".
  rm -f "$CACHE/stamp"
  mv "$B/base.cpio.gz" "$B/vmlinux" "$CACHE/"; mv "$B/bb/bin/busybox" "$CACHE/busybox"
  echo "format=$CACHE_FORMAT kernel=$kver built=$(date -u +%FT%TZ)" > "$CACHE/stamp"
  rm -rf "$B"; B=
  log "cache built in $(secs $(($(date +%s%N) - tb)))s: kernel $kver"
}
if ! cache_ok; then
  with_lock build_cache  # the network steps inside are bounded; the rest is local unpacking
fi
if [[ -n $PREPARE ]]; then
  RESULT=prepared STATUS=0 REASON="$(cat "$CACHE/stamp")"
  log "ready: $REASON accel=$ACCEL"
  exit 0
fi

# --- 3. per-run initramfs tail: /init (stage 1), stage 2 and the command ---------------------
# Leftovers of runs that were SIGKILLed (no trap ran): older than an hour and no QEMU alive.
for d in "${TMPDIR:-/tmp}"/v2vm.*; do
  [[ -d $d ]] && [[ -n $(find "$d" -maxdepth 0 -mmin +60 2>/dev/null) ]] || continue
  p=$(cat "$d/qemu.pid" 2>/dev/null || true)
  [[ -n $p && $(cat "/proc/$p/comm" 2>/dev/null) == qemu-system-* ]] || rm -rf "$d"
done
T=$(mktemp -d "${TMPDIR:-/tmp}/v2vm.XXXXXX")
mkdir "$T/i"
cat > "$T/i/init" <<'EOF'
#!/bin/busybox sh
# stage 1 (initramfs, PID 1): modules, 9p root + tmpfs overlay, cgroup2, then switch_root
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev; mount -t proc proc /proc; mount -t sysfs sys /sys
echo "v2vm-stage1" > /dev/ttyS1
fail() { echo "v2vm: stage 1 failed: $*" > /dev/ttyS1; poweroff -f; }
for m in $(cat /mod/order); do insmod /mod/$m || echo "v2vm: insmod $m failed" > /dev/ttyS1; done
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /lower || fail "mount 9p hostroot"
mount -t tmpfs -o mode=755 rw /rw; mkdir /rw/up /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/up,workdir=/rw/work,redirect_dir=on overlay /newroot || fail "mount overlay"
R=/newroot
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts -o ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs shm $R/dev/shm; mount -t tmpfs -o mode=755 run $R/run
ln -sf /proc/self/fd $R/dev/fd; ln -sf fd/0 $R/dev/stdin; ln -sf fd/1 $R/dev/stdout; ln -sf fd/2 $R/dev/stderr
mount -t cgroup2 -o nsdelegate cgroup2 $R/sys/fs/cgroup || fail "mount cgroup2"
for c in $(cat $R/sys/fs/cgroup/cgroup.controllers); do echo +$c > $R/sys/fs/cgroup/cgroup.subtree_control; done
ip link set lo up; hostname v2vm
mkdir $R/run/v2vm; cp /bin/busybox /cmd.sh /stage2 $R/run/v2vm/; [ -e /tty ] && touch $R/run/v2vm/tty
exec switch_root $R /run/v2vm/busybox sh /run/v2vm/stage2
EOF
cat > "$T/i/stage2" <<'EOF'
# stage 2 (PID 1 on the overlay root): run the command, report its status, power off
B=/run/v2vm/busybox out=/dev/ttyS0 cat=
$B stty -F /dev/ttyS0 raw -echo
echo "v2vm-boot-s=$($B cut -d' ' -f1 /proc/uptime)" > /dev/ttyS1
if [ ! -e /run/v2vm/tty ]; then  # stdout is a pipe (as in CI) unless ours is a terminal
  out=/run/v2vm/out; $B mkfifo $out; $B cat $out > /dev/ttyS0 & cat=$!
fi
/bin/sh /run/v2vm/cmd.sh < /dev/null > $out 2>&1
rc=$?
for d in /proc/[0-9]*; do  # as in a container: kill whatever the command left behind
  p=${d#/proc/}; [ "$p" = 1 ] || [ "$p" = "$cat" ] || [ ! -e $d/exe ] || kill -9 "$p" 2>/dev/null
done
[ -z "$cat" ] || wait "$cat"
$B stty -F /dev/ttyS0 raw  # tcsetattr(TCSADRAIN): let the UART send the tail of the output
echo "v2vm-exit-status=$rc uptime=$($B cut -d' ' -f1 /proc/uptime)" > /dev/ttyS1
$B poweroff -f
EOF
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
  while IFS= read -r n; do
    case $n in PWD|OLDPWD|SHLVL|_|V2VM_STATUS_FILE) continue ;; esac
    printf 'export %s=%s\n' "$n" "$(q "${!n}")"
  done < <(compgen -e)
  echo 'export V2VM_GUEST=1'
  printf 'cd %s || exit 127\nexec' "$(q "$DIR")"; for a in "$@"; do printf ' %s' "$(q "$a")"; done; echo
} > "$T/i/cmd.sh"
chmod 755 "$T/i/init"; if [[ -t 1 ]]; then touch "$T/i/tty"; fi
(cd "$T/i" && find . | "$CACHE/busybox" cpio -o -H newc 2>/dev/null) | cat "$CACHE/base.cpio.gz" - > "$T/initrd"

# --- 4. boot --------------------------------------------------------------------------------
if [[ $ACCEL == kvm ]]; then acc=(-accel kvm -cpu "${V2VM_CPU:-host}")
else acc=(-accel tcg,thread=multi -cpu "${V2VM_CPU:-max}"); fi
# If this script is SIGKILLed, `timeout` gets SIGTERM (and forwards it), and QEMU dies with `timeout`.
pd_t=(); pd_q=(); if command -v setpriv >/dev/null; then pd_t=(setpriv --pdeathsig TERM); pd_q=(setpriv --pdeathsig KILL); fi
log "accel=$ACCEL cpus=$CPUS mem=${MEM}M timeout=${TIMEOUT}s dir=$DIR kernel: $(cat "$CACHE/stamp")"
: > "$T/console.log"
"${pd_t[@]}" timeout -k 5 "$TIMEOUT" "${pd_q[@]}" qemu-system-x86_64 "${acc[@]}" -M q35 -smp "$CPUS" -m "$MEM" \
  -nodefaults -no-user-config -display none -no-reboot -pidfile "$T/qemu.pid" \
  -chardev stdio,id=out,signal=off -serial chardev:out -serial "file:$T/console.log" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -kernel "$CACHE/vmlinux" -initrd "$T/initrd" \
  -append "console=ttyS1 quiet panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 cryptomgr.notests mitigations=off" \
  < /dev/null 2> "$T/qemu.err" & QPID=$!
set +e; wait "$QPID"; qrc=$?; set -e; QPID=

# --- 5. outcome -----------------------------------------------------------------------------
st=$(sed -n 's/^v2vm-exit-status=\([0-9]*\).*/\1/p' "$T/console.log")
BOOT_S=$(sed -n 's/^v2vm-boot-s=//p' "$T/console.log")
GUEST_S=$(sed -n 's/^v2vm-exit-status=.* uptime=//p' "$T/console.log")
log "guest uptime at command start ${BOOT_S:-?}s, at its end ${GUEST_S:-?}s;" \
    "wall $(secs $(($(date +%s%N) - t0)))s, accel=$ACCEL, qemu rc=$qrc"
if [[ -n $st ]]; then RESULT=exit STATUS=$st; exit "$st"; fi
tail_log() {
  if [[ -s $T/qemu.err ]]; then echo "v2vm: qemu said:" >&2; tail -n 20 "$T/qemu.err" >&2; fi
  echo "v2vm: last lines of the guest console log:" >&2; tail -n 40 "$T/console.log" >&2
}
if ((qrc == 124 || qrc == 137)); then
  if [[ -n $BOOT_S ]]; then where="the command started at guest uptime ${BOOT_S}s"; else where="it never reached the command"; fi
  RESULT=timeout STATUS=124 REASON="the guest did not finish within V2VM_TIMEOUT=${TIMEOUT}s ($where)"
  echo "v2vm: timeout: $REASON" >&2; tail_log; exit 124
fi
if ! grep -q '^v2vm-stage1' "$T/console.log"; then
  # QEMU exited before the guest's first instruction of userspace: it could not start here.
  tail_log
  unavailable "qemu-system-x86_64 (accel=$ACCEL) did not start the guest (rc=$qrc): $(head -c 300 "$T/qemu.err" | tr '\n' ' ')"
fi
RESULT=vm-failed STATUS=125 REASON="the guest ended without reporting a status (qemu rc=$qrc${BOOT_S:+, booted in ${BOOT_S}s})"
echo "v2vm: VM failure: $REASON" >&2; tail_log; exit 125
