"""What the built test image contains, checked on the files and by running them in a chroot.

Booting it is the vmm tests' job (nspawn); these checks need only the tree.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat

import pytest

from remotecli.images import layout
from remotecli.images.clis import resolve_in_root
from remotecli.images.store import Image, list_images, load_image
from remotecli.images.unit import AGENT_WANTS_LINK, MASKED_UNITS, agent_unit
from tests.support.images import in_image

FAKE_VERSIONS = {
    "claude": "2.1.332 (Claude Code)",
    "codex": "codex-cli 0.171.0",
    "gemini": "0.61.0",
}


def test_systemd_is_init(test_image: Image) -> None:
    assert resolve_in_root(test_image.rootfs, "/sbin/init") == "/usr/lib/systemd/systemd"
    assert test_image.guest("/usr/lib/systemd/systemd").is_file()


def test_python3_is_3_13_and_node_runs(test_image: Image) -> None:
    python = in_image(test_image, "python3", "-c", "import sys; print(sys.version_info[:2])")
    node = in_image(test_image, "node", "--version")
    assert python.stdout.strip() == "(3, 13)"
    assert re.fullmatch(r"v2\d+\.\d+\.\d+", node.stdout.strip()), node.stdout
    assert test_image.manifest["runtime"]["node"] == node.stdout.strip()


def test_the_agent_starts_on_the_bare_image_python(test_image: Image) -> None:
    # -S: no site-packages; the agent and providers must be stdlib-only on 3.13.
    done = in_image(
        test_image, "python3", "-S", "-m", "remotecli.agent", "--help",
        env={"PYTHONPATH": layout.PACKAGE_ROOT},
    )  # fmt: skip
    assert "--token-file" in done.stdout and "--run-as" in done.stdout


def test_the_package_copy_is_precompiled_and_root_owned(test_image: Image) -> None:
    agent = test_image.guest(layout.PACKAGE_ROOT) / "remotecli" / "agent"
    pycs = {p.name.split(".")[0] for p in (agent / "__pycache__").glob("*.cpython-313.pyc")}
    sources = {p.stem for p in agent.glob("*.py")}
    assert sources <= pycs
    st = (agent / "server.py").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)


def test_the_unit_is_installed_and_enabled(test_image: Image) -> None:
    unit = test_image.guest(layout.AGENT_UNIT_PATH)
    assert unit.read_text() == agent_unit()
    assert os.readlink(test_image.guest(AGENT_WANTS_LINK)) == layout.AGENT_UNIT_PATH
    text = unit.read_text()
    assert "After=network.target\n" in text
    assert "network-online" not in "".join(
        line for line in text.splitlines() if not line.startswith("#")
    )


def test_nothing_waits_for_network_online(test_image: Image) -> None:
    wants = test_image.guest("/etc/systemd/system/network-online.target.wants")
    assert not wants.exists() or list(wants.iterdir()) == []
    enabled = {p.name for p in test_image.guest("/etc/systemd/system").rglob("*wait-online*")}
    assert enabled == set()


def test_gettys_and_apt_timers_are_masked(test_image: Image) -> None:
    masks = {u: os.readlink(test_image.guest(f"/etc/systemd/system/{u}")) for u in MASKED_UNITS}
    assert masks == dict.fromkeys(MASKED_UNITS, "/dev/null")
    default = os.readlink(test_image.guest("/etc/systemd/system/default.target"))
    assert default.endswith("/multi-user.target")


def test_the_journal_stays_in_memory(test_image: Image) -> None:
    conf = test_image.guest("/etc/systemd/journald.conf.d/remotecli.conf").read_text()
    assert "Storage=volatile" in conf.splitlines()


def test_the_cli_user_and_its_private_credential_dirs(test_image: Image) -> None:
    passwd = test_image.guest("/etc/passwd").read_text().splitlines()
    entry = next(line for line in passwd if line.startswith(f"{layout.CLI_USER}:"))
    assert entry.split(":")[2:6] == [str(layout.CLI_UID), str(layout.CLI_UID), "", layout.CLI_HOME]
    for name in layout.CREDENTIAL_DIRS:
        st = (test_image.guest(layout.CLI_HOME) / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            layout.CLI_UID, layout.CLI_UID, 0o700,
        )  # fmt: skip


@pytest.mark.parametrize("cli", sorted(FAKE_VERSIONS))
def test_the_fake_clis_run_inside_the_image(test_image: Image, cli: str) -> None:
    link = f"{layout.CLI_BIN}/{cli}"
    done = in_image(test_image, link, "--version")
    assert done.stdout.strip() == FAKE_VERSIONS[cli]
    target = resolve_in_root(test_image.rootfs, link)
    assert target == f"{layout.PACKAGE_ROOT}/remotecli/testbed/bin/{cli}"
    entry = test_image.manifest["files"]["cli_entry_points"][cli]
    digest = hashlib.sha256(test_image.guest(target).read_bytes()).hexdigest()
    assert (entry["version"], entry["sha256"]) == (FAKE_VERSIONS[cli], digest)


def test_no_per_host_identity_is_baked_in(test_image: Image) -> None:
    machine_id = test_image.guest("/etc/machine-id")
    assert (machine_id.is_file(), machine_id.stat().st_size) == (True, 0)
    assert os.readlink(test_image.guest("/var/lib/dbus/machine-id")) == "/etc/machine-id"
    assert not os.path.lexists(test_image.guest("/etc/hostname"))
    assert "nameserver" not in test_image.guest("/etc/resolv.conf").read_text()


def test_first_boot_work_was_done_at_build_time(test_image: Image) -> None:
    # ConditionNeedsUpdate= is false when .updated is as new as /usr: no
    # ldconfig.service or catalog rebuild at each instance's boot.
    usr = test_image.guest("/usr").stat().st_mtime_ns
    for stamp in ("/etc/.updated", "/var/.updated"):
        assert test_image.guest(stamp).stat().st_mtime_ns == usr
    assert test_image.guest("/var/lib/systemd/catalog/database").is_file()
    assert not test_image.guest("/usr/sbin/policy-rc.d").exists()
    lists = test_image.guest("/var/lib/apt/lists")
    assert [p.name for p in lists.iterdir() if p.is_file()] == []
    assert list(test_image.guest("/var/cache/apt/archives").glob("*.deb")) == []


def test_the_manifest_describes_the_image(test_image: Image) -> None:
    m = test_image.manifest
    assert (m["key"], m["sealed"], m["inputs"]["test_clis"]) == (test_image.path.name, True, True)
    assert [s["stage"] for s in m["stages"]] == [
        "debootstrap", "runtime packages", "copy base", "user", "agent", "systemd units",
        "clis", "first boot", "seal",
    ]  # fmt: skip
    assert all(s["seconds"] >= 0 for s in m["stages"])
    assert {"python3", "systemd", "nodejs"} <= set(m["packages"])
    assert m["packages"]["python3"].startswith("3.13")
    assert m["runtime"]["python"].startswith("3.13.")
    assert m["sizes"]["rootfs_bytes"] > 200_000_000
    unit_sha = hashlib.sha256(test_image.guest(layout.AGENT_UNIT_PATH).read_bytes()).hexdigest()
    assert m["files"]["unit"]["sha256"] == unit_sha
    assert len(m["inputs"]["agent_sha256"]) == 64
    assert m["built_at"].endswith("Z")


def test_the_image_is_unchanged_since_it_was_sealed(test_image: Image) -> None:
    assert load_image(test_image.path, verify="full").key == test_image.key
    assert test_image.key in {i.key for i in list_images(test_image.path.parent.parent)}
