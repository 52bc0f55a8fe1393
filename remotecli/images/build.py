"""``build_image``: the golden image, stage by stage, cached by its inputs' key.

    (base, cached per base key: debian.py)
    debootstrap → runtime packages
    (image, per image key)
    copy base → extra packages → user → agent → systemd units → clis → first boot → seal

The image is built in ``images/.tmp-<key>-*`` beside its final directory and
renamed into place once sealed, under the cache's build lock: readers see no
image or a whole one, a failed build leaves nothing (and never a mount: see
chroot.py), and a builder killed outright leaves a temp directory the next
build removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

from remotecli.errors import ImageError
from remotecli.images import layout
from remotecli.images.chroot import remove_tree, run_in_root
from remotecli.images.clis import FAKE_CLIS, install_real, link_clis, verify
from remotecli.images.configure import (
    add_cli_user,
    check_agent_copy,
    first_boot_work,
    install_agent,
    install_units,
)
from remotecli.images.debian import apt_install, copy_tree, ensure_base
from remotecli.images.progress import BuildProgress, Stage, StageRunner
from remotecli.images.prune import mark_used, prune_test_images
from remotecli.images.recipe import (
    PACKAGE_DIR,
    BuildOptions,
    ImageInputs,
    image_inputs,
    package_files,
)
from remotecli.images.store import (
    MANIFEST,
    MANIFEST_FORMAT,
    ROOTFS,
    TMP_PREFIX,
    Image,
    bases_dir,
    build_lock,
    cache_dir,
    images_dir,
    load_image,
    scan_tree,
    seal,
    sha256_file,
    write_json,
)
from remotecli.images.unit import AGENT_WANTS_LINK

#: Debian packages whose versions the manifest records.
RECORDED_PACKAGES = ("python3", "python3.13", "systemd", "udev", "nodejs", "ca-certificates")


async def build_image(options: BuildOptions, progress: BuildProgress | None = None) -> Image:
    """Build the image ``options`` describe, or return the one built before (no stage runs)."""
    cache = cache_dir(options.cache_dir)
    inputs = image_inputs(options)
    final = images_dir(cache) / inputs.key()
    if final.is_dir():
        return load_image(final)
    if os.geteuid() != 0:
        raise ImageError(
            "building an image needs root (debootstrap, chroot, file ownership): "
            "run `sudo remotecli image build` (or make up / make test as root)"
        )
    stages = StageRunner(progress)
    async with build_lock(cache, stages.waiting):
        if final.is_dir():  # the builder we waited for made it
            return load_image(final)
        _remove_abandoned_builds(cache)
        started = time.monotonic()
        base = await ensure_base(inputs.base, cache, stages)
        tmp = _make_temp_dir(final)
        try:
            async with stages.stage(Stage.COPY_BASE, f"cp -a base {base.key}") as _:
                await copy_tree(base.rootfs, tmp / ROOTFS)
            manifest = await _configure(tmp / ROOTFS, options, inputs, stages)
            manifest.update(
                key=inputs.key(),
                base={"key": base.key, "built_at": base.record["built_at"]},
                stages=[r.to_json() for r in stages.records],
                build_seconds=round(time.monotonic() - started, 2),
            )
            write_json(tmp / MANIFEST, manifest, mode=0o444)
            tmp.rename(final)
        except BaseException:
            remove_tree(tmp)
            raise
    return load_image(final)


def ensure_test_image(cache: Path | None = None) -> Image:
    """The test image (the test bed's fake CLIs, no real ones): reused, or built (~1 min cold).

    Also removes test images of older sources idle for a day (see prune.py).
    """
    image = asyncio.run(build_image(BuildOptions(test_clis=True, cache_dir=cache)))
    with contextlib.suppress(PermissionError):  # a non-root user reusing root's cache
        mark_used(image)
        prune_test_images(cache, keep=image.key)
    return image


async def _configure(
    rootfs: Path, options: BuildOptions, inputs: ImageInputs, stages: StageRunner
) -> dict[str, Any]:
    """Run the image stages on a fresh copy of the base; return the manifest's content."""
    if options.extra_packages:
        async with stages.stage(
            Stage.EXTRA_PACKAGES,
            f"apt-get install {' '.join(options.extra_packages)}",
            "check the names given with --extra-package (apt-cache policy NAME on a "
            f"{options.release} system) and network access to {options.mirror}.",
        ) as on_line:
            await apt_install(rootfs, tuple(options.extra_packages), on_line)
    else:
        stages.skipped(Stage.EXTRA_PACKAGES, "none requested")

    async with stages.stage(Stage.USER, f"user {layout.CLI_USER} (uid {layout.CLI_UID})"):
        await add_cli_user(rootfs)

    files = package_files(PACKAGE_DIR, inputs.package_parts)
    async with stages.stage(
        Stage.AGENT, f"{len(files)} files to {layout.PACKAGE_ROOT}, compiled by python3"
    ):
        await install_agent(rootfs, PACKAGE_DIR, files)
        check_agent_copy(rootfs, files, inputs.agent_sha256)

    async with stages.stage(Stage.UNITS, f"enable {layout.AGENT_UNIT}, mask gettys"):
        await install_units(rootfs)

    if options.providers:
        specs = options.cli_specs
        async with stages.stage(
            Stage.CLIS,
            f"npm install {' '.join(s.npm_spec for s in specs)}",
            "check access to the npm registry (npm ping) and the pinned versions.",
        ) as on_line:
            await install_real(rootfs, specs, on_line)
            clis = await verify(rootfs, [s.executable for s in specs],
                                {s.executable: s.npm_spec for s in specs})  # fmt: skip
    elif options.test_clis:
        async with stages.stage(Stage.CLIS, "link the test bed's fake CLIs"):
            link_clis(rootfs, FAKE_CLIS)
            clis = await verify(rootfs, FAKE_CLIS)
    else:
        stages.skipped(Stage.CLIS, "no CLIs requested (--providers or --test-clis)")
        clis = {}

    async with stages.stage(Stage.FIRST_BOOT, "ldconfig, catalog, machine-id, cleanup"):
        await first_boot_work(rootfs)

    async with stages.stage(Stage.SEAL, "versions, sizes, hashes"):
        packages = await _package_versions(rootfs)
        python = (await run_in_root(rootfs, ["python3", "--version"])).stdout.split()[-1]
        node = (await run_in_root(rootfs, ["node", "--version"])).stdout.strip()
        scan = await asyncio.to_thread(scan_tree, rootfs)
        sealed = await asyncio.to_thread(seal, rootfs, {n: c.path for n, c in clis.items()})
        unit_sha = await asyncio.to_thread(sha256_file, rootfs / layout.AGENT_UNIT_PATH.lstrip("/"))
    return {
        "format": MANIFEST_FORMAT,
        "sealed": True,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs.to_json(),
        "packages": packages,
        "runtime": {"python": python, "node": node},
        "sizes": {
            "rootfs_bytes": scan.disk_bytes,
            "cli_bytes": scan.cli_bytes,
            "files": scan.files,
        },
        "files": {
            "unit": {"path": layout.AGENT_UNIT_PATH, "sha256": unit_sha, "wants": AGENT_WANTS_LINK},
            "cli_entry_points": {name: c.to_json() for name, c in sorted(clis.items())},
        },
        "layout": {
            "package_root": layout.PACKAGE_ROOT,
            "unit": layout.AGENT_UNIT_PATH,
            "run_dir": layout.RUN_DIR,
            "cli_user": layout.CLI_USER,
            "cli_home": layout.CLI_HOME,
            "cli_prefix": layout.CLI_PREFIX,
            "cli_bin": layout.CLI_BIN,
        },
        "seal": {**sealed, "rootfs_fingerprint": scan.fingerprint},
    }


async def _package_versions(rootfs: Path) -> dict[str, str]:
    done = await run_in_root(
        rootfs, ["dpkg-query", "-W", "-f=${Package}\t${Version}\n", *RECORDED_PACKAGES]
    )
    return dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)


def _make_temp_dir(final: Path) -> Path:
    """Beside ``final`` (same filesystem), so the last step is an atomic rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}")
    tmp.mkdir(mode=0o755)
    return tmp


def _remove_abandoned_builds(cache: Path) -> None:
    """Temp directories of builders that died (we hold the lock: nobody else builds)."""
    for parent in (images_dir(cache), bases_dir(cache)):
        if parent.is_dir():
            for entry in parent.iterdir():
                if entry.name.startswith(TMP_PREFIX):
                    remove_tree(entry)
