"""The VM initramfs: busybox, the kernel modules the root disk needs, and ``/init``.

The archive is a gzip'd cpio (newc) written here, so it is reproducible (entries
sorted, every mtime 0, owner root, gzip without a timestamp) and can hold
``/dev/console`` without root privileges. Debian's cloud kernel has
virtio-mmio, virtio-blk and virtio-net as modules, so a root disk on
``-M microvm`` or Firecracker needs them loaded before it can be mounted.

What ``/init`` does, each step announced on the console as ``remotecli-init: …``:

1. mounts /proc, /sys and devtmpfs; loads the modules in dependency order;
2. finds the root disk by its ext4 label (``ROOT_LABEL``; virtio-mmio devices
   are not probed in command-line order, so never by name) and mounts it rw;
3. finds the optional config disk by its first block (``configdisk.MARKER``),
   mounts a tmpfs at /run (0755), unpacks the disk into /run/agent (0700,
   files 0600) and moves /run onto the new root (systemd keeps an existing /run);
4. with ``remotecli.net=ADDR/PREFIX[,GATEWAY]`` on the command line, sets that
   address on the first non-loopback interface (no DHCP in the image);
5. ``exec switch_root /newroot /sbin/init``.

Any failure prints ``remotecli-init: FAILED: <what> (<evidence>)`` and powers
the VM off at once (``poweroff -f``, then ``reboot -f`` for VMMs that ignore
ACPI power-off: with ``panic=-1 reboot=k`` and QEMU's ``-no-reboot`` or
Firecracker's exit-on-reset the VMM process exits), so a backend sees the
reason on the console and a dead process instead of a timeout.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from remotecli.images.configdisk import MARKER as CONFIG_MARKER

#: The root filesystem's label (``mkfs.ext4 -L``); /init mounts the disk that has it.
ROOT_LABEL = "remotecli-root"
#: Prefix of every line /init prints: the backends' evidence before systemd starts.
CONSOLE_PREFIX = "remotecli-init:"
#: The last line before systemd takes over.
SWITCH_MARKER = f"{CONSOLE_PREFIX} switching root"
FAILED_MARKER = f"{CONSOLE_PREFIX} FAILED:"
#: Modules /init loads (their dependencies are resolved from the kernel package).
#: ext4 is built into Debian's cloud kernel; listed so a kernel that has it as a
#: module still works.
MODULES = (
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "ext4",
    "vmw_vsock_virtio_transport",
)
#: Inside the initramfs: the modules, and the list of them in load order.
MODULE_DIR = "lib/modules"
MODULE_LIST = "etc/remotecli-modules"
#: How long /init waits for the root disk to appear after loading virtio_blk.
DISK_WAIT_TENTHS = 100

INIT_SCRIPT = rf"""#!/bin/sh
# remote-cli VM init (remotecli/images/initramfs.py). Runs as PID 1 from the initramfs.
PATH=/sbin:/bin
export PATH

say() {{ echo "{CONSOLE_PREFIX} $*"; }}
fail() {{
    echo "{FAILED_MARKER} $*"
    sync
    poweroff -f
    sleep 2
    reboot -f
    sleep 60
}}

/bin/busybox --install -s /bin
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "mount /proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "mount /sys"
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || fail "mount devtmpfs on /dev"
say "started (kernel $(uname -r))"

loaded=""
while read -r module; do
    [ -n "$module" ] || continue
    insmod "/{MODULE_DIR}/$module.ko" || fail "insmod $module (loaded so far:$loaded)"
    loaded="$loaded $module"
done < /{MODULE_LIST}
say "modules loaded:$loaded"

label_of() {{
    # ext4 superblock at 1024: magic 0xEF53 at +56, volume name (16 bytes) at +120.
    magic=$(dd if="$1" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' ')
    [ "$magic" = "53ef" ] || return 1
    dd if="$1" bs=1 skip=1144 count=16 2>/dev/null | tr -d '\000'
}}

disks() {{
    for sys in /sys/class/block/*; do
        [ -e "$sys/partition" ] && continue
        name=${{sys##*/}}
        case "$name" in loop*|ram*) continue ;; esac
        echo "/dev/$name"
    done
}}

describe() {{
    out=""
    for dev in $(disks); do
        out="$out $dev:$(( $(cat /sys/class/block/${{dev#/dev/}}/size) / 2048 ))MiB"
        label=$(label_of "$dev") && out="$out:label=$label"
    done
    echo "${{out:- none}}"
}}

root=""
tries=0
while [ -z "$root" ]; do
    for dev in $(disks); do
        [ "$(label_of "$dev")" = "{ROOT_LABEL}" ] && root=$dev && break
    done
    [ -n "$root" ] && break
    tries=$((tries + 1))
    [ "$tries" -gt {DISK_WAIT_TENTHS} ] && \
        fail "no disk labelled {ROOT_LABEL} after {DISK_WAIT_TENTHS // 10} s (disks:$(describe))"
    sleep 0.1
done
mkdir -p /newroot
mount -t ext4 -o rw "$root" /newroot || \
    fail "mount $root (label {ROOT_LABEL}) on /newroot (disks:$(describe))"
say "root $root mounted (disks:$(describe))"

config=""
for dev in $(disks); do
    [ "$dev" = "$root" ] && continue
    first=$(head -c {len(CONFIG_MARKER) + 1} "$dev" 2>/dev/null)
    [ "$first" = "{CONFIG_MARKER}/" ] && config=$dev && break
done
if [ -n "$config" ]; then
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "mount tmpfs on /run"
    (cd /run && tar -x -f "$config") || fail "unpack the config disk $config"
    [ -d "/run/{CONFIG_MARKER}" ] || fail "config disk $config has no {CONFIG_MARKER}"
    mv "/run/{CONFIG_MARKER}" /run/agent || fail "move the config into /run/agent"
    chown -R 0:0 /run/agent
    chmod 0700 /run/agent
    chmod 0600 /run/agent/*
    [ -s /run/agent/token ] || fail "config disk $config carries no token (files: $(ls /run/agent))"
    say "config disk $config unpacked into /run/agent ($(ls /run/agent | tr '\n' ' '))"
else
    say "no config disk: /run/agent not provided"
fi

net=""
for word in $(cat /proc/cmdline); do
    case "$word" in remotecli.net=*) net=${{word#remotecli.net=}} ;; esac
done
if [ -n "$net" ]; then
    iface=""
    for sys in /sys/class/net/*; do
        [ "${{sys##*/}}" = lo ] || {{ iface=${{sys##*/}}; break; }}
    done
    [ -n "$iface" ] || fail "remotecli.net=$net but no network interface"
    address=${{net%%,*}}
    gateway=""
    [ "$address" = "$net" ] || gateway=${{net#*,}}
    ip link set lo up
    ip link set "$iface" up || fail "ip link set $iface up"
    ip addr add "$address" dev "$iface" || fail "ip addr add $address dev $iface"
    if [ -n "$gateway" ]; then
        ip route add default via "$gateway" dev "$iface" || fail "ip route add default via $gateway"
    fi
    say "network $iface $address${{gateway:+ via $gateway}}"
fi

[ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ] || fail "no /sbin/init on $root"
if [ -n "$config" ]; then
    mount --move /run /newroot/run || fail "mount --move /run /newroot/run"
fi
mount --move /dev /newroot/dev || fail "mount --move /dev /newroot/dev"
mount --move /sys /newroot/sys || fail "mount --move /sys /newroot/sys"
mount --move /proc /newroot/proc || fail "mount --move /proc /newroot/proc"
echo "{SWITCH_MARKER} to /sbin/init on $root"
exec switch_root /newroot /sbin/init
echo "{FAILED_MARKER} exec switch_root /newroot /sbin/init"
poweroff -f
"""


# -- cpio (newc) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One archive member. ``path`` has no leading slash."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode)


def regular(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def cpio_newc(entries: Iterable[Entry]) -> bytes:
    """A cpio archive in the kernel's ``newc`` format: sorted, owner 0, mtime 0."""
    out = io.BytesIO()
    members = sorted(entries, key=lambda e: e.path)
    for ino, entry in enumerate([*members, Entry("TRAILER!!!", 0)], start=1):
        name = entry.path.encode() + b"\0"
        is_trailer = entry.path == "TRAILER!!!"
        fields = (
            0 if is_trailer else ino,
            entry.mode, 0, 0,  # mode, uid, gid
            2 if stat.S_ISDIR(entry.mode) else 1,  # nlink
            0, len(entry.data),  # mtime, filesize
            0, 0, entry.rdev[0], entry.rdev[1],  # dev major/minor, rdev major/minor
            len(name), 0,  # namesize, check
        )  # fmt: skip
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(entry.data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def gzip_reproducible(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def recipe_sha256(busybox_sha256: str, modules: Iterable[str]) -> str:
    """What makes one initramfs differ from another, apart from the kernel's modules."""
    h = hashlib.sha256()
    for part in (INIT_SCRIPT, busybox_sha256, "\n".join(modules), CONFIG_MARKER, "cpio-newc-1"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def build(busybox: bytes, modules: Iterable[tuple[str, bytes]]) -> bytes:
    """The gzip'd cpio: ``/init``, busybox, ``/dev/console``, the modules in load order."""
    modules = list(modules)
    entries = [
        directory("bin"), directory("dev"), directory("etc"), directory("lib"),
        directory(MODULE_DIR), directory("newroot"), directory("proc"), directory("run"),
        directory("sbin"), directory("sys"), directory("tmp", 0o1777),
        # The kernel opens /dev/console for init before anything mounts devtmpfs.
        char_device("dev/console", 5, 1),
        regular("bin/busybox", busybox, 0o755),
        symlink("bin/sh", "busybox"),
        regular("init", INIT_SCRIPT.encode(), 0o755),
        regular(MODULE_LIST, "".join(f"{name}\n" for name, _ in modules).encode()),
        *(regular(f"{MODULE_DIR}/{name}.ko", data) for name, data in modules),
    ]  # fmt: skip
    return gzip_reproducible(cpio_newc(entries))


def read_cpio_newc(data: bytes) -> dict[str, Entry]:
    """The members of a newc archive (for tests and ``remotecli image vm --check``)."""
    found: dict[str, Entry] = {}
    pos = 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise ValueError(f"bad cpio header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        pos += 110
        name = data[pos : pos + namesize - 1].decode()
        pos += namesize + (-(pos + namesize) % 4)
        body = data[pos : pos + size]
        pos += size + (-(pos + size) % 4)
        if name == "TRAILER!!!":
            return found
        found[name] = Entry(name, mode, body, (rmaj, rmin))
