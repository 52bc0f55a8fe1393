"""Build stages: their names, how a display follows them, how each is timed and fails.

The builder calls a ``BuildProgress`` (the CLI renders it with Rich, tests
record it); every stage is timed into a ``StageRecord`` that ends up in the
manifest; an error inside a stage becomes ``BuildFailed`` (an ``ImageError``,
in the tree drawn in ``remotecli/errors.py``) naming the stage, what it was
doing and what to do.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from remotecli.errors import ImageError, RemoteCliError


class Stage(enum.StrEnum):
    """In build order. The first two make the cached Debian base; VM_* the VM artifacts."""

    DEBOOTSTRAP = "debootstrap"
    RUNTIME_PACKAGES = "runtime packages"
    COPY_BASE = "copy base"
    EXTRA_PACKAGES = "extra packages"
    USER = "user"
    AGENT = "agent"
    UNITS = "systemd units"
    CLIS = "clis"
    FIRST_BOOT = "first boot"
    SEAL = "seal"
    # VM artifacts of a built image (vm.py)
    VM_KERNEL = "vm kernel"
    VM_INITRAMFS = "vm initramfs"
    VM_DISK = "vm disk"
    VM_SEAL = "vm seal"
    # the micro kernel (microkernel.py)
    KERNEL_TOOLS = "kernel tools"
    KERNEL_SOURCE = "kernel source"
    KERNEL_FETCH = "kernel fetch"
    KERNEL_CONFIG = "kernel config"
    KERNEL_COMPILE = "kernel compile"
    KERNEL_SEAL = "kernel seal"


class BuildProgress(Protocol):
    """What a display learns about a build. A cache hit calls none of these."""

    def waiting(self, message: str) -> None:
        """Another builder holds the cache lock; we wait for it."""

    def stage_started(self, stage: Stage, detail: str) -> None: ...

    def stage_output(self, stage: Stage, line: str) -> None:
        """One line of a command's output (apt, debootstrap, npm), for a live display."""

    def stage_finished(self, stage: Stage, seconds: float) -> None: ...

    def stage_failed(self, stage: Stage, seconds: float) -> None:
        """The stage raised; the error (``BuildFailed``) reaches the caller next."""

    def stage_skipped(self, stage: Stage, reason: str) -> None:
        """The stage's result came from a cache (the base) or it had nothing to do."""


class BuildFailed(ImageError):
    """A stage failed. Carries the stage and the underlying error's evidence."""

    code = "image_build_failed"

    def __init__(self, stage: Stage, detail: str, cause: BaseException, what_to_do: str) -> None:
        self.stage = stage
        self.cause = cause
        evidence = cause.message if isinstance(cause, RemoteCliError) else repr(cause)
        message = f"image build failed in stage '{stage}' ({detail}):\n{evidence}"
        if what_to_do:
            message += f"\nWhat to do: {what_to_do}"
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        out = {**super().to_dict(), "stage": str(self.stage)}
        if isinstance(self.cause, RemoteCliError):
            out["cause"] = self.cause.to_dict()
        return out


@dataclass(frozen=True)
class StageRecord:
    stage: Stage
    seconds: float
    #: True when the work was done earlier (the base) and reused.
    cached: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": str(self.stage), "seconds": self.seconds, "cached": self.cached,
        }  # fmt: skip
        if self.note:
            out["note"] = self.note
        return out


class StageRunner:
    """Times stages, reports them, and turns their failures into ``BuildFailed``."""

    def __init__(self, progress: BuildProgress | None) -> None:
        self.progress = progress
        self.records: list[StageRecord] = []

    @contextlib.asynccontextmanager
    async def stage(
        self, stage: Stage, detail: str, what_to_do: str = ""
    ) -> AsyncIterator[Callable[[str], None]]:
        """Run the body as ``stage``; yields an ``on_line`` callback for command output."""
        if self.progress is not None:
            self.progress.stage_started(stage, detail)
        started = time.monotonic()

        def on_line(line: str) -> None:
            if self.progress is not None and line.strip():
                self.progress.stage_output(stage, line)

        try:
            yield on_line
        except BaseException as exc:
            if self.progress is not None:
                self.progress.stage_failed(stage, round(time.monotonic() - started, 2))
            if isinstance(exc, (RemoteCliError, OSError)) and not isinstance(exc, BuildFailed):
                raise BuildFailed(stage, detail, exc, what_to_do) from exc
            raise
        seconds = round(time.monotonic() - started, 2)
        self.records.append(StageRecord(stage, seconds))
        if self.progress is not None:
            self.progress.stage_finished(stage, seconds)

    def skipped(self, stage: Stage, reason: str, record: StageRecord | None = None) -> None:
        """A stage not run now; ``record`` (e.g. from the cached base) keeps its cost."""
        if record is not None:
            self.records.append(record)
        if self.progress is not None:
            self.progress.stage_skipped(stage, reason)

    def waiting(self, message: str) -> None:
        if self.progress is not None:
            self.progress.waiting(message)
