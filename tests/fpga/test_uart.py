# amaranth: UnusedElaboratable=no
"""UartRx / UartTx in the Amaranth simulator: loopback of random bytes, exact line timing, framing errors,
glitches, parameter checks."""
from __future__ import annotations

import random

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from fpga.uart import UartRx, UartTx


def _bits(byte: int, stop: int = 1) -> list[int]:
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


@pytest.mark.parametrize("bad", [3, 0, -8, 2.5, True, "8", 1 << 25])
def test_divisor_is_validated(bad):
    for cls in (UartRx, UartTx):
        with pytest.raises(ValueError, match="divisor") as exc:
            cls(divisor=bad)
        assert repr(bad) in str(exc.value)


@pytest.mark.parametrize("divisor", [4, 5, 8, 13])
def test_loopback_random_bytes(divisor):
    seed = 100 + divisor
    rng = random.Random(seed)
    data = [rng.randrange(256) for _ in range(40)]
    m = Module()
    m.submodules.tx = tx = UartTx(divisor=divisor)
    m.submodules.rx = rx = UartRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, accepted, errors = [], [], []

    async def producer(ctx):
        cycle = 0
        for k, byte in enumerate(data):
            if k % 7 == 3:                                   # some gaps, mostly back to back
                for _ in range(rng.randrange(1, 3 * divisor)):
                    await ctx.tick()
                    cycle += 1
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            while True:
                ready = ctx.get(tx.i.ready)
                await ctx.tick()
                cycle += 1
                if ready:
                    accepted.append((k, cycle))
                    break
            ctx.set(tx.i.valid, 0)

    async def consumer(ctx):
        ctx.set(rx.o.ready, 1)
        for _ in range(len(data) * 12 * divisor + 200):
            _, _, valid, payload, ferr = await ctx.tick().sample(rx.o.valid, rx.o.payload, rx.framing_error)
            if valid:
                got.append(payload)
            if ferr:
                errors.append(len(got))
            if len(got) == len(data):
                break

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert got == data, f"seed {seed}: loopback differs\n got {got}\nwant {data}"
    assert not errors, f"seed {seed}: framing errors after bytes {errors}"
    # back-to-back bytes leave no gap: exactly 10 bit times apart
    for (k0, c0), (k1, c1) in zip(accepted, accepted[1:]):
        if k1 % 7 != 3:
            assert c1 - c0 == 10 * divisor, f"seed {seed}: bytes {k0}, {k1} accepted {c1 - c0} cycles apart"


def _drive_line(divisor: int, frames: list[tuple[list[int], int]]):
    """Run a receiver on a line driven bit by bit: frames of (bits, idle cycles after); returns bytes, errors."""
    dut = UartRx(divisor=divisor)
    got, errors = [], []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        for bits, idle in frames:
            for b in bits:
                ctx.set(dut.rx, b)
                await ctx.tick().repeat(divisor)
            ctx.set(dut.rx, 1)
            if idle:
                await ctx.tick().repeat(idle)

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        total = sum(len(bits) * divisor + idle for bits, idle in frames) + 50
        for _ in range(total):
            _, _, valid, payload, ferr = await ctx.tick().sample(dut.o.valid, dut.o.payload, dut.framing_error)
            if valid:
                got.append(payload)
            if ferr:
                errors.append(len(got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(line)
    sim.add_testbench(watch)
    sim.run()
    return got, errors


def test_framing_error_drops_the_byte_and_recovers():
    d = 8
    got, errors = _drive_line(d, [(_bits(0x3C), 3), (_bits(0xA7, stop=0), 2 * d), (_bits(0x81), 0),
                                  (_bits(0x00), d)])
    assert got == [0x3C, 0x81, 0x00], f"got {[hex(b) for b in got]}"
    assert errors == [1], f"framing error pulses after byte counts {errors}, want one after the first byte"


def test_a_break_is_one_framing_error_then_normal_reception():
    d = 6
    got, errors = _drive_line(d, [([0] * 25, 4 * d), (_bits(0x55), 0)])
    assert errors == [0] and got == [0x55]


def test_short_glitch_is_not_a_start_bit():
    got, errors = _glitch(8)
    assert got == [0x42] and not errors, f"got {got}, framing errors {errors}"


def _glitch(d: int):
    dut = UartRx(divisor=d)
    got, errors = [], []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(d // 2 - 2)                 # shorter than half a bit
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * d)
        for b in _bits(0x42):
            ctx.set(dut.rx, b)
            await ctx.tick().repeat(d)
        ctx.set(dut.rx, 1)

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(20 * d):
            _, _, valid, payload, ferr = await ctx.tick().sample(dut.o.valid, dut.o.payload, dut.framing_error)
            if valid:
                got.append(payload)
            if ferr:
                errors.append(len(got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(line)
    sim.add_testbench(watch)
    sim.run()
    return got, errors
