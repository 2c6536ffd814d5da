#!/bin/sh
# The guest node's init, run as root inside the guest by virtme-ng (`vng ... -- sh THIS`)
# from the read-only node directory netlab shares with it (keys, sshd_config, this file).
# It makes the guest look like a node netlab reaches over ssh, then keeps the guest up.
set -eu
node=$(dirname "$0")

# The kernel filesystems netlab's steps use. virtme-ng mounts tracefs and cgroup2 itself
# but not bpffs; the guest's own mounts, the host's are not touched.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup

# This machine's netlab (its checkout, virtualenv, command) is hidden: investigations
# must work on a node where netlab was never installed.
while read -r hidden; do
  if [ -d "$hidden" ]; then mount -t tmpfs -o ro,mode=0555 netlab-hidden "$hidden"
  elif [ -e "$hidden" ]; then mount --bind /dev/null "$hidden"; fi
done <"$node/hide"

# /run is the guest's own tmpfs: `ip netns add` needs /run/netns, sshd /run/sshd.
mkdir -p /run/netns /run/sshd

# root gets a home of its own. The host's is shared otherwise, and its dotfiles run on
# every ssh command (here `pyenv init`: 5 s per command under emulation).
mount -t tmpfs -o mode=0700 root-home /root

# virtme-ng locks root's password ('!'), and OpenSSH without PAM then refuses even key
# logins. '*' means no password, keys allowed: how a key-only root node looks.
# /etc/shadow is a bind-mounted file in the guest, so rewrite it in place.
sed 's/^root:!/root:*/' /etc/shadow >/run/shadow.new
cat /run/shadow.new >/etc/shadow
rm -f /run/shadow.new

# QEMU's user-mode network: the guest is 10.0.2.15 and the host forwards its
# 127.0.0.1:PORT there, port 22 (`hostfwd`). restrict=on keeps everything else out.
ip link set lo up
dev=$(ls /sys/class/net | grep -vx lo | head -n 1)
ip link set "$dev" up
ip addr add 10.0.2.15/24 dev "$dev"
ip route add default via 10.0.2.2

/usr/sbin/sshd -f "$node/sshd_config" -E /run/sshd.log
echo "guest init: sshd started on $dev"
exec sleep infinity
