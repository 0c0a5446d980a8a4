#!/bin/busybox sh
# Guest init (pid 1) of the kernel matrix, run by busybox from the initramfs.
#
# Shares from the host (virtio 9p):   ctl       control dir: guest.env, cmd.sh in; status out
#                                     hostroot  the host's /, read-only
#                                     work      the working directory, read-write
# Consoles: hvc0 = the command's stdout, hvc1 = its stderr, ttyS0 = kernel log.
#
# pid 1 stays in the initramfs (the command runs as its child in a chroot), so
# the kernel's module helper finds /sbin/modprobe (busybox) and the module
# tree bind-mounted at /lib/modules/$(uname -r) here.

export PATH=/bin:/sbin

die() {
    echo "kernel-matrix: guest init: $*" >/dev/console
    [ -c /dev/hvc1 ] && echo "kernel-matrix: guest init: $*" >/dev/hvc1
    [ -d /ctl/. ] && echo "init-failed: $*" >/ctl/status 2>/dev/null
    sync
    poweroff -f
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

while read -r m; do
    insmod "/boot-modules/$m" || die "insmod $m failed"
done </boot-modules/order

P9="trans=virtio,version=9p2000.L,msize=524288"
mount -t 9p -o "$P9" ctl /ctl || die "cannot mount the control share"
. /ctl/guest.env     # KM_WORKDIR, KM_MODTREE, KM_KCONFIG
KVER=$(uname -r)
uname -r >/ctl/uname
cut -d' ' -f1 /proc/uptime >/ctl/t_init

for i in 1 2 3 4 5 6 7 8 9 10; do [ -c /dev/hvc1 ] && break; sleep 0.1; done
[ -c /dev/hvc1 ] || die "no virtio consoles"
echo "kernel-matrix: guest kernel $KVER" >/dev/hvc1

# Host / read-only, under a tmpfs overlay.
mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower || die "cannot mount the host root"
mount -t tmpfs -o mode=755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || die "cannot mount the overlay"

R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t bpf -o mode=700 bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t tmpfs -o mode=1777 tmp $R/tmp
mount -t tmpfs -o mode=755 run $R/run
mkdir -p $R/run/kernel-matrix
mount --bind /ctl $R/run/kernel-matrix

# This kernel's own config where tools look for it (Debian kernels have no
# /proc/config.gz); the host's /boot is for the host's kernel.
mkdir -p $R/boot
cp "/lower$KM_KCONFIG" "$R/boot/config-$KVER" || die "cannot copy the kernel config"

# The working directory, read-write, at the same path.
if [ -n "$KM_WORKDIR" ] && [ "$KM_WORKDIR" != / ]; then
    mkdir -p "$R$KM_WORKDIR"   # under the guest's own /tmp, say
    mount -t 9p -o "$P9,cache=mmap" work "$R$KM_WORKDIR" || die "cannot mount $KM_WORKDIR"
fi

# The kernel's module tree, here (for the kernel's modprobe calls) and in the chroot.
mount --bind "/lower$KM_MODTREE" /lib/modules/$KVER || die "cannot mount the module tree"
chroot $R /bin/mkdir -p /lib/modules/$KVER
mdir=$(chroot $R /bin/readlink -f /lib/modules/$KVER)
mount --bind "/lower$KM_MODTREE" "$R$mdir"

ip link set lo up
hostname kernel-matrix
ulimit -n 65536   # RLIMIT_MEMLOCK stays the kernel's default, as on a real machine

# The command writes into pipes, as under CI; cat copies them to the raw consoles.
# (hvc resets its termios on the first open: keep both open while setting raw mode)
exec 3>/dev/hvc0 4>/dev/hvc1
stty -F /dev/hvc0 raw -echo
stty -F /dev/hvc1 raw -echo
mkfifo /tmp/out /tmp/err
cat /tmp/out >&3 &
cat_out=$!
cat /tmp/err >&4 &
cat_err=$!

cut -d' ' -f1 /proc/uptime >/ctl/t_start
chroot $R /bin/sh /run/kernel-matrix/cmd.sh </dev/null >/tmp/out 2>/tmp/err 3>&- 4>&-
rc=$?
# Let the copies finish, but not wait for background processes left holding the pipes.
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    kill -0 $cat_out 2>/dev/null || kill -0 $cat_err 2>/dev/null || break
    sleep 0.1
done
cut -d' ' -f1 /proc/uptime >/ctl/t_end
dmesg >/ctl/dmesg
echo $rc >/ctl/status
sync
poweroff -f
sleep 10
