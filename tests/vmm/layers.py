"""Small overlay layers that turn the golden image into the faulty variants we must diagnose.

Each function writes a layer directory (files that replace the image's,
drop-ins, extra enabled units, whiteouts) and returns it; the backend stacks
it over the golden rootfs with ``InstanceSpec.layers``. A whiteout is a
character device 0/0: overlayfs shows the path as deleted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from remotecli.images import layout

UNIT_DIR = Path("etc/systemd/system")


def write(layer: Path, path: str | Path, text: str, mode: int = 0o644) -> Path:
    target = layer / str(path).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)
    return target


def whiteout(layer: Path, path: str | Path) -> None:
    """Delete ``path`` from every layer below (overlayfs: a 0/0 character device)."""
    target = layer / str(path).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def enable(layer: Path, unit: str, target: str = "multi-user.target") -> None:
    link = layer / UNIT_DIR / f"{target}.wants" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"/{UNIT_DIR}/{unit}")


def drop_in(layer: Path, unit: str, text: str, name: str = "test.conf") -> None:
    write(layer, UNIT_DIR / f"{unit}.d" / name, text)


# -- the faulty variants -------------------------------------------------------------


def waits_for_network_online(layer: Path) -> Path:
    """The seed's unit ordering: After=/Wants=network-online.target (harmless on its own)."""
    drop_in(
        layer, layout.AGENT_UNIT,
        "[Unit]\nAfter=network-online.target\nWants=network-online.target\n", "online.conf",
    )  # fmt: skip
    return layer


def wait_online_blocks(layer: Path, service: str = "slow-wait-online.service") -> Path:
    """The seed's ordering AND a wait-online service that holds network-online.target."""
    waits_for_network_online(layer)
    write(
        layer,
        UNIT_DIR / service,
        "[Unit]\nDescription=Wait for the network (test: never finishes)\n"
        "DefaultDependencies=no\nBefore=network-online.target\n\n"
        "[Service]\nType=oneshot\nExecStart=/bin/sleep 600\nRemainAfterExit=yes\n\n"
        "[Install]\nWantedBy=network-online.target\n",
    )
    enable(layer, service, "network-online.target")
    return layer


def networkd_wait_online_blocks(layer: Path) -> Path:
    """The real systemd-networkd-wait-online enabled: with no configured link it waits 2 min."""
    waits_for_network_online(layer)
    link = layer / UNIT_DIR / "network-online.target.wants/systemd-networkd-wait-online.service"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("/usr/lib/systemd/system/systemd-networkd-wait-online.service")
    return layer


def agent_syntax_error(layer: Path) -> Path:
    write(
        layer, f"{layout.PACKAGE_ROOT}/remotecli/agent/app.py",
        '"""A broken agent module (test)."""\n\ndef routes(:\n    pass\n',
    )  # fmt: skip
    return layer


def not_enabled(layer: Path, rootfs_layers: list[Path]) -> Path:
    """Delete the unit's ``*.wants`` symlink(s), wherever the image put them."""
    for base in rootfs_layers:
        for wants in (base / UNIT_DIR).glob("*.wants"):
            link = wants / layout.AGENT_UNIT
            # lexists: the link points into the image (/etc/...), so it dangles on the host.
            if os.path.lexists(link):
                whiteout(layer, link.relative_to(base))
    return layer


def exec_start_missing(layer: Path) -> Path:
    """A drop-in that empties ExecStart= (systemd refuses to start the unit)."""
    drop_in(layer, layout.AGENT_UNIT, "[Service]\nExecStart=\n", "no-exec.conf")
    return layer


def unit_file_broken(layer: Path) -> Path:
    """A unit file mangled by hand: a typo in the key, a bad type."""
    write(
        layer, layout.AGENT_UNIT_PATH,
        "[Unit]\nDescription=remote-cli agent\n\n[Service]\nType=simpel\n"
        "ExecStrat=/usr/bin/python3 -m remotecli.agent\n\n"
        "[Install]\nWantedBy=multi-user.target\n",
    )  # fmt: skip
    return layer


def no_init(layer: Path) -> Path:
    """No systemd to boot: nspawn looks at /usr/lib/systemd/systemd, /lib/..., /sbin/init."""
    whiteout(layer, "/usr/lib/systemd/systemd")
    whiteout(layer, "/usr/sbin/init")
    return layer


def port_taken(layer: Path, port: int = layout.AGENT_PORT) -> Path:
    """Another enabled unit binds the agent's TCP port first."""
    hog = (
        "import os, socket, time\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {port}))\n"
        "s.listen()\n"
        "if os.fork():\n    os._exit(0)\n"
        "time.sleep(3600)\n"
    )
    write(layer, "/usr/local/bin/port-hog", hog, 0o755)
    write(
        layer,
        UNIT_DIR / "port-hog.service",
        "[Unit]\nDescription=Something else on the agent's port (test)\n"
        f"Before={layout.AGENT_UNIT}\n\n"
        "[Service]\nType=forking\nExecStart=/usr/bin/python3 /usr/local/bin/port-hog\n\n"
        "[Install]\nWantedBy=multi-user.target\n",
    )
    enable(layer, "port-hog.service")
    return layer


def token_missing(layer: Path) -> Path:
    """The agent sees an empty /run/agent (as if the backend never provided it)."""
    drop_in(
        layer, layout.AGENT_UNIT, f"[Service]\nTemporaryFileSystem={layout.RUN_DIR}\n",
        "hide-run.conf",
    )  # fmt: skip
    return layer


def agent_hangs(layer: Path) -> Path:
    """The unit runs something that never listens (a wrong ExecStart that blocks)."""
    drop_in(
        layer, layout.AGENT_UNIT,
        "[Service]\nExecStart=\nExecStart=/bin/sleep infinity\n", "hang.conf",
    )  # fmt: skip
    return layer
