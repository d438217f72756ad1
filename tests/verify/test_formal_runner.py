"""How verify.formal runs SBY: a terminated caller leaves no solver behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_of_the_caller_ends_the_solver_group(tmp_path):
    """A SIGTERM of the Python process running a check (a scheduler's, `timeout`'s) ends SBY's process group too:
    the group runs in a session of its own, out of reach of a signal sent to the caller's."""
    pid_file = tmp_path / "solver.pid"
    solver = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    caller = (f"import sys; from pathlib import Path; from verify.formal import _run_sby; "
              f"_run_sby([sys.executable, '-c', {solver!r}], Path({str(tmp_path)!r}), dict(__import__('os').environ), "
              f"None)")
    process = subprocess.Popen([sys.executable, "-c", caller], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    solver_pid = int(pid_file.read_text())
    assert _alive(solver_pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while _alive(solver_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(solver_pid), f"the solver (pid {solver_pid}) outlived its caller's SIGTERM"
