"""Whole-layer tests of the accelerator in the Amaranth simulator, bit-exact against golden."""
from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from rtl_gen.image import build_image, expected_counts
from rtl_gen.machine import MachineError, run_image
from sdhw import hostbus as hb
from sdhw.accelerator import Accelerator
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import KIND_END, decode, encode
from sim.amaranth_host import Host, simulate

SMALL = {"device": "ecp5-25f", "act_depth": 512, "code_depth": 2048, "weight_depth": 64, "basis_depth": 256,
         "bias_depth": 256, "desc_layers": 4}


def _program(model: Model, rng, dense: bool, prune: float = 0.3):
    x_cal = rng.normal(0.0, 1.0, (64, *model.input_shape))
    opts = CompileOptions(method="paper", prune=prune, dense=dense)
    return compile_model(model, x_cal, opts).program


def _check(program, cfg, rng, n_inputs=2):
    image = build_image(program, cfg)
    xs = [rng.integers(-128, 128, program.input_shape) for _ in range(n_inputs)]
    results = simulate(Accelerator(cfg), image, xs)
    for k, (x, res) in enumerate(zip(xs, results)):
        assert res["error_code"] == 0, f"input {k}: error {res['error_code']} at layer {res['layer']}"
        want = run_program(program, x[None]).reshape(-1)
        assert np.array_equal(res["output"], want), f"input {k}:\n got {res['output']}\nwant {want}"
        assert np.array_equal(run_image(image, cfg, x)["output"], want), f"input {k}: rtl_gen.machine"
    want = expected_counts(program, cfg)
    assert results[0]["macs"] == want["macs"], (results[0]["macs"], want)
    assert results[0]["skipped"] == want["rows_skipped"], (results[0]["skipped"], want)
    return results


def _cnn(rng) -> Model:
    return Model((5, 7, 2), [
        Layer("conv", rng.normal(0, 0.4, (6, 2, 3, 3)), rng.normal(0, 0.1, 6), relu=True, stride=1),
        Layer("conv", rng.normal(0, 0.4, (5, 6, 1, 1)), rng.normal(0, 0.1, 5), relu=False, stride=2),
        Layer("conv", rng.normal(0, 0.4, (4, 5, 3, 3)), rng.normal(0, 0.1, 4), relu=True, stride=2),
        Layer("fc", rng.normal(0, 0.4, (7, 2 * 2 * 4)), rng.normal(0, 0.1, 7), relu=False),
    ])


@pytest.mark.parametrize("dense", [False, True])
def test_fc_layer_bit_exact(dense):
    rng = np.random.default_rng(11)
    model = Model((20,), [Layer("fc", rng.normal(0, 0.3, (10, 20)), rng.normal(0, 0.1, 10), relu=True)])
    _check(_program(model, rng, dense), AcceleratorConfig(pes=4, dense=dense, **SMALL), rng)


@pytest.mark.parametrize("dense", [False, True])
def test_conv3x3_stride2_bit_exact(dense):
    rng = np.random.default_rng(12)
    model = Model((6, 5, 3), [Layer("conv", rng.normal(0, 0.3, (5, 3, 3, 3)), rng.normal(0, 0.1, 5), relu=False,
                                    stride=2)])
    _check(_program(model, rng, dense), AcceleratorConfig(pes=4, dense=dense, **SMALL), rng)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("device, requant", [("ecp5-25f", None), ("up5k", "table"), ("generic", "serial")])
def test_multilayer_cnn_bit_exact_with_counters(dense, device, requant):
    """conv3x3 s1 -> conv1x1 s2 -> conv3x3 s2 -> fc through the ping-pong buffers, odd shapes, on each
    family's structure (ECP5: registered block RAM outputs; UP5K: SPRAM, dual products, table requantiser)."""
    rng = np.random.default_rng(21)
    cfg = AcceleratorConfig(pes=4, dense=dense, requant=requant, **{**SMALL, "device": device, "desc_layers": 6})
    _check(_program(_cnn(rng), rng, dense, prune=0.4), cfg, rng, n_inputs=2)


def test_groups_larger_than_the_weight_buffer_stream():
    """A layer whose channel groups hold more entries than the weight buffer is rebuilt for every pixel."""
    from rtl_gen.image import plan_layer

    rng = np.random.default_rng(22)
    model = Model((4, 4, 6), [Layer("conv", rng.normal(0, 0.3, (3, 6, 3, 3)), rng.normal(0, 0.1, 3), stride=1)])
    program = _program(model, rng, False, prune=0.0)
    cfg = AcceleratorConfig(pes=2, **{**SMALL, "weight_depth": 16})
    assert plan_layer(program.layers[0], cfg).stream
    _check(program, cfg, rng, n_inputs=1)


def test_a_replayed_group_too_large_for_the_weight_buffer_stops_with_an_error():
    """The same layer with its stream flag cleared (checksum valid, as a faulty compiler would write it): the fill
    waits for room the replaying issuer never frees, and the issuer for entries the fill cannot write. The
    accelerator reports it instead of hanging."""
    rng = np.random.default_rng(22)
    model = Model((4, 4, 6), [Layer("conv", rng.normal(0, 0.3, (3, 6, 3, 3)), rng.normal(0, 0.1, 3), stride=1)])
    program = _program(model, rng, False, prune=0.0)
    cfg = AcceleratorConfig(pes=2, **{**SMALL, "weight_depth": 16})
    image = build_image(program, cfg)
    region, offset, words = next(s for s in image.sections if s[0] == hb.REGION_DESC)
    fields = decode(words[:DESC_WORDS])
    assert fields["stream"] == 1
    fields["stream"] = 0
    fields.pop("checksum")
    image.sections[image.sections.index((region, offset, words))] = (
        region, offset, [*encode(fields, DESC_WORDS), *words[DESC_WORDS:]])
    x = rng.integers(-128, 128, program.input_shape)
    result = simulate(Accelerator(cfg), image, [x], timeout=20_000)[0]
    assert result["error_code"] == hb.ERR_BUFFER, result["error_code"]
    with pytest.raises(MachineError, match="does not fit the weight buffer"):
        run_image(image, cfg, x)


def test_zero_rows_are_skipped_and_cost_no_cycles():
    """Half the rows zero -> about half the cycles of the all-rows case; the counters show the skipped rows."""
    seed = 31
    rng = np.random.default_rng(seed)
    model = Model((4, 4, 16), [Layer("conv", rng.normal(0, 0.3, (4, 16, 3, 3)), rng.normal(0, 0.1, 4))])
    cfg = AcceleratorConfig(pes=4, **{**SMALL, "weight_depth": 256})
    cycles = {}
    for prune in (0.0, 0.5):
        program = _program(model, rng, False, prune=prune)
        cycles[prune] = _check(program, cfg, rng, n_inputs=1)[0]["cycles"]
    # 16 pixels x 24 skipped rows x 3 taps fewer cycles, give or take the first pass (the fill's pace)
    saved = cycles[0.0] - cycles[0.5]
    assert abs(saved - 16 * 24 * 3) < 16 * 24 * 3 * 0.15, f"seed {seed}: cycles {cycles}"


# Descriptor fields made inconsistent (with a valid checksum, as a faulty compiler would write them) -> the
# check that catches them; a word changed after the checksum was computed -> ERR_CHECKSUM
CORRUPTIONS = {
    "kind": ({"kind": 3}, hb.ERR_KIND),
    "stride": ({"stride": 3}, hb.ERR_STRIDE),
    "zero-groups": ({"n_groups": 0}, hb.ERR_SHAPE),
    "too-many-lanes": ({"last_lanes": 5}, hb.ERR_SHAPE),
    "zero-width": ({"in_w": 0}, hb.ERR_SHAPE),
    "mode": ({"sd": 0}, hb.ERR_MODE),
    "act-size": ({"in_size": 100_000}, hb.ERR_ACT_SIZE),
    "out-size": ({"out_size": 600}, hb.ERR_ACT_SIZE),
    "thresholds-without-table": ({"n_thresh": 3}, hb.ERR_PARAMS),
    "tap-address": ({"base0": -5000}, hb.ERR_ACT_ADDR),
    "rows-overrun": ({"n_rows": 1}, hb.ERR_WEIGHT_ADDR),
    "checksum": ("flip", hb.ERR_CHECKSUM),
    "no-end": (None, hb.ERR_NO_END),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_descriptor_raises_error_and_a_clean_rerun_works(case):
    """A descriptor the sequencer cannot execute stops it with the error flag (never a hang); the same
    accelerator then runs the correct program bit-exactly."""
    seed = 41
    rng = np.random.default_rng(seed)
    model = Model((30,), [Layer("fc", rng.normal(0, 0.3, (8, 30)), rng.normal(0, 0.1, 8), relu=True)])
    cfg = AcceleratorConfig(pes=4, **SMALL)
    program = _program(model, rng, False)
    image = build_image(program, cfg)
    dut = Accelerator(cfg)
    x = rng.integers(-128, 128, program.input_shape)
    changes, code = CORRUPTIONS[case]
    good = next(words for region, _, words in image.sections if region == hb.REGION_DESC)[:DESC_WORDS]
    results = {}

    async def bench(ctx):
        host = Host(dut, ctx)
        await host.load(image)
        if changes is None:                         # every slot holds a layer: no end marker anywhere
            for slot in range(1, cfg.desc_layers):
                for k, word in enumerate(good):
                    await host.write((hb.REGION_DESC << 16) | (slot * DESC_WORDS + k), word)
        elif changes == "flip":
            await host.write((hb.REGION_DESC << 16) | 2, good[2] ^ 0x10)
        else:
            fields = decode(good)
            fields.update(changes)
            fields.pop("checksum")
            for k, word in enumerate(encode(fields, DESC_WORDS)):
                await host.write((hb.REGION_DESC << 16) | k, word)
        results["bad"] = await host.run(image, x, timeout=5000)
        await host.load(image)
        results["good"] = await host.run(image, x)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    bad = results["bad"]
    assert bad["status"] & hb.STATUS_ERROR and not bad["status"] & hb.STATUS_BUSY, f"{case}: status {bad['status']:#x}"
    assert bad["error_code"] == code, f"{case}: error code {bad['error_code']}, want {code}"
    good_run = results["good"]
    assert good_run["error_code"] == 0 and good_run["status"] & hb.STATUS_DONE
    assert np.array_equal(good_run["output"], run_program(program, x[None]).reshape(-1)), case


def test_an_erased_slot_is_not_an_end_marker():
    """All-zero descriptor words fail the checksum: a program that runs into unwritten memory stops with an
    error instead of ending as if complete."""
    assert encode({"kind": KIND_END}, DESC_WORDS) != [0] * DESC_WORDS


@pytest.mark.parametrize("pes", [16, 1])
def test_digits_mlp_end_to_end_on_the_up5k_build(pes):
    """The bundled digits MLP, compiled as `sdhw compile` does, on the UP5K's default build (activations and
    codes in single-port RAM, two products per DSP, the table requantiser) and with one PE."""
    from golden.datasets import DIGITS_MLP, load_digits_split
    from golden.model import load_npz

    x_train, _, x_test, _ = load_digits_split()
    model = load_npz(DIGITS_MLP)
    program = compile_model(model, x_train, CompileOptions(epochs=0)).program
    cfg = AcceleratorConfig(pes=pes, device="up5k")
    assert cfg.in_spram and cfg.requant == "table" and cfg.dual_products
    x_q = program.input_q.quantize(x_test[:1])
    result = simulate(Accelerator(cfg), build_image(program, cfg), [x_q[0]])[0]
    assert result["error_code"] == 0
    assert np.array_equal(result["output"], run_program(program, x_q).reshape(-1))
    assert result["macs"] == expected_counts(program, cfg)["macs"]


def test_empty_groups_back_to_back():
    """All-zero rows make every group a single placeholder entry; none may be lost, none counted as MACs."""
    rng = np.random.default_rng(5004)
    model = Model((6, 3, 1), [Layer("conv", rng.normal(0, 0.3, (6, 1, 1, 1)), rng.normal(0, 0.3, 6))])
    program = _program(model, rng, False)
    program.layers[0].weights.codes[...] = 0
    results = _check(program, AcceleratorConfig(pes=2, **SMALL), rng, n_inputs=1)
    assert results[0]["macs"] == 0


def test_family_choices_and_validation():
    assert AcceleratorConfig(device="up5k").counter_bits == 24
    assert AcceleratorConfig(device="ecp5-25f").counter_bits == 48
    assert AcceleratorConfig(pes=4, counter_bits=40).counter_bits == 40
    up5k, ecp5 = AcceleratorConfig(device="up5k"), AcceleratorConfig(device="ecp5-25f")
    assert (up5k.pes, up5k.requant, up5k.dual_products, up5k.register_ram_outputs) == (16, "table", True, False)
    assert (ecp5.requant, ecp5.registered_dsps, ecp5.register_ram_outputs) == ("pipelined", True, True)
    for bad in (15, 65, 32.0, True):
        with pytest.raises(SdhwError, match="counter_bits must be an integer in 16..64"):
            AcceleratorConfig(pes=4, counter_bits=bad)
    with pytest.raises(SdhwError, match=r"channel_lanes x pixel_lanes must be 16 x 1"):
        AcceleratorConfig(pes=16, pixel_lanes=2)
    with pytest.raises(SdhwError, match="rebuild_lanes must be a power of two from 1 to pes = 4"):
        AcceleratorConfig(pes=4, rebuild_lanes=8)
    with pytest.raises(SdhwError, match="act_depth must be a power of two"):
        AcceleratorConfig(pes=4, act_depth=1000)


def test_dsp_budget_and_soft_products():
    assert AcceleratorConfig(pes=16, device="ecp5-25f").soft_products == 0
    assert AcceleratorConfig(pes=64, device="ecp5-25f").soft_products == 64 - (28 - 4)
    assert AcceleratorConfig(pes=16, device="up5k").soft_products == 0               # two per SB_MAC16
    assert AcceleratorConfig(pes=16, device="up5k", dsp_budget=4).soft_products == 8
    assert AcceleratorConfig(pes=16, device="generic").soft_products == 0
    assert AcceleratorConfig(pes=4, device="hx8k").soft_products == 4
    for bad in (-1, 2.0, True):
        with pytest.raises(SdhwError, match="dsp_budget must be a non-negative integer"):
            AcceleratorConfig(pes=4, dsp_budget=bad)


@pytest.mark.parametrize("pes, device, dense", [(64, "ecp5-25f", False), (16, "ecp5-25f", True), (4, "generic", False)])
def test_multipliers_are_exactly_the_budgeted_products(pes, device, dense):
    """Every ``*`` in the design is a DSP product the configuration budgeted (MAC lanes in DSPs plus the
    pipelined requantiser's four): a stray multiplier (e.g. in an address) would push the design past the
    device's DSPs, which yosys does not fall back from."""
    from amaranth.back import rtlil

    from sdhw.config import REQUANT_DSPS
    cfg = AcceleratorConfig(pes=pes, device=device, dense=dense)
    text = rtlil.convert(Accelerator(cfg, vendor_primitives=True), name="top")
    # ECP5 lanes are primitives behind a wrapper: their products are not `*` cells
    want = (0 if cfg.registered_dsps else pes - cfg.soft_products) + (REQUANT_DSPS if cfg.requant == "pipelined" else 0)
    # products of two signals; a constant operand (an array index times the element width) is a shift
    cells = [c.split("\n  end")[0] for c in text.split("cell $mul")[1:]]
    variable = [c for c in cells if not re.search(r"connect \\[AB] \d+'[01]+$", c, re.MULTILINE)]
    assert len(variable) == want


def test_soft_products_multilayer_bit_exact():
    """Three of four products from LUTs in a whole program."""
    rng = np.random.default_rng(52)
    model = Model((5, 6, 3), [
        Layer("conv", rng.normal(0, 0.4, (6, 3, 3, 3)), rng.normal(0, 0.1, 6), relu=True, stride=1),
        Layer("fc", rng.normal(0, 0.4, (7, 5 * 6 * 6)), rng.normal(0, 0.1, 7), relu=False),
    ])
    cfg = AcceleratorConfig(pes=4, dsp_budget=1, **{**SMALL, "device": "generic"})
    assert cfg.soft_products == 3
    _check(_program(model, rng, False, prune=0.3), cfg, rng, n_inputs=2)
