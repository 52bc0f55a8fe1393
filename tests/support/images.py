"""The image tests' support: a command run inside a built image, a build-progress recorder."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from remotecli import proc
from remotecli.images.chroot import run_in_root
from remotecli.images.progress import Stage
from remotecli.images.store import Image


def in_image(image: Image, *argv: str, env: Mapping[str, str] | None = None) -> proc.Completed:
    """Run ``argv`` chrooted into the image (fresh /proc in its own namespaces)."""
    return asyncio.run(run_in_root(image.rootfs, argv, env=env, timeout=60))


class Recorder:
    """A ``BuildProgress`` that remembers every call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def waiting(self, message: str) -> None:
        self.events.append(("waiting", message))

    def stage_started(self, stage: Stage, detail: str) -> None:
        self.events.append(("started", str(stage)))

    def stage_output(self, stage: Stage, line: str) -> None:
        pass

    def stage_finished(self, stage: Stage, seconds: float) -> None:
        self.events.append(("finished", str(stage)))

    def stage_failed(self, stage: Stage, seconds: float) -> None:
        self.events.append(("failed", str(stage)))

    def stage_skipped(self, stage: Stage, reason: str) -> None:
        self.events.append(("skipped", str(stage)))
