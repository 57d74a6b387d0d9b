#!/bin/sh
# /init of a kubenode test VM (written by kubenode-integration's vm kit).
# Stage 1 copies the initramfs into a tmpfs and switches to it (runc cannot pivot_root out of
# the initramfs); stage 2 mounts the usual filesystems, loads modules, brings up eth0 and runs
# /etc/vm/test.sh, whose markers (KNVM:PASS/FAIL/DONE) the host reads on the serial console.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ ! -e /.vm-switched ]; then
  busybox mount -t devtmpfs devtmpfs /dev
  exec </dev/console >/dev/console 2>&1
  mkdir -p /newroot
  busybox mount -t tmpfs -o mode=0755,size=85% newroot /newroot
  for e in /* /.[!.]*; do
    case $e in /newroot | /proc | /sys | /dev | '/.[!.]*') ;; *) cp -a "$e" /newroot/ ;; esac
  done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev
  : >/newroot/.vm-switched
  busybox mount --move /dev /newroot/dev
  exec switch_root /newroot /init
fi
exec </dev/console >/dev/console 2>&1
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /sys/fs/cgroup
busybox mount -t devpts devpts /dev/pts
busybox mount -t tmpfs -o mode=1777 shm /dev/shm
busybox mount -t tmpfs -o mode=0755 run /run
busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup
ln -sf /proc/self/fd /dev/fd
echo "KNVM:PASS boot"

while read -r m; do
  insmod "/$m" || echo "KNVM:FAIL modules: insmod $m"
done </etc/vm/modules

hostname kubenode-vm
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
sysctl -qw net.ipv4.ip_forward=1
echo "KNVM:PASS network"

sh /etc/vm/test.sh
rc=$?
case $rc in 0 | 99) ;; *) echo "KNVM:FAIL script: /etc/vm/test.sh exited $rc" ;; esac
sync
echo "KNVM:DONE"
poweroff -f
