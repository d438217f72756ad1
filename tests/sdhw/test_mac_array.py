# amaranth: UnusedElaboratable=no
"""sdhw.mac_array.MacArray against exact sums: random weights and activations, passes of random length ended by
``last``, idle cycles between ops, every kind of product (Amaranth simulator, fixed seeds)."""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from sdhw.mac_array import MacArray

# The docstring's timing: "``done`` comes 3 cycles after the ``last`` op" (op in cycle c, done high in cycle c + 3,
# for that one cycle), and "the op after a ``last`` op must come a cycle later than back to back".
DONE_AFTER = 3
GAP_AFTER_LAST = 1


def wrap(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def make_ops(rng: random.Random, lanes: int, n_passes: int, max_len: int, p_idle: float):
    """Cycles of stimulus: ``(valid, last, weights, act)``; idle cycles carry random garbage (also ``last``)."""
    corners = [-128, -127, -1, 0, 1, 127]

    def value():
        return rng.choice(corners) if rng.random() < 0.25 else rng.randint(-128, 127)

    cycles, sums = [], []
    for _ in range(n_passes):
        big = rng.random() < 0.15                          # products of one sign and the largest magnitude
        length = max_len if big else rng.choice([1, 1, 2, rng.randint(1, max_len), max_len])
        acc = [0] * lanes
        for k in range(length):
            while rng.random() < p_idle:
                cycles.append((0, rng.random() < 0.5, [value() for _ in range(lanes)], value()))
            if big:
                w, a = [rng.choice([-128, 127]) for _ in range(lanes)], -128
            else:
                w, a = [value() for _ in range(lanes)], value()
            acc = [s + wq * a for s, wq in zip(acc, w)]
            cycles.append((1, k == length - 1, w, a))
        sums.append(acc)
        for _ in range(GAP_AFTER_LAST):
            cycles.append((0, rng.random() < 0.5, [value() for _ in range(lanes)], value()))
    return cycles, sums


def run(dut: MacArray, cycles, *, seed: int, extra: int = DONE_AFTER + 3):
    """Drive ``cycles``; return ``[(cycle, sums)]`` of every cycle ``done`` is high."""
    seen = []

    async def bench(ctx):
        for c in range(len(cycles) + extra):
            if c < len(cycles):
                valid, last, w, a = cycles[c]
            else:
                valid, last, w, a = 0, 0, [0] * dut.lanes, 0
            ctx.set(dut.valid, valid)
            ctx.set(dut.last, last)
            ctx.set(dut.weights, w)
            ctx.set(dut.act, a)
            if ctx.get(dut.done):
                seen.append((c, list(ctx.get(dut.sums))))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def check(dut: MacArray, seed: int, *, n_passes: int = 40, max_len: int = 12, p_idle: float = 0.2):
    rng = random.Random(seed)
    cycles, sums = make_ops(rng, dut.lanes, n_passes, max_len, p_idle)
    seen = run(dut, cycles, seed=seed)
    where = (f"seed {seed} (lanes={dut.lanes}, acc_bits={dut.acc_bits}, dsp={dut.dsp}, "
             f"soft_products={dut.soft_products})")
    lasts = [c for c, (valid, last, _, _) in enumerate(cycles) if valid and last]
    assert [c for c, _ in seen] == [c + DONE_AFTER for c in lasts], f"{where}: done in cycles {[c for c, _ in seen]}"
    for k, ((c, got), want) in enumerate(zip(seen, sums)):
        want = [wrap(s, dut.acc_bits) for s in want]
        assert got == want, f"{where}: pass {k} (done in cycle {c}): sums {got}, want {want}"
    return cycles, sums


@pytest.mark.parametrize("dsp", ["plain", "registered", "dual"])
@pytest.mark.parametrize("lanes, soft, acc_bits, seed", [
    (1, 0, 32, 1), (4, 0, 17, 2), (5, 2, 48, 3), (4, 4, 24, 4), (8, 3, 18, 5), (3, 0, 32, 6),
])
def test_random_passes_exact_sums(dsp, lanes, soft, acc_bits, seed):
    dut = MacArray(lanes=lanes, acc_bits=acc_bits, soft_products=soft, dsp=dsp, vendor_primitives=False)
    cycles, sums = check(dut, seed)
    # the stimulus has one-op passes, idle cycles with last high, and (at 17/18 bits) sums that wrap
    assert any(not v and la for v, la, _, _ in cycles) and min(len(s) for s in sums) >= 1
    if acc_bits <= 18:
        assert any(abs(v) >= 1 << (acc_bits - 1) for s in sums for v in s), f"seed {seed}: nothing wrapped"


@pytest.mark.parametrize("dsp", ["plain", "registered", "dual"])
def test_long_passes_back_to_back(dsp):
    """No idle cycle inside passes, only the documented gap after each: one op per cycle."""
    seed = 7
    dut = MacArray(lanes=6, acc_bits=20, soft_products=1, dsp=dsp)
    check(dut, seed, n_passes=20, max_len=40, p_idle=0.0)


def test_soft_products_exact_for_every_int8_pair():
    """The radix-4 LUT multiplier against all 65536 (weight, activation) pairs: 16 soft lanes, each op a
    one-op pass (lane q of op (a, j) has weight 16 j + q - 128)."""
    seed = 0
    lanes = 16
    dut = MacArray(lanes=lanes, acc_bits=17, soft_products=lanes)
    cycles = []
    for a in range(-128, 128):
        for j in range(16):
            cycles.append((1, 1, [16 * j + q - 128 for q in range(lanes)], a))
            cycles.append((0, 0, [0] * lanes, 0))
    seen = run(dut, cycles, seed=seed)
    ops = [(w, a) for valid, _, w, a in cycles if valid]
    assert len(seen) == len(ops) == 4096
    wrong = [(wq, a, g) for (w, a), (_, got) in zip(ops, seen) for wq, g in zip(w, got) if g != wq * a]
    assert not wrong, f"{len(wrong)} wrong products, first (weight, act, got): {wrong[:3]}"


@pytest.mark.parametrize("kwargs, match", [
    ({"lanes": 0}, r"lanes must be an integer in 1\.\.1024, not 0$"),
    ({"lanes": 1025}, r"lanes must be .*not 1025$"),
    ({"lanes": 2.0}, r"lanes must be .*not 2\.0$"),
    ({"lanes": 2, "acc_bits": 16}, r"acc_bits must be an integer in 17\.\.48, not 16$"),
    ({"lanes": 2, "acc_bits": 49}, r"acc_bits must be .*not 49$"),
    ({"lanes": 2, "soft_products": 3}, r"soft_products must be an integer in 0\.\.2, not 3$"),
    ({"lanes": 2, "soft_products": -1}, r"soft_products must be .*not -1$"),
    ({"lanes": 2, "dsp": "mult18"}, r"dsp must be one of plain, registered, dual, not 'mult18'$"),
    ({"lanes": 2, "vendor_primitives": 1}, r"vendor_primitives must be a bool, not 1$"),
])
def test_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MacArray(**kwargs)
