"""cocotb testbench of ``sdhw_system`` (fpga.soc.SystemTop): a UART model on the rx/tx pins and the real host
driver (:class:`fpga.host.Host`) running in a bridged thread, its transport resuming cocotb coroutines.

The pytest side (``test_system.py``) writes a job (JSON) and points ``SDHW_UART_JOB`` at it; results go to
``SDHW_UART_RESULT``.
"""
from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, Timer

from fpga.bridge import STATUS_BAD_CHECK, STATUS_TIMEOUT
from fpga.host import BridgeError, Host, encode_write
from rtl_gen.image import load_image
from sdhw import hostbus as hb

CLOCK_NS = 10


async def _cycles(n: int) -> None:
    """``n`` clock periods of simulated time: one timer, not a Python wake-up per clock edge."""
    await Timer(CLOCK_NS * n, unit="ns")


class UartModel:
    """Drives ``rx`` bit by bit and decodes ``tx`` (8N1, ``divisor`` clock cycles per bit)."""

    def __init__(self, dut, divisor: int):
        self.dut, self.d = dut, divisor
        self.received = bytearray()
        self.tx_errors: list[str] = []
        self.bytes_sent = 0
        cocotb.start_soon(self._monitor())

    async def send(self, data: bytes) -> None:
        # bits change on the clock's falling edges (never beside the rising edge that samples them), timed by
        # one timer per bit rather than a Python wake-up per clock edge
        await FallingEdge(self.dut.clk)
        for byte in data:
            for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
                self.dut.rx.value = bit
                await _cycles(self.d)
            self.bytes_sent += 1

    async def _monitor(self) -> None:
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            # sampled half a clock off the rising edges at which tx changes
            await Timer(CLOCK_NS * (self.d // 2) + CLOCK_NS // 2, unit="ns")
            if tx.value != 0:
                self.tx_errors.append(f"glitch on tx at {get_sim_time('ns')} ns")
                continue
            byte = 0
            for k in range(8):
                await _cycles(self.d)
                byte |= int(tx.value) << k
            await _cycles(self.d)
            if tx.value != 1:
                self.tx_errors.append(f"bad stop bit after byte {byte:#04x}")
            self.received.append(byte)

    async def settle(self, quiet_cycles: int) -> None:
        """Wait until nothing has arrived for ``quiet_cycles``, then drop what did (a damaged response's rest)."""
        while True:
            count = len(self.received)
            await _cycles(quiet_cycles)
            if len(self.received) == count:
                break
        self.received.clear()

    async def recv(self, n: int, timeout_cycles: int) -> bytes:
        """Up to ``n`` bytes; fewer if ``timeout_cycles`` pass without enough (like a serial port's timeout)."""
        waited = 0
        while len(self.received) < n and waited < timeout_cycles:
            await _cycles(10 * self.d)
            waited += 10 * self.d
        data = bytes(self.received[:n])
        del self.received[:n]
        return data


class SimTransport:
    """The host driver's transport: blocking write/read that resume cocotb coroutines (bridged thread only)."""

    def __init__(self, uart: UartModel, timeout_cycles: int):
        self.uart, self.timeout_cycles = uart, timeout_cycles
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        resume(self.uart.send)(bytes(data))
        self.bytes_written += len(data)
        return len(data)

    def read(self, n: int) -> bytes:
        return resume(self.uart.recv)(n, self.timeout_cycles)


class NoisyLine:
    """A damaging line between the host driver and the UART model, seeded: a request may get a bit flipped, a
    byte doubled or its end cut off (the bridge's inter-byte timeout then rejects it), a response a bit
    flipped. ``damage`` counts what it did; ``reset_input_buffer`` waits for the line to fall quiet and drops
    what is left of a damaged response (as a host flushes a serial port's input)."""

    def __init__(self, transport: SimTransport, seed: int, rate: float, quiet_cycles: int):
        self.transport, self.rng, self.rate, self.quiet = transport, random.Random(seed), rate, quiet_cycles
        self.damage = {"flipped request bit": 0, "doubled request byte": 0, "cut request": 0,
                       "flipped response bit": 0}

    def write(self, data: bytes) -> int:
        data = bytearray(data)
        roll, k = self.rng.random(), self.rng.randrange(1, len(data))
        if roll < self.rate:
            data[k] ^= 1 << self.rng.randrange(8)
            self.damage["flipped request bit"] += 1
        elif roll < 2 * self.rate:
            data[k:k] = data[k:k + 1]
            self.damage["doubled request byte"] += 1
        elif roll < 3 * self.rate:
            del data[k:]
            self.damage["cut request"] += 1
        self.transport.write(bytes(data))
        return len(data)

    def read(self, n: int) -> bytes:
        data = bytearray(self.transport.read(n))
        if data and self.rng.random() < self.rate / 4:
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            self.damage["flipped response bit"] += 1
        return bytes(data)

    def reset_input_buffer(self) -> None:
        resume(self.transport.uart.settle)(self.quiet)

    @property
    def bytes_written(self) -> int:
        return self.transport.bytes_written


def expect_rejected(host: Host, frame: bytes, status: int, what: str) -> None:
    host.transport.write(frame)
    try:
        host.read_response(what)
    except BridgeError as exc:
        assert exc.status == status, f"{what}: status {exc.status} ({exc}), want {status}"
        return
    raise AssertionError(f"{what}: the bridge accepted it")


def host_session(host: Host, job: dict) -> dict:
    """Everything the test checks, in plain blocking Python (runs in a bridged thread)."""
    seed = job["seed"]
    log = {}
    t0 = time.monotonic()
    info = host.identify()
    cfg = job["config"]
    assert info["id"] == hb.ID_MAGIC and info["channel_lanes"] == cfg["channel_lanes"] \
        and info["pixel_lanes"] == cfg["pixel_lanes"] and info["depths"]["act_depth"] == cfg["act_depth"], info
    assert info["bridge"] == {"protocol": 1, "max_words": job["max_words"], "rejected_frames": 0}, info
    image = load_image(job["image"])
    host.check_image(image, info)
    log["words_loaded"] = host.load(image)
    for region, offset, words in image.sections:            # the load path: read back what is readable
        if region == hb.REGION_DESC:
            got = host.read_words((region << 16) | offset, len(words))
            assert got == [w & 0xFFFFFFFF for w in words], f"seed {seed}: region {region} reads back {got}"
    log["load_s"] = time.monotonic() - t0

    result = host.run(image, np.asarray(job["input"]))
    assert result["status"] & hb.STATUS_DONE and result["error"] is None, f"seed {seed}: {result}"
    want = job["expected"]
    got = result["output"].tolist()
    bad = [k for k, (g, w) in enumerate(zip(got, want)) if g != w]
    assert got == want, f"seed {seed}: {len(bad)} outputs differ: " + ", ".join(
        f"[{k}] got {got[k]} want {want[k]}" for k in bad[:10])
    assert result["macs"] == job["macs"] and result["skipped"] == job["rows_skipped"], \
        f"seed {seed}: counters {result}, want macs {job['macs']}, skipped {job['rows_skipped']}"
    assert result["cycles"] > 0
    log.update({k: result[k] for k in ("cycles", "macs", "skipped", "stalls")})
    log["outputs_checked"] = len(got)

    if not job.get("frame_errors", True):
        log["rejected_checked"] = 0
        log["bytes_written"] = host.transport.bytes_written
        return log
    # corrupt frames: flipped checksum byte, flipped payload byte; the target words (the last descriptor slot,
    # which the program leaves unused) must not change
    target = (hb.REGION_DESC << 16) | ((cfg["desc_layers"] - 1) * 16)
    before = host.read_words(target, 4)
    frame = encode_write(target, [w ^ 0xFFFFFFFF for w in before])
    expect_rejected(host, frame[:-1] + bytes([frame[-1] ^ 0x40]), STATUS_BAD_CHECK, "flipped checksum byte")
    expect_rejected(host, frame[:9] + bytes([frame[9] ^ 0x01]) + frame[10:], STATUS_BAD_CHECK, "flipped data bit")
    assert host.read_words(target, 4) == before, f"seed {seed}: a rejected frame changed memory"
    # truncated frame (stops inside the payload): reported after the inter-byte timeout, nothing written
    expect_rejected(host, frame[:13], STATUS_TIMEOUT, "truncated frame")
    assert host.read_words(target, 4) == before, f"seed {seed}: a truncated frame changed memory"
    bridge_info = host.ping()
    assert bridge_info["rejected_frames"] == 3, bridge_info
    log["rejected_checked"] = 3

    # and the accelerator still runs correctly after all that
    again = host.run(image, np.asarray(job["input"]))
    assert again["output"].tolist() == want, f"seed {seed}: second run differs: {again}"
    log["bytes_written"] = host.transport.bytes_written
    return log


async def _count_runs(dut, runs: dict) -> None:
    """Rising edges of the busy LED: the runs the accelerator started."""
    busy = 0
    while True:
        await dut.leds.value_change
        now = int(dut.leds.value) & 1
        runs["started"] += now and not busy
        busy = now


@cocotb.test()
async def uart_round_trip(dut):
    with open(os.environ["SDHW_UART_JOB"]) as f:
        job = json.load(f)
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    await ReadOnly()
    assert dut.tx.value == 1, "tx must idle high after reset"
    await RisingEdge(dut.clk)
    uart = UartModel(dut, job["divisor"])
    transport = SimTransport(uart, timeout_cycles=job["read_timeout_cycles"])
    noise = job.get("noise")
    if noise:
        transport = NoisyLine(transport, job["seed"], noise["rate"], 24 * job["divisor"] * 10)
    host = Host(transport, poll_timeout=120.0, retries=noise["retries"] if noise else 2)
    runs = {"started": 0}
    cocotb.start_soon(_count_runs(dut, runs))
    start = time.monotonic()
    log = await bridge(host_session)(host, job)
    if noise:
        log.update(damage=transport.damage, retried=host.retried)
    runs_wanted = 2 if job.get("frame_errors", True) else 1        # the frame-error session runs twice
    assert runs["started"] == runs_wanted, f"seed {job['seed']}: {runs['started']} runs started, {runs_wanted} asked"
    log["runs_started"] = runs["started"]
    assert not uart.tx_errors, uart.tx_errors
    log["wall_s"] = time.monotonic() - start
    log["sim_cycles"] = int(get_sim_time("ns") // 10)
    with open(os.environ["SDHW_UART_RESULT"], "w") as f:
        json.dump(log, f)
