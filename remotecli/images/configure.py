"""The edits an image makes to its copy of the base: user, agent, units, first-boot work.

Each function is one build stage's work; ``build.py`` times and orders them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from remotecli.errors import ImageError
from remotecli.images import layout
from remotecli.images.chroot import run_in_root
from remotecli.images.recipe import hash_files
from remotecli.images.store import guest
from remotecli.images.unit import (
    AGENT_WANTS_LINK,
    DEFAULT_TARGET,
    FORBIDDEN_WANTS_DIR,
    MASKED_UNITS,
    agent_unit,
)

#: Replaces what debootstrap copied from the build host: the image must not
#: carry this host's resolver or names. Backends that give an instance a
#: network write their own resolv.conf (nspawn: --resolv-conf=).
_RESOLV_CONF = "# remote-cli golden image: no resolver configured; the backend provides one.\n"
_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
)


async def add_cli_user(rootfs: Path) -> None:
    """The unprivileged account the CLIs run as, with its 0700 credential directories."""
    uid = str(layout.CLI_UID)
    await run_in_root(rootfs, ["groupadd", "--gid", uid, layout.CLI_USER])
    # No password (locked "!"), a real shell so the CLIs' own subprocesses work.
    await run_in_root(rootfs, [
        "useradd", "--uid", uid, "--gid", uid, "--create-home", "--home-dir", layout.CLI_HOME,
        "--shell", "/bin/bash", layout.CLI_USER,
    ])  # fmt: skip
    home = guest(rootfs, layout.CLI_HOME)
    for name in layout.CREDENTIAL_DIRS:
        d = home / name
        d.mkdir(mode=0o700, exist_ok=True)
        d.chmod(0o700)  # mkdir's mode is filtered by the umask
        os.chown(d, layout.CLI_UID, layout.CLI_UID)


async def install_agent(rootfs: Path, package_dir: Path, files: Sequence[str]) -> None:
    """Copy the package's ``files`` to PACKAGE_ROOT (root-owned) and precompile them.

    Compiled with the image's own python3 (3.13) in ``checked-hash`` mode: the
    .pyc files stay valid whatever later copies do to mtimes (an ext4 image,
    an overlay), and instances, which run with PYTHONDONTWRITEBYTECODE, never
    need to write one.
    """
    dest_root = guest(rootfs, layout.PACKAGE_ROOT)
    for rel in files:
        src, dest = package_dir / rel, dest_root / "remotecli" / rel
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        dest.chmod(0o755 if os.stat(src).st_mode & 0o111 else 0o644)
    await run_in_root(
        rootfs,
        ["python3", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
         f"{layout.PACKAGE_ROOT}/remotecli"],
        env={"PYTHONDONTWRITEBYTECODE": ""},
        hint="The agent's sources must compile with the image's python3 (3.13).",
    )  # fmt: skip


def check_agent_copy(rootfs: Path, files: Sequence[str], expected_sha256: str) -> None:
    """The copy must be what the key was computed from (sources edited mid-build are not)."""
    copied = hash_files(guest(rootfs, layout.PACKAGE_ROOT) / "remotecli", files)
    if copied != expected_sha256:
        raise ImageError("the agent's sources changed while the image was being built; build again")


async def install_units(rootfs: Path) -> None:
    """The agent unit, enabled; gettys and apt timers masked; multi-user as default."""
    unit = guest(rootfs, layout.AGENT_UNIT_PATH)
    unit.write_text(agent_unit())
    unit.chmod(0o644)
    # The image's own systemctl works offline in a chroot: it writes the
    # links the [Install] section asks for, as Debian's own tools would.
    await run_in_root(rootfs, ["systemctl", "enable", layout.AGENT_UNIT])
    await run_in_root(rootfs, ["systemctl", "mask", *MASKED_UNITS])
    await run_in_root(rootfs, ["systemctl", "set-default", DEFAULT_TARGET])
    if not guest(rootfs, AGENT_WANTS_LINK).is_symlink():
        raise ImageError(f"systemctl enable did not create {AGENT_WANTS_LINK}")
    # Instances are throwaway: a persistent journal cost ~8 MiB of writable
    # layer per instance, and the console already carries what we read.
    journald = guest(rootfs, "/etc/systemd/journald.conf.d/remotecli.conf")
    journald.parent.mkdir(parents=True, exist_ok=True)
    journald.write_text("[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n")
    journald.chmod(0o644)


async def first_boot_work(rootfs: Path) -> None:
    """Do at build time what a first boot would do, and strip per-host identity.

    - ldconfig and the journal catalog, then systemd-update-done: stamps
      /etc/.updated and /var/.updated with /usr's mtime so ldconfig.service
      and systemd-journal-catalog-update.service (ConditionNeedsUpdate=) do
      not run at every instance's boot. Must stay the last change under /usr.
    - /etc/machine-id present but empty: systemd then makes a fresh id per
      boot and does not treat the boot as "first boot" (no firstboot/preset
      work). debootstrap leaves a real id in it, and dbus's postinst another
      in /var/lib/dbus/machine-id (every instance would share them): that one
      becomes a link to /etc/machine-id, as on a fresh Debian install.
    - No /etc/hostname (debootstrap copies the build host's): the backend
      names the instance.
    - ``systemctl preset-all`` is NOT run: Debian's presets enable
      systemd-networkd-wait-online.service (see unit.py).
    """
    await run_in_root(rootfs, ["ldconfig"])
    if guest(rootfs, "/usr/bin/journalctl").exists():
        await run_in_root(rootfs, ["journalctl", "--update-catalog"])
    _strip_identity(rootfs)
    await run_in_root(rootfs, ["/usr/lib/systemd/systemd-update-done"])


def _strip_identity(rootfs: Path) -> None:
    """machine ids, hostname, resolver, temp files (see ``first_boot_work``)."""
    machine_id = guest(rootfs, "/etc/machine-id")
    machine_id.unlink(missing_ok=True)
    machine_id.touch(0o444)
    dbus_id = guest(rootfs, "/var/lib/dbus/machine-id")
    if os.path.lexists(dbus_id):
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    guest(rootfs, "/etc/hostname").unlink(missing_ok=True)
    for path, text in (("/etc/resolv.conf", _RESOLV_CONF), ("/etc/hosts", _HOSTS)):
        target = guest(rootfs, path)
        target.unlink(missing_ok=True)
        target.write_text(text)
        target.chmod(0o644)
    for scratch in ("/tmp", "/var/tmp"):  # noqa: S108 (the image's, emptied)
        _empty_dir(guest(rootfs, scratch))
    _empty_dir(guest(rootfs, "/var/cache/apt"), keep_dirs=True)
    wants = guest(rootfs, FORBIDDEN_WANTS_DIR)
    if wants.is_dir() and any(wants.iterdir()):
        raise ImageError(
            f"{FORBIDDEN_WANTS_DIR} is not empty ({', '.join(p.name for p in wants.iterdir())}): "
            "a wait-online service would delay every boot. Mask it in images/unit.py."
        )


def _empty_dir(path: Path, keep_dirs: bool = False) -> None:
    if not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if keep_dirs:
                _empty_dir(entry, keep_dirs=True)
            else:
                shutil.rmtree(entry)
        else:
            entry.unlink()
