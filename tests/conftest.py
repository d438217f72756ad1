"""Shared test set-up: the repository root is importable without installing the project, and the RTL
regression's bookkeeping (every cocotb test records how many layers and outputs it checked; the totals are
printed at the end of the session — this root conftest is loaded by the xdist controller too)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):                 # the project, and helpers shared by the tests' folders
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

COUNTS = ROOT / "build" / "regression-counts"


def pytest_configure(config):
    if not hasattr(config, "workerinput"):          # the controller (or a run without xdist)
        shutil.rmtree(COUNTS, ignore_errors=True)


@pytest.fixture
def record_counts(request):
    def record(**counts):
        COUNTS.mkdir(parents=True, exist_ok=True)
        name = request.node.nodeid.replace("/", "_").replace("::", "-")
        (COUNTS / f"{name}.json").write_text(json.dumps(counts))
    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput") or not COUNTS.exists():
        return
    totals: dict[str, int] = {}
    for path in COUNTS.glob("*.json"):
        for key, value in json.loads(path.read_text()).items():
            totals[key] = totals.get(key, 0) + value
    if totals:
        terminalreporter.write_sep("-", "RTL regression (cocotb): checked bit-exact against golden")
        terminalreporter.write_line(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(totals.items())))
