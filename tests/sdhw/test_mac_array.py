# amaranth: UnusedElaboratable=no
"""MacArray against a NumPy model on random weights, activations and first/last patterns."""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from sdhw.mac_array import MacArray


def finished_sums(ctx, dut) -> list[int]:
    """The finished sums while ``done`` is high: ``acc``, or ``acc - start`` wrapped with running totals."""
    n = len(dut.acc)
    if not dut.running_totals:
        return [ctx.get(dut.acc[k]) for k in range(n)]
    bits = dut.acc.shape().elem_shape.width
    wrap = [(ctx.get(dut.acc[k]) - ctx.get(dut.start[k])) % (1 << bits) for k in range(n)]
    return [v - (1 << bits) if v >> (bits - 1) else v for v in wrap]


def run_collecting_sums(dut, drive, count: int, cycles: int) -> list[list[int]]:
    """Run ``drive`` against ``dut`` and collect the finished sums of the first ``count`` done pulses."""
    got = []

    async def watch(ctx):
        while len(got) < count:
            await ctx.tick()
            if ctx.get(dut.done):
                got.append(finished_sums(ctx, dut))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(watch)
    sim.run_until(1e-8 * cycles)
    return got


@pytest.mark.parametrize("registered", [False, True], ids=["fabric-dsp", "registered-dsp"])
@pytest.mark.parametrize("running", [False, True], ids=["restart", "running"])
@pytest.mark.parametrize("q_n, p_n, soft, seed", [(1, 1, 0, 1), (4, 1, 0, 2), (2, 4, 0, 3), (8, 2, 0, 4),
                                                  (1, 1, 1, 5), (4, 2, 3, 6), (2, 2, 4, 7)])
def test_mac_array_accumulates_like_numpy(q_n, p_n, soft, seed, running, registered):
    """Random sums; ``soft`` lanes use the adder-built multiplier (every int8 corner value appears); with
    running totals, ops outside any sum (as an aborted job leaves) must not change the next sums."""
    rng = random.Random(seed)
    dut = MacArray(channel_lanes=q_n, pixel_lanes=p_n, acc_bits=32, soft_products=soft, running_totals=running,
                   registered_dsps=registered)
    corners = [-128, -127, -1, 0, 1, 127]
    # sums of random length, back to back, with idle cycles between some ops
    ops = []
    for _ in range(30):
        length = rng.randint(1, 12)
        for k in range(length):
            pick = rng.choice if rng.random() < 0.3 else None
            ops.append({"w": [pick(corners) if pick else rng.randint(-128, 127) for _ in range(q_n)],
                        "a": [pick(corners) if pick else rng.randint(-128, 127) for _ in range(p_n)],
                        "first": k == 0, "last": k == length - 1, "idle": rng.random() < 0.2})
        if rng.random() < 0.2:          # an abandoned sum: ops without a last op, then a new sum
            ops += [{"w": [rng.randint(-128, 127) for _ in range(q_n)], "a": [rng.randint(-128, 127)
                     for _ in range(p_n)], "first": k == 0, "last": False, "idle": False, "abandoned": True}
                    for k in range(rng.randint(1, 3))]
    expected, acc = [], None
    for op in ops:
        prod = np.outer(op["w"], op["a"])
        acc = prod if op["first"] else acc + prod
        if op["last"]:
            expected.append(acc.reshape(-1).tolist())

    async def drive(ctx):
        for op in ops:
            if op["idle"]:
                ctx.set(dut.valid, 0)
                await ctx.tick()
            for q, w in enumerate(op["w"]):
                ctx.set(dut.weights[q], w)
            for p, a in enumerate(op["a"]):
                ctx.set(dut.acts[p], a)
            ctx.set(dut.valid, 1)
            ctx.set(dut.first, op["first"])
            ctx.set(dut.last, op["last"])
            await ctx.tick()
        ctx.set(dut.valid, 0)

    got = run_collecting_sums(dut, drive, len(expected), len(ops) * 2 + 50)
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert got == expected, f"seed {seed}: {len(got)} sums, first mismatch at sum {bad[:1]}"
    assert any(op.get("abandoned") for op in ops)


@pytest.mark.parametrize("registered", [False, True], ids=["fabric-dsp", "registered-dsp"])
@pytest.mark.parametrize("running", [False, True], ids=["restart", "running"])
@pytest.mark.parametrize("soft", [0, 1])
def test_mac_array_latency(soft, running, registered):
    dut = MacArray(channel_lanes=1, pixel_lanes=2, soft_products=soft, running_totals=running,
                   registered_dsps=registered)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.weights[0], 3)
        ctx.set(dut.acts[0], -5)
        ctx.set(dut.valid, 1)
        ctx.set(dut.first, 1)
        ctx.set(dut.last, 1)
        await ctx.tick()
        ctx.set(dut.valid, 0)
        for cycle in range(1, 8):
            if ctx.get(dut.done):
                seen["cycle"], seen["acc"] = cycle, finished_sums(ctx, dut)[0]
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"cycle": dut.latency, "acc": -15}
    assert dut.latency == MacArray.LATENCY + soft


def test_soft_products_are_exact_for_every_int8_pair():
    """The radix-4 soft multiplier against every (weight, activation) pair: 256 weights, 16 soft lanes
    fed 16 activations per op, each op a one-op sum."""
    dut = MacArray(channel_lanes=1, pixel_lanes=16, soft_products=16)
    ops = [(w, [16 * j + p - 128 for p in range(16)]) for w in range(-128, 128) for j in range(16)]

    async def drive(ctx):
        ctx.set(dut.first, 1)
        ctx.set(dut.last, 1)
        ctx.set(dut.valid, 1)
        for w, acts in ops:
            ctx.set(dut.weights[0], w)
            for p, a in enumerate(acts):
                ctx.set(dut.acts[p], a)
            await ctx.tick()
        ctx.set(dut.valid, 0)

    got = run_collecting_sums(dut, drive, len(ops), len(ops) + 20)
    wrong = [(w, a, g) for (w, acts), row in zip(ops, got) for a, g in zip(acts, row) if g != w * a]
    assert len(got) == len(ops) and not wrong, f"{len(wrong)} wrong products, first (w, a, got): {wrong[:1]}"


@pytest.mark.parametrize("kwargs, match", [({"channel_lanes": 0, "pixel_lanes": 1}, "channel_lanes"),
                                          ({"channel_lanes": 1, "pixel_lanes": 2.5}, "pixel_lanes"),
                                          ({"channel_lanes": 1, "pixel_lanes": 1, "acc_bits": 8}, "acc_bits"),
                                          ({"channel_lanes": 2, "pixel_lanes": 1, "soft_products": 3},
                                           r"soft_products must be an integer in 0\.\.2, not 3"),
                                          ({"channel_lanes": 1, "pixel_lanes": 1, "running_totals": 1},
                                           "running_totals must be a bool, not 1"),
                                          ({"channel_lanes": 1, "pixel_lanes": 1, "registered_dsps": "yes"},
                                           "registered_dsps must be a bool, not 'yes'"),
                                          ({"channel_lanes": 1, "pixel_lanes": 1, "vendor_primitives": True},
                                           "vendor_primitives needs registered_dsps")])
def test_mac_array_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MacArray(**kwargs)
