"""The benchmarks still run: bench/load.py with tiny sizes, and bench/run_all.py's plumbing.

Each runs as its own process, as `make bench` runs it. Only the shape of what
they print is checked (every login and prompt succeeded, the JSON has its
keys, the errors are none), never a speed: speed is measured in bench/.
The load runs on SQLite and on PostgreSQL (the controller tests' fixture).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
LOGIN_PHASES = {
    "click→URL (wall)",
    "claim (VM ready)",
    "click→URL (server)",
    "browser sign-in",
    "paste→connected",
    "login total",
}
PROMPT_PHASES = {"first event", "first text", "total"}


def _run(script: str, *args: str, timeout: float = 90) -> dict[str, Any]:
    """Run a bench script; its last output line as JSON (the failure shows the output's tail)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH.parent,
    )
    lines = done.stdout.strip().splitlines()
    tail = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{script} exited {done.returncode}\n{tail}"
    assert lines and lines[-1].startswith("{"), f"{script} printed no JSON line last\n{tail}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _assert_summaries(where: str, phases: dict[str, Any], names: set[str], n: int) -> None:
    assert set(phases) == names, f"{where}: phases {sorted(phases)}, expected {sorted(names)}"
    for name, summary in phases.items():
        assert set(summary) == {"p50_ms", "p99_ms", "n"}, f"{where} {name}: {summary}"
        assert summary["n"] == n, f"{where} {name}: {summary['n']} samples, expected {n}"
        assert 0 <= summary["p50_ms"] <= summary["p99_ms"], f"{where} {name}: {summary}"


def test_load_logs_in_and_prompts_with_no_error(database_url: str) -> None:
    result = _run(
        "load.py", "--logins", "2", "--prompts", "2", "--pool", "0", "--database-url", database_url
    )

    assert (result["bench"], result["backend"], result["error_count"], result["errors"]) == (
        "load",
        "fake",
        0,
        {},
    ), result
    assert result["database"] == database_url.split(":")[0]
    logins = result["logins"]
    assert (logins["requested"], logins["ok"], logins["origins"]) == (2, 2, {"cold": 2}), logins
    assert logins["per_s"] > 0 and logins["wall_s"] > 0, logins
    _assert_summaries("logins", logins["phases"], LOGIN_PHASES, 2)
    assert set(result["prompts"]) == {"first", "warm"}, result["prompts"]
    for name, round_ in result["prompts"].items():
        assert (round_["streams"], round_["ok"]) == (2, 2), (name, round_)
        _assert_summaries(f"prompts {name}", round_["phases"], PROMPT_PHASES, 2)


def test_run_all_skips_with_a_reason_and_writes_the_document(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"

    printed = _run("run_all.py", "--only", "kernel_boot", "--output", str(output))

    written = json.loads(output.read_text())
    assert written == printed
    assert set(written) == {"host", "wall_s", "summary", "results"}, sorted(written)
    assert written["host"]["cpus"] >= 1 and written["host"]["date"].endswith("UTC")
    results = written["results"]
    assert results["kernel_boot"]["skipped"].startswith("opt-in (--kernel-boot)"), results
    assert all(r == {"skipped": "not in --only"} for n, r in results.items() if n != "kernel_boot")
    summary = written["summary"]
    assert summary["restore vs cold boot, nspawn / fake"].startswith("no snapshots"), summary
    assert summary["logins at once, fake"] == "not in --only", summary


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_load_counts_refused_logins_as_errors_by_code(database_url: str) -> None:
    """Logins the controller refuses are counted by their code, and the run exits 1."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "load.py"), "--logins", "2", "--prompts", "0", "--pool", "0",
         "--providers", "claude_code,no_such_cli", "--database-url", database_url],
        capture_output=True, text=True, timeout=90, cwd=BENCH.parent,
    )  # fmt: skip

    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert done.returncode == 1, done.stdout[-3000:]
    # u1 logs in with Claude Code; u2's unknown provider is refused with its code.
    assert (result["logins"]["ok"], result["error_count"]) == (1, 1), result
    assert result["errors"] == {"start:unknown_provider": 1}, result["errors"]
    assert result["logins"]["origins"] == {"cold": 1}, result["logins"]
