"""golden.staged: int8 / SD inference of models with pooling and residual layers, and the trainer's pooling."""
from __future__ import annotations

import numpy as np
import pytest

from golden import SdhwError, qops
from golden import format as fmt
from golden.compiler import CompileOptions, compile_model
from golden.datasets import DIGITS_MLP
from golden.model import Layer, Model, accuracy, forward_float, load_npz
from golden.program import run_program
from golden.quant import QParams, choose_qparams
from golden.staged import (
    compile_staged,
    infer_staged,
    requantize_activation,
    run_staged,
    staged_report,
    weighted_runs,
)
from golden.train import backward, forward, softmax_xent

SEED = 5


def pooled_residual_model(seed: int = SEED) -> Model:
    """conv -> max pool -> conv -> add (the pool's output) -> avg pool -> gap -> fc, on 8x8x2 inputs."""
    rng = np.random.default_rng(seed)
    return Model((8, 8, 2), [
        Layer("conv", rng.normal(0, 0.4, (4, 2, 3, 3)), rng.normal(0, 0.1, 4), relu=True),
        Layer("maxpool"),
        Layer("conv", rng.normal(0, 0.3, (4, 4, 3, 3)), rng.normal(0, 0.1, 4), relu=True),
        Layer("add", source=2, relu=True),
        Layer("avgpool"),
        Layer("gap"),
        Layer("fc", rng.normal(0, 0.5, (10, 4)), rng.normal(0, 0.1, 10)),
    ])


def inputs(n: int, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed + 1).random((n, 8, 8, 2))


def test_weighted_runs():
    assert weighted_runs(pooled_residual_model()) == [(0, 1), (2, 3), (6, 7)]
    assert weighted_runs(load_npz(DIGITS_MLP)) == [(0, 3)]


def test_dense_staged_inference_follows_float():
    model = pooled_residual_model()
    result = compile_staged(model, inputs(200), CompileOptions(dense=True))
    x = inputs(300, seed=SEED + 10)
    ref = forward_float(model, x)
    got = infer_staged(result, x)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < 0.05, f"seed {SEED}: relative error {err}"
    agree = np.mean(got.argmax(axis=1) == ref.argmax(axis=1))
    assert agree >= 0.95, f"seed {SEED}: argmax agreement {agree}"
    assert accuracy(got, ref.argmax(axis=1)) == agree


def test_staged_equals_composition_of_programs_and_qops():
    model = pooled_residual_model()
    result = compile_staged(model, inputs(100), CompileOptions(epochs=2))
    x_q = result.input_q.quantize(inputs(20, seed=SEED + 20))
    # the same inference written out layer by layer from the compiled runs and golden.qops
    p0, p2, p6 = (result.runs[i].program for i in (0, 2, 6))
    a1 = run_program(p0, x_q)
    q1 = p0.layers[-1].out_q
    a2 = qops.max_pool_2x2(a1)
    a3 = run_program(p2, requantize_activation(a2, q1, p2.input_q))
    q3 = p2.layers[-1].out_q
    a4 = qops.residual_add(a3, a2, qops.add_params(q3, q1, result.act_q[4]), relu=True)
    a5 = qops.avg_pool_2x2(a4)
    a6 = qops.global_avg_pool(a5, result.act_q[4], result.act_q[6])
    a7 = run_program(p6, requantize_activation(a6, result.act_q[6], p6.input_q))
    out, out_q = run_staged(result, x_q)
    np.testing.assert_array_equal(out, a7)
    assert out_q == p6.layers[-1].out_q
    assert set(result.act_q) == {4, 6}


def test_staged_runs_through_an_executor():
    """An executor in place of golden's program runs (the RTL's, in ``sdhw sim``) sees each run's first layer,
    program and inputs once, and its outputs carry the inference on; an add reading an activation from inside a
    run is refused, since an executor gives only a run's last output."""
    model = pooled_residual_model()
    result = compile_staged(model, inputs(50), CompileOptions(epochs=0))
    x_q = result.input_q.quantize(inputs(6, seed=SEED + 6))
    seen = []

    def execute(first, program, x):
        seen.append((first, program, x.shape))
        return run_program(program, x)

    out, out_q = run_staged(result, x_q, execute)
    np.testing.assert_array_equal(out, run_staged(result, x_q)[0])
    assert [(first, program) for first, program, _ in seen] == [(i, result.runs[i].program) for i in (0, 2, 6)]
    assert [shape for *_, shape in seen] == [(6, 8, 8, 2), (6, 4, 4, 4), (6, 1, 1, 4)]

    rng = np.random.default_rng(SEED)
    inner = Model((4, 4, 2), [Layer("conv", rng.normal(0, 0.4, (2, 2, 3, 3)), rng.normal(0, 0.1, 2), relu=True),
                              Layer("conv", rng.normal(0, 0.4, (2, 2, 3, 3)), rng.normal(0, 0.1, 2), relu=True),
                              Layer("add", source=1, relu=True)])
    staged = compile_staged(inner, rng.random((20, 4, 4, 2)), CompileOptions(epochs=0))
    x_q = staged.input_q.quantize(rng.random((2, 4, 4, 2)))
    run_staged(staged, x_q)                                  # golden's own runs keep every activation
    with pytest.raises(SdhwError, match=r"layer 2 \(add\) reads the output of layer 0, inside a run"):
        run_staged(staged, x_q, lambda first, program, x: run_program(program, x))


def test_max_pool_after_relu_needs_no_requantisation():
    model = pooled_residual_model()
    result = compile_staged(model, inputs(100), CompileOptions(dense=True))
    assert result.runs[2].program.input_q == result.runs[0].program.layers[-1].out_q


def test_requantize_activation():
    rng = np.random.default_rng(SEED)
    x = rng.integers(-128, 128, 500)
    q = QParams(0.05, -3)
    assert requantize_activation(x, q, q) is x
    out_q = choose_qparams(-8.0, 5.0)
    got = requantize_activation(x, q, out_q)
    exact = q.dequantize(x) / out_q.scale + out_q.zero_point
    inside = (exact > -128) & (exact < 127)
    assert np.abs(got[inside] - exact[inside]).max() <= 0.5 + 1e-9, f"seed {SEED}"


def test_bits_count_one_header_and_the_layer_records():
    model = load_npz(DIGITS_MLP)
    x = np.random.default_rng(SEED).random((50, 64))
    opts = CompileOptions(epochs=0)
    staged = compile_staged(model, x, opts)
    whole = compile_model(model, x, opts)
    assert staged.bits == len(fmt.pack(whole.program)) * 8
    report = staged_report(compile_staged(pooled_residual_model(), inputs(50), opts))
    assert [row["index"] for row in report["layers"]] == [0, 2, 6]
    assert report["program"]["bits"] == 8 * (fmt.FILE_HEADER.size + sum(r["bits"] // 8 for r in report["layers"]))


@pytest.mark.parametrize("kind", ["maxpool", "avgpool", "gap"])
def test_trainer_pooling_gradients(kind):
    """The conv weight gradient through a pooling layer against central finite differences."""
    rng = np.random.default_rng(SEED)
    fc_in = 4 if kind == "gap" else 3 * 3 * 4
    model = Model((6, 6, 2), [Layer("conv", rng.normal(0, 0.5, (4, 2, 3, 3)), rng.normal(0, 0.1, 4)),
                              Layer(kind), Layer("fc", rng.normal(0, 0.5, (5, fc_in)), np.zeros(5))])
    x, y = rng.random((3, 6, 6, 2)), rng.integers(0, 5, 3)
    weights = [layer.weight for layer in model.layers]
    biases = [layer.bias for layer in model.layers]

    def loss() -> float:
        return softmax_xent(forward(model, weights, biases, x).logits, y)[0]

    fwd = forward(model, weights, biases, x)
    grad_w, _ = backward(model, weights, fwd, softmax_xent(fwd.logits, y)[1])
    assert grad_w[1].shape == (0,)
    eps = 1e-6
    for index in [(0, 0, 0, 0), (1, 1, 2, 1), (3, 0, 1, 2), (2, 1, 0, 0)]:
        w0 = weights[0][index]
        weights[0][index] = w0 + eps
        up = loss()
        weights[0][index] = w0 - eps
        down = loss()
        weights[0][index] = w0
        assert grad_w[0][index] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-8), (kind, index)


def test_per_layer_prune_ratios():
    model = pooled_residual_model()
    x = inputs(60)
    per_weighted = compile_staged(model, x, CompileOptions(method="paper", prune=(0.0, 0.5, 0.25)))
    per_layer = compile_staged(model, x, CompileOptions(method="paper", prune=(0.0, 0.9, 0.5, 0.9, 0.9, 0.9, 0.25)))
    for result in (per_weighted, per_layer):
        assert [run.layers[0].prune for run in result.runs.values()] == [0.0, 0.5, 0.25]
    assert per_weighted.bits == per_layer.bits
    with pytest.raises(SdhwError, match=r"one per layer \(7\) or one per FC/conv layer \(3\)"):
        compile_staged(model, x, CompileOptions(prune=(0.1, 0.2)))
