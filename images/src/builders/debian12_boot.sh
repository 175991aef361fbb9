#!/usr/bin/env bash
# Builds debian12-boot: a real, bootable Debian 12 that looks as if it was migrated from VMware and
# will NOT boot on virtio until fixed. Run by images/src/builders/debian12_boot.rs (as root):
#
#   OUT=disk.raw WORK=scratchdir DEB_CACHE=~/.cache/rehost/debootstrap bash debian12_boot.sh
#
# What makes it "VMware-like":
# - MBR, GRUB for BIOS, ext4 root; /etc/fstab and the kernel's root= name /dev/sda1;
# - the initramfs is built with MODULES=list and only SATA/SCSI drivers (no virtio), so on a virtio
#   disk it gives up waiting for the root device;
# - a static address on ens192 (ifupdown, allow-hotplug as Debian's installer writes it) and a
#   70-persistent-net.rules MAC pin for a VMware MAC; open-vm-tools installed and enabled;
# - no console=ttyS0 on the kernel command line (GRUB and the kernel print on the VGA console).
# The guest-side probe rehost-probe.service prints one line on /dev/ttyS0 after the network is up:
# `REHOST-PROBE root=<source of /> ip=<addr/prefix,...> ifaces=<name:addr,...> modules=<virtio,...>`
# (`none` where a list is empty).
set -euo pipefail

: "${OUT:?}" "${WORK:?}" "${DEB_CACHE:?}"
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SIZE=${SIZE:-2G}
ROOT_UUID=4f3c2b1a-0d9e-4c8b-a7f6-5e4d3c2b1a09
DISK_ID=0xdeb12b00
VMWARE_MAC=00:50:56:9a:12:34

mnt="$WORK/mnt"
loop=""
cleanup() {
  set +e
  for m in dev/pts dev proc sys; do
    mountpoint -q "$mnt/$m" && umount -l "$mnt/$m"
  done
  mountpoint -q "$mnt" && umount "$mnt"
  if [ -n "$loop" ]; then
    partx -d "$loop" 2>/dev/null
    losetup -d "$loop"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

truncate -s "$SIZE" "$OUT"
printf 'label: dos\nlabel-id: %s\nstart=2048, type=83, bootable\n' "$DISK_ID" | sfdisk -q "$OUT"
loop=$(losetup -f --show "$OUT")
partx -a "$loop"
part="${loop}p1"
for _ in $(seq 50); do [ -b "$part" ] && break; sleep 0.1; done
mkfs.ext4 -q -U "$ROOT_UUID" "$part"
mkdir -p "$mnt"
mount "$part" "$mnt"

mkdir -p "$DEB_CACHE"
debootstrap --variant=minbase --cache-dir="$DEB_CACHE" \
  --include=linux-image-amd64,grub-pc,initramfs-tools,systemd-sysv,udev,kmod,e2fsprogs,ifupdown,isc-dhcp-client,iproute2,netbase,open-vm-tools,util-linux \
  bookworm "$mnt" "$MIRROR"

mount --bind /dev "$mnt/dev"
mount --bind /dev/pts "$mnt/dev/pts"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
in_guest() { chroot "$mnt" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C "$@"; }

echo debian12-boot >"$mnt/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian12-boot\n' >"$mnt/etc/hosts"
cat >"$mnt/etc/fstab" <<FSTAB
# /etc/fstab: written by the installer on VMware (device names, not UUIDs)
/dev/sda1 / ext4 errors=remount-ro 0 1
FSTAB
cat >"$mnt/etc/network/interfaces" <<NET
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug ens192
iface ens192 inet static
	address 10.0.2.15/24
	gateway 10.0.2.2
NET
echo 'nameserver 10.0.2.3' >"$mnt/etc/resolv.conf"
cat >"$mnt/etc/udev/rules.d/70-persistent-net.rules" <<RULES
# PCI device 0x15ad:0x07b0 (vmxnet3)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="$VMWARE_MAC", ATTR{type}=="1", NAME="ens192"
RULES
echo 'root:rehost' | in_guest chpasswd
: >"$mnt/etc/machine-id"

# Only SATA/SCSI drivers in the initramfs, as a VMware guest built with MODULES=dep would have.
sed -i 's/^MODULES=.*/MODULES=list/' "$mnt/etc/initramfs-tools/initramfs.conf"
printf '%s\n' ahci sd_mod vmw_pvscsi mptspi ext4 >>"$mnt/etc/initramfs-tools/modules"
in_guest update-initramfs -u -k all

cat >"$mnt/usr/local/sbin/rehost-probe" <<'PROBE'
#!/bin/sh
# Prints what the boot achieved on the first serial port, for rehost's boot tests (issue 5):
# REHOST-PROBE root=<source of /> ip=<addr/prefix,...> ifaces=<name:addr,...> modules=<virtio,...>
i=0
while [ "$i" -lt 30 ] && ! ip -4 -o addr show scope global | grep -q inet; do
  sleep 1
  i=$((i + 1))
done
root=$(findmnt -n -o SOURCE /)
ips=""
ifaces=""
for dev in $(ls /sys/class/net); do
  [ "$dev" = lo ] && continue
  addrs=$(ip -4 -o addr show dev "$dev" scope global | awk '{print $4}')
  for a in $addrs; do ips="$ips${ips:+,}$a"; done
  [ -n "$addrs" ] || addrs=none
  for a in $addrs; do ifaces="$ifaces${ifaces:+,}$dev:$a"; done
done
mods=$(awk '$1 ~ /^virtio/ {print $1}' /proc/modules | sort | paste -sd, -)
# Runs after rehost's first-boot job (if any): its log is committed to the ext4 journal before the
# line tells the boot judge it may stop the VM (a hard stop: the journal replays what sync wrote).
sync
echo "REHOST-PROBE root=${root:-unknown} ip=${ips:-none} ifaces=${ifaces:-none} modules=${mods:-none}" >/dev/ttyS0
PROBE
chmod 755 "$mnt/usr/local/sbin/rehost-probe"
cat >"$mnt/etc/systemd/system/rehost-probe.service" <<UNIT
[Unit]
Description=rehost probe (root device, addresses, virtio modules on ttyS0)
Wants=network-online.target
# rehost fixup's first-boot job, when there is one (ordering on a missing unit is a no-op).
After=network-online.target rehost-firstboot.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/rehost-probe

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/rehost-probe.service \
  "$mnt/etc/systemd/system/multi-user.target.wants/rehost-probe.service"

cat >"$mnt/etc/default/grub" <<GRUB
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=\`lsb_release -i -s 2> /dev/null || echo Debian\`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_RECOVERY=true
GRUB_TERMINAL=console
GRUB_GFXPAYLOAD_LINUX=text
GRUB
in_guest grub-install --target=i386-pc --boot-directory=/boot "$loop"
in_guest update-grub
# grub-mkconfig saw the build host's loop device; the VMware guest saw its disk as sda.
sed -i -E "s#${loop}p1#/dev/sda1#g" "$mnt/boot/grub/grub.cfg"
grep -q 'root=/dev/sda1' "$mnt/boot/grub/grub.cfg"
if grep -q "$loop" "$mnt/boot/grub/grub.cfg"; then
  echo "debian12-boot: grub.cfg still names $loop" >&2
  exit 1
fi
if in_guest sh -c 'lsinitramfs /boot/initrd.img-* | grep -q virtio'; then
  echo "debian12-boot: the initramfs must not contain virtio modules" >&2
  exit 1
fi
in_guest apt-get clean
rm -rf "$mnt/var/lib/apt/lists/"*
