# amaranth: UnusedElaboratable=no
"""sdhw.rebuild.RebuildUnit against golden.sd (Amaranth simulator, random handshakes and basis loads)."""
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


def expected(fields, basis, wshift: int, exp_bits: int, weight_bits: int) -> list[int]:
    codes = np.array([field_to_code(f, exp_bits) for f in fields], dtype=np.int64)
    exact = rebuild_exact(codes, np.array(basis, dtype=np.int64).reshape(3, 3))
    return [int(v) for v in round_saturate(exact, wshift, weight_bits)]


def rand_field(rng: random.Random, exp_bits: int) -> int:
    top = (1 << exp_bits) - 1
    mag = rng.choice([0, top, rng.randint(0, top), rng.randint(0, top)])
    return (rng.getrandbits(1) << exp_bits) | mag


def rand_basis(rng: random.Random) -> list[int]:
    return [rng.choice([-128, 127, -127, 0, rng.randint(-128, 127), rng.randint(-8, 8), rng.randint(-128, 127)])
            for _ in range(9)]


def rand_wshift(rng: random.Random, exp_bits: int) -> int:
    return rng.choice([0, 0, 1, rng.randint(0, 4 + (1 << exp_bits)), rng.randint(0, 31), 31])


def run(dut: RebuildUnit, rows, *, seed: int, p_valid: float, p_ready: float, p_load: float, p_wshift: float,
        first_basis=None, first_wshift: int = 0):
    """Stream ``rows`` (lists of three fields) through ``dut`` while a driver loads random bases and shifts.

    A monitor samples every clock edge and models the basis register file (a load applies to a row accepted
    in the same cycle), so each accepted row is recorded with the basis and ``wshift`` it entered with.
    Returns ``(accepted, outputs)``: ``(cycle, fields, basis, wshift)`` and ``(cycle, weights)``.
    """
    rng = random.Random(seed)
    accepted, outputs = [], []
    cycle = [0]

    async def producer(ctx):
        for fields in rows:
            while rng.random() >= p_valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, fields)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(outputs) < len(rows):
            ctx.set(dut.o.ready, rng.random() < p_ready)
            await ctx.tick()

    async def driver(ctx):
        if first_basis is not None:
            ctx.set(dut.basis, first_basis)
            ctx.set(dut.basis_load, 1)
        ctx.set(dut.wshift, first_wshift)
        await ctx.tick()
        while True:
            load = rng.random() < p_load
            ctx.set(dut.basis_load, load)
            if load:
                ctx.set(dut.basis, rand_basis(rng))
            if rng.random() < p_wshift:
                ctx.set(dut.wshift, rand_wshift(rng, dut.exp_bits))
            await ctx.tick()

    async def monitor(ctx):
        basis = [0] * 9
        async for _, _, load, b, ws, iv, ir, ip, ov, orr, op in ctx.tick().sample(
                dut.basis_load, dut.basis, dut.wshift, dut.i.valid, dut.i.ready, dut.i.payload,
                dut.o.valid, dut.o.ready, dut.o.payload):
            if load:
                basis = [b[n] for n in range(9)]
            if iv and ir:
                accepted.append((cycle[0], [ip[k] for k in range(3)], basis, ws))
            if ov and orr:
                outputs.append((cycle[0], [op[j] for j in range(3)]))
            cycle[0] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(driver, background=True)
    sim.add_testbench(monitor, background=True)
    max_cycles = 20 * len(rows) + 1000           # a bound, so a broken handshake fails instead of hanging
    while sim.advance() and cycle[0] < max_cycles:
        pass
    return accepted, outputs


def check(dut: RebuildUnit, rows, *, seed: int, **kwargs):
    accepted, outputs = run(dut, rows, seed=seed, **kwargs)
    assert len(accepted) == len(outputs) == len(rows), f"seed {seed}: {len(accepted)} in, {len(outputs)} out"
    for n, ((c_in, fields, basis, wshift), (c_out, got)) in enumerate(zip(accepted, outputs)):
        assert fields == rows[n], f"seed {seed}: row {n} accepted out of order"
        want = expected(fields, basis, wshift, dut.exp_bits, dut.weight_bits)
        assert got == want, (f"seed {seed}: row {n}: fields {fields} basis {basis} wshift {wshift} "
                             f"(E={dut.exp_bits}, wb={dut.weight_bits}): got {got}, want {want}")
        assert c_out - c_in >= dut.LATENCY, f"seed {seed}: row {n} overtook the pipeline"
    return accepted, outputs


# -------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("exp_bits", "weight_bits", "seed"), [
    (1, 8, 1), (2, 8, 2), (3, 8, 3), (4, 8, 4), (4, 16, 5), (3, 12, 6), (2, 2, 7),
])
def test_random_against_golden(exp_bits, weight_bits, seed):
    """Random rows, bases loaded at random cycles (also while rows are in flight or waiting), shifts changed."""
    rng = random.Random(seed)
    dut = RebuildUnit(exp_bits=exp_bits, weight_bits=weight_bits)
    rows = [[rand_field(rng, exp_bits) for _ in range(3)] for _ in range(1500)]
    accepted, _ = check(dut, rows, seed=seed, p_valid=0.8, p_ready=0.7, p_load=0.15, p_wshift=0.05,
                        first_basis=rand_basis(rng))
    # the stimulus covered what it should: saturation both ways, the maximum exponent, wshift 0 and large
    top = (1 << exp_bits) - 1
    assert any(top in (f & top for f in fields) for _, fields, _, _ in accepted), f"seed {seed}"
    assert {0, 31} <= {ws for _, _, _, ws in accepted}, f"seed {seed}"
    qmax = (1 << (weight_bits - 1)) - 1
    exact = [v for _, f, b, ws in accepted for v in expected(f, b, ws, exp_bits, 32)]
    clipped = [v for _, f, b, ws in accepted for v in expected(f, b, ws, exp_bits, weight_bits)]
    assert qmax in clipped and -qmax in clipped and max(exact) > qmax and min(exact) < -qmax, f"seed {seed}"


def run_directed(dut: RebuildUnit, steps):
    """One row per cycle, never stalled; ``steps`` = ``[(fields, basis or None, wshift)]``, where a basis is
    loaded in the same cycle as its row. Returns the output rows."""
    got = []

    def take(ov, op):
        if ov:
            got.append([op[j] for j in range(3)])

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for fields, basis, wshift in steps:
            ctx.set(dut.i.payload, fields)
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.wshift, wshift)
            ctx.set(dut.basis_load, basis is not None)
            if basis is not None:
                ctx.set(dut.basis, basis)
            _, _, ready, ov, op = await ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.payload)
            assert ready
            take(ov, op)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.basis_load, 1)                     # a load and a new shift after the last row
        ctx.set(dut.basis, [0] * 9)                    # change nothing in flight
        ctx.set(dut.wshift, 7)
        for _ in range(2 * dut.LATENCY):
            _, _, ov, op = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            ctx.set(dut.basis_load, 0)
            take(ov, op)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4])
@pytest.mark.parametrize("weight_bits", [8, 16])
def test_extremes(exp_bits, weight_bits):
    """Maximum exponents on extreme bases, every sign pattern, with wshift 0, 1, mid-range and 31."""
    top = (1 << exp_bits) - 1
    neg = 1 << exp_bits
    rows = [[s0 | top, s1 | top, s2 | top] for s0 in (0, neg) for s1 in (0, neg) for s2 in (0, neg)]
    rows += [[neg, neg, neg], [0, 0, 0], [neg | 1, 1, neg], [top, 0, neg | top]]  # negative zeros, +-1
    steps = [(row, basis, wshift)
             for basis in ([-128] * 9, [127] * 9, [-128, 127, 0, 127, -128, 1, -1, 0, -128])
             for wshift in (0, 1, 2, 2 ** exp_bits - 2, 2 ** exp_bits + 8, 31)
             for row in rows]
    got = run_directed(RebuildUnit(exp_bits=exp_bits, weight_bits=weight_bits), steps)
    want = [expected(row, basis, wshift, exp_bits, weight_bits) for row, basis, wshift in steps]
    assert len(got) == len(want)
    for n, (g, w, step) in enumerate(zip(got, want, steps)):
        assert g == w, f"row {n}: (fields, basis, wshift) = {step}: got {g}, want {w}"
    qmax = (1 << (weight_bits - 1)) - 1
    if 3 * 128 << (top - 1) > qmax:               # saturation is reachable: the stimulus reaches it both ways
        assert [qmax] * 3 in want and [-qmax] * 3 in want


def test_basis_change_mid_stream_directed():
    """Rows in flight keep their basis; a load in the same cycle as a row's acceptance applies to that row."""
    b1 = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    b2 = [-10, 20, -30, 40, -50, 60, -70, 80, -90]
    b3 = [100, -100, 1, 0, 0, 0, 3, 3, 3]
    rows = [[0b001, 0b010, 0b011], [0b101, 0b000, 0b111], [0b011, 0b011, 0b011], [0b111, 0b001, 0b110]] * 2
    loads = [b1, None, None, b2, None, b3, b1, None]          # the basis loaded with each row, if any
    wshifts = [0, 0, 1, 1, 2, 0, 0, 3]
    got = run_directed(RebuildUnit(exp_bits=2, weight_bits=16), list(zip(rows, loads, wshifts)))
    bases = [b1, b1, b1, b2, b2, b3, b1, b1]
    assert got == [expected(f, b, ws, 2, 16) for f, b, ws in zip(rows, bases, wshifts)]


def test_latency_and_throughput_when_never_stalled():
    seed = 61
    rng = random.Random(seed)
    dut = RebuildUnit(exp_bits=3)
    rows = [[rand_field(rng, 3) for _ in range(3)] for _ in range(300)]
    accepted, outputs = check(dut, rows, seed=seed, p_valid=0.6, p_ready=1.0, p_load=0.1, p_wshift=0.05)
    lat = {o[0] - a[0] for a, o in zip(accepted, outputs)}
    assert lat == {RebuildUnit.LATENCY}, f"seed {seed}: latencies {sorted(lat)}"
    accepted, outputs = check(RebuildUnit(exp_bits=3), rows, seed=seed, p_valid=1.0, p_ready=1.0, p_load=0.1,
                              p_wshift=0.05)
    cycles = [a[0] for a in accepted]
    assert cycles == list(range(cycles[0], cycles[0] + len(rows))), f"seed {seed}: input stalled"
    cycles = [o[0] for o in outputs]
    assert cycles == list(range(cycles[0], cycles[0] + len(rows))), f"seed {seed}: output has bubbles"


def test_stalled_output_fills_every_stage():
    """With the output never ready, an always-valid producer fills all LATENCY stages, then stalls."""
    dut = RebuildUnit()
    accepted = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, [1, 2, 3])
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
    dut = RebuildUnit(exp_bits=3, weight_bits=12)
    assert set(dut.signature.members.keys()) == {"basis", "basis_load", "wshift", "i", "o"}
    assert len(dut.i.payload.as_value()) == 3 * 4 and len(dut.o.payload.as_value()) == 3 * 12
    assert len(dut.basis.as_value()) == 72 and len(dut.wshift) == 5 and len(dut.basis_load) == 1


@pytest.mark.parametrize(("kwargs", "shown"), [
    ({"exp_bits": 0}, "0"), ({"exp_bits": 5}, "5"), ({"exp_bits": 2.0}, "2.0"),
    ({"weight_bits": 1}, "1"), ({"weight_bits": 17}, "17"), ({"weight_bits": False}, "False"),
    ({"weight_bits": None}, "None"),
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
    """Shift-based recovery: the netlist has shifters, negations and adders, and no multiplier cell."""
    text = rtlil.convert(RebuildUnit(exp_bits=exp_bits, weight_bits=16), name="rebuild")
    cells = {line.split()[1] for line in text.splitlines() if line.strip().startswith("cell ")}
    assert "$mul" not in cells and {"$shl", "$neg", "$add"} <= cells, sorted(cells)
