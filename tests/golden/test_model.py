"""golden.model / golden.program / golden.compiler: float and integer references against explicit loops,
the folded zero point, compile quality on the bundled digits MLP, and the scikit-learn import."""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.datasets import DIGITS_MLP, load_digits_split
from golden.format import pack
from golden.model import (
    Layer,
    Model,
    accuracy,
    forward_float,
    from_sklearn,
    layer_matmul,
    load_npz,
    model_from_arrays,
    save_npz,
)
from golden.program import QLayer, infer, run_layer, run_program
from golden.quant import ACT_MAX, ACT_MIN, QParams, quantize_multiplier, requantize
from golden.sd import structural_mask, to_rows


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The compiler's many small matmuls run several times faster on one BLAS thread than on a busy pool."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                       # pragma: no cover - threadpoolctl comes with scikit-learn
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=1)
    with limits:
        yield


# ---------------------------------------------------------------------------------- explicit-loop references
def ref_conv(x, w, stride, groups, pad_value, offset=0):
    """``sum(w * (x - offset))`` of a "same"-padded conv, one tap at a time.

    Out-of-bounds taps read ``pad_value``, or are skipped entirely when ``pad_value`` is None.
    """
    n, h, wd, c = x.shape
    m, cg, k, _ = w.shape
    p = k // 2
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    xl, wl = np.asarray(x).tolist(), np.asarray(w).tolist()
    out = np.zeros((n, ho, wo, m), dtype=np.asarray(x).dtype)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                for f in range(m):
                    total = 0
                    for ci in range(cg):
                        cin = ci if groups == 1 else f
                        for i in range(k):
                            y = oy * stride + i - p
                            for j in range(k):
                                xx = ox * stride + j - p
                                if 0 <= y < h and 0 <= xx < wd:
                                    v = xl[b][y][xx][cin] - offset
                                elif pad_value is None:
                                    continue
                                else:
                                    v = pad_value - offset
                                total += wl[f][ci][i][j] * v
                    out[b, oy, ox, f] = total
    return out


def ref_fc(x, w, offset=0):
    """``sum(w * (x - offset))`` with the input flattened in H, W, C order, written out by index."""
    n = x.shape[0]
    xl = np.asarray(x).tolist()
    shape = x.shape[1:]
    flat = []
    for b in range(n):
        if len(shape) == 1:
            flat.append(xl[b])
        else:
            h, wd, c = shape
            flat.append([xl[b][(q // c) // wd][(q // c) % wd][q % c] for q in range(h * wd * c)])
    wl = np.asarray(w).tolist()
    out = np.zeros((n, w.shape[0]), dtype=np.asarray(x).dtype)
    for b in range(n):
        for f in range(w.shape[0]):
            out[b, f] = sum(wv * (xv - offset) for wv, xv in zip(wl[f], flat[b], strict=True))
    return out


def ref_forward_float(model: Model, x):
    x = np.asarray(x, dtype=np.float64).reshape((-1, *model.input_shape))
    for layer in model.layers:
        if layer.kind == "fc":
            y = ref_fc(x, layer.weight)
        else:
            y = ref_conv(x, layer.weight, layer.stride, layer.groups, 0.0)
        y = y + layer.bias
        x = np.maximum(y, 0.0) if layer.relu else y
    return x


def ref_run_layer(layer, x):
    """The integer layer rule of golden/program.py's docstring, with the accumulation written out."""
    w = layer.mac_weights()
    zx = layer.in_q.zero_point
    if layer.kind == "fc":
        acc = ref_fc(x, w)
    else:
        acc = ref_conv(x, w, layer.stride, layer.groups, zx)
    acc = acc + np.asarray(layer.bias, dtype=np.int64)
    lo = layer.out_q.zero_point if layer.relu else ACT_MIN
    return requantize(acc, layer.m0, layer.shift, layer.out_q.zero_point, lo, ACT_MAX)


# ------------------------------------------------------------------------------------------ float reference
CONV_CASES = [(k, s, g) for k in (1, 3, 5) for s in (1, 2) for g in ("1", "dw")]


@pytest.mark.parametrize(("kernel", "stride", "groups"), CONV_CASES)
def test_layer_matmul_conv_matches_loops(kernel, stride, groups):
    seed = 10 * kernel + stride + (100 if groups == "dw" else 0)
    rng = np.random.default_rng(seed)
    c = 3
    m, g = (c, c) if groups == "dw" else (4, 1)
    x = rng.normal(size=(2, 5, 6, c))
    w = rng.normal(size=(m, c // g, kernel, kernel))
    got = layer_matmul("conv", x, w, stride, g, 0.0)
    want = ref_conv(x, w, stride, g, 0.0)
    assert got.shape == want.shape, f"seed {seed}"
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"seed {seed}")
    # integers with a non-zero pad value are exact
    xi = rng.integers(-128, 128, x.shape)
    wi = rng.integers(-127, 128, w.shape)
    got_i = layer_matmul("conv", xi, wi, stride, g, -37)
    assert got_i.dtype == np.int64
    assert np.array_equal(got_i, ref_conv(xi, wi, stride, g, -37)), f"seed {seed}"


def test_layer_matmul_fc_flattens_hwc():
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (3, 2, 3, 4))
    w = rng.integers(-127, 128, (5, 24))
    assert np.array_equal(layer_matmul("fc", x, w, 1, 1, 0), ref_fc(x, w))


def _tiny_model(rng, layers_spec, input_shape):
    layers = []
    shape = tuple(input_shape)
    for kind, out, k, stride, groups, relu in layers_spec:
        if kind == "fc":
            fan_in = int(np.prod(shape))
            w = rng.normal(0, 1 / np.sqrt(fan_in), (out, fan_in))
            layer = Layer("fc", w, rng.normal(0, 0.1, out), relu)
        else:
            c = shape[2]
            g = c if groups == "dw" else 1
            m = c if groups == "dw" else out
            w = rng.normal(0, 1 / np.sqrt(c // g * k * k), (m, c // g, k, k))
            layer = Layer("conv", w, rng.normal(0, 0.1, m), relu, stride, g)
        layers.append(layer)
        shape = layer.output_shape(shape)
    return Model(input_shape, layers)


SD_SPEC = [("conv", 4, 3, 1, 1, True), ("conv", 6, 1, 2, 1, True), ("conv", 5, 3, 2, 1, False),
           ("fc", 4, 1, 1, 1, False)]
ANY_SPEC = [("conv", 4, 3, 1, 1, True), ("conv", 4, 3, 2, "dw", True), ("conv", 3, 5, 1, 1, False),
            ("conv", 4, 1, 1, 1, True), ("fc", 6, 1, 1, 1, True), ("fc", 3, 1, 1, 1, False)]


def test_forward_float_matches_loops():
    rng = np.random.default_rng(21)
    model = _tiny_model(rng, ANY_SPEC, (6, 5, 3))
    x = rng.normal(size=(3, 6, 5, 3))
    got, outs = forward_float(model, x, trace=True)
    np.testing.assert_allclose(got, ref_forward_float(model, x), rtol=1e-12, atol=1e-12)
    assert [o.shape[1:] for o in outs] == model.shapes()[1:]


# ---------------------------------------------------------------------------------------- integer reference
@pytest.fixture(scope="module")
def tiny_programs():
    """Tiny random models compiled dense and SD (2 fine-tuning epochs), keyed by name."""
    out = {}
    for name, spec, opts in [
        ("sd", SD_SPEC, CompileOptions(epochs=2, basis_group=2, block_rows=4)),
        ("sd_paper", SD_SPEC, CompileOptions(method="paper", exp_bits=3, prune=0.2)),
        ("dense", ANY_SPEC, CompileOptions(epochs=2, dense=True)),
        ("dense_paper", ANY_SPEC, CompileOptions(method="paper", dense=True)),
    ]:
        seed = len(out) + 30
        rng = np.random.default_rng(seed)
        model = _tiny_model(rng, spec, (5, 5, 3))
        x_cal = rng.uniform(-1.0, 2.0, (48, 5, 5, 3))
        out[name] = (seed, model, compile_model(model, x_cal, opts), x_cal)
    return out


@pytest.mark.parametrize("name", ["sd", "sd_paper", "dense", "dense_paper"])
def test_run_layer_matches_loops(tiny_programs, name):
    seed, model, result, x_cal = tiny_programs[name]
    program = result.program
    want_sd = name.startswith("sd")
    assert [layer.is_sd for layer in program.layers] == [want_sd] * len(program.layers), f"seed {seed}"
    rng = np.random.default_rng(seed)
    x = program.input_q.quantize(x_cal[:4])
    _, trace = run_program(program, x, trace=True)
    inputs = [x, *trace[:-1]]
    for i, (layer, xin) in enumerate(zip(program.layers, inputs, strict=True)):
        random_x = rng.integers(ACT_MIN, ACT_MAX + 1, (2, *layer.in_shape))
        for xx in (xin, random_x):
            got = run_layer(layer, xx)
            want = ref_run_layer(layer, xx)
            assert got.shape == (len(xx), *layer.out_shape), f"seed {seed} layer {i}"
            assert np.array_equal(got, want), f"{name}, seed {seed}: layer {i} ({layer.describe()})"
        assert np.array_equal(run_layer(layer, xin), trace[i]), f"{name}, seed {seed}: layer {i}"


@pytest.mark.parametrize("name", ["sd_paper", "dense_paper"])
def test_folded_zero_point_is_exact(tiny_programs, name):
    """acc = sum over in-bounds taps of w * (x - zx) + the unfolded bias, at interior and border pixels."""
    seed, model, result, _ = tiny_programs[name]
    rng = np.random.default_rng(seed + 1)
    nonzero_zp = 0
    for i, (layer, flayer) in enumerate(zip(result.program.layers, model.layers, strict=True)):
        msg = f"{name}, seed {seed}: layer {i} ({layer.describe()})"
        w = layer.mac_weights()
        zx = layer.in_q.zero_point
        nonzero_zp += zx != 0
        taps = np.array([int(np.sum(w[f])) for f in range(w.shape[0])])
        unfolded = np.asarray(layer.bias, dtype=np.int64) + zx * taps
        # with the 'paper' method the float bias is untouched: the unfolded bias is its plain rounding
        want_bias = np.round(flayer.bias / (layer.in_q.scale * layer.w_scale)).astype(np.int64)
        assert np.array_equal(unfolded, want_bias), msg
        x = rng.integers(ACT_MIN, ACT_MAX + 1, (3, *layer.in_shape))
        if layer.kind == "fc":
            acc = ref_fc(x, w, offset=zx) + unfolded
        else:
            acc = ref_conv(x, w, layer.stride, layer.groups, None, offset=zx) + unfolded
        hw_acc = layer_matmul(layer.kind, x, w, layer.stride, layer.groups, zx) + layer.bias
        assert np.array_equal(hw_acc, acc), msg
        lo = layer.out_q.zero_point if layer.relu else ACT_MIN
        want = requantize(acc, layer.m0, layer.shift, layer.out_q.zero_point, lo, ACT_MAX)
        assert np.array_equal(run_layer(layer, x), want), msg
    assert nonzero_zp >= 2, "the fold is trivial when every input zero point is 0"


def test_run_layer_relu_clamps_at_output_zero_point():
    """ReLU is the clamp at the output zero point (compiled ReLU layers have zero point -128: build one)."""
    rng = np.random.default_rng(60)
    in_q, out_q = QParams(0.05, 3), QParams(0.1, 10)
    w = rng.integers(-127, 128, (7, 10))
    bias = rng.integers(-2000, 2000, 7)
    m0, shift = quantize_multiplier(0.05 * 0.01 / 0.1)
    x = rng.integers(ACT_MIN, ACT_MAX + 1, (20, 10))
    acc = ref_fc(x, w) + bias
    for relu, lo in ((True, 10), (False, ACT_MIN)):
        layer = QLayer("fc", (10,), w, bias, in_q, out_q, m0, shift, relu)
        got = run_layer(layer, x)
        assert np.array_equal(got, requantize(acc, m0, shift, 10, lo, ACT_MAX)), f"relu {relu}"
        assert (got.min() == 10) if relu else (got.min() < 10)


def test_integer_program_tracks_float_model(tiny_programs):
    seed, model, result, x_cal = tiny_programs["dense_paper"]
    want = forward_float(model, x_cal).reshape(len(x_cal), -1)
    got = infer(result.program, x_cal)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 0.1, f"seed {seed}: relative error {err}"


# -------------------------------------------------------------------------------------- non-SD layers
def test_non_decomposable_layers_stay_dense_with_warning():
    rng = np.random.default_rng(40)
    model = _tiny_model(rng, ANY_SPEC, (5, 5, 3))
    x_cal = rng.uniform(0, 1, (32, 5, 5, 3))
    with pytest.warns(UserWarning, match="not decomposable") as rec:
        result = compile_model(model, x_cal, CompileOptions(epochs=2))
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 2 and "layer 1" in msgs[0] and "layer 2" in msgs[1], msgs
    program = result.program
    assert [layer.is_sd for layer in program.layers] == [True, False, False, True, True, True]
    assert [r.mode for r in result.layers] == ["sd", "dense", "dense", "sd", "sd", "sd"]
    out = run_program(program, program.input_q.quantize(x_cal))
    assert out.shape == (32, 3) and out.min() >= ACT_MIN and out.max() <= ACT_MAX
    for i, layer in enumerate(program.layers):
        xx = np.random.default_rng(i).integers(ACT_MIN, ACT_MAX + 1, (1, *layer.in_shape))
        assert np.array_equal(run_layer(layer, xx), ref_run_layer(layer, xx)), f"layer {i}"


def test_dense_baseline_is_silent():
    rng = np.random.default_rng(41)
    model = _tiny_model(rng, ANY_SPEC, (5, 5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile_model(model, rng.uniform(0, 1, (8, 5, 5, 3)), CompileOptions(method="paper", dense=True))


@pytest.mark.parametrize("weight_bits", [4, 8, 12, 16])
def test_dense_layers_fit_int8_at_any_weight_bits(weight_bits):
    """Dense weights are stored as int8 whatever the SD weight width: no wrap-around when it exceeds 8."""
    rng = np.random.default_rng(42)
    model = _tiny_model(rng, [("conv", 4, 3, 1, 1, True), ("fc", 5, 1, 1, 1, False)], (4, 4, 2))
    x = rng.uniform(0, 1, (16, 4, 4, 2))
    result = compile_model(model, x, CompileOptions(method="paper", dense=True, weight_bits=weight_bits))
    for layer, flayer in zip(result.program.layers, model.layers, strict=True):
        w = layer.mac_weights()
        assert np.abs(w).max() <= min(2 ** (weight_bits - 1) - 1, 127)
        rel = np.linalg.norm(w * layer.w_scale - flayer.weight) / np.linalg.norm(flayer.weight)
        assert rel < (0.2 if weight_bits == 4 else 0.02), (weight_bits, rel)


# ---------------------------------------------------------------------------------------- the digits MLP
@pytest.fixture(scope="module")
def digits():
    model = load_npz(DIGITS_MLP)
    x_train, y_train, x_test, y_test = load_digits_split()
    float_acc = accuracy(forward_float(model, x_test), y_test)
    return model, x_train, x_test, y_test, float_acc


@pytest.fixture(scope="module")
def digits_finetune(digits):
    model, x_train, *_ = digits
    return compile_model(model, x_train, CompileOptions())


def test_digits_mlp_sd_accuracy_and_compression(digits, digits_finetune):
    _, _, x_test, y_test, float_acc = digits
    program = digits_finetune.program
    assert all(layer.is_sd for layer in program.layers)
    acc = accuracy(infer(program, x_test), y_test)
    bits = len(pack(program)) * 8 / program.n_weights
    assert float_acc > 0.9
    assert acc >= float_acc - 0.01, f"SD accuracy {acc:.4f} vs float {float_acc:.4f}"
    assert bits <= 3.0, f"{bits:.3f} bits per weight"


def test_digits_mlp_finetune_beats_paper(digits, digits_finetune):
    model, x_train, x_test, y_test, _ = digits
    opts = digits_finetune.options
    paper = compile_model(model, x_train,
                          CompileOptions(method="paper", prune=opts.prune, exp_bits=opts.exp_bits))
    acc_paper = accuracy(infer(paper.program, x_test), y_test)
    acc_ft = accuracy(infer(digits_finetune.program, x_test), y_test)
    assert acc_ft > acc_paper, f"finetune {acc_ft:.4f} <= paper {acc_paper:.4f}"
    # both keep within the same structural mask: fine-tuning does not revive pruned rows
    layers = zip(paper.program.layers, digits_finetune.program.layers, model.layers, digits_finetune.layers,
                 strict=True)
    for i, (lp, lf, flayer, rep) in enumerate(layers):
        keep = structural_mask(to_rows(flayer.weight), rep.prune)
        assert rep.prune > 0 and not keep.all(), f"layer {i}"
        assert not np.any(lp.weights.nonzero_rows & ~keep), f"layer {i}"
        assert not np.any(lf.weights.nonzero_rows & ~keep), f"layer {i}"


def test_digits_mlp_dense_int8_close_to_float(digits):
    model, x_train, x_test, y_test, float_acc = digits
    result = compile_model(model, x_train, CompileOptions(method="paper", dense=True))
    acc = accuracy(infer(result.program, x_test), y_test)
    assert acc >= float_acc - 0.01, f"int8 {acc:.4f} vs float {float_acc:.4f}"


# -------------------------------------------------------------------------------------- scikit-learn import
def _fit_sklearn_mlp(hidden, activation="relu", seed=0):
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    mlp = MLPClassifier(hidden_layer_sizes=hidden, activation=activation, max_iter=15, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x[:600], y[:600])
    return mlp, x[600:900]


@pytest.mark.parametrize("hidden", [(16,), (20, 12)])
def test_from_sklearn_matches_predict_proba(hidden):
    pytest.importorskip("sklearn")
    mlp, x = _fit_sklearn_mlp(hidden)
    model = from_sklearn(mlp)
    assert model.input_shape == (64,)
    assert [layer.relu for layer in model.layers] == [True] * len(hidden) + [False]
    logits = forward_float(model, x)
    proba = mlp.predict_proba(x)
    assert np.array_equal(np.argmax(logits, axis=1), np.argmax(proba, axis=1))
    assert np.array_equal(mlp.classes_[np.argmax(logits, axis=1)], mlp.predict(x))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(z / z.sum(axis=1, keepdims=True), proba, rtol=1e-9, atol=1e-12)


def test_from_sklearn_rejects_unsupported():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier

    with pytest.raises(SdhwError, match="not a fitted MLP"):
        from_sklearn(MLPClassifier())
    mlp, _ = _fit_sklearn_mlp((8,), activation="tanh")
    with pytest.raises(SdhwError, match="tanh"):
        from_sklearn(mlp)


# targets below the bundled MLP's unpruned size (1.97 bits/weight: its row-sparse training zeroed ~40 % of rows)
@pytest.mark.parametrize("target", [1.5, 1.7])
def test_auto_prune_reaches_the_bits_target_with_per_layer_ratios(digits, target):
    model, x_train, _, _, _ = digits
    result = compile_model(model, x_train, CompileOptions(prune="auto", target_bits=target, epochs=0))
    bits = len(pack(result.program)) * 8 / result.program.n_weights
    ratios = [rep.prune for rep in result.layers]
    # the size is estimated before packing (bias width guessed at 20 bits): allow a small overshoot
    assert bits <= target + 0.05, f"{bits:.3f} bits/weight for target {target}, ratios {ratios}"
    assert bits >= target - 0.6, f"{bits:.3f} bits/weight: pruned far more than target {target} needs"
    assert len(set(ratios)) > 1, f"auto prune chose one ratio for every layer: {ratios}"


def test_auto_prune_warns_when_the_target_is_unreachable(digits):
    model, x_train, _, _, _ = digits
    with pytest.warns(UserWarning, match="cannot reach"):
        result = compile_model(model, x_train, CompileOptions(prune="auto", target_bits=0.5, epochs=0))
    assert all(rep.prune == 0.8 for rep in result.layers)


def test_auto_prune_rejects_bad_target():
    with pytest.raises(SdhwError, match="target bits"):
        CompileOptions(prune="auto", target_bits=0.1)


# ------------------------------------------------------------------------- layers without weights (float only)
def _pool_ref(x, kind):
    """2x2 stride-2 max or mean pooling, one window at a time."""
    n, h, w, c = x.shape
    out = np.zeros((n, h // 2, w // 2, c))
    for b in range(n):
        for i in range(h // 2):
            for j in range(w // 2):
                for ch in range(c):
                    win = [x[b, 2 * i + di, 2 * j + dj, ch] for di in (0, 1) for dj in (0, 1)]
                    out[b, i, j, ch] = max(win) if kind == "maxpool" else sum(win) / 4
    return out


def _plain_model(rng):
    """conv, maxpool, conv, add (shortcut: the maxpool output), avgpool, gap, fc."""
    return Model((9, 8, 3), [
        Layer("conv", rng.normal(0, 0.5, (4, 3, 3, 3)), rng.normal(0, 0.1, 4), relu=True),
        Layer("maxpool"),
        Layer("conv", rng.normal(0, 0.5, (4, 4, 3, 3)), rng.normal(0, 0.1, 4)),
        Layer("add", source=2, relu=True),
        Layer("avgpool"),
        Layer("gap"),
        Layer("fc", rng.normal(0, 0.5, (5, 4)), rng.normal(0, 0.1, 5)),
    ])


def test_plain_layers_forward_matches_loops():
    rng = np.random.default_rng(70)
    model = _plain_model(rng)
    assert model.shapes() == [(9, 8, 3), (9, 8, 4), (4, 4, 4), (4, 4, 4), (4, 4, 4), (2, 2, 4), (1, 1, 4), (5,)]
    assert model.n_weights == 4 * 27 + 4 * 36 + 20
    x = rng.normal(size=(2, 9, 8, 3))
    got, outs = forward_float(model, x, trace=True)
    a1 = np.maximum(ref_conv(x, model.layers[0].weight, 1, 1, 0.0) + model.layers[0].bias, 0.0)
    a2 = _pool_ref(a1, "maxpool")
    a3 = ref_conv(a2, model.layers[2].weight, 1, 1, 0.0) + model.layers[2].bias
    a4 = np.maximum(a3 + a2, 0.0)
    a5 = _pool_ref(a4, "avgpool")
    a6 = a5.mean(axis=(1, 2), keepdims=True)
    a7 = ref_fc(a6, model.layers[6].weight) + model.layers[6].bias
    for i, want in enumerate([a1, a2, a3, a4, a5, a6, a7]):
        np.testing.assert_allclose(outs[i], want, rtol=1e-12, atol=1e-12, err_msg=f"layer {i}")
    assert got is outs[-1]
    assert [layer.describe() for layer in model.layers][1:6] == [
        "maxpool2x2/s2", "conv3x3/s1 ->4", "add activation 2", "avgpool2x2/s2", "global avgpool"]


def test_plain_layers_npz_round_trip(tmp_path):
    model = _plain_model(np.random.default_rng(71))
    save_npz(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        keys = set(data.files)
    assert "layer1.weight" not in keys and "layer3.source" in keys and "layer1.source" not in keys
    back = load_npz(tmp_path / "m.npz")
    assert [(la.kind, la.relu, la.source) for la in back.layers] == [(la.kind, la.relu, la.source)
                                                                     for la in model.layers]
    x = np.random.default_rng(1).normal(size=(2, 9, 8, 3))
    np.testing.assert_allclose(forward_float(back, x), forward_float(model, x), rtol=1e-6)


@pytest.mark.parametrize(("layers", "input_shape", "match"), [
    ([Layer("maxpool")], (4,), "not an \\(H, W, C\\) image"),
    ([Layer("gap", weight=np.ones(3))], (2, 2, 3), "no weight or bias"),
    ([Layer("avgpool", stride=2)], (2, 2, 3), "stride or groups"),
    ([Layer("maxpool", source=0)], (2, 2, 3), "only add has one"),
    ([Layer("fc", np.ones((2, 4)), np.zeros(2), source=0)], (4,), "only add has one"),
    ([Layer("add")], (2, 2, 3), "source is None"),
    ([Layer("add", source=2)], (2, 2, 3), "source is 2; valid: an activation index 0..0"),
    ([Layer("maxpool"), Layer("add", source=0)], (4, 4, 3), "adds activation 0 of shape \\(4, 4, 3\\)"),
    ([Layer("maxpool")], (1, 4, 3), "empty output"),
])
def test_plain_layers_validation(layers, input_shape, match):
    with pytest.raises(SdhwError, match=match):
        Model(input_shape, layers)


def test_plain_layers_npz_errors():
    arrays = {"input_shape": np.array([2, 2, 1]), "layer0.kind": np.array("add"), "layer0.relu": np.array(0)}
    with pytest.raises(SdhwError, match="missing the array 'layer0.source'"):
        model_from_arrays(arrays)
    arrays = {"input_shape": np.array([2, 2, 1]), "layer0.kind": np.array("maxpool"), "layer0.relu": np.array(0),
              "layer0.stride": np.array(2)}
    with pytest.raises(SdhwError, match="layer0 is maxpool but has layer0.stride"):
        model_from_arrays(arrays)


def test_compiler_refuses_plain_layers():
    model = _plain_model(np.random.default_rng(72))
    with pytest.raises(SdhwError) as info:
        compile_model(model, np.zeros((2, 9, 8, 3)))
    assert str(info.value) == "layer 1 (maxpool2x2/s2): the accelerator does not run maxpool layers yet; it runs " \
                              "fc and conv layers"
