"""How an unjailed firecracker is launched (``bound_vm_dir_argv``).

The process itself is a ``vmmproc.VmmProcess``, as every backend's is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# $1 the state dir, $2 VM_DIR, then the command. Positional: no path is parsed by sh.
LAUNCHER = """set -eu
mount --bind "$1" "$2"
shift 2
exec "$@"
"""


def bound_vm_dir_argv(
    state_dir: Path, vm_dir: Path, netns: Path | None, command: Sequence[str]
) -> list[str]:
    """``command`` (unjailed firecracker) in a private mount namespace where ``state_dir`` is
    bind-mounted on ``vm_dir`` (nothing reaches the host's mounts), in ``netns`` if given."""
    argv = [
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", LAUNCHER, "remotecli-fc", str(state_dir), str(vm_dir), *command,
    ]  # fmt: skip
    return ["nsenter", f"--net={netns}", "--", *argv] if netns else argv
