"""Mixed programs: layers kept dense int8 (``--dense-layers``) in an SD program, run by an SD accelerator through
their exact SD encoding, bit-exact with golden, with the counters and cycles the models give."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from golden.staged import compile_staged
from rtl_gen.cycles import expected_cycles
from rtl_gen.image import build_image, expected_counts, hardware_layer, plan_layer
from sdhw.accelerator import Accelerator
from sdhw.config import AcceleratorConfig
from sim.amaranth_host import simulate

IN_SHAPE = (5, 4, 2)


def _model(seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    conv0 = Layer("conv", rng.normal(0, 0.3, (6, 2, 3, 3)), rng.normal(0, 0.3, 6), relu=True)
    conv1 = Layer("conv", rng.normal(0, 0.3, (5, 6, 1, 1)), rng.normal(0, 0.3, 5), relu=True, stride=2)
    fc = Layer("fc", rng.normal(0, 0.2, (7, 3 * 2 * 5)), rng.normal(0, 0.3, 7))
    return Model(IN_SHAPE, [conv0, conv1, fc])


def _compile(dense_layers=(0, -1), seed=0):
    rng = np.random.default_rng(seed + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_model(_model(seed), rng.uniform(-1, 2, (24, *IN_SHAPE)),
                             CompileOptions(method="paper", prune=0.5, dense_layers=dense_layers))


def test_dense_layers_stay_int8_and_the_rest_is_sd():
    result = _compile((0, -1))
    assert [layer.is_sd for layer in result.program.layers] == [False, True, False]
    assert [rep.mode for rep in result.layers] == ["dense", "sd", "dense"]
    assert [layer.is_sd for layer in _compile(()).program.layers] == [True, True, True]


@pytest.mark.parametrize("bad", [(3,), (-4,), (0, 7)])
def test_a_dense_layer_index_outside_the_model_is_a_clear_error(bad):
    with pytest.raises(SdhwError, match=r"dense layer index -?\d+ is outside the model's 3 layers \(valid: -3..2\)"):
        _compile(bad)


def test_a_dense_layer_index_without_weights_is_a_clear_error():
    rng = np.random.default_rng(0)
    model = Model((4, 4, 1), [Layer("conv", rng.normal(0, 0.3, (2, 1, 3, 3)), rng.normal(0, 0.3, 2), relu=True),
                              Layer("maxpool"), Layer("fc", rng.normal(0, 0.3, (3, 8)), np.zeros(3))])
    with pytest.raises(SdhwError, match=r"dense layer index 1 is layer maxpool.*no weights"):
        compile_staged(model, rng.uniform(0, 1, (8, 4, 4, 1)), CompileOptions(method="paper", dense_layers=(1,)))
    staged = compile_staged(model, rng.uniform(0, 1, (8, 4, 4, 1)), CompileOptions(method="paper", dense_layers=(-1,)))
    assert [[layer.is_sd for layer in run.program.layers] for run in staged.runs.values()] == [[True], [False]]


def test_the_sd_layout_of_a_dense_layer_has_its_weights_and_skips_its_zero_rows():
    program = _compile((0, -1)).program
    cfg = AcceleratorConfig(pes=4, device="up5k", act_depth=512, desc_layers=4)
    fc = program.layers[2]
    weights = np.asarray(fc.weights).copy()
    weights[:, :3] = 0                                            # row 0 of every filter
    zeroed = type(fc)(**{**vars(fc), "weights": weights})
    as_sd = hardware_layer(zeroed, cfg)
    assert as_sd.is_sd and np.array_equal(as_sd.mac_weights(), weights)
    assert all(0 not in rows for rows in plan_layer(zeroed, cfg, 2).groups)
    dense_cfg = AcceleratorConfig(pes=4, dense=True, device="up5k", act_depth=512, desc_layers=4)
    assert hardware_layer(zeroed, dense_cfg) is zeroed            # a dense build copies int8 weights as ever
    with pytest.raises(SdhwError, match="is SD but the accelerator is the dense baseline"):
        build_image(program, dense_cfg)


def test_a_program_with_a_dense_weight_of_minus_128_is_refused_naming_its_layer():
    """SD has no exact encoding of -128 (the compiler clips dense weights to +-127): the program refuses it, so
    no SD build ever meets one."""
    program = _compile((0, -1)).program
    weights = np.asarray(program.layers[2].weights).copy()
    weights[1, 4] = -128
    layers = [*program.layers[:2], type(program.layers[2])(**{**vars(program.layers[2]), "weights": weights})]
    with pytest.raises(SdhwError, match=r"^layer 2: dense weights outside \[-127, 127\]$"):
        type(program)(**{**vars(program), "layers": layers})

CONFIGS = {
    "up5k": dict(pes=4, device="up5k", act_depth=512, code_depth=2048, desc_layers=4),
    "ecp5": dict(pes=8, device="ecp5-25f", act_depth=512, code_depth=2048, desc_layers=4),
    "ecp5-r2": dict(pes=8, rebuild_lanes=2, exp_bits=3, device="ecp5-25f", act_depth=512, code_depth=2048,
                    desc_layers=4),
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name == "up5k" else pytest.mark.slow)
                                  for name in sorted(CONFIGS)])
def test_an_sd_accelerator_runs_a_mixed_program_as_golden(name):
    """The RTL (Amaranth simulator) on a program whose first and last layers stay dense: outputs equal golden's,
    the MAC and zero-row counters and the cycle counter equal the models'."""
    seed = 7
    program = _compile((0, -1), seed=seed).program
    cfg = AcceleratorConfig(**CONFIGS[name])
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, IN_SHAPE).astype(np.int8)
    result = simulate(Accelerator(cfg), build_image(program, cfg), [x])[0]
    assert result["error_code"] == 0, f"{name} seed {seed}"
    want = run_program(program, x)
    assert np.array_equal(np.asarray(result["output"]).reshape(want.shape), want), f"{name} seed {seed}"
    counts, cycles = expected_counts(program, cfg), expected_cycles(program, cfg)
    assert (result["macs"], result["skipped"]) == (counts["macs"], counts["rows_skipped"]), f"{name} seed {seed}"
    assert result["cycles"] == cycles["cycles"], f"{name} seed {seed}"


def test_a_dense_layer_too_large_for_the_basis_memory_is_named():
    program = _compile((0, -1)).program
    cfg = AcceleratorConfig(pes=4, device="up5k", act_depth=512, desc_layers=4, basis_depth=8)
    with pytest.raises(SdhwError, match=r"layer 0 \(conv.*\) is kept dense: an SD accelerator holds its int8 "
                                        r"weights in the basis memory.*basis_depth"):
        build_image(program, cfg)
