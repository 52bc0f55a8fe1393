"""What a cold boot hands Firecracker: the VM artifacts, the kernel command line, the config drive.

The artifacts (``base.VmArtifacts``: kernel ELF, initrd, golden root disk,
cmdline) come from the loader the backend is given (``vmm/artifacts.py``);
``checked_artifacts`` names a missing one before anything is made for the VM.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from remotecli.errors import VmError
from remotecli.images import configdisk
from remotecli.vmm.base import VmArtifacts

#: Appended to the image's cmdline unless it sets them: serial console, reboot = exit,
#: panic = reboot after 1 s (a dead guest ends the process: evidence, not a hang),
#: no PCI probing (Firecracker has virtio-mmio only; saves ~100 ms of boot).
BOOT_ARGS = ("console=ttyS0", "reboot=k", "panic=1", "pci=off")


def boot_args(cmdline: str) -> str:
    """The image's cmdline plus ``BOOT_ARGS`` it does not already set (by key)."""
    words = cmdline.split()
    keys = {w.split("=", 1)[0] for w in words}
    return " ".join([*words, *(a for a in BOOT_ARGS if a.split("=", 1)[0] not in keys)])


def write_config_disk(path: Path, token: str, env: Mapping[str, str]) -> None:
    """The config drive (``images/configdisk.py``): the initramfs unpacks it into /run/agent."""
    configdisk.write_config_disk(path, token=token, env=dict(env))


def checked_artifacts(artifacts: VmArtifacts) -> VmArtifacts:
    for what, path in (("kernel", artifacts.vmlinux), ("root disk", artifacts.disk)):
        if not path.is_file():
            raise VmError(f"the VM {what} {path} does not exist (build the image's VM artifacts)")
    if artifacts.initrd is not None and not artifacts.initrd.is_file():
        raise VmError(f"the VM initrd {artifacts.initrd} does not exist")
    return artifacts
