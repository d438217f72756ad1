"""Fault injection for the cocotb regression: bit flips in a loaded program's descriptors, code stream or bases,
and what each faulted run did.

A fault is applied to the image's host writes before they are loaded. Flipping a bit of a memory word after
loading and before the start is the same as loading the flipped word, because nothing reads those memories in
between; and it is the only way without new hardware, since the host port cannot read the code and basis
memories back for a read-modify-write. Only bits a memory stores are flipped: the last 32-bit chunk of a wide
entry (codes, bases) holds fewer, and a flip past the entry's width would be a no-op counted as a match.

Outcomes of a faulted run: ``match`` (outputs equal golden's), ``error`` (the error flag, with its code),
``silent`` (finished without the error flag but the outputs differ: the hardware missed it, a host-side checksum
over the loaded program would have to catch it) and ``hang`` (busy still high past the case's bound: never
acceptable, the regression fails on it). A silent run's outputs may be undefined in simulation (X: the hardware
read a memory word that holds no value, such as a basis row past the end of the basis memory: a corrupt row
header's index is not range-checked); they are counted apart, since on a device they are whatever that word happens
to hold.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from golden.program import Program, QLayer
from rtl_gen.cycles import expected_cycles
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.memories import chunk_layout

from .random_programs import random_input, random_program
from .runner import Job

REGION_NAMES = {hb.REGION_DESC: "descriptors", hb.REGION_CODES: "codes", hb.REGION_BASES: "bases"}
MATCH, ERROR, SILENT, HANG = "match", "error", "silent", "hang"
OUTCOMES = (MATCH, ERROR, SILENT, HANG)
#: a faulted run may take this many times the cycles of its program with every row live, plus the margin,
#: before it counts as a hang (see :func:`hang_bound`)
HANG_FACTOR, HANG_MARGIN = 4, 20_000


def fault_regions(cfg: AcceleratorConfig) -> tuple[int, ...]:
    """The regions a fault can hit on ``cfg``'s build (a dense build has no basis memory)."""
    return (hb.REGION_DESC, hb.REGION_CODES) if cfg.dense else (hb.REGION_DESC, hb.REGION_CODES, hb.REGION_BASES)


def pick_region(rng: np.random.Generator, cfg: AcceleratorConfig) -> int:
    regions = fault_regions(cfg)
    return regions[int(rng.integers(len(regions)))]


def word_bits(cfg: AcceleratorConfig, region: int, offset: int) -> int:
    """Bits the memory stores of the host word at ``offset`` in ``region`` (wide entries are written in 32-bit
    chunks, the last one partly; ``sdhw.memories.chunk_layout``)."""
    if region == hb.REGION_DESC:
        return 32
    width = {hb.REGION_CODES: cfg.code_word_bits, hb.REGION_BASES: cfg.basis_width}[region]
    _, chunk_bits = chunk_layout(width)
    chunk = offset & ((1 << chunk_bits) - 1)
    return max(0, min(32, width - 32 * chunk))


@dataclass(frozen=True)
class Fault:
    """Bits flipped in one region: ``(word offset in the region, bit)`` each."""

    region: int
    flips: tuple[tuple[int, int], ...]

    @property
    def region_name(self) -> str:
        return REGION_NAMES[self.region]

    def describe(self) -> str:
        def where(offset: int) -> str:
            if self.region == hb.REGION_DESC:
                return f"slot {offset // DESC_WORDS} word {offset % DESC_WORDS}"
            return f"word {offset}"
        return f"{self.region_name} " + ", ".join(f"{where(o)} bit {b}" for o, b in self.flips)

    def as_dict(self) -> dict:
        return {"region": self.region, "region_name": self.region_name, "flips": [list(f) for f in self.flips]}


def inject(writes, cfg: AcceleratorConfig, rng: np.random.Generator, *, region: int,
           flips: int = 1) -> tuple[list[list[int]], Fault]:
    """``writes`` (``(address, word)`` host writes of a program image, e.g. ``ProgramImage.writes()``) with
    ``flips`` distinct stored bits of ``region``'s written words flipped, drawn uniformly from ``rng``; the input
    is not changed. The same ``rng`` state gives the same fault."""
    if region not in fault_regions(cfg):
        valid = ", ".join(f"{r} ({REGION_NAMES[r]})" for r in fault_regions(cfg))
        raise ValueError(f"region {region!r} cannot be faulted on this build; valid: {valid}")
    if isinstance(flips, bool) or not isinstance(flips, int) or flips < 1:
        raise ValueError(f"flips must be a positive integer, not {flips!r}")
    out = [[int(addr), int(word)] for addr, word in writes]
    targets = [(i, word_bits(cfg, region, addr & 0xFFFF)) for i, (addr, _) in enumerate(out) if addr >> 16 == region]
    sizes = np.asarray([bits for _, bits in targets], dtype=np.int64)
    total = int(sizes.sum())
    if flips > total:
        raise ValueError(f"cannot flip {flips} bits: the image stores {total} bits in {REGION_NAMES[region]}")
    starts = np.cumsum(sizes) - sizes
    flipped = []
    for pick in np.sort(rng.choice(total, size=flips, replace=False)):
        j = int(np.searchsorted(starts, pick, side="right")) - 1
        i, bit = targets[j][0], int(pick - starts[j])
        out[i][1] ^= 1 << bit
        flipped.append((out[i][0] & 0xFFFF, bit))
    return out, Fault(region, tuple(flipped))


# ------------------------------------------------------------------------------------------ outcomes
@dataclass(frozen=True)
class Outcome:
    kind: str                   # one of OUTCOMES
    code: int = 0               # the error code of an ``error``

    def __str__(self) -> str:
        if self.kind == ERROR:
            return f"error {self.code} ({hb.ERROR_NAMES.get(self.code, 'unknown code')})"
        return self.kind


def classify(status: int | None, got, want) -> Outcome:
    """One run's outcome from its final STATUS (``None``: busy never dropped within the bound) and its outputs
    (``None`` when it did not finish; an element ``None`` when undefined)."""
    if status is None or status & hb.STATUS_BUSY:
        return Outcome(HANG)
    if status & hb.STATUS_ERROR:
        return Outcome(ERROR, (status >> 8) & 0xFF)
    if status & hb.STATUS_DONE and got is not None and not any(v is None for v in got) \
            and np.array_equal(np.asarray(got), np.asarray(want)):
        return Outcome(MATCH)
    return Outcome(SILENT)


def outcomes(job: Job, stats: dict) -> list[dict]:
    """Every classified run of ``job`` (from the statistics :meth:`sim.runner.Build.run` returned): its case,
    fault, final status, :class:`Outcome` and how many of its outputs were undefined."""
    cases = {case["name"]: case for case in job.cases if case.get("classify")}
    out = []
    for record in stats["classified"]:
        case = cases[record["case"]]
        outcome = classify(record["status"], record["outputs"], case["expected"][record["run"]])
        out.append({"case": record["case"], "run": record["run"], "fault": case.get("fault"),
                    "status": record["status"], "outcome": outcome,
                    "undefined": sum(v is None for v in record["outputs"] or ())})
    return out


def tally(results: list[dict]) -> dict:
    """Counts of each outcome (errors by code; silent runs with undefined outputs, ``silent_undefined``, among the
    silent ones) and the detection rate: the share of runs that went wrong which the error flag caught,
    ``error / (error + silent)`` (``None`` when none went wrong)."""
    counts = {"runs": len(results), MATCH: 0, ERROR: 0, SILENT: 0, HANG: 0, "errors_by_code": {},
              "silent_undefined": 0}
    for result in results:
        outcome = result["outcome"]
        counts[outcome.kind] += 1
        if outcome.kind == SILENT and result.get("undefined"):
            counts["silent_undefined"] += 1
        if outcome.kind == ERROR:
            counts["errors_by_code"][outcome.code] = counts["errors_by_code"].get(outcome.code, 0) + 1
    counts["errors_by_code"] = dict(sorted(counts["errors_by_code"].items()))
    wrong = counts[ERROR] + counts[SILENT]
    counts["detection_rate"] = counts[ERROR] / wrong if wrong else None
    return counts


# ------------------------------------------------------------------------------------------ cases
def _every_row_live(layer: QLayer) -> QLayer:
    if layer.is_sd:
        codes = layer.weights.codes
        return replace(layer, weights=replace(layer.weights, codes=np.where(codes == 0, 1, codes).astype(codes.dtype)))
    weights = np.asarray(layer.weights)
    return replace(layer, weights=np.where(weights == 0, 1, weights).astype(weights.dtype))


def hang_bound(program: Program, cfg: AcceleratorConfig, batch: int = 1) -> int:
    """Cycles a faulted run of ``program`` may take before it counts as a hang. A flip in the code stream can
    make a group run more rows than the program has (misread row headers), but the descriptors, which the
    checksum protects, bound a group's rows and the layer's pixels; so the bound is :data:`HANG_FACTOR` times the
    cycles of the program with every row of every group live, plus :data:`HANG_MARGIN`."""
    worst = Program(program.input_shape, program.input_q, [_every_row_live(layer) for layer in program.layers])
    return HANG_FACTOR * expected_cycles(worst, cfg, batch)["cycles"] + HANG_MARGIN


def add_fault_case(job: Job, name: str, program: Program, cfg: AcceleratorConfig, inputs: list[np.ndarray], *,
                   rng: np.random.Generator, region: int, flips: int = 1, batch: int = 1) -> Fault:
    """``program`` with a fault drawn from ``rng`` as a classified case of ``job`` (named ``name`` and the
    fault), with golden's outputs to classify against and :func:`hang_bound` as its timeout."""
    job.add_program(name, program, cfg, inputs, batch=batch, check_counters=False, classify=True,
                    timeout=hang_bound(program, cfg, batch))
    case = job.cases[-1]
    case["writes"], fault = inject(case["writes"], cfg, rng, region=region, flips=flips)
    case["name"] = f"{name}: {fault.describe()}"
    case["fault"] = fault.as_dict()
    return fault


def fault_job(cfg: AcceleratorConfig, *, seed: int, runs: int, regions=None, flips: int = 1,
              clean_reruns: bool = True) -> Job:
    """``runs`` faulted runs in each of ``regions`` (default: every region of the build), ``flips`` bits each.
    Run ``i`` in region ``r`` is drawn from ``numpy.random.default_rng([seed, r, flips, i])`` alone (a random
    program, an input, the fault), so its name reproduces it. With ``clean_reruns`` each is followed by the same
    program loaded again unfaulted and checked in full, which shows a fault leaves nothing behind once the next
    program is loaded. The job keeps going past a failed case (a hang, a clean rerun that differs): the caller
    finds them in the statistics' ``failures``."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, not {runs!r}")
    job = Job(keep_going=True)
    for region in fault_regions(cfg) if regions is None else regions:
        for i in range(runs):
            rng = np.random.default_rng([seed, region, flips, i])
            program = random_program(rng, cfg)
            x = random_input(rng, program)
            name = f"fault seed {seed} {REGION_NAMES.get(region, region)} {flips}-bit #{i}"
            add_fault_case(job, name, program, cfg, [x], rng=rng, region=region, flips=flips)
            if clean_reruns:
                job.add_program(f"{name}, clean rerun", program, cfg, [x])
    return job
