# amaranth: UnusedElaboratable=no
"""sdhw.requant.Requantiser and SerialRequantiser against golden.quant.requantize (Amaranth simulator, random
handshakes)."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from golden.quant import INT32_MAX, INT32_MIN, requantize
from sdhw.requant import Requantiser, SerialRequantiser


def expected(acc: int, bias: int, m0: int, shift: int, zp: int, lo: int, hi: int) -> int:
    """The golden model on the int32-saturated sum (the hardware saturates where the golden model raises)."""
    s = min(max(acc + bias, INT32_MIN), INT32_MAX)
    return int(requantize(np.int64(s), m0, shift, zp, lo, hi))


def run(dut: Requantiser, batches, *, seed: int, p_valid: float, p_ready: float):
    """Stream ``batches`` (``[(params, [(acc, bias), ...]), ...]``) through ``dut``; drain between batches.

    Returns ``(inputs, outputs)``: ``(cycle, tag)`` of every input handshake and ``(cycle, value, tag)``
    of every output handshake, seen by a monitor. The simulation stops after a bounded number of cycles,
    so a broken handshake fails the comparison instead of hanging.
    """
    rng = random.Random(seed)
    total = sum(len(items) for _, items in batches)
    tag_mask = (1 << dut.tag_bits) - 1
    inputs, outputs = [], []
    cycle = [0]

    async def producer(ctx):
        n = 0
        for (m0, shift, zp, lo, hi), items in batches:
            for port, value in ((dut.m0, m0), (dut.shift, shift), (dut.zero_point, zp),
                                (dut.act_min, lo), (dut.act_max, hi)):
                ctx.set(port, value)
            await ctx.tick()                     # the shift's amounts and masks are registered a cycle ahead
            for acc, bias in items:
                while rng.random() >= p_valid:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.payload, {"acc": acc, "bias": bias, "tag": n & tag_mask})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                n += 1
            ctx.set(dut.i.valid, 0)
            while len(outputs) < n:              # drain: the per-layer inputs change only when empty
                await ctx.tick()

    async def consumer(ctx):
        while len(outputs) < total:
            ctx.set(dut.o.ready, rng.random() < p_ready)
            await ctx.tick()

    async def monitor(ctx):
        async for _, _, iv, ir, ip, ov, orr, op in ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.i.payload, dut.o.valid, dut.o.ready, dut.o.payload):
            if iv and ir:
                inputs.append((cycle[0], ip.tag))
            if ov and orr:
                outputs.append((cycle[0], op.value, op.tag))
            cycle[0] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(monitor, background=True)
    max_cycles = (20 if isinstance(dut, Requantiser) else 90) * total + 1000
    while sim.advance() and cycle[0] < max_cycles:
        pass
    return inputs, outputs


def check(dut, batches, *, seed, p_valid, p_ready):
    inputs, outputs = run(dut, batches, seed=seed, p_valid=p_valid, p_ready=p_ready)
    tag_mask = (1 << dut.tag_bits) - 1
    want = [expected(acc, bias, *params) for params, items in batches for acc, bias in items]
    assert len(inputs) == len(outputs) == len(want), f"seed {seed}"
    n = 0
    for params, items in batches:
        for acc, bias in items:
            _, value, tag = outputs[n]
            assert tag == n & tag_mask, f"seed {seed}: element {n}: tag {tag}, want {n & tag_mask} (order lost)"
            assert value == want[n], (f"seed {seed}: element {n}: acc={acc} bias={bias} (m0, shift, zp, min, max)="
                                      f"{params}: got {value}, want {want[n]}")
            least = dut.LATENCY if isinstance(dut, Requantiser) else SerialRequantiser.latency(params[1])
            assert outputs[n][0] - inputs[n][0] >= least, f"seed {seed}: element {n} overtook the pipeline"
            n += 1
    return inputs, outputs


# ------------------------------------------------------------------------------------------ stimulus
def rand_int(rng: random.Random, bits: int) -> int:
    """A signed ``bits``-wide value: full range, small, or near a power of two."""
    r = rng.random()
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if r < 0.3:
        return rng.randint(lo, hi)
    if r < 0.8:
        mag = rng.randint(0, (1 << rng.randint(0, bits - 1)) - 1)
        return mag if rng.random() < 0.5 else -mag
    if r < 0.9:
        return rng.choice([lo, hi, 0, -1, 1])
    p = rng.randint(0, bits - 2)
    return max(lo, min(hi, rng.choice([1, -1]) * (1 << p) + rng.randint(-2, 2)))


def rand_params(rng: random.Random):
    m0 = rng.choice([0, 1, 1 << 30, (1 << 31) - 1, rng.randint(1 << 30, (1 << 31) - 1),
                     rng.randint(1 << 30, (1 << 31) - 1), rng.randint(0, (1 << 31) - 1)])
    shift = rng.choice([rng.randint(-32, 31), rng.randint(-31, 31), rng.randint(-4, 12), rng.randint(0, 12)])
    zp = rng.randint(-128, 127)
    r = rng.random()
    if r < 0.4:
        lo, hi = -128, 127
    elif r < 0.7:
        lo, hi = zp, 127                          # fused ReLU
    elif r < 0.95:
        lo, hi = sorted((rng.randint(-128, 127), rng.randint(-128, 127)))
    else:
        lo, hi = rng.randint(-128, 127), rng.randint(-128, 127)     # possibly min > max: numpy clip order
    return m0, shift, zp, lo, hi


def random_batches(rng: random.Random, acc_bits: int, n_batches: int, per_batch: int):
    batches = []
    for _ in range(n_batches):
        params = rand_params(rng)
        items = []
        for _ in range(per_batch):
            acc = rand_int(rng, acc_bits)
            bias = rand_int(rng, 32) if rng.random() < 0.5 else rng.randint(-1000, 1000)
            items.append((acc, bias))
        batches.append((params, items))
    return batches


def edge_batches(acc_bits: int):
    """Hand-picked cases: shift and m0 extremes, saturation, ReLU and rounding ties in both signs."""
    amax, amin = (1 << (acc_bits - 1)) - 1, -(1 << (acc_bits - 1))
    values = [0, 1, -1, 2, -2, 3, -3, 127, -128, 1 << 15, -(1 << 15), (1 << 31) - 1, -(1 << 31), amax, amin]
    pairs = [(max(amin, min(amax, a)), 0) for a in values]
    pairs += [(amax, INT32_MAX), (amin, INT32_MIN), (amax, INT32_MIN), (amin, INT32_MAX), (0, INT32_MAX),
              (0, INT32_MIN), (-1, INT32_MIN), (1, INT32_MAX), (1, INT32_MIN), (-1, INT32_MAX)]
    # RoundingDivideByPOT ties (with m0 = 2**31 - 1 the high mul is x - round(x / 2**31)): (2k+1) * 2**(r-1)
    ties = [s * (2 * k + 1) << (r - 1) for r in (1, 2, 5, 13) for k in (0, 1, 6) for s in (1, -1)]
    # SaturatingRoundingDoublingHighMul ties with m0 = 2**30 (x * 0.5): odd x
    odd = [s * (2 * k + 1) for k in (0, 1, 2, 50, 1 << 20) for s in (1, -1)]
    batches = []
    for m0 in (0, 1 << 30, (1 << 31) - 1):
        for shift in (-32, -31, -1, 0, 1, 31):
            for zp, lo, hi in ((0, -128, 127), (-5, -5, 127), (10, 10, 127), (3, -20, 20)):
                batches.append(((m0, shift, zp, lo, hi), pairs))
    for m0 in (1 << 30, (1 << 31) - 1):
        for shift in (0, 1, 2, 5, 13):
            batches.append(((m0, shift, 0, -128, 127), [(max(amin, min(amax, t)), 0) for t in ties + odd]))
            batches.append(((m0, shift, 0, -128, 127), [(0, t) for t in ties + odd]))
    return batches


# -------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("cls", [Requantiser, SerialRequantiser])
@pytest.mark.parametrize(("acc_bits", "tag_bits", "seed"), [(32, 16, 1), (40, 5, 2), (16, 1, 3)])
def test_random_against_golden(cls, acc_bits, tag_bits, seed):
    rng = random.Random(seed)
    dut = cls(acc_bits=acc_bits, tag_bits=tag_bits)
    batches = random_batches(rng, acc_bits, n_batches=80, per_batch=50 if cls is Requantiser else 12)
    check(dut, batches, seed=seed, p_valid=0.8, p_ready=0.7)


@pytest.mark.parametrize("cls", [Requantiser, SerialRequantiser])
@pytest.mark.parametrize(("acc_bits", "seed"), [(32, 11), (40, 12), (16, 13)])
def test_edge_cases_against_golden(cls, acc_bits, seed):
    dut = cls(acc_bits=acc_bits, tag_bits=16)
    check(dut, edge_batches(acc_bits), seed=seed, p_valid=0.9, p_ready=0.6)


def test_edge_cases_hit_saturation_and_ties():
    """The edge set really exercises int32 saturation and both rounding ties (guards the stimulus itself)."""
    sums = [a + b for _, items in edge_batches(32) for a, b in items]
    assert max(sums) > INT32_MAX and min(sums) < INT32_MIN
    ties = [s for s in sums if s != 0 and s % 2 == 1]
    assert any(t > 0 for t in ties) and any(t < 0 for t in ties)


def test_latency_and_throughput_when_never_stalled():
    seed = 21
    rng = random.Random(seed)
    dut = Requantiser()
    batches = random_batches(rng, 32, n_batches=2, per_batch=200)
    inputs, outputs = check(dut, batches, seed=seed, p_valid=0.6, p_ready=1.0)
    lat = {o[0] - i[0] for i, o in zip(inputs, outputs)}
    assert lat == {Requantiser.LATENCY}, f"seed {seed}: latencies {sorted(lat)}"
    # Back to back: an always-valid producer and an always-ready consumer move one element per cycle.
    inputs, outputs = check(Requantiser(), batches[:1], seed=seed, p_valid=1.0, p_ready=1.0)
    cycles = [c for c, _ in inputs]
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), f"seed {seed}: input stalled"
    cycles = [c for c, _, _ in outputs]
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), f"seed {seed}: output has bubbles"


def test_ports():
    dut = Requantiser(acc_bits=24, tag_bits=3)
    sig = dut.signature.members
    assert set(sig.keys()) == {"m0", "shift", "zero_point", "act_min", "act_max", "i", "o"}
    assert dut.i.payload.acc.shape().width == 24 and dut.o.payload.tag.shape().width == 3
    assert len(dut.m0) == 31 and dut.shift.shape().signed and len(dut.shift) == 6


@pytest.mark.parametrize(("kwargs", "shown"), [
    ({"acc_bits": 15}, "15"), ({"acc_bits": 41}, "41"), ({"acc_bits": 32.0}, "32.0"), ({"acc_bits": True}, "True"),
    ({"tag_bits": 0}, "0"), ({"tag_bits": 33}, "33"), ({"tag_bits": "8"}, "'8'"),
])
def test_constructor_rejects_bad_parameters(kwargs, shown):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"{name} must be .*not {shown}$"):
        Requantiser(**kwargs)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        Requantiser(32, 16)


def test_stalled_output_fills_every_stage():
    """With the output never ready, an always-valid producer fills all LATENCY stages, then stalls."""
    dut = Requantiser()
    accepted = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        for _ in range(3 * Requantiser.LATENCY):
            n = len(accepted)
            ctx.set(dut.i.payload, {"acc": n, "bias": 0, "tag": n})
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            if ready:
                accepted.append(n)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload.tag) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert accepted == list(range(Requantiser.LATENCY))


def test_multiply_is_isolated_in_one_stage():
    """The only multipliers are the four partial products of stage 3, each small enough for one 18 x 18 DSP."""
    text = rtlil.convert(Requantiser(), name="requantiser")
    cells = text.split("cell $mul")[1:]
    assert len(cells) == 4
    for cell in cells:
        header = cell.split("connect")[0]
        widths = [int(w) for w in re.findall(r"parameter \\[AB]_WIDTH (\d+)", header)]
        assert len(widths) == 2 and max(widths) <= 18, header


def test_serial_latency_and_throughput():
    """One element at a time: the output is valid exactly latency(shift) cycles after the input handshake and
    the next element is taken in the cycle the output is read."""
    seed = 31
    rng = random.Random(seed)
    batches = [(params, items) for params, items in random_batches(rng, 32, n_batches=12, per_batch=20)]
    inputs, outputs = check(SerialRequantiser(), batches, seed=seed, p_valid=1.0, p_ready=1.0)
    n = 0
    for params, items in batches:
        want = SerialRequantiser.latency(params[1])
        for k in range(len(items)):
            assert outputs[n][0] - inputs[n][0] == want, f"seed {seed}: element {n} shift {params[1]}"
            if k:
                assert inputs[n][0] == outputs[n - 1][0], f"seed {seed}: element {n} not taken at once"
            n += 1


def test_serial_has_no_multiplier():
    text = rtlil.convert(SerialRequantiser(), name="requantiser")
    assert "$mul" not in text
