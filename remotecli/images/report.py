"""Image builds on a terminal: live Rich progress per stage and the manifest as a table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from remotecli.images.microkernel import MicroKernel
from remotecli.images.progress import Stage
from remotecli.images.store import Image
from remotecli.images.vm import VmArtifacts

_MAX_LINE = 70


class RichBuildProgress:
    """A ``BuildProgress``: a spinner on the current stage, its last output line, elapsed time.

    Use as a context manager around the build; ``ran_stages`` tells a cache
    hit (no stage ran) from a build.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.ran_stages = 0
        self._progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.description}"),
            TextColumn("[dim]{task.fields[line]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._tasks: dict[Stage, TaskID] = {}

    def __enter__(self) -> RichBuildProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def waiting(self, message: str) -> None:
        self._progress.console.print(f"[yellow]{message}[/yellow]")

    def stage_started(self, stage: Stage, detail: str) -> None:
        self.ran_stages += 1
        self._tasks[stage] = self._progress.add_task(
            f"[bold]{stage}[/bold] {detail}", total=1, line=""
        )

    def stage_output(self, stage: Stage, line: str) -> None:
        task = self._tasks.get(stage)
        if task is not None:
            text = line.strip()
            short = text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 1] + "…"
            self._progress.update(task, line=escape(short))

    def stage_finished(self, stage: Stage, seconds: float) -> None:
        task = self._tasks[stage]
        self._progress.update(
            task,
            completed=1,
            description=f"[green]✓[/green] [bold]{stage}[/bold]",
            line=f"{seconds:.1f} s",
        )

    def stage_failed(self, stage: Stage, seconds: float) -> None:
        self._progress.update(
            self._tasks[stage],
            completed=1,
            description=f"[red]✗[/red] [bold]{stage}[/bold]",
            line=f"failed after {seconds:.1f} s",
        )

    def stage_skipped(self, stage: Stage, reason: str) -> None:
        task = self._progress.add_task(f"[dim]- {stage}[/dim]", total=1, line=escape(reason))
        # Only update() stamps the finish time that stops the spinner and the clock.
        self._progress.update(task, completed=1)


def summary_table(image: Image) -> Table:
    """The manifest's main facts: what is inside, versions, sizes, where the time went."""
    m = image.manifest
    table = Table(title=f"golden image {image.key}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    inputs = m["inputs"]
    table.add_row("path", str(image.path))
    table.add_row("release", f"{inputs['base']['release']} ({inputs['base']['mirror']})")
    runtime = m["runtime"]
    table.add_row("python3", f"{runtime['python']} ({m['packages'].get('python3.13', '?')})")
    table.add_row("node", f"{runtime['node']} (nodejs {m['packages'].get('nodejs', '?')})")
    table.add_row("systemd", m["packages"].get("systemd", "?"))
    clis = ", ".join(f"{n} {v}" for n, v in image.clis.items()) or "none"
    table.add_row("CLIs", clis + (" [yellow](test bed fakes)[/yellow]" if image.test_clis else ""))
    if inputs["extra_packages"]:
        table.add_row("extra packages", " ".join(inputs["extra_packages"]))
    sizes = m["sizes"]
    size = f"{sizes['rootfs_bytes'] / 1e6:.0f} MB, {sizes['files']} files"
    if sizes["cli_bytes"]:
        size += f" (CLIs {sizes['cli_bytes'] / 1e6:.0f} MB)"
    table.add_row("size", size)
    table.add_row("agent sha256", inputs["agent_sha256"][:16])
    table.add_row("unit sha256", m["files"]["unit"]["sha256"][:16])
    stages = ", ".join(
        f"{s['stage']} {s['seconds']:.1f}s" + (" (cached)" if s["cached"] else "")
        for s in m["stages"]
    )
    table.add_row("stages", stages)
    table.add_row("built", f"{m['built_at']} in {m['build_seconds']:.1f} s")
    return table


def vm_table(artifacts: VmArtifacts) -> Table:
    """Where the VM artifacts are, how big, from which kernel, and the base command line."""
    m = artifacts.manifest
    table = Table(title=f"VM artifacts {artifacts.key} of image {artifacts.image_key}",
                  show_header=False, title_justify="left")  # fmt: skip
    table.add_column(style="bold")
    table.add_column()
    for label, path in (("disk", artifacts.disk), ("vmlinuz", artifacts.vmlinuz),
                        ("vmlinux", artifacts.vmlinux), ("initrd", artifacts.initrd)):  # fmt: skip
        size = m["files"][path.name]["size"]
        table.add_row(label, f"{path}  [dim]{size / 1e6:.1f} MB[/dim]")
    disk = m["disk"]
    table.add_row("disk content", f"{disk['content_bytes'] / 1e6:.0f} MB (sparse; ext4 label "
                  f"{m['root_label']})")  # fmt: skip
    kernel = m["kernel"]
    table.add_row("kernel", f"{kernel['package']} {kernel['version']}")
    table.add_row("modules", " ".join(m["modules"]["load_order"]))
    table.add_row("cmdline", artifacts.cmdline)
    table.add_row("built", f"{m['built_at']} in {m['build_seconds']:.1f} s")
    return table


def micro_kernel_table(kernel: MicroKernel) -> Table:
    """Where the micro kernel's files are, how big, from which source, how long it took."""
    m = kernel.manifest
    table = Table(title=f"micro kernel {kernel.key}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, path in (("vmlinux", kernel.vmlinux), ("vmlinuz", kernel.vmlinuz),
                        (".config", kernel.config)):  # fmt: skip
        size = m["files"][path.name]["size"]
        table.add_row(label, f"{path}  [dim]{size / 1e6:.1f} MB[/dim]")
    source = m["source"]
    table.add_row("source", f"{source['package']} {source['version']} ({source['release']})")
    table.add_row("uname -r", kernel.release)
    table.add_row("compiler", m["compiler"])
    table.add_row("built", f"{m['built_at']} in {m['build_seconds']:.0f} s "
                  f"(compile {m['compile_seconds']:.0f} s, -j{m['jobs']})")  # fmt: skip
    return table
