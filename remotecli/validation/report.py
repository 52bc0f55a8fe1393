"""Rich rendering of ``image validate``: the phases, the checklist, the evidence on failure."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from remotecli.validation.checklist import Report
from remotecli.vmm.base import PHASES


def render(report: Report, console: Console) -> None:
    readiness = report.readiness
    phases = Table("phase", "reached after", "time in phase", title="readiness")
    durations = readiness.durations() if readiness else {}
    for phase in PHASES:
        if readiness and phase in readiness.reached:
            phases.add_row(
                phase.value, f"{readiness.reached[phase]:.3f} s", f"{durations[phase.value]:.3f} s"
            )
        elif readiness and phase in readiness.skipped:
            phases.add_row(phase.value, "skipped", escape(readiness.skipped[phase]))
        else:
            phases.add_row(phase.value, "[red]not reached[/red]", "")
    console.print(phases)
    if report.not_ready is not None:
        error = report.not_ready
        console.print(f"[red]not ready[/red] ({error.cause}): {escape(error.hint)}")
        console.print("[bold]console tail[/bold]")
        console.print(escape(error.console_tail), highlight=False)
        if error.unit_state:
            console.print("[bold]agent unit[/bold]")
            console.print(escape(error.unit_state), highlight=False)
        return
    checks = Table("check", "result", "evidence", title="the seed's checklist")
    for check in report.checks:
        verdict = "[green]ok[/green]" if check.ok else "[red]FAIL[/red]"
        checks.add_row(escape(check.name), verdict, escape(check.evidence))
    console.print(checks)
