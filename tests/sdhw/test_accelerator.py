"""Whole-layer tests of the accelerator in the Amaranth simulator, bit-exact against golden."""
from __future__ import annotations

import numpy as np
import pytest
from accel_host import simulate

from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from rtl_gen.image import build_image
from sdhw.accelerator import Accelerator
from sdhw.config import AcceleratorConfig

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
