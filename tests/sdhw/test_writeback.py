# amaranth: UnusedElaboratable=no
"""sdhw.writeback.Writeback, each requantiser kind: random elements with random input gaps, layer after layer
(the table kind's thresholds loaded through ``t_*`` from ``rtl_gen.image.thresholds``), every element written
once at its tag with ``golden.quant.requantize``'s value, ``idle`` checked every cycle (Amaranth simulator)."""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from packed_inputs import PackedInputs
from test_requant import expected, layer_params, rand_int, rand_params, table_layer

from golden.quant import INT32_MAX, INT32_MIN
from rtl_gen.image import thresholds
from sdhw.requant import Requantiser, SerialRequantiser, ThresholdSearch
from sdhw.writeback import Writeback

TAG_BITS = 8


def sign8(value: int) -> int:
    return value - 256 if value & 0x80 else value


def split_sum(rng: random.Random, s: int, acc_bits: int) -> tuple[int, int]:
    """``(acc, bias)`` with ``acc + bias = s``, ``acc`` in ``acc_bits`` and ``bias`` in int32."""
    lo = max(-(1 << (acc_bits - 1)), s - INT32_MAX)
    hi = min((1 << (acc_bits - 1)) - 1, s - INT32_MIN)
    acc = rng.choice([rng.randint(lo, hi), max(lo, min(hi, rng.randint(-1000, 1000)))])
    return acc, s - acc


def arith_layer(rng: random.Random, acc_bits: int, n: int):
    """A layer for the pipelined and serial kinds: random parameters (``act_max`` is the Writeback's fixed
    127), ``n`` elements with distinct random tags. Returns ``(params, None, elements, want)``."""
    m0, shift, zp, lo, _ = rand_params(rng)
    params = {"m0": m0, "shift": shift, "zp_out": zp, "act_min": lo, "n_thresh": rng.randrange(512)}
    tags = rng.sample(range(1 << TAG_BITS), n)
    elements, want = [], {}
    for tag in tags:
        acc = rand_int(rng, acc_bits)
        bias = rand_int(rng, 32) if rng.random() < 0.5 else rng.randint(-1000, 1000)
        elements.append((acc, bias, tag))
        want[tag] = expected(acc, bias, m0, shift, zp, lo, 127)
    return params, None, elements, want


def table_layer_elements(rng: random.Random, acc_bits: int, n: int, *, relu: bool):
    """A layer for the table kind as the compiler lays it out: ``act_min`` carries the table's base and
    ``n_thresh`` its length. Sums at sampled thresholds and one above, the int32 extremes, and random sums."""
    layer = table_layer(rng, relu=relu)
    base, table = thresholds(layer)
    params = {"m0": layer.m0, "shift": layer.shift, "zp_out": layer.out_q.zero_point, "act_min": base,
              "n_thresh": len(table)}
    sums = [INT32_MIN, INT32_MAX, 0, -1]
    sums += [s for t in rng.sample(table, min(len(table), n // 4)) for s in (t, t + 1)]
    sums += [rng.choice([rng.randint(INT32_MIN, INT32_MAX), rng.randint(-(1 << 20), 1 << 20)])
             for _ in range(n - len(sums))]
    rng.shuffle(sums)
    tags = rng.sample(range(1 << TAG_BITS), len(sums))
    elements, want = [], {}
    for s, tag in zip(sums, tags):
        acc, bias = split_sum(rng, s, acc_bits)
        elements.append((acc, bias, tag))
        want[tag] = expected(acc, bias, *layer_params(layer))
    return params, table, elements, want


def run(dut: Writeback, layers, *, seed: int, p_valid: float):
    """Per layer: load its table (table kind, random gaps between the writes), set its parameters, stream its
    elements with random input gaps, and wait until all are written before the next layer. Every cycle from
    the first clock edge on: ``idle`` is high exactly when every element taken in an earlier cycle has been
    written in an earlier cycle; every write is at the tag of an element of the layer not yet written, with
    its golden value. Returns per layer ``{tag: (cycle taken, cycle written)}``."""
    rng = random.Random(seed)
    where0 = f"seed {seed} ({dut.kind}, units={dut.units}, acc_bits={dut.acc_bits})"
    results = []
    h = PackedInputs(dut, {"valid": dut.i.valid, "payload": dut.i.payload, "params": dut.params, "t_en": dut.t_en,
                           "t_addr": dut.t_addr, "t_data": dut.t_data})
    limit = 300 * len(layers) + 60 * sum(len(e) for _, _, e, _ in layers) + 200

    async def bench(ctx):
        cycle = 0
        inside = 0                                      # taken in an earlier cycle, not yet written
        taken: dict[int, int] = {}
        written: dict[int, int] = {}
        want: dict[int, int] = {}
        where = where0
        held = {}                                       # the per-layer parameters on the port

        async def step(valid=False, payload=None, t_en=False, t_addr=0, t_data=0) -> bool:
            """One cycle: set the inputs, check the outputs, tick; returns whether the input was taken."""
            nonlocal cycle, inside
            assert cycle < limit, f"{where}: stuck after {cycle} cycles, {len(written)}/{len(want)} written"
            ctx.set(h.inputs, {"valid": valid, "payload": payload or {}, "params": held, "t_en": t_en,
                               "t_addr": t_addr, "t_data": t_data})
            if cycle > 0:                               # the reset cycle: test_idle_right_after_reset
                idle = ctx.get(dut.idle)
                assert idle == (inside == 0), f"{where}, cycle {cycle}: idle={idle} with {inside} elements inside"
            given = ctx.get(dut.w_en)
            if given:
                tag, value = ctx.get(dut.w_addr), sign8(ctx.get(dut.w_data))
                assert tag in taken, f"{where}, cycle {cycle}: write at tag {tag}, no such element taken"
                assert tag not in written, f"{where}, cycle {cycle}: tag {tag} written twice"
                assert value == want[tag], f"{where}, cycle {cycle}: tag {tag} got {value}, want {want[tag]}"
                written[tag] = cycle
            took = bool(valid and ctx.get(dut.i.ready))
            if took:
                taken[payload["tag"]] = cycle
            inside += took - given
            await ctx.tick()
            cycle += 1
            return took

        await step()
        for k, (params, table, elements, layer_want) in enumerate(layers):
            where = f"{where0}, layer {k} ({params})"
            taken, written, want = {}, {}, layer_want
            if table is not None:
                for addr, value in enumerate(table):
                    while rng.random() < 0.3:
                        await step()
                    await step(t_en=True, t_addr=addr, t_data=value & 0xFFFFFFFF)
            held = params
            await step()                                # the pipelined unit registers the shift's masks
            for acc, bias, tag in elements:
                while rng.random() >= p_valid:
                    await step()
                payload = {"acc": acc, "bias": bias, "tag": tag}
                while not await step(True, payload):
                    pass
            while len(written) < len(elements):
                await step()
            results.append({tag: (taken[tag], written[tag]) for tag in taken})
        for _ in range(30):                             # nothing more comes out
            await step()

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(results) == len(layers), where0
    for (_, _, elements, _), res in zip(layers, results):
        assert sorted(res) == sorted(tag for *_, tag in elements), where0
    return results


def random_layers(kind: str, seed: int, acc_bits: int, n_layers: int, per_layer: int):
    rng = random.Random(seed)
    if kind == "table":
        return [table_layer_elements(rng, acc_bits, per_layer, relu=k % 2 == 0) for k in range(n_layers)]
    return [arith_layer(rng, acc_bits, per_layer) for _ in range(n_layers)]


@pytest.mark.parametrize("kind, units, acc_bits, seed, per_layer", [
    ("pipelined", 1, 32, 1, 50), ("pipelined", 1, 40, 2, 50), ("serial", 1, 32, 3, 12), ("serial", 1, 24, 4, 12),
    ("table", 1, 28, 5, 24), ("table", 2, 32, 6, 32),
])
def test_random_elements_written_once_with_golden_values(kind, units, acc_bits, seed, per_layer):
    dut = Writeback(kind=kind, acc_bits=acc_bits, tag_bits=TAG_BITS, units=units)
    layers = random_layers(kind, seed, acc_bits, 3, per_layer)
    results = run(dut, layers, seed=seed, p_valid=0.6)
    latency = {"pipelined": Requantiser.LATENCY, "serial": SerialRequantiser.BASE_LATENCY,
               "table": ThresholdSearch.LATENCY + 2}[kind]
    for k, res in enumerate(results):
        fast = {tag: c for tag, c in res.items() if c[1] - c[0] < latency}
        assert not fast, f"seed {seed}, layer {k}: written sooner than the requantiser's latency: {fast}"
    if kind == "table":
        # the layers' tables differ in length: later layers run over stale entries past n_thresh
        assert len({len(t) for _, t, _, _ in layers}) > 1, f"seed {seed}: the stimulus"


def test_pipelined_one_element_per_cycle():
    """Always valid: an element is taken every cycle and written ``Requantiser.LATENCY`` cycles later."""
    seed = 21
    (res,) = run(Writeback(kind="pipelined", acc_bits=32, tag_bits=TAG_BITS),
                 random_layers("pipelined", seed, 32, 1, 100), seed=seed, p_valid=1.0)
    ins = sorted(c_in for c_in, _ in res.values())
    assert ins == list(range(ins[0], ins[0] + len(ins))), f"seed {seed}: input stalled: {ins}"
    assert {c_out - c_in for c_in, c_out in res.values()} == {Requantiser.LATENCY}, f"seed {seed}"


def test_serial_latency_and_next_element_at_the_write():
    """Always valid: each element is written ``SerialRequantiser.latency(shift)`` cycles after it is taken and
    the next one is taken in the cycle of that write."""
    seed = 22
    layers = random_layers("serial", seed, 32, 3, 6)
    results = run(Writeback(kind="serial", acc_bits=32, tag_bits=TAG_BITS), layers, seed=seed, p_valid=1.0)
    for (params, _, _, _), res in zip(layers, results):
        want = SerialRequantiser.latency(params["shift"])
        pairs = sorted(res.values())
        assert {c_out - c_in for c_in, c_out in pairs} == {want}, f"seed {seed}: shift {params['shift']}"
        assert all(b[0] == a[1] for a, b in zip(pairs, pairs[1:])), f"seed {seed}: {pairs}"


@pytest.mark.parametrize("units", [1, 2])
def test_table_units_per_8_cycles(units):
    """Always valid: ``units`` elements per 8 cycles (within 5 %)."""
    seed = 30 + units
    (res,) = run(Writeback(kind="table", acc_bits=28, tag_bits=TAG_BITS, units=units),
                 random_layers("table", seed, 28, 1, 60), seed=seed, p_valid=1.0)
    ins = sorted(c_in for c_in, _ in res.values())
    per_element = (ins[-1] - ins[0]) / (len(ins) - 1)
    assert per_element <= 8 / units * 1.05, f"seed {seed}: {per_element:.2f} cycles per element"


@pytest.mark.parametrize("kind", ["pipelined", "serial", "table"])
def test_idle_right_after_reset(kind):
    dut = Writeback(kind=kind, acc_bits=32, tag_bits=TAG_BITS)
    seen = []

    async def bench(ctx):
        for _ in range(3):
            seen.append(ctx.get(dut.idle))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [1, 1, 1], f"{kind}: idle in the first cycles {seen}, nothing inside"


def test_rejects_bad_kind():
    with pytest.raises(ValueError, match=r"kind must be pipelined, serial or table, not 'fast'$"):
        Writeback(kind="fast", acc_bits=32, tag_bits=8)
