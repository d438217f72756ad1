# amaranth: UnusedElaboratable=no
"""sdhw.drain.Drain: random passes (sums, live lanes, output and bias addresses) out one lane at a time with
their biases from a modelled 1-cycle bias memory, to a consumer with random stalls (Amaranth simulator)."""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from sdhw.drain import Drain


def sign(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def rand_signed(rng: random.Random, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return rng.choice([lo, hi, 0, -1, rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(-300, 300)])


def run(*, lanes: int, acc_bits: int, register_output: bool, seed: int, passes: int, p_ready: float,
        p_load: float, tag_bits: int = 6, bias_bits: int = 4):
    """Load ``passes`` random passes whenever the drain is not busy (after a random wait), drain them to a
    consumer ready with probability ``p_ready``; check every cycle's ``idle``/``busy`` and every element.

    Returns ``(loads, taken, sizes)``: the cycles of the loads, ``(cycle, acc, bias, tag)`` of every element
    taken and the live lanes of every pass.
    """
    rng = random.Random(seed)
    dut = Drain(lanes=lanes, acc_bits=acc_bits, tag_bits=tag_bits, bias_bits=bias_bits,
                register_output=register_output)
    bias_mem = [rand_signed(rng, 32) for _ in range(1 << bias_bits)]
    stages = 2 if register_output else 1                  # elements the drain may hold once not busy
    want: list[tuple[int, int, int]] = []                 # elements loaded, in order (acc, bias, tag)
    taken: list[tuple[int, int, int, int]] = []
    loads: list[int] = []
    sizes: list[int] = []
    where = f"seed {seed} (lanes={lanes}, acc_bits={acc_bits}, register_output={register_output})"

    async def bench(ctx):
        rd_data = rng.randrange(1 << 32)                  # the bias memory's output register (random at reset)
        ctx.set(dut.bias_rd_data, rd_data)
        cycle = 0
        while len(loads) < passes or len(taken) < len(want):
            assert cycle < 40 * passes * (lanes + 2) + 100, f"{where}: stuck at {len(taken)}/{len(want)} elements"
            busy = ctx.get(dut.busy)
            load = len(loads) < passes and not busy and rng.random() < p_load
            n = rng.randint(1, lanes)
            ctx.set(dut.sums, [rand_signed(rng, acc_bits) for _ in range(lanes)])
            ctx.set(dut.lanes, n if load else rng.randint(0, lanes))
            ctx.set(dut.out_addr, rng.randrange(1 << tag_bits))
            ctx.set(dut.bias_addr, rng.randrange(1 << bias_bits))
            ctx.set(dut.load, load)
            ctx.set(dut.o.ready, rng.random() < p_ready)
            remaining = len(want) - len(taken)
            assert ctx.get(dut.idle) == (remaining == 0), f"{where}, cycle {cycle}: idle with {remaining} left"
            if remaining > stages:
                assert busy, f"{where}, cycle {cycle}: not busy with {remaining} elements left"
            if remaining == 0:
                assert not busy, f"{where}, cycle {cycle}: busy with nothing left"
            if load:
                sums = ctx.get(dut.sums)
                out, bias = ctx.get(dut.out_addr), ctx.get(dut.bias_addr)
                want.extend((sums[q], bias_mem[(bias + q) % len(bias_mem)], (out + q) % (1 << tag_bits))
                            for q in range(n))
                loads.append(cycle)
                sizes.append(n)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                p = ctx.get(dut.o.payload)
                k = len(taken)
                got = (p.acc, p.bias, p.tag)
                assert k < len(want), f"{where}, cycle {cycle}: element {k} never loaded: {got}"
                assert got == want[k], f"{where}, cycle {cycle}: element {k} (acc, bias, tag) {got}, want {want[k]}"
                taken.append((cycle, *got))
            en, addr = ctx.get(dut.bias_rd_en), ctx.get(dut.bias_rd_addr)
            await ctx.tick()
            if en:                                        # 1-cycle read; the output is held while en is low
                rd_data = bias_mem[addr] & 0xFFFFFFFF
                ctx.set(dut.bias_rd_data, rd_data)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(taken) == len(want), f"{where}: {len(taken)} of {len(want)} elements"
    return loads, taken, sizes


@pytest.mark.parametrize("register_output", [False, True])
@pytest.mark.parametrize("lanes, acc_bits, seed", [(1, 32, 1), (3, 20, 2), (4, 32, 3), (8, 40, 4)])
def test_random_passes_random_stalls(lanes, acc_bits, register_output, seed):
    loads, taken, sizes = run(lanes=lanes, acc_bits=acc_bits, register_output=register_output, seed=seed,
                              passes=60, p_ready=0.55, p_load=0.5)
    assert len(loads) == 60 and len(taken) == sum(sizes)
    # the stimulus: tags all over their 6 bits, passes of every size
    assert len({t for *_, t in taken}) > 30 and set(sizes) == set(range(1, lanes + 1)), f"seed {seed}: {sizes}"



@pytest.mark.parametrize("register_output, first", [(False, 1), (True, 2)])
def test_latency_and_one_lane_per_cycle(register_output, first):
    """Always ready: the pass's first element is valid ``first`` cycles after its load (load in cycle c,
    element taken in c + first: the documented 1 cycle, 2 with ``register_output``), then one lane per cycle
    to the pass's end."""
    seed = 11
    loads, taken, sizes = run(lanes=8, acc_bits=32, register_output=register_output, seed=seed, passes=12,
                              p_ready=1.0, p_load=0.3)
    cycles = [c for c, *_ in taken]
    k = 0
    for load, n in zip(loads, sizes):
        got = cycles[k:k + n]
        assert got == list(range(load + first, load + first + n)), (
            f"seed {seed}: pass loaded in cycle {load} ({n} lanes) left in cycles {got}")
        k += n


def test_load_right_after_busy_falls_keeps_order():
    """Single-lane passes loaded the very cycle busy falls, consumer always stalling every other cycle."""
    seed = 13
    loads, taken, _ = run(lanes=1, acc_bits=24, register_output=True, seed=seed, passes=80, p_ready=0.5, p_load=1.0)
    gaps = [b - a for a, b in zip(loads, loads[1:])]
    assert min(gaps) <= 2, f"seed {seed}: loads never back to back: {gaps[:10]}"
