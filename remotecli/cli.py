"""``remotecli``: the command line, a thin Typer layer over the library.

``up`` runs the controller; ``doctor`` and ``image`` work on this host;
``auth``, ``run``, ``vm``, ``users`` and ``tokens`` talk to a running
controller over its API (``remotecli/commands/``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from remotecli import __version__
from remotecli.images.recipe import DEFAULT_MIRROR, DEFAULT_RELEASE

if TYPE_CHECKING:
    from remotecli.images.report import RichBuildProgress
    from remotecli.images.store import Image

T = TypeVar("T")

app = typer.Typer(
    help="remote-cli: run users' own Claude Code, Codex and Gemini CLI in isolated VMs.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command()
def doctor() -> None:
    """Which VM backends this host can run, and why not the others."""
    from rich.table import Table

    from remotecli.vmm import hostcheck

    facts = hostcheck.gather()
    checks = hostcheck.assess(facts)
    picked = hostcheck.pick(checks)
    out = Console()
    virt = "/".join(sorted({"vmx", "svm"} & facts.cpu_flags)) or "none (no vmx/svm)"
    kvm = f"KVM API {facts.kvm_api}" if isinstance(facts.kvm_api, int) else facts.kvm_api
    out.print(
        f"CPU virtualization: {virt} · /dev/kvm: {kvm}"
        f"{' · kvm_pvm loaded' if facts.kvm_pvm else ''} · PID 1: {facts.pid1} · "
        f"cgroups: {facts.cgroups} · {'root' if facts.root else 'not root'}"
    )
    table = Table("backend", "can run here", "isolation", "why")
    isolation = {"vm": "VM (own kernel)", "container": "container (shared kernel)"}
    for check in checks:
        verdict = "[green]yes[/green]" if check.can_run else "[red]no[/red]"
        table.add_row(
            check.name, verdict, isolation.get(check.isolation, "none"),
            "\n".join(escape(r) for r in check.reasons),
        )  # fmt: skip
    out.print(table)
    out.print(f"make up would use: [bold]{picked.name}[/bold]")
    out.print(f"[yellow]{hostcheck.NSPAWN_ISOLATION_NOTE}[/yellow]")


image_app = typer.Typer(
    help="Build the golden image VMs and containers boot from.", no_args_is_help=True
)
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(
    providers: Annotated[
        str,
        typer.Option(help="real CLIs to install from npm, e.g. claude_code,codex,gemini_cli"),
    ] = "",
    test_clis: Annotated[
        bool, typer.Option("--test-clis", help="install the test bed's fake CLIs instead")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="image cache (default $REMOTECLI_CACHE_DIR, else /var/lib/remotecli)"),
    ] = None,
    release: Annotated[str, typer.Option(help="Debian release")] = DEFAULT_RELEASE,
    mirror: Annotated[str, typer.Option(help="Debian mirror")] = DEFAULT_MIRROR,
    extra_package: Annotated[
        list[str] | None, typer.Option(help="one more Debian package (repeatable)")
    ] = None,
    vm: Annotated[
        bool, typer.Option("--vm", help="also build the VM artifacts (disk, kernel, initramfs)")
    ] = False,
) -> None:
    """Build (or reuse) the golden rootfs: Debian, systemd, python3, node, the agent, the CLIs."""
    from remotecli.errors import RemoteCliError
    from remotecli.images.build import build_image
    from remotecli.images.recipe import BuildOptions
    from remotecli.images.report import RichBuildProgress, summary_table

    started = time.monotonic()
    try:
        options = BuildOptions(
            release=release,
            mirror=mirror,
            providers=tuple(p.strip() for p in providers.split(",") if p.strip()),
            test_clis=test_clis,
            extra_packages=tuple(extra_package or ()),
            cache_dir=cache_dir,
        )
        with RichBuildProgress(console) as progress:
            image = asyncio.run(build_image(options, progress))
    except RemoteCliError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        # The builder removed its temporary directory on the way out.
        console.print("[yellow]interrupted[/yellow]: nothing was left behind; the cache is intact")
        raise typer.Exit(130) from None
    elapsed = time.monotonic() - started
    if progress.ran_stages == 0:
        console.print(f"[green]cached:[/green] same inputs as before, reused in {elapsed:.2f} s")
    console.print(summary_table(image))
    print(image.path)
    if vm:
        _build_vm_artifacts(image, cache_dir, refresh_kernel=False, microkernel=False)


@image_app.command("vm")
def image_vm(
    image: Annotated[
        Path | None, typer.Option(help="image directory (default: the newest built image)")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="image cache to use")] = None,
    refresh_kernel: Annotated[
        bool, typer.Option(help="ask the mirror for a newer cloud kernel than the cached one")
    ] = False,
    microkernel: Annotated[
        bool,
        typer.Option(
            "--microkernel",
            help="boot the micro kernel (remotecli image kernel) instead of Debian's cloud kernel",
        ),
    ] = False,
) -> None:
    """Build (or reuse) an image's VM artifacts: ext4 root disk, kernel, initramfs."""
    from remotecli.errors import RemoteCliError

    try:
        chosen = _chosen_image(image, cache_dir)
    except RemoteCliError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from exc
    _build_vm_artifacts(chosen, cache_dir, refresh_kernel=refresh_kernel, microkernel=microkernel)


@image_app.command("kernel")
def image_kernel(
    cache_dir: Annotated[Path | None, typer.Option(help="image cache to use")] = None,
    release: Annotated[
        str, typer.Option(help="the guests' Debian release (picks linux-source-<series>)")
    ] = DEFAULT_RELEASE,
    mirror: Annotated[str, typer.Option(help="Debian mirror")] = DEFAULT_MIRROR,
    refresh: Annotated[
        bool, typer.Option(help="ask the mirror for a newer kernel source than the cached build")
    ] = False,
) -> None:
    """Build (or reuse) the micro kernel: Debian's kernel source, tinyconfig + our fragment."""
    from remotecli.images.microkernel import ensure_micro_kernel
    from remotecli.images.report import micro_kernel_table
    from remotecli.images.store import cache_dir as default_cache

    kernel = _with_progress("micro kernel", lambda progress: ensure_micro_kernel(
        cache=default_cache(cache_dir), release=release, mirror=mirror,
        progress=progress, refresh=refresh,
    ))  # fmt: skip
    console.print(micro_kernel_table(kernel))
    print(kernel.directory)


def _with_progress(what: str, build: Callable[[RichBuildProgress], Coroutine[Any, Any, T]]) -> T:
    """Run ``build`` with a live Rich display; errors and ^C end the command with a message."""
    from remotecli.errors import RemoteCliError
    from remotecli.images.report import RichBuildProgress

    started = time.monotonic()
    try:
        with RichBuildProgress(console) as progress:
            result = asyncio.run(build(progress))
    except RemoteCliError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: nothing was left behind; the cache is intact")
        raise typer.Exit(130) from None
    if progress.ran_stages == 0:
        elapsed = time.monotonic() - started
        console.print(f"[green]cached:[/green] {what} reused in {elapsed:.2f} s")
    return result


def _chosen_image(image: Path | None, cache_dir: Path | None) -> Image:
    """``image`` when given, else the newest built image (exit 2 when there is none)."""
    from remotecli.images.store import list_images, load_image

    if image is not None:
        return load_image(image)
    images = list_images(cache_dir)
    if not images:
        console.print(
            "[red]error:[/red] no image built yet: run "
            "[bold]remotecli image build --test-clis[/bold] (or --providers ...)"
        )
        raise typer.Exit(2)
    return load_image(images[0].path)


def _build_vm_artifacts(
    image: Image, cache_dir: Path | None, *, refresh_kernel: bool, microkernel: bool
) -> None:
    from remotecli.images.report import vm_table
    from remotecli.images.vm import ensure_vm_artifacts

    artifacts = _with_progress("VM artifacts", lambda progress: ensure_vm_artifacts(
        image, cache=cache_dir, progress=progress, refresh_kernel=refresh_kernel,
        microkernel=microkernel,
    ))  # fmt: skip
    console.print(vm_table(artifacts))
    print(artifacts.directory)


@image_app.command("validate")
def image_validate(
    image: Annotated[
        Path | None, typer.Option(help="image directory (default: the newest built image)")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="image cache to look in")] = None,
) -> None:
    """Boot the image and run the seed's checklist against it (nspawn backend)."""
    from remotecli.errors import RemoteCliError
    from remotecli.providers import PROVIDERS
    from remotecli.validation.checklist import validate
    from remotecli.validation.report import render
    from remotecli.vmm.nspawn.backend import NspawnBackend

    try:
        chosen = _chosen_image(image, cache_dir)
        expected = [p.name for p in PROVIDERS.values() if p.executable in chosen.clis]
        console.print(f"validating {chosen.path} on nspawn ...")
        with console.status("booting and checking"):
            report = asyncio.run(validate(NspawnBackend(), chosen.rootfs, expected))
    except RemoteCliError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from exc
    render(report, Console())
    if not report.ok:
        raise typer.Exit(1)


def _register_api_commands() -> None:
    from remotecli.commands import admin, auth, run, up, vm

    app.command("up")(up.up)
    app.add_typer(auth.app, name="auth")
    app.command("run")(run.run)
    app.add_typer(vm.app, name="vm")
    app.add_typer(admin.users, name="users")
    app.add_typer(admin.tokens, name="tokens")


_register_api_commands()


def main() -> None:
    from remotecli.errors import RemoteCliError

    try:
        app()
    except RemoteCliError as exc:
        # One place turns every library error into a message and an exit code.
        console.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
