"""What the start-to-ready benches print: p50/p99 of each readiness phase and of the total.

Imported by the scripts beside it (``python bench/X.py`` puts ``bench/`` on sys.path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from remotecli.vmm.base import Phase, Readiness


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``: the nearest rank, no interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def phase_table(
    title: str, runs: Sequence[tuple[Readiness, float]], unit: str = "runs"
) -> dict[str, Any]:
    """Print p50/p99 ms of each phase the runs reached (a skipped phase: its reason) and of
    start→ready (each run's second item, in seconds); return them by phase name + "total"."""
    print(f"\n{title} ({len(runs)} {unit})")
    print(f"  {'phase':<16} {'p50 ms':>9} {'p99 ms':>9}")
    summary: dict[str, Any] = {}
    for phase in Phase:
        values = [
            r.durations()[phase.value] * 1000 for r, _ in runs if phase.value in r.durations()
        ]
        if values:
            summary[phase.value] = row(phase.value, values)
        elif phase in runs[0][0].skipped:
            print(f"  {phase.value:<16} {'-':>9} {'-':>9}  ({runs[0][0].skipped[phase]})")
    summary["total"] = row("start→ready", [total * 1000 for _, total in runs])
    return summary


def row(name: str, values_ms: Sequence[float], width: int = 16) -> dict[str, float]:
    """Print ``name``, p50 and p99 of ``values_ms`` (and their count); return them, rounded."""
    p50, p99 = pct(values_ms, 0.5), pct(values_ms, 0.99)
    print(f"  {name:<{width}} {p50:9.1f} {p99:9.1f}   (n={len(values_ms)})")
    return {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "n": len(values_ms)}
