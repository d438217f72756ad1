"""Whole-layer tests of the accelerator in the Amaranth simulator, bit-exact against golden."""
from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from rtl_gen.image import build_image
from sdhw import hostbus as hb
from sdhw.accelerator import Accelerator
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import decode, encode
from sim.amaranth_host import Host, simulate

SMALL = {"device": "ecp5-25f", "act_depth": 512, "code_depth": 512, "bitmap_depth": 256, "basis_depth": 256,
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
    return results


@pytest.mark.parametrize("dense", [False, True])
def test_fc_layer_bit_exact(dense):
    seed = 11
    rng = np.random.default_rng(seed)
    model = Model((20,), [Layer("fc", rng.normal(0, 0.3, (10, 20)), rng.normal(0, 0.1, 10), relu=True)])
    cfg = AcceleratorConfig(pes=4, dense=dense, **SMALL)
    _check(_program(model, rng, dense), cfg, rng)


@pytest.mark.parametrize("dense", [False, True])
def test_conv3x3_stride2_bit_exact(dense):
    seed = 12
    rng = np.random.default_rng(seed)
    model = Model((6, 5, 3), [Layer("conv", rng.normal(0, 0.3, (5, 3, 3, 3)), rng.normal(0, 0.1, 5), relu=False,
                                    stride=2)])
    cfg = AcceleratorConfig(pes=4, channel_lanes=2, pixel_lanes=2, dense=dense, **SMALL)
    _check(_program(model, rng, dense), cfg, rng)


def _counts_match(program, cfg, result):
    from rtl_gen.image import expected_counts
    want = expected_counts(program, cfg)
    assert result["macs"] == want["macs"], (result["macs"], want)
    assert result["skipped"] == want["rows_skipped"], (result["skipped"], want)


@pytest.mark.parametrize("dense", [False, True])
def test_multilayer_cnn_bit_exact_with_counters(dense):
    """conv3x3 s1 -> conv1x1 s2 -> conv3x3 s2 -> fc through the ping-pong buffers, odd shapes, P > 1."""
    seed = 21
    rng = np.random.default_rng(seed)
    model = Model((5, 7, 2), [
        Layer("conv", rng.normal(0, 0.4, (6, 2, 3, 3)), rng.normal(0, 0.1, 6), relu=True, stride=1),
        Layer("conv", rng.normal(0, 0.4, (5, 6, 1, 1)), rng.normal(0, 0.1, 5), relu=False, stride=2),
        Layer("conv", rng.normal(0, 0.4, (4, 5, 3, 3)), rng.normal(0, 0.1, 4), relu=True, stride=2),
        Layer("fc", rng.normal(0, 0.4, (7, 2 * 2 * 4)), rng.normal(0, 0.1, 7), relu=False),
    ])
    cfg = AcceleratorConfig(pes=8, channel_lanes=2, pixel_lanes=4, dense=dense, **{**SMALL, "desc_layers": 6})
    program = _program(model, rng, dense, prune=0.4)
    results = _check(program, cfg, rng, n_inputs=2)
    _counts_match(program, cfg, results[0])


def test_zero_rows_are_skipped_and_cost_no_cycles():
    """Half the rows zero -> about half the cycles of the all-rows case; the counters show the skipped rows."""
    seed = 31
    rng = np.random.default_rng(seed)
    model = Model((96,), [Layer("fc", rng.normal(0, 0.3, (16, 96)), rng.normal(0, 0.1, 16))])
    cfg = AcceleratorConfig(pes=4, **SMALL)
    cycles = {}
    for prune in (0.0, 0.5):
        program = _program(model, rng, False, prune=prune)
        result = _check(program, cfg, rng, n_inputs=1)[0]
        _counts_match(program, cfg, result)
        cycles[prune] = result["cycles"]
        if prune:
            assert result["skipped"] == 16 // 4 * 16, result["skipped"]        # 16 of 32 rows, 4 groups
    # every skipped row saves exactly its three tap cycles; the rest (descriptor fetch, pipeline fill and
    # drain) is the same for both
    assert cycles[0.0] - cycles[0.5] == 3 * 16 // 4 * 16, f"seed {seed}: cycles {cycles}"
    ratio = cycles[0.5] / cycles[0.0]
    assert 0.45 <= ratio <= 0.65, f"seed {seed}: cycles {cycles}, ratio {ratio:.3f}"


CORRUPTIONS = {
    "kind": ({"kind": 3}, hb.ERR_KIND),
    "stride": ({"stride": 3}, hb.ERR_STRIDE),
    "zero-channels": ({"in_c": 0}, hb.ERR_SHAPE),
    "mode": ({"sd": 0}, hb.ERR_MODE),
    "act-size": ({"in_size": 100_000}, hb.ERR_ACT_SIZE),
    "code-address": ({"code_base": 511}, hb.ERR_WEIGHT_ADDR),
    "bias-address": ({"bias_base": 250}, hb.ERR_BIAS_ADDR),
    "tap-address": ({"base0": -5000}, hb.ERR_ACT_ADDR),
    "basis-address": ({"basis_base": 255}, hb.ERR_WEIGHT_ADDR),
    "no-end": (None, hb.ERR_NO_END),
    # fields wider than the registers the configured depths need (act_depth 512: 10-bit sizes)
    "wide-channels": ({"in_c": 40000}, hb.ERR_ACT_SIZE),
    "wide-rows": ({"n_rows": 70000}, hb.ERR_ACT_SIZE),
    "wide-base0": ({"base0": -(1 << 20)}, hb.ERR_ACT_ADDR),
    "wide-code-base": ({"code_base": 40000}, hb.ERR_WEIGHT_ADDR),
    "wide-bitmap-words": ({"bm_words": 40000}, hb.ERR_WEIGHT_ADDR),
    "wide-bias-base": ({"bias_base": 40000}, hb.ERR_BIAS_ADDR),
    "wide-blocks": ({"n_blocks": 40000}, hb.ERR_PARAMS),
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
        else:
            fields = decode(good)
            fields.update(changes)
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


@pytest.mark.parametrize("pes", [16, 1])
def test_digits_mlp_end_to_end_with_the_up5k_memory_sizes(pes):
    """The bundled digits MLP, compiled as `sdhw compile` does, runs bit-exactly with the UP5K's default memory
    depths: with 16 PEs (512-row code memory in block RAM) and with the UP5K's default single PE, whose code
    memory is single-port RAM (one address shared by host writes and row-fetch reads; the MLP needs 3,744 rows)."""
    from golden.datasets import DIGITS_MLP, load_digits_split
    from golden.model import load_npz

    x_train, _, x_test, y_test = load_digits_split()
    model = load_npz(DIGITS_MLP)
    program = compile_model(model, x_train, CompileOptions(epochs=0)).program
    cfg = AcceleratorConfig(pes=pes, device="up5k")
    assert cfg.lean and cfg.code_in_spram == (pes == 1)
    x_q = program.input_q.quantize(x_test[:1])
    result = simulate(Accelerator(cfg), build_image(program, cfg), [x_q[0]])[0]
    assert result["error_code"] == 0
    assert np.array_equal(result["output"], run_program(program, x_q).reshape(-1))
    _counts_match(program, cfg, result)


def test_many_empty_groups_back_to_back():
    """Regression (found by the cocotb random regression, seed 5004): all-zero rows make every group a single
    empty entry, so groups queue up faster than the tap issuer retires them; none may be lost."""
    rng = np.random.default_rng(5004)
    model = Model((6, 3, 1), [Layer("conv", rng.normal(0, 0.3, (2, 1, 1, 1)), rng.normal(0, 0.3, 2))])
    program = _program(model, rng, False)
    sdw = program.layers[0].weights
    sdw.codes[...] = 0
    cfg = AcceleratorConfig(pes=4, **SMALL)
    _check(program, cfg, rng, n_inputs=1)


def test_huge_block_rows_mean_one_block():
    """block_rows wider than its register saturates: every row is in block 0, as in golden."""
    seed = 42
    rng = np.random.default_rng(seed)
    model = Model((30,), [Layer("fc", rng.normal(0, 0.3, (8, 30)), rng.normal(0, 0.1, 8), relu=True)])
    program = _program(model, rng, False)
    assert program.layers[0].weights.bases.shape[1] == 1          # one row block
    program.layers[0].weights.block_rows = 65535
    _check(program, AcceleratorConfig(pes=4, **SMALL), rng, n_inputs=1)


def test_counter_bits_default_and_validation():
    from golden import SdhwError
    assert AcceleratorConfig(pes=4, device="up5k").counter_bits == 32
    assert AcceleratorConfig(pes=4, device="up5k").lean and not AcceleratorConfig(pes=4, device="ecp5-25f").lean
    assert AcceleratorConfig(pes=4, device="ecp5-25f").counter_bits == 48
    assert AcceleratorConfig(pes=4, counter_bits=40).counter_bits == 40
    for bad in (15, 65, 32.0, True):
        with pytest.raises(SdhwError, match="counter_bits must be an integer in 16..64"):
            AcceleratorConfig(pes=4, counter_bits=bad)


@pytest.mark.parametrize("dense", [False, True])
def test_serial_requantiser_multilayer_bit_exact(dense):
    """The DSP-free requantiser (the iCE40 default) in a whole program: conv 3x3 -> conv 1x1 s2 -> fc."""
    seed = 51
    rng = np.random.default_rng(seed)
    model = Model((5, 6, 3), [
        Layer("conv", rng.normal(0, 0.4, (6, 3, 3, 3)), rng.normal(0, 0.1, 6), relu=True, stride=1),
        Layer("conv", rng.normal(0, 0.4, (5, 6, 1, 1)), rng.normal(0, 0.1, 5), relu=False, stride=2),
        Layer("fc", rng.normal(0, 0.4, (7, 3 * 3 * 5)), rng.normal(0, 0.1, 7), relu=False),
    ])
    cfg = AcceleratorConfig(pes=4, channel_lanes=2, pixel_lanes=2, dense=dense, requant="serial", **SMALL)
    assert cfg.requant == "serial" and AcceleratorConfig(pes=4, device="up5k").requant == "serial"
    assert AcceleratorConfig(pes=4, **SMALL).requant == "pipelined"
    program = _program(model, rng, dense, prune=0.3)
    results = _check(program, cfg, rng, n_inputs=2)
    _counts_match(program, cfg, results[0])


def test_dsp_budget_and_soft_products():
    from golden import SdhwError
    assert AcceleratorConfig(pes=16, device="ecp5-25f").soft_products == 0
    assert AcceleratorConfig(pes=64, device="ecp5-25f").soft_products == 64 - (28 - 4)
    assert AcceleratorConfig(pes=16, device="up5k", requant="serial", dsp_budget=4).soft_products == 12
    assert AcceleratorConfig(pes=16, device="generic").soft_products == 0
    assert AcceleratorConfig(pes=16, device="hx8k").soft_products == 0
    for bad in (-1, 2.0, True):
        with pytest.raises(SdhwError, match="dsp_budget must be a non-negative integer"):
            AcceleratorConfig(pes=4, dsp_budget=bad)


@pytest.mark.parametrize("pes, device, running", [(16, "ecp5-25f", True), (1, "ecp5-85f", True),
                                                  (32, "ecp5-85f", False), (16, "up5k", False)])
def test_running_totals_only_in_ecp5_builds_of_up_to_16_lanes(pes, device, running):
    """The choice is the configuration's, and the accelerator's MAC array follows it (a ``start`` bank)."""
    from amaranth.back import rtlil

    cfg = AcceleratorConfig(pes=pes, device=device)
    assert cfg.running_totals == running
    mac = rtlil.convert(Accelerator(cfg), name="top").split("module \\top.mac\n")[1].split("\nend\n")[0]
    assert bool(re.search(r"^  wire .*output \d+ +\\start$", mac, re.MULTILINE)) == running


@pytest.mark.parametrize("pes, device, dense", [(64, "ecp5-25f", False), (16, "ecp5-25f", True), (4, "up5k", False)])
def test_multipliers_are_exactly_the_budgeted_products(pes, device, dense):
    """Every ``*`` in the design is a DSP product the configuration budgeted (MAC lanes in DSPs plus the
    pipelined requantiser's four): a stray multiplier (e.g. in a counter) would push the design past the
    device's DSPs, which yosys does not fall back from."""
    from amaranth.back import rtlil

    from sdhw.config import REQUANT_DSPS
    cfg = AcceleratorConfig(pes=pes, device=device, dense=dense)
    text = rtlil.convert(Accelerator(cfg), name="top")
    want = pes - cfg.soft_products + (REQUANT_DSPS if cfg.requant == "pipelined" else 0)
    # products of two signals; a constant operand (an array index times the element width) is a shift
    cells = [c.split("\n  end")[0] for c in text.split("cell $mul")[1:]]
    variable = [c for c in cells if not re.search(r"connect \\[AB] \d+'[01]+$", c, re.MULTILINE)]
    assert len(variable) == want


def test_soft_products_multilayer_bit_exact():
    """Three of four products from LUTs (the MAC array's 4-cycle latency) in a whole program."""
    seed = 52
    rng = np.random.default_rng(seed)
    model = Model((5, 6, 3), [
        Layer("conv", rng.normal(0, 0.4, (6, 3, 3, 3)), rng.normal(0, 0.1, 6), relu=True, stride=1),
        Layer("fc", rng.normal(0, 0.4, (7, 5 * 6 * 6)), rng.normal(0, 0.1, 7), relu=False),
    ])
    cfg = AcceleratorConfig(pes=4, channel_lanes=2, pixel_lanes=2, dsp_budget=1, **SMALL)
    assert cfg.soft_products == 3
    program = _program(model, rng, False, prune=0.3)
    results = _check(program, cfg, rng, n_inputs=2)
    _counts_match(program, cfg, results[0])
