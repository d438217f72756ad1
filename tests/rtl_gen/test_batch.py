"""Batch layout in the compiler: what a batch changes in the descriptors and counters, what it refuses."""
from __future__ import annotations

import numpy as np
import pytest

from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from rtl_gen.cycles import expected_cycles
from rtl_gen.image import build_image, expected_counts, pack_image, plan_layer, unpack_image
from rtl_gen.machine import run_image
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import decode

CFG = AcceleratorConfig(pes=16, device="ecp5-25f")


def _program(layers, in_shape, seed=0):
    rng = np.random.default_rng(seed)
    return compile_model(Model(in_shape, layers), rng.uniform(-1, 2, (24, *in_shape)),
                         CompileOptions(method="paper", prune=0.5)).program


def _fc(k, m, seed=1):
    rng = np.random.default_rng(seed)
    return Layer("fc", rng.normal(0, 1 / np.sqrt(k), (m, k)), rng.normal(0, 0.3, m), relu=True)


def _conv(c, m, stride=1, seed=2):
    rng = np.random.default_rng(seed)
    return Layer("conv", rng.normal(0, 0.3, (m, c, 3, 3)), rng.normal(0, 0.3, m), relu=True, stride=stride)


def _descriptor(image, layer=0):
    words = dict(((a >> 16, a & 0xFFFF), w) for a, w in image.writes())
    return decode([words[hb.REGION_DESC, layer * DESC_WORDS + k] for k in range(DESC_WORDS)])


def test_a_batch_runs_in_the_pixel_loop_and_round_trips():
    program = _program([_conv(2, 8), _fc(6 * 5 * 8, 10)], (6, 5, 2))
    one, four = build_image(program, CFG), build_image(program, CFG, batch=4)
    d1, d4 = _descriptor(one), _descriptor(four)
    assert d4["n_pix"] == 4 * d1["n_pix"] and d4["in_size"] == 4 * d1["in_size"]
    assert d4["out_size"] == 4 * d1["out_size"] and d4["row_wrap"] == d1["row_wrap"]
    fc1, fc4 = _descriptor(one, 1), _descriptor(four, 1)
    assert (fc1["n_pix"], fc4["n_pix"], fc4["row_wrap"]) == (1, 4, 6 * 5 * 8)
    assert four.batch == 4 and one.batch == 1
    assert unpack_image(pack_image(four)).batch == 4
    # the same weights: a batch changes the loop bounds only
    assert [s for s in four.sections if s[0] != hb.REGION_DESC] == [s for s in one.sections if s[0] != hb.REGION_DESC]


@pytest.mark.parametrize("stride", [1, 2])
def test_a_batch_runs_in_the_accelerators_loops_as_golden(stride):
    """The image's loops (rtl_gen.machine) over a batch of padded 3 x 3 layers: each image's top padding
    starts again at its first row."""
    program = _program([_conv(2, 8, stride), _conv(8, 4), _fc(6 // stride * (4 // stride) * 4, 10)], (6, 4, 2))
    x = np.random.default_rng(7).integers(-128, 128, (3, 6, 4, 2))
    result = run_image(build_image(program, CFG, batch=3), CFG, x)
    assert np.array_equal(result["output"], run_program(program, x).reshape(-1))
    assert result["macs"] == expected_counts(program, CFG, batch=3)["macs"]


def test_a_batch_multiplies_the_macs_and_reuses_the_weights():
    program = _program([_fc(128, 64), _fc(64, 10)], (128,))
    one, eight = expected_cycles(program, CFG), expected_cycles(program, CFG, batch=8)
    assert expected_counts(program, CFG, batch=8)["macs"] == 8 * expected_counts(program, CFG)["macs"]
    assert eight["rows_skipped"] == one["rows_skipped"]          # each group rebuilt once for the batch
    assert eight["cycles"] < 8 * one["cycles"]
    assert eight["utilisation"] > 2 * one["utilisation"]


@pytest.mark.parametrize("batch", [0, -1, True, 2.0, "3"])
def test_a_bad_batch_is_refused(batch):
    program = _program([_fc(8, 4)], (8,))
    with pytest.raises(SdhwError, match="batch must be a positive integer"):
        build_image(program, CFG, batch=batch)


def test_a_batch_too_large_for_the_buffers_names_the_largest():
    program = _program([_fc(1000, 16)], (1000,))
    with pytest.raises(SdhwError, match=r"input needs 17000 bytes of activations for a batch of 17; the "
                                        r"accelerator's buffers hold 16384 \(act_depth\); valid: batch <= 16"):
        build_image(program, CFG, batch=17)
    assert build_image(program, CFG, batch=16).batch == 16


def test_a_stride_two_layer_on_an_odd_height_cannot_take_a_batch():
    program = _program([_conv(2, 4, stride=2)], (5, 4, 2))
    assert plan_layer(program.layers[0], CFG).n_pix == 3 * 2
    with pytest.raises(SdhwError, match="layer 0 .* cannot run a batch: its input height 5 is not 3 output rows x "
                                        "stride 2; valid: batch 1"):
        build_image(program, CFG, batch=2)
    build_image(_program([_conv(2, 4, stride=2)], (6, 4, 2)), CFG, batch=2)


def test_an_image_with_a_bad_batch_is_refused():
    image = build_image(_program([_fc(8, 4)], (8,)), CFG, batch=2)
    for bad in (0, "2", 10 ** 6):
        image.meta["batch"] = bad
        with pytest.raises(SdhwError, match="program image metadata 'batch' is .*; valid: an integer in 1..2048"):
            unpack_image(pack_image(image))
