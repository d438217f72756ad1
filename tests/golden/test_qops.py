"""golden.qops: integer max / average / global average pooling and the requantised residual add, against
hand-worked cases, explicit loops and the float reference (golden.model.forward_float) with bounded error."""
from __future__ import annotations

import numpy as np
import pytest

from golden import SdhwError
from golden.model import Layer, Model, forward_float
from golden.qops import add_params, avg_pool_2x2, global_avg_pool, max_pool_2x2, residual_add
from golden.quant import ACT_MAX, ACT_MIN, QParams, choose_qparams

SEEDS = [0, 1, 2]


def _image(values) -> np.ndarray:
    """One 2x2 single-channel image ``(1, 2, 2, 1)`` from four values in row order."""
    return np.asarray(values, dtype=np.int64).reshape(1, 2, 2, 1)


def _pool_float(kind: str, x: np.ndarray) -> np.ndarray:
    """The float model's pooling layer on ``x`` (N, H, W, C)."""
    return forward_float(Model(x.shape[1:], [Layer(kind)]), x)


# ------------------------------------------------------------------------------------------ hand-worked
@pytest.mark.parametrize(("values", "want"), [
    ([1, 2, 3, 4], 3),              # 2.5: ties away from zero
    ([-1, -2, -3, -4], -3),         # -2.5
    ([1, 1, 1, 2], 1),              # 1.25
    ([1, 1, 2, 2], 2),              # 1.5
    ([-1, -1, -2, -2], -2),         # -1.5
    ([0, 0, 0, -2], -1),            # -0.5
    ([0, 0, 0, -1], 0),             # -0.25
    ([127, 127, 127, 127], 127),
    ([-128, -128, -128, -128], -128),
    ([-128, 127, -128, 127], -1),   # the sum -2: -0.5
])
def test_avg_pool_hand_cases(values, want):
    assert avg_pool_2x2(_image(values)).item() == want


def test_max_pool_hand_case():
    x = np.array([[5, -3, 0, 9], [2, 7, -128, 1], [127, 0, 4, 4], [-5, -6, 4, 3], [1, 1, 1, 1]]).reshape(1, 5, 4, 1)
    got = max_pool_2x2(x)
    assert got.shape == (1, 2, 2, 1)                # the odd last row is dropped, as ONNX's floor mode does
    assert got[0, :, :, 0].tolist() == [[7, 9], [127, 4]]


@pytest.mark.parametrize(("values", "in_q", "out_q", "want"), [
    ([1, 2, 3, 4], QParams(0.1, 0), None, 3),            # M = 1/4: SRDHM(10) = 5, RDBPOT(5, 1) = 2.5 -> 3
    ([1, 1, 1, 2], QParams(0.1, 0), None, 2),            # 1.25: SRDHM(5) = 2.5 -> 3 (ties up), 3 / 2 -> 2
    ([12, 14, 10, 11], QParams(0.5, 10), QParams(0.25, -5), -1),   # acc 7, M = 1/2: -5 + 3.5 -> -5 + 4
    ([-3, -3, -3, -4], QParams(0.1, 0), None, -3),       # -3.25: SRDHM(-13) = -6.5 -> -6, -6 / 2 -> -3
])
def test_global_avg_pool_hand_cases(values, in_q, out_q, want):
    assert global_avg_pool(_image(values), in_q, out_q).item() == want


def test_global_avg_pool_relu_and_clamp():
    q = QParams(0.1, -20)
    assert global_avg_pool(_image([-128] * 4), q, relu=True).item() == -20
    assert global_avg_pool(_image([-128] * 4), q).item() == -128
    assert global_avg_pool(_image([127] * 4), q, QParams(0.01, 0)).item() == ACT_MAX


@pytest.mark.parametrize(("a", "b", "want"), [
    (3, 1, 4), (-3, -1, -4), (3, -1, 3), (-3, 1, -3), (0, 0, 0), (1, 1, 2), (2, -3, 1),
])
def test_residual_add_hand_cases(a, b, want):
    """Scales 0.5 and 0.25 into 0.5, zero points 0: the exact result is ``a + b / 2``, ties away from zero.

    2 * max scale = 1: input multipliers 1/2 and 1/4, output 2**-19 (M0 = 2**30, shift 18): a = 3, b = 1
    gives 3 << 19 plus 1 << 18 = 7 << 18, halved to 7 << 17 and divided by 2**18: 3.5 -> 4.
    """
    p = add_params(QParams(0.5, 0), QParams(0.25, 0), QParams(0.5, 0))
    assert (p.a_m0, p.a_shift, p.b_m0, p.b_shift, p.out_m0, p.out_shift) == (1 << 30, 0, 1 << 30, 1, 1 << 30, 18)
    assert residual_add(np.array([a]), np.array([b]), p).item() == want


def test_residual_add_same_scales_is_the_clamped_sum():
    q = QParams(0.05, 0)
    p = add_params(q, q, q)
    a = np.arange(-128, 128).reshape(16, 16)
    b = a.T.copy()
    assert np.array_equal(residual_add(a, b, p), np.clip(a + b, ACT_MIN, ACT_MAX))
    assert np.array_equal(residual_add(a, b, p, relu=True), np.clip(a + b, 0, ACT_MAX))


# --------------------------------------------------------------------------------- against the float model
@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool_is_exact(seed):
    rng = np.random.default_rng(seed)
    q = QParams(rng.uniform(0.01, 0.2), int(rng.integers(-50, 50)))
    x = rng.integers(ACT_MIN, ACT_MAX + 1, (3, 7, 6, 4))
    got = max_pool_2x2(x)
    assert got.shape == (3, 3, 3, 4)
    assert np.array_equal(q.dequantize(got), _pool_float("maxpool", q.dequantize(x))), f"seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_avg_pool_within_half_a_step(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(ACT_MIN, ACT_MAX + 1, (3, 6, 7, 5))
    got = avg_pool_2x2(x)
    exact = _pool_float("avgpool", x.astype(np.float64))            # in steps: the scale cancels
    assert got.shape == exact.shape == (3, 3, 3, 5)
    assert np.abs(got - exact).max() <= 0.5, f"seed {seed}"
    ties = np.abs(exact - np.trunc(exact)) == 0.5
    assert np.array_equal(got[ties], np.sign(exact[ties]) * np.ceil(np.abs(exact[ties]))), f"seed {seed}"
    assert got.min() >= ACT_MIN and got.max() <= ACT_MAX


@pytest.mark.parametrize("seed", SEEDS)
def test_global_avg_pool_within_one_step(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    in_q = QParams(rng.uniform(0.01, 0.2), int(rng.integers(-60, 60)))
    x = rng.integers(ACT_MIN, ACT_MAX + 1, (4, h, w, 6))
    real = _pool_float("gap", in_q.dequantize(x))
    for out_q in (in_q, choose_qparams(real.min(), real.max())):
        got = global_avg_pool(x, in_q, out_q)
        assert got.shape == (4, 1, 1, 6)
        want = np.clip(real / out_q.scale + out_q.zero_point, ACT_MIN, ACT_MAX)
        err = np.abs(got - want).max()
        assert err <= 1.0, f"seed {seed}, {h}x{w}: {err} steps"


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_add_within_one_step(seed):
    rng = np.random.default_rng(seed)
    a_q = QParams(rng.uniform(0.005, 0.2), int(rng.integers(-100, 100)))
    b_q = QParams(rng.uniform(0.005, 0.2), int(rng.integers(-100, 100)))
    a = rng.integers(ACT_MIN, ACT_MAX + 1, (2, 5, 5, 8))
    b = rng.integers(ACT_MIN, ACT_MAX + 1, (2, 5, 5, 8))
    real = a_q.dequantize(a) + b_q.dequantize(b)
    for relu in (False, True):
        out_q = choose_qparams(0.0 if relu else real.min(), real.max())
        got = residual_add(a, b, add_params(a_q, b_q, out_q), relu)
        lo = out_q.zero_point if relu else ACT_MIN
        want = np.clip(real / out_q.scale + out_q.zero_point, lo, ACT_MAX)
        err = np.abs(got - want).max()
        assert err <= 1.0, f"seed {seed}, relu {relu}: {err} steps"
        assert got.min() >= lo


def test_float_residual_add_layer():
    """The float model's add layer: the input plus the named activation (here the model input: 2x)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 3, 2))
    w = rng.normal(size=(2, 2, 1, 1))
    model = Model((3, 3, 2), [Layer("conv", w, np.zeros(2)), Layer("add", source=0, relu=True)])
    conv = np.einsum("nhwc,mc->nhwm", x, w[:, :, 0, 0])
    np.testing.assert_allclose(forward_float(model, x), np.maximum(conv + x, 0.0), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs():
    with pytest.raises(SdhwError, match="int8"):
        max_pool_2x2(np.full((1, 2, 2, 1), 200))
    with pytest.raises(SdhwError, match="int8"):
        avg_pool_2x2(np.zeros((1, 2, 2, 1)))
    with pytest.raises(SdhwError, match=r"\(N, H, W, C\)"):
        global_avg_pool(np.zeros((2, 2, 1), dtype=np.int64), QParams(0.1, 0))
    p = add_params(QParams(0.1, 0), QParams(0.1, 0), QParams(0.1, 0))
    with pytest.raises(SdhwError, match="different shapes"):
        residual_add(np.zeros(3, dtype=np.int64), np.zeros(4, dtype=np.int64), p)
    with pytest.raises(SdhwError, match="int8"):
        residual_add(np.zeros(3, dtype=np.int64), np.full(3, -129), p)
