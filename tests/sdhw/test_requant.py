# amaranth: UnusedElaboratable=no
"""sdhw.requant.Requantiser and SerialRequantiser against golden.quant.requantize (Amaranth simulator, random
handshakes)."""
from __future__ import annotations

import random
import re
import types

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from golden.quant import INT32_MAX, INT32_MIN, QParams, requantize
from rtl_gen.image import thresholds
from sdhw.requant import Requantiser, SerialRequantiser, ThresholdRequantiser, ThresholdSearch


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


# ------------------------------------------------------------------------------ the table requantiser
def table_layer(rng: random.Random, *, relu: bool, shift: int | None = None):
    """Random requantisation parameters, as ``rtl_gen.image.thresholds`` reads them from a layer: m0 in
    [2**30, 2**31), shift -4..20 (unless given), a random zero point, with or without a fused ReLU."""
    zp = rng.randint(-128, 127)
    return types.SimpleNamespace(m0=rng.randint(1 << 30, (1 << 31) - 1),
                                 shift=rng.randint(-4, 20) if shift is None else shift,
                                 out_q=QParams(1.0, zp), act_min=zp if relu else -128, act_max=127)


def layer_params(layer) -> tuple[int, int, int, int, int]:
    return layer.m0, layer.shift, layer.out_q.zero_point, layer.act_min, layer.act_max


def split_sum(rng: random.Random, s: int) -> tuple[int, int]:
    """``(acc, bias)``, both int32, with ``acc + bias = s``, the bias random over its allowed range."""
    lo, hi = max(INT32_MIN, s - INT32_MAX), min(INT32_MAX, s - INT32_MIN)
    bias = rng.choice([rng.randint(lo, hi), rng.randint(max(lo, -1000), min(hi, 1000))])
    return s - bias, bias


def table_items(rng: random.Random, table: list[int], n_random: int, every_threshold: bool):
    """``(acc, bias)`` pairs: sums at each threshold ``t`` and at ``t + 1`` (all of them, or a sample), the
    int32 extremes 0 and +-1 as sums and as accumulators (with biases keeping the sum in int32), and random
    accumulators with random biases."""
    picked = table if every_threshold else rng.sample(table, min(len(table), 24))
    sums = [s for t in picked for s in (t, t + 1)] + [INT32_MIN, INT32_MAX, 0, 1, -1]
    items = [split_sum(rng, s) for s in sums]
    for acc in (INT32_MIN, INT32_MAX, 0, 1, -1):
        items += [(acc, 0), (acc, rng.randint(max(INT32_MIN, INT32_MIN - acc), min(INT32_MAX, INT32_MAX - acc)))]
    for _ in range(n_random):
        acc = rng.choice([rng.randint(INT32_MIN, INT32_MAX), rng.randint(-(1 << 20), 1 << 20)])
        items.append((acc, rng.randint(max(INT32_MIN, INT32_MIN - acc), min(INT32_MAX, INT32_MAX - acc))))
    rng.shuffle(items)
    return items


def run_table(dut, layers, *, seed: int, p_valid: float, p_ready, spacing: int = 0):
    """Per layer ``(base, table, items)``: write the table through ``w_*`` (random garbage past ``n_thresh``,
    as an earlier layer leaves it), set ``base`` and ``n_thresh``, stream the items with random input gaps
    and output stalls (``p_ready``: one probability or one per layer; ``spacing`` idle cycles after each
    input), and drain before the next layer. For a :class:`ThresholdRequantiser` an item is
    ``(acc, bias)``, for a bare :class:`ThresholdSearch` a sum ``s``. Outputs are matched by tag (unique per
    run). Returns, per layer, ``[(cycle in, cycle out, value)]`` in item order."""
    rng = random.Random(seed)
    bare = isinstance(dut, ThresholdSearch)
    results = []

    async def bench(ctx):
        cycle = 0
        tag = 0
        for k_layer, (base, table, items) in enumerate(layers):
            ready = p_ready[k_layer] if isinstance(p_ready, list) else p_ready
            ctx.set(dut.i.valid, 0)
            for k in range(256):                          # nothing in flight: write the whole table
                ctx.set(dut.w_en, 1)
                ctx.set(dut.w_addr, k)
                ctx.set(dut.w_data, table[k] if k < len(table) else rng.randint(INT32_MIN, INT32_MAX))
                await ctx.tick()
                cycle += 1
            ctx.set(dut.w_en, 0)
            ctx.set(dut.base, base)
            ctx.set(dut.n_thresh, len(table))
            got = {}                                      # tag -> [cycle in, cycle out, value]
            first_tag, sent, received, wait = tag, 0, 0, 0
            while received < len(items):
                assert cycle < 60 * (tag + 20) + 300 * len(results) + 300, (
                    f"seed {seed}: stuck, {received}/{len(items)} outputs of layer {len(results)}")
                valid = sent < len(items) and rng.random() < p_valid and wait == 0
                wait = max(0, wait - 1)
                if valid:
                    item = items[sent]
                    payload = {"s": item} if bare else {"acc": item[0], "bias": item[1]}
                    ctx.set(dut.i.payload, {**payload, "tag": tag})
                ctx.set(dut.i.valid, valid)
                ctx.set(dut.o.ready, rng.random() < ready)
                if valid and ctx.get(dut.i.ready):
                    got[tag] = [cycle, None, None]
                    sent += 1
                    wait = spacing
                    tag += 1
                if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                    out = ctx.get(dut.o.payload.tag)
                    assert out in got and got[out][1] is None, f"seed {seed}, cycle {cycle}: unexpected tag {out}"
                    got[out][1:] = [cycle, ctx.get(dut.o.payload.value)]
                    received += 1
                await ctx.tick()
                cycle += 1
            results.append([tuple(got[first_tag + k]) for k in range(len(items))])
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        for _ in range(20):                               # and nothing more comes out
            assert not ctx.get(dut.o.valid), f"seed {seed}: an output without an input"
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("units, seed, n_layers", [(1, 41, 4), (2, 42, 6), (3, 43, 6)])
def test_threshold_requantiser_against_golden(units, seed, n_layers):
    """Tables from ``rtl_gen.image.thresholds`` for random layers; every threshold's sum and the sum one
    above it (the first layer, a sample in the others), extremes and random sums; random input gaps and
    output stalls; outputs matched by tag, compared with ``golden.quant.requantize(acc + bias, ...)``."""
    rng = random.Random(seed)
    dut = ThresholdRequantiser(acc_bits=32, tag_bits=16, units=units)
    layers, params = [], []
    for k in range(n_layers):
        # ReLU and plain layers alternate; the second one shifts left (steps of a fraction of one)
        layer = table_layer(rng, relu=k % 2 == 0, shift=rng.randint(-4, -1) if k == 1 else None)
        base, table = thresholds(layer)
        layers.append((base, table, table_items(rng, table, n_random=30, every_threshold=k == 0)))
        params.append(layer_params(layer))
    # the last layer's consumer is mostly stalled: finished units wait, and leave by unit, not by age
    results = run_table(dut, layers, seed=seed, p_valid=0.7, p_ready=[0.6] * (n_layers - 1) + [0.1])
    out_of_order = 0
    for k, ((_, table, items), res, p) in enumerate(zip(layers, results, params)):
        for n, ((acc, bias), (c_in, c_out, value)) in enumerate(zip(items, res)):
            want = int(requantize(np.int64(acc + bias), *p))
            assert value == want, (f"seed {seed}, layer {k} (m0, shift, zp, min, max)={p}, {len(table)} "
                                   f"thresholds: element {n} acc={acc} bias={bias}: got {value}, want {want}")
            assert c_out - c_in >= ThresholdSearch.LATENCY + 2, f"seed {seed}: element {n} faster than documented"
        outs = [c_out for _, c_out, _ in res]
        out_of_order += sum(1 for a, b in zip(outs, outs[1:]) if b < a)
    if units > 1:
        assert out_of_order, f"seed {seed}: outputs never left out of order: the stimulus did not test the tags"
    assert max(len(t) for _, t, _ in layers) > 100, f"seed {seed}: no table near the whole int8 range"


def never_stalled(units: int, n: int = 120):
    """``n`` random sums through a :class:`ThresholdRequantiser` with ``units`` units, an always-valid producer
    and an always-ready consumer; returns ``(seed, items, results, layer)`` (results checked against golden)."""
    seed = 50 + units
    rng = random.Random(seed)
    layer = table_layer(rng, relu=False)
    base, table = thresholds(layer)
    items = [split_sum(rng, rng.randint(INT32_MIN, INT32_MAX)) for _ in range(n)]
    (res,) = run_table(ThresholdRequantiser(units=units), [(base, table, items)], seed=seed, p_valid=1.0,
                       p_ready=1.0)
    for (acc, bias), (_, _, value) in zip(items, res):
        assert value == int(requantize(np.int64(acc + bias), *layer_params(layer))), f"seed {seed}"
    return seed, items, res, (base, table)


@pytest.mark.parametrize("units", [1, 2, 3])
def test_threshold_requantiser_latency(units):
    """Alone (a long gap between inputs), an element leaves ``ThresholdSearch.LATENCY + 2`` cycles after its
    handshake, or one more when it arrives out of its search's turn."""
    seed, items, res, (base, table) = never_stalled(units)
    (res,) = run_table(ThresholdRequantiser(units=units), [(base, table, items[:20])], seed=seed, p_valid=1.0,
                       p_ready=1.0, spacing=ThresholdSearch.LATENCY + 4)
    lat = {c_out - c_in for c_in, c_out, _ in res}
    assert lat <= {ThresholdSearch.LATENCY + 2, ThresholdSearch.LATENCY + 3}, f"seed {seed}: latencies {sorted(lat)}"


@pytest.mark.parametrize("units", [1, 2, 3])
def test_threshold_requantiser_throughput(units):
    """Never stalled: ``units`` elements per 8 cycles (within 5 % over 120 elements)."""
    seed, _, res, _ = never_stalled(units)
    ins = [c for c, _, _ in res]
    per_element = (ins[-1] - ins[0]) / (len(ins) - 1)
    assert per_element <= 8 / units * 1.05, f"seed {seed}: {per_element:.2f} cycles per element, want {8 / units}"


def test_threshold_search_two_elements_per_16_cycles():
    """A bare unit, always-valid producer, always-ready consumer: its two searches take an element every 16
    cycles each, in turn."""
    seed = 64
    rng = random.Random(seed)
    base, table = thresholds(table_layer(rng, relu=True))
    (res,) = run_table(ThresholdSearch(), [(base, table, [rng.randint(INT32_MIN, INT32_MAX) for _ in range(30)])],
                       seed=seed, p_valid=1.0, p_ready=1.0)
    ins = [c for c, _, _ in res]
    assert {b - a for a, b in zip(ins[2:], ins)} <= {-16}, f"seed {seed}: handshakes {ins}"
    assert (ins[-1] - ins[1]) / (len(ins) - 2) == 8, f"seed {seed}: handshakes {ins}"


@pytest.mark.parametrize("sum_bits, seed", [(33, 61), (17, 62), (41, 63)])
def test_threshold_search_counts_thresholds_below(sum_bits, seed):
    """A bare unit on arbitrary non-decreasing tables of 0..255 entries (duplicates included): the output is
    ``base + #{i < n_thresh : s > table[i]}``, entries at or past ``n_thresh`` never count; latency 9."""
    rng = random.Random(seed)
    lo, hi = -(1 << (sum_bits - 1)), (1 << (sum_bits - 1)) - 1
    layers, bases = [], []
    for n_thresh in (0, 1, 2, 7, 128, 200, 255, rng.randint(3, 254)):
        base = rng.randint(-128, 127 - n_thresh) if n_thresh < 255 else -128
        table = sorted(rng.choice([rng.randint(INT32_MIN, INT32_MAX), rng.randint(-50, 50)])
                       for _ in range(n_thresh))
        if n_thresh > 10:
            table[3:6] = [table[3]] * 3                   # equal thresholds: a value the layer skips
        probes = [t + d for t in rng.sample(table, min(n_thresh, 20)) for d in (-1, 0, 1)]
        probes += [lo, hi, 0, -1, 1] + [rng.randint(lo, hi) for _ in range(10)]
        layers.append((base, table, [max(lo, min(hi, s)) for s in probes]))
        bases.append(base)
    results = run_table(ThresholdSearch(sum_bits=sum_bits), layers, seed=seed, p_valid=0.6, p_ready=0.5)
    for (base, table, items), res in zip(layers, results):
        for s, (c_in, c_out, value) in zip(items, res):
            want = base + sum(1 for t in table if s > t)
            assert value == want, f"seed {seed}: {len(table)} thresholds, s={s}: got {value}, want {want}"
            assert c_out - c_in >= ThresholdSearch.LATENCY, f"seed {seed}: s={s} faster than the documented 9"
    # never stalled: exactly 9 cycles from every input handshake to its output
    base, table, items = layers[4]
    (res,) = run_table(ThresholdSearch(sum_bits=sum_bits), [(base, table, items)], seed=seed, p_valid=1.0,
                       p_ready=1.0)
    assert {c_out - c_in for c_in, c_out, _ in res} == {ThresholdSearch.LATENCY}, f"seed {seed}"


@pytest.mark.parametrize("cls, kwargs, shown", [
    (ThresholdRequantiser, {"units": 0}, "units must be an integer in 1..8, not 0"),
    (ThresholdRequantiser, {"units": 9}, "units must be an integer in 1..8, not 9"),
    (ThresholdRequantiser, {"acc_bits": 41}, "acc_bits must be an integer in 16..40, not 41"),
    (ThresholdSearch, {"sum_bits": 16}, "sum_bits must be an integer in 17..41, not 16"),
    (ThresholdSearch, {"tag_bits": 0}, "tag_bits must be an integer in 1..32, not 0"),
])
def test_threshold_constructors_reject_bad_parameters(cls, kwargs, shown):
    with pytest.raises(ValueError, match=re.escape(shown) + "$"):
        cls(**kwargs)
