# amaranth: UnusedElaboratable=no
"""sdhw.rebuild.RebuildUnit against golden.sd (Amaranth simulator, random handshakes, shifts and bases)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from golden.sd import rebuild_exact, round_saturate
from sdhw.rebuild import RebuildUnit


def field_to_code(field: int, exp_bits: int) -> int:
    """Signed code of a ``(sign << E) | magnitude`` field (a set sign with magnitude 0 is still zero)."""
    mag = field & ((1 << exp_bits) - 1)
    return 0 if mag == 0 else (-mag if field >> exp_bits else mag)


def expected(fields, basis, tap: int, wshift: int, exp_bits: int, weight_bits: int) -> int:
    """Golden's weight of tap ``tap`` of a row with its 3x3 basis (``B[k][j]`` at ``3k + j``)."""
    codes = np.array([field_to_code(f, exp_bits) for f in fields], dtype=np.int64)
    exact = rebuild_exact(codes, np.array(basis, dtype=np.int64).reshape(3, 3))
    return int(round_saturate(exact, wshift, weight_bits)[tap])


def column(basis, tap: int) -> list[int]:
    return [basis[3 * k + tap] for k in range(3)]


def rand_field(rng: random.Random, exp_bits: int) -> int:
    top = (1 << exp_bits) - 1
    mag = rng.choice([0, top, rng.randint(0, top), rng.randint(0, top)])
    return (rng.getrandbits(1) << exp_bits) | mag


def rand_basis(rng: random.Random) -> list[int]:
    return [rng.choice([-128, 127, -127, 0, rng.randint(-128, 127), rng.randint(-8, 8), rng.randint(-128, 127)])
            for _ in range(9)]


def rand_wshift(rng: random.Random, exp_bits: int) -> int:
    return rng.choice([0, 0, 1, rng.randint(0, 4 + (1 << exp_bits)), rng.randint(0, 31), 31])


def rand_taps(rng: random.Random, exp_bits: int, n: int, tag_bits: int = 0):
    """``n`` taps ``(fields, basis, tap, tag)``: rows fed as the tap issuer does (taps 0, 1, 2, same basis),
    or single taps; a new basis now and then."""
    taps, basis = [], rand_basis(rng)
    while len(taps) < n:
        if rng.random() < 0.2:
            basis = rand_basis(rng)
        fields = [rand_field(rng, exp_bits) for _ in range(3)]
        for tap in ((0, 1, 2) if rng.random() < 0.7 else (rng.randint(0, 2),)):
            taps.append((fields, basis, tap, rng.getrandbits(tag_bits) if tag_bits else 0))
    return taps[:n]


def run(dut: RebuildUnit, segments, *, seed: int, p_valid: float, p_ready: float):
    """Stream ``segments`` (``[(wshift, taps)]``) through ``dut`` with random valid/ready.

    ``wshift`` changes only between segments, once every earlier tap has left the unit and two cycles before
    the next tap (it is a per-layer setting). Returns ``(accepted, outputs)``: ``(cycle, codes, column, tag,
    wshift)`` and ``(cycle, weight, tag)``, sampled at every clock edge.
    """
    rng = random.Random(seed)
    accepted, outputs = [], []
    cycle = [0]
    total = sum(len(taps) for _, taps in segments)

    async def producer(ctx):
        done = 0
        for wshift, taps in segments:
            while len(outputs) < done:
                await ctx.tick()
            ctx.set(dut.wshift, wshift)
            await ctx.tick().repeat(2)           # the unit registers its clamped shift, then its rounding constant
            for fields, basis, tap, tag in taps:
                while rng.random() >= p_valid:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                payload = {"codes": fields, "column": column(basis, tap)}
                ctx.set(dut.i.payload, {**payload, "tag": tag} if dut.tag_bits else payload)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            done += len(taps)

    async def consumer(ctx):
        while len(outputs) < total:
            ctx.set(dut.o.ready, rng.random() < p_ready)
            await ctx.tick()

    async def monitor(ctx):
        async for _, _, ws, iv, ir, ip, ov, orr, op in ctx.tick().sample(
                dut.wshift, dut.i.valid, dut.i.ready, dut.i.payload, dut.o.valid, dut.o.ready, dut.o.payload):
            if iv and ir:
                accepted.append((cycle[0], [ip.codes[k] for k in range(3)], [ip.column[k] for k in range(3)],
                                 ip.tag if dut.tag_bits else 0, ws))
            if ov and orr:
                outputs.append((cycle[0], op.weight, op.tag if dut.tag_bits else 0))
            cycle[0] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(monitor, background=True)
    max_cycles = 20 * total + 1000               # a bound, so a broken handshake fails instead of hanging
    while sim.advance() and cycle[0] < max_cycles:
        pass
    return accepted, outputs


def check(dut: RebuildUnit, segments, *, seed: int, **kwargs):
    accepted, outputs = run(dut, segments, seed=seed, **kwargs)
    taps = [(t, ws) for ws, seg in segments for t in seg]
    assert len(accepted) == len(outputs) == len(taps), f"seed {seed}: {len(accepted)} in, {len(outputs)} out"
    for n, ((c_in, codes, col, tag, ws), (c_out, got, got_tag)) in enumerate(zip(accepted, outputs)):
        (fields, basis, tap, want_tag), want_ws = taps[n]
        assert (codes, col, tag, ws) == (fields, column(basis, tap), want_tag, want_ws), \
            f"seed {seed}: tap {n} accepted out of order"
        want = expected(fields, basis, tap, ws, dut.exp_bits, dut.weight_bits)
        assert got == want, (f"seed {seed}: tap {n}: fields {fields} basis {basis} tap {tap} wshift {ws} "
                             f"(E={dut.exp_bits}, wb={dut.weight_bits}): got {got}, want {want}")
        assert got_tag == tag, f"seed {seed}: tap {n}: tag {got_tag}, want {tag}"
        assert c_out - c_in >= dut.LATENCY, f"seed {seed}: tap {n} overtook the pipeline"
    return accepted, outputs


# -------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("exp_bits", "weight_bits", "seed"), [
    (1, 8, 1), (2, 8, 2), (3, 8, 3), (4, 8, 4), (4, 16, 5), (3, 12, 6), (2, 2, 7),
])
def test_random_against_golden(exp_bits, weight_bits, seed):
    """Random taps, bases and tags; shifts changed between segments; random backpressure."""
    rng = random.Random(seed)
    dut = RebuildUnit(exp_bits=exp_bits, weight_bits=weight_bits, tag_bits=5)
    segments = [(ws, rand_taps(rng, exp_bits, 150, tag_bits=5))
                for ws in [0, 31] + [rand_wshift(rng, exp_bits) for _ in range(10)]]
    check(dut, segments, seed=seed, p_valid=0.8, p_ready=0.7)
    # the stimulus covered what it should: saturation both ways, the maximum exponent, every tap
    taps = [(t, ws) for ws, seg in segments for t in seg]
    top = (1 << exp_bits) - 1
    assert any(top in (f & top for f in fields) for (fields, _, _, _), _ in taps), f"seed {seed}"
    assert {tap for (_, _, tap, _), _ in taps} == {0, 1, 2}, f"seed {seed}"
    qmax = (1 << (weight_bits - 1)) - 1
    exact = [expected(f, b, t, ws, exp_bits, 32) for (f, b, t, _), ws in taps]
    clipped = [expected(f, b, t, ws, exp_bits, weight_bits) for (f, b, t, _), ws in taps]
    assert qmax in clipped and -qmax in clipped and max(exact) > qmax and min(exact) < -qmax, f"seed {seed}"


def run_directed(dut: RebuildUnit, steps, wshift: int) -> list[int]:
    """One tap per cycle, never stalled; ``steps`` = ``[(fields, basis, tap)]``. Returns the output weights."""
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.wshift, wshift)
        await ctx.tick().repeat(2)               # the clamped shift, then the rounding constant, are registered
        for fields, basis, tap in steps:
            ctx.set(dut.i.payload, {"codes": fields, "column": column(basis, tap)})
            ctx.set(dut.i.valid, 1)
            _, _, ready, ov, op = await ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.payload)
            assert ready
            if ov:
                got.append(op.weight)
        ctx.set(dut.i.valid, 0)
        for _ in range(2 * dut.LATENCY):
            _, _, ov, op = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ov:
                got.append(op.weight)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4])
@pytest.mark.parametrize("weight_bits", [8, 16])
def test_extremes(exp_bits, weight_bits):
    """Maximum exponents on extreme bases, every sign pattern and tap, with wshift 0, 1, mid-range, around
    the clamp of the shift, and 31."""
    top = (1 << exp_bits) - 1
    neg = 1 << exp_bits
    rows = [[s0 | top, s1 | top, s2 | top] for s0 in (0, neg) for s1 in (0, neg) for s2 in (0, neg)]
    rows += [[neg, neg, neg], [0, 0, 0], [neg | 1, 1, neg], [top, 0, neg | top]]  # negative zeros, +-1
    bases = ([-128] * 9, [127] * 9, [-128, 127, 0, 127, -128, 1, -1, 0, -128])
    steps = [(row, basis, tap) for basis in bases for row in rows for tap in (0, 1, 2)]
    qmax = (1 << (weight_bits - 1)) - 1
    seen = set()
    for wshift in (0, 1, 2, 2 ** exp_bits - 2, 2 ** exp_bits + 7, 2 ** exp_bits + 8, 2 ** exp_bits + 9, 31):
        got = run_directed(RebuildUnit(exp_bits=exp_bits, weight_bits=weight_bits), steps, wshift)
        want = [expected(row, basis, tap, wshift, exp_bits, weight_bits) for row, basis, tap in steps]
        bad = [(n, s, g, w) for n, (s, g, w) in enumerate(zip(steps, got, want)) if g != w]
        assert got == want, f"wshift {wshift}: first differences (n, step, got, want) {bad[:5]}"
        seen |= set(want)
    if 3 * 128 << (top - 1) > qmax:               # saturation is reachable: the stimulus reaches it both ways
        assert {qmax, -qmax} <= seen


def test_exhaustive_small_exact_range():
    """Every code triple at E = 2 against a fixed basis column, with the rounding shifts 0..12."""
    fields = [[a, b, c] for a in range(8) for b in range(8) for c in range(8)]
    basis = [-128, 0, 0, 127, 0, 0, -77, 0, 0]
    steps = [(f, basis, 0) for f in fields]
    for wshift in range(13):
        got = run_directed(RebuildUnit(exp_bits=2), steps, wshift)
        assert got == [expected(f, basis, 0, wshift, 2, 8) for f in fields], f"wshift {wshift}"


def test_latency_and_throughput_when_never_stalled():
    seed = 61
    rng = random.Random(seed)
    segments = [(ws, rand_taps(rng, 3, 100)) for ws in (0, 5, 12)]
    accepted, outputs = check(RebuildUnit(exp_bits=3), segments, seed=seed, p_valid=0.6, p_ready=1.0)
    lat = {o[0] - a[0] for a, o in zip(accepted, outputs)}
    assert lat == {RebuildUnit.LATENCY}, f"seed {seed}: latencies {sorted(lat)}"
    accepted, outputs = check(RebuildUnit(exp_bits=3), segments[:1], seed=seed, p_valid=1.0, p_ready=1.0)
    cycles = [a[0] for a in accepted]
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), f"seed {seed}: input stalled"
    cycles = [o[0] for o in outputs]
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), f"seed {seed}: output has bubbles"


def test_stalled_output_fills_every_stage():
    """With the output never ready, an always-valid producer fills all LATENCY stages, then stalls."""
    dut = RebuildUnit()
    accepted = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"codes": [1, 2, 3], "column": [1, 2, 3]})
        for _ in range(3 * RebuildUnit.LATENCY):
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            accepted.append(ready)
        assert ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sum(accepted) == RebuildUnit.LATENCY and all(accepted[:RebuildUnit.LATENCY])


def test_ports():
    dut = RebuildUnit(exp_bits=3, weight_bits=12, tag_bits=7)
    assert set(dut.signature.members.keys()) == {"wshift", "i", "o"}
    assert len(dut.i.payload.as_value()) == 3 * 4 + 3 * 8 + 7 and len(dut.o.payload.as_value()) == 12 + 7
    assert len(dut.wshift) == 5
    dut = RebuildUnit()                                 # no tag: no tag field (Verilog has no empty wires)
    assert set(dut.i.payload.shape().members) == {"codes", "column"}
    assert set(dut.o.payload.shape().members) == {"weight"}


@pytest.mark.parametrize(("kwargs", "shown"), [
    ({"exp_bits": 0}, "0"), ({"exp_bits": 5}, "5"), ({"exp_bits": 2.0}, "2.0"),
    ({"weight_bits": 1}, "1"), ({"weight_bits": 17}, "17"), ({"weight_bits": False}, "False"),
    ({"weight_bits": None}, "None"), ({"tag_bits": -1}, "-1"), ({"tag_bits": 65}, "65"),
])
def test_constructor_rejects_bad_parameters(kwargs, shown):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"{name} must be .*not {shown}$"):
        RebuildUnit(**kwargs)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        RebuildUnit(2, 8)


@pytest.mark.parametrize("exp_bits", [1, 4])
def test_no_general_multiplier(exp_bits):
    """Shift-based recovery: the netlist has shifters and adders, and no multiplier cell."""
    text = rtlil.convert(RebuildUnit(exp_bits=exp_bits, weight_bits=16), name="rebuild")
    cells = {line.split()[1] for line in text.splitlines() if line.strip().startswith("cell ")}
    assert "$mul" not in cells and {"$shl", "$add"} <= cells, sorted(cells)
