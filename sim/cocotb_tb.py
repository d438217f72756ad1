"""cocotb testbench for the generated accelerator (``sdhw_top``): loads programs over the host bus, runs them
and checks every output element and counter against golden's expectations.

The pytest side (:mod:`sim.runner`) writes a *job* (JSON) and points ``SDHW_JOB`` at it; results go to
``SDHW_RESULT``. A job is a list of cases, each an image (host writes), inputs, expected outputs and
counters, or an expected error code. A case with ``classify`` (a fault-injection run) is recorded, not checked:
each run's status, and its outputs when it finished, go to the statistics' ``classified`` for the pytest side to
classify (``sim.faults``); only its no-hang bound is enforced. Plusargs: ``+seed=N`` (idle/backpressure
inserter and reset timing), ``+idle=P`` (probability of idle cycles before a host access).
"""
from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer

REGION_CSR, REGION_DESC = 0, 1
CSR_CONTROL, CSR_STATUS, CSR_CYCLES, CSR_MACS, CSR_SKIPPED, CSR_STALLS = 3, 4, 8, 10, 12, 14
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4
READ_LATENCY = 4                # cycles from r_en to r_data (sdhw.hostbus; tests/sim checks they agree)


class TB:
    """Clock, reset and a host-bus driver with a random idle inserter (seeded, the seed is in every message)."""

    def __init__(self, dut, seed: int, idle: float):
        self.dut, self.seed, self.idle_prob = dut, seed, idle
        self.rng = random.Random(seed)
        self.cycles_waited = 0
        Clock(dut.clk, 10, unit="ns").start()

    async def reset(self, cycles: int = 2) -> None:
        self.dut.rst.value = 1
        for name in ("bus__w_en", "bus__r_en", "bus__addr", "bus__w_data"):
            getattr(self.dut, name).value = 0
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        await Timer(1, unit="ns")

    async def _idle(self) -> None:
        if self.idle_prob and self.rng.random() < self.idle_prob:
            await ClockCycles(self.dut.clk, self.rng.randint(1, 5))
            await Timer(1, unit="ns")

    async def write(self, addr: int, data: int) -> None:
        await self._idle()
        dut = self.dut
        dut.bus__addr.value = addr
        dut.bus__w_data.value = data & 0xFFFFFFFF
        dut.bus__w_en.value = 1
        await RisingEdge(dut.clk)
        await Timer(1, unit="ns")
        dut.bus__w_en.value = 0

    async def read(self, addr: int, *, undefined_ok: bool = False) -> int | None:
        """One bus read; a value with undefined (X/Z) bits fails, or with ``undefined_ok`` reads as ``None``."""
        await self._idle()
        dut = self.dut
        dut.bus__addr.value = addr
        dut.bus__r_en.value = 1
        await RisingEdge(dut.clk)
        await Timer(1, unit="ns")
        dut.bus__r_en.value = 0
        for _ in range(READ_LATENCY - 1):
            await RisingEdge(dut.clk)
        await ReadOnly()
        assert dut.bus__r_valid.value == 1, f"seed {self.seed}: r_valid low {READ_LATENCY} cycles after r_en"
        data = dut.bus__r_data.value
        value = None if undefined_ok and not data.is_resolvable else int(data)
        await Timer(1, unit="ns")
        return value

    async def csr(self, offset: int) -> int:
        return await self.read((REGION_CSR << 16) | offset)

    async def counter(self, offset: int) -> int:
        return await self.csr(offset) | (await self.csr(offset + 1) << 32)

    async def load(self, writes) -> None:
        for addr, word in writes:
            await self.write(addr, word)

    async def start(self) -> None:
        await self.write((REGION_CSR << 16) | CSR_CONTROL, 1)

    async def wait_idle(self, timeout: int, name: str = "run") -> int:
        """Poll STATUS over the bus until busy drops; a hang fails after ``timeout`` cycles, naming the case."""
        for _ in range(timeout // 8 + 1):
            status = await self.csr(CSR_STATUS)
            if not status & STATUS_BUSY:
                return status
            await ClockCycles(self.dut.clk, 6)
            await Timer(1, unit="ns")
        raise AssertionError(f"{name} (seed {self.seed}): accelerator still busy after {timeout} cycles (hang)")

    async def read_outputs(self, region: int, count: int, *, undefined_ok: bool = False) -> list[int | None]:
        out = []
        for k in range(count):
            v = await self.read((region << 16) | k, undefined_ok=undefined_ok)
            out.append(v - (1 << 32) if v is not None and v >= 1 << 31 else v)
        return out


def scoreboard(name: str, seed: int, got: list[int], want: list[int]) -> None:
    """Every output element bit-exact, with a readable diff on failure."""
    if got == want:
        return
    bad = [k for k, (g, w) in enumerate(zip(got, want)) if g != w]
    rows = "\n".join(f"    [{k:5d}] got {got[k]:5d}  want {want[k]:5d}" for k in bad[:12])
    more = f"\n    ... {len(bad) - 12} more" if len(bad) > 12 else ""
    raise AssertionError(f"{name} (seed {seed}): {len(bad)} of {len(want)} outputs differ"
                         f"{'' if len(got) == len(want) else f' (got {len(got)} values)'}\n{rows}{more}")


def _inputs_writes(region: int, x: list[int]):
    return [((region << 16) | k, v & 0xFFFFFFFF) for k, v in enumerate(x)]


def _timeout(case: dict) -> int:
    """Cycles a run of ``case`` may take before it counts as a hang: its own ``timeout``, else twice the cycles
    the cycle model gives it (a run over them fails the cycles check anyway), at least 200,000."""
    return case.get("timeout", max(200_000, 2 * case.get("cycles", 0)))


async def _run_case(dut, tb: TB, case: dict, stats: dict) -> None:
    """Load one case, run each of its inputs and check outputs, counters or the expected error code."""
    seed = tb.seed
    name = case["name"]
    await tb.load([tuple(w) for w in case["writes"]])
    if case.get("reset_mid_run"):
        # start, pull reset somewhere inside the run, then the clean run below must be correct
        await tb.load(_inputs_writes(case["input_region"], case["inputs"][0]))
        await tb.start()
        await ClockCycles(dut.clk, tb.rng.randint(5, max(6, case["reset_after"])))
        await tb.reset(tb.rng.randint(1, 3))
        status = await tb.csr(CSR_STATUS)
        assert status & STATUS_BUSY == 0, f"{name} (seed {seed}): busy after reset"
        stats["resets"] += 1
    for k, x in enumerate(case["inputs"]):
        await tb.load(_inputs_writes(case["input_region"], x))
        await tb.start()
        if case.get("classify"):
            await _record_run(tb, case, k, stats)
            continue
        status = await tb.wait_idle(_timeout(case), name)
        if "error" in case:
            code = (status >> 8) & 0xFF
            assert status & STATUS_ERROR and code == case["error"], \
                f"{name} (seed {seed}): status {status:#x}, want error code {case['error']}"
            stats["errors_checked"] += 1
            continue
        assert status & STATUS_DONE and not status & STATUS_ERROR, \
            f"{name} (seed {seed}): status {status:#x} (error code {(status >> 8) & 0xFF})"
        got = await tb.read_outputs(case["output_region"], len(case["expected"][k]))
        scoreboard(f"{name} input {k}", seed, got, case["expected"][k])
        stats["outputs_checked"] += len(got)
        if case.get("keep_outputs"):
            stats.setdefault("outputs", []).append(got)
        stats["inferences"] += 1
        cycles = await tb.counter(CSR_CYCLES)
        macs = await tb.counter(CSR_MACS)
        skipped = await tb.counter(CSR_SKIPPED)
        if "macs" in case:
            assert macs == case["macs"], f"{name} (seed {seed}): MACs counter {macs}, want {case['macs']}"
            assert skipped == case["rows_skipped"], \
                f"{name} (seed {seed}): skipped-rows counter {skipped}, want {case['rows_skipped']}"
        if "cycles" in case:
            assert cycles == case["cycles"], \
                f"{name} (seed {seed}): cycles counter {cycles}, want {case['cycles']} (rtl_gen.cycles)"
        stats["cycles"].append(cycles)
        stats["macs"].append(macs)
        stats["skipped"].append(skipped)
    stats["cases"] += 1


async def _record_run(tb: TB, case: dict, k: int, stats: dict) -> None:
    """One run of a classified case: whatever the accelerator does is an outcome to record, except a hang, which
    is recorded and then fails like any case's (the bound holds for faulted programs too)."""
    record = {"case": case["name"], "run": k, "status": None, "outputs": None}
    stats["classified"].append(record)
    try:
        status = await tb.wait_idle(_timeout(case), case["name"])
    except ValueError as exc:                       # an undefined STATUS bit: no outcome, a failed case
        raise AssertionError(f"{case['name']} (seed {tb.seed}): STATUS undefined ({exc})") from None
    record["status"] = status
    if status & STATUS_DONE:
        # a faulted program can make the simulated hardware read a memory word that holds no defined value (an
        # X in simulation, some value on a device): such an output element is recorded as None
        record["outputs"] = await tb.read_outputs(case["output_region"], len(case["expected"][k]),
                                                  undefined_ok=True)


@cocotb.test()
async def run_job(dut):
    """Run every case of the job; record checked elements and cycles. A job with ``keep_going`` records a failed
    case (its name and message in ``failures``), resets the accelerator and goes on with the next case."""
    seed = int(cocotb.plusargs.get("seed", 1))
    idle = float(cocotb.plusargs.get("idle", 0.0))
    with open(os.environ["SDHW_JOB"]) as f:
        job = json.load(f)
    tb = TB(dut, seed, idle)
    await tb.reset()
    stats = {"cases": 0, "inferences": 0, "outputs_checked": 0, "cycles": [], "macs": [], "skipped": [],
             "errors_checked": 0, "resets": 0, "failures": [], "classified": []}
    for case in job["cases"]:
        try:
            await _run_case(dut, tb, case, stats)
        except AssertionError as exc:
            if not job.get("keep_going"):
                raise
            stats["failures"].append({"case": case["name"], "message": str(exc)})
            await tb.reset()
    if os.environ.get("SDHW_RESULT"):
        with open(os.environ["SDHW_RESULT"], "w") as f:
            json.dump(stats, f)
