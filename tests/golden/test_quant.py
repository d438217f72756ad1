"""golden.quant: gemmlowp integer arithmetic, multiplier quantisation, requantisation and qparams."""
from __future__ import annotations

import math

import numpy as np
import pytest

from golden import SdhwError
from golden.quant import (
    ACT_MAX,
    ACT_MIN,
    INT32_MAX,
    INT32_MIN,
    SHIFT_MAX,
    QParams,
    choose_qparams,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

SEEDS = [0, 1, 2, 3]


# ------------------------------------------------------------------ independent Python-int references
def ref_srdhm(a: int, b: int) -> int:
    """``round(a * b / 2**31)`` with ties toward +inf (what gemmlowp's nudge amounts to), saturated."""
    return min((a * b + (1 << 30)) // (1 << 31), INT32_MAX)


def ref_rdbpot(x: int, e: int) -> int:
    """``x / 2**e`` rounded to nearest, ties away from zero."""
    if e == 0:
        return x
    mag = (abs(x) + (1 << (e - 1))) >> e
    return -mag if x < 0 else mag


def ref_requantize(acc: int, m0: int, shift: int, zp: int, lo: int, hi: int) -> int:
    left, right = max(-shift, 0), max(shift, 0)
    x = max(INT32_MIN, min(INT32_MAX, acc * (1 << left)))
    return max(lo, min(hi, zp + ref_rdbpot(ref_srdhm(x, m0), right)))


def _scalar(x) -> int:
    arr = np.asarray(x)
    assert arr.shape == ()
    return int(arr)


# -------------------------------------------------------------------------- SaturatingRoundingDoublingHighMul
@pytest.mark.parametrize(("a", "b", "want"), [
    (INT32_MIN, INT32_MIN, INT32_MAX),           # the one overflowing product saturates
    (2**30, 2**30, 2**29),                       # 0.5 * 0.5 in Q31 = 0.25
    (INT32_MIN, INT32_MAX, INT32_MIN + 1),       # exact: -(2**31 - 1)
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),       # 2**31 - 2 + 2**-31 -> 2**31 - 2
    (INT32_MIN, 1, -1),                          # -1 exactly
    (0, INT32_MIN, 0),
    (3, 2**30, 2),                               # +1.5 -> 2 (tie goes up)
    (-3, 2**30, -1),                             # -1.5 -> -1 (tie goes up, i.e. toward zero for negatives)
    (5, 2**30, 3),                               # +2.5 -> 3
    (-5, 2**30, -2),                             # -2.5 -> -2
    (1, 2**30, 1),                               # +0.5 -> 1
    (-1, 2**30, 0),                              # -0.5 -> 0
    (2**30 - 1, 1, 0),                           # 0.5 - 2**-31 -> 0
    (2**30 + 1, 1, 1),                           # 0.5 + 2**-31 -> 1
    (-(2**30 - 1), 1, 0),                        # -0.5 + 2**-31 -> 0
    (-(2**30 + 1), 1, -1),                       # -0.5 - 2**-31 -> -1
    (3 * 2**30 + 1, 1, 2),                       # 1.5 + 2**-31 -> 2
    (-(3 * 2**30 + 1), 1, -2),                   # -1.5 - 2**-31 -> -2
    (-(3 * 2**30 - 1), 1, -1),                   # -1.5 + 2**-31 -> -1
    (7, -(2**29), -2),                           # -1.75 -> -2
])
def test_srdhm_hand_cases(a, b, want):
    assert _scalar(saturating_rounding_doubling_high_mul(a, b)) == want
    assert _scalar(saturating_rounding_doubling_high_mul(b, a)) == want      # commutative


@pytest.mark.parametrize("seed", SEEDS)
def test_srdhm_matches_python_ints(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True)
    b = rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True)
    a[:6] = [INT32_MIN, INT32_MIN, INT32_MAX, 0, -1, 1]
    b[:6] = [INT32_MIN, INT32_MAX, INT32_MIN, 5, INT32_MIN, INT32_MIN]
    small = rng.integers(-1000, 1000, 500)                        # hits exact .5 ties with b = 2**30
    a = np.concatenate([a, small])
    b = np.concatenate([b, np.full(500, 2**30)])
    got = saturating_rounding_doubling_high_mul(a, b)
    want = [ref_srdhm(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    bad = np.flatnonzero(got != np.asarray(want))
    assert bad.size == 0, f"seed {seed}: a={a[bad[0]]} b={b[bad[0]]} got {got[bad[0]]} want {want[bad[0]]}"


# -------------------------------------------------------------------------------------- RoundingDivideByPOT
@pytest.mark.parametrize(("x", "e", "want"), [
    (5, 1, 3), (-5, 1, -3), (4, 1, 2), (-4, 1, -2), (7, 2, 2), (-7, 2, -2), (6, 2, 2), (-6, 2, -2),
    (5, 2, 1), (-5, 2, -1), (3, 1, 2), (-3, 1, -2), (1, 1, 1), (-1, 1, -1), (1, 2, 0), (-1, 2, 0),
    (123, 0, 123), (-123, 0, -123), (INT32_MIN, 0, INT32_MIN), (INT32_MAX, 0, INT32_MAX),
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1), (2**30, 31, 1), (2**30 - 1, 31, 0), (-(2**30), 31, -1),
    (-(2**30) + 1, 31, 0),
])
def test_rdbpot_hand_cases(x, e, want):
    assert _scalar(rounding_divide_by_pot(x, e)) == want


@pytest.mark.parametrize("seed", SEEDS)
def test_rdbpot_matches_python_ints(seed):
    rng = np.random.default_rng(seed)
    for e in range(32):
        x = rng.integers(INT32_MIN, INT32_MAX, 300, endpoint=True)
        if e:
            ties = rng.integers(-(2**(31 - e)), 2**(31 - e), 50) * (1 << e) + (1 << (e - 1))
            x = np.concatenate([x, ties, -ties])
        got = rounding_divide_by_pot(x, e)
        want = np.asarray([ref_rdbpot(int(v), e) for v in x])
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, f"seed {seed}, exp {e}: x={x[bad[0]]} got {got[bad[0]]} want {want[bad[0]]}"


@pytest.mark.parametrize("e", [-1, 32])
def test_rdbpot_exponent_range(e):
    with pytest.raises(ValueError, match="exponent"):
        rounding_divide_by_pot(1, e)


# ------------------------------------------------------------------------------------ quantize_multiplier
@pytest.mark.parametrize(("real", "m0", "shift"), [
    (0.5, 2**30, 0),
    (0.75, 3 * 2**29, 0),
    (1.0, 2**30, -1),
    (3.0, 3 * 2**29, -2),                       # > 1: a left shift
    (0.25, 2**30, 1),
    (2.0**-31, 2**30, 30),
    (2.0**-32, 2**30, 31),
    (2.0**-40, 2**22, SHIFT_MAX),               # shift clamped to 31: mantissa bits given up
    (1.0 - 2.0**-40, 2**30, -1),                # mantissa rounds up to 2**31: renormalised
    (2.0**30, 2**30, -31),                      # the largest exponent allowed
])
def test_quantize_multiplier_hand_cases(real, m0, shift):
    assert quantize_multiplier(real) == (m0, shift)


@pytest.mark.parametrize("bad", [0.0, -0.0, -0.5, -1e-9, float("nan"), float("inf"), float("-inf"), 2.0**32,
                                 1e12])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(SdhwError):
        quantize_multiplier(bad)


@pytest.mark.parametrize("seed", SEEDS)
def test_quantize_multiplier_accuracy(seed):
    rng = np.random.default_rng(seed)
    for real in 2.0 ** rng.uniform(-31, 30.99, 500):
        m0, shift = quantize_multiplier(float(real))
        assert 2**30 <= m0 < 2**31, f"seed {seed}: real {real!r} -> m0 {m0}"
        approx = m0 * 2.0 ** (-31 - shift)
        assert abs(approx - real) <= 2.0 ** (-32 - shift), f"seed {seed}: real {real!r} -> {approx!r}"


# ------------------------------------------------------------------------------------------------ requantize
def _random_requant_case(rng):
    real = float(2.0 ** rng.uniform(-24, 4))
    m0, shift = quantize_multiplier(real)
    span = min(400.0 / real, float(INT32_MAX))
    acc = np.clip(np.round(rng.uniform(-span, span, 200)), INT32_MIN, INT32_MAX).astype(np.int64)
    zp = int(rng.integers(-128, 128))
    return real, m0, shift, acc, zp


@pytest.mark.parametrize("seed", range(12))
def test_requantize_matches_float_within_one_lsb(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        real, m0, shift, acc, zp = _random_requant_case(rng)
        relu = bool(rng.integers(2))
        lo = zp if relu else ACT_MIN
        got = requantize(acc, m0, shift, zp, lo, ACT_MAX)
        exact_mult = m0 * 2.0 ** (-31 - shift)
        want = np.clip(zp + np.round(acc * exact_mult), lo, ACT_MAX)
        msg = f"seed {seed}: real {real!r} m0 {m0} shift {shift} zp {zp} relu {relu}"
        assert got.shape == acc.shape, msg
        assert np.all(np.abs(got - want) <= 1), msg
        assert got.min() >= lo and got.max() <= ACT_MAX, msg
        # ...and bit-exact against the docstring rule written with Python ints
        exact = [ref_requantize(int(a), m0, shift, zp, lo, ACT_MAX) for a in acc]
        assert got.tolist() == exact, msg


def test_requantize_random_cases_exercise_clamps_and_left_shifts():
    """The random cases above must actually hit both clamps and negative shifts, or they prove little."""
    hit_lo = hit_hi = left = False
    for seed in range(12):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            _, m0, shift, acc, zp = _random_requant_case(rng)
            out = requantize(acc, m0, shift, zp)
            hit_lo |= bool(np.any(out == ACT_MIN))
            hit_hi |= bool(np.any(out == ACT_MAX))
            left |= shift < 0
    assert hit_lo and hit_hi and left


def test_requantize_hand_cases():
    m0, shift = quantize_multiplier(0.5)
    assert requantize([0, 1, 2, 3, -1, -3, 5, -5], m0, shift, 0).tolist() == [0, 1, 1, 2, 0, -1, 3, -2]
    m0, shift = quantize_multiplier(0.25)                         # right shift by 1 after the high mul
    assert requantize([2, -2, 6, -6, 7], m0, shift, 10).tolist() == [11, 9, 12, 8, 12]
    m0, shift = quantize_multiplier(4.0)                          # left shift by 3
    assert requantize([1, -1, 31, 32, -32, -33], m0, shift, 0).tolist() == [4, -4, 124, 127, -128, -128]
    # ReLU as the clamp at the output zero point, and a custom act_max
    assert requantize([-10, 0, 10], m0, shift, -5, -5, 20).tolist() == [-5, -5, 20]


def test_requantize_left_shift_saturates_int32():
    m0, shift = quantize_multiplier(2.0**20)                      # shift -21: 2**11 << 21 overflows int32
    assert shift == -21
    out = requantize([2**11, -(2**11), 1, -1, 0], m0, shift, 0, INT32_MIN, INT32_MAX)
    # 2**32 saturates to INT32_MAX = 2**31 - 1, then * 2**30 / 2**31 = 2**30 - 0.5 rounds up to 2**30
    assert out.tolist() == [2**30, -(2**30), 2**20, -(2**20), 0]


@pytest.mark.parametrize("acc", [INT32_MAX + 1, INT32_MIN - 1, 2**40, -(2**40)])
def test_requantize_rejects_int32_overflow(acc):
    m0, shift = quantize_multiplier(1e-3)
    with pytest.raises(SdhwError, match="int32"):
        requantize(np.array([0, acc], dtype=np.int64), m0, shift, 0)


def test_requantize_accepts_int32_extremes():
    m0, shift = quantize_multiplier(2.0**-24)
    out = requantize([INT32_MIN, INT32_MAX], m0, shift, 0)
    assert out.tolist() == [-128, 127]


# ----------------------------------------------------------------------------------------- choose_qparams
QPARAM_RANGES = [(-1.0, 1.0), (0.0, 6.0), (-3.0, 0.0), (0.5, 2.0), (-2.0, -0.5), (-0.3, 7.1), (-1e-3, 1e-5),
                 (0.0, 0.0), (-1e4, 3e4)]


@pytest.mark.parametrize(("lo", "hi"), QPARAM_RANGES)
def test_choose_qparams_zero_exact_and_range_covered(lo, hi):
    q = choose_qparams(lo, hi)
    assert q.scale > 0 and ACT_MIN <= q.zero_point <= ACT_MAX
    assert isinstance(q.zero_point, int)
    assert int(q.quantize(0.0)) == q.zero_point                 # real 0 lands exactly on a grid point
    assert float(q.dequantize(q.quantize(0.0))) == 0.0
    lo_w, hi_w = min(lo, 0.0), max(hi, 0.0)                        # the range is widened to include 0
    lo_q, hi_q = q.dequantize(ACT_MIN), q.dequantize(ACT_MAX)
    assert lo_q <= lo_w + q.scale / 2 + 1e-12 * q.scale, (lo, hi, q)
    assert hi_q >= hi_w - q.scale / 2 - 1e-12 * q.scale, (lo, hi, q)
    if hi_w - lo_w > 0:
        assert q.scale == pytest.approx((hi_w - lo_w) / 255, rel=1e-12)   # no range wasted


@pytest.mark.parametrize("seed", SEEDS)
def test_qparams_round_trip_within_half_scale(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        a, b = sorted(rng.normal(0, 10 ** rng.uniform(-3, 3), 2))
        if rng.integers(3) == 0:
            a = abs(a)                                              # sometimes a range that excludes 0
        lo, hi = min(a, b), max(a, b)
        q = choose_qparams(lo, hi)
        x = np.concatenate([rng.uniform(min(lo, 0), max(hi, 0), 500), [min(lo, 0), max(hi, 0), 0.0]])
        err = np.abs(q.dequantize(q.quantize(x)) - x)
        assert err.max() <= q.scale / 2 * (1 + 1e-9), f"seed {seed}: [{lo}, {hi}] -> {q}, max err {err.max()}"


def test_qparams_grid_round_trip_and_clipping():
    q = QParams(0.1, -7)
    grid = np.arange(ACT_MIN, ACT_MAX + 1)
    assert np.array_equal(q.quantize(q.dequantize(grid)), grid)
    assert q.quantize(np.array([1e6, -1e6])).tolist() == [ACT_MAX, ACT_MIN]
    assert q.quantize(np.array([0.0, 0.1, -0.1, 0.149, 0.151])).tolist() == [-7, -6, -8, -6, -5]
    assert q.quantize(np.array([0.5])).dtype == np.int64


@pytest.mark.parametrize(("lo", "hi"), [(float("nan"), 1.0), (0.0, float("inf")), (float("-inf"), 0.0)])
def test_choose_qparams_rejects_non_finite(lo, hi):
    with pytest.raises(SdhwError):
        choose_qparams(lo, hi)


def test_choose_qparams_degenerate_range_is_usable():
    q = choose_qparams(0.0, 0.0)
    assert q.scale > 0 and math.isfinite(q.scale)
    assert int(q.quantize(0.0)) == q.zero_point
