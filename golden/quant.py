"""Integer-only quantisation (Jacob et al. 2018) with gemmlowp's rounding, bit-exact.

All integer helpers take and return NumPy ``int64`` arrays that hold int32 values, so they can be
checked against hand-worked gemmlowp cases and reproduced bit for bit by the requantiser RTL.

Requantisation of an int32 accumulator ``acc`` with multiplier ``M = M0 * 2**-31 * 2**-shift``::

    x = saturate_int32(acc << max(-shift, 0))
    y = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, M0), max(shift, 0))
    out = clamp(zero_point_out + y, act_min, act_max)

ReLU is fused as the clamp: ``act_min = zero_point_out`` (real 0) instead of -128.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SdhwError

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
ACT_MIN, ACT_MAX = -128, 127          # int8 activations
SHIFT_MIN, SHIFT_MAX = -32, 31        # range of the requantisation shift (negative = left shift); signed 6 bits


@dataclass(frozen=True)
class QParams:
    """Affine int8 quantisation of a tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.round(np.asarray(x, dtype=np.float64) / self.scale) + self.zero_point
        return np.clip(q, ACT_MIN, ACT_MAX).astype(np.int64)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(q, dtype=np.float64) - self.zero_point)


def choose_qparams(lo: float, hi: float) -> QParams:
    """Asymmetric int8 parameters covering ``[lo, hi]``, widened to include 0 so real 0 is exact."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SdhwError(f"activation range [{lo}, {hi}] is not finite; check the calibration inputs")
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    scale = (hi - lo) / (ACT_MAX - ACT_MIN)
    zero_point = int(np.clip(round(ACT_MIN - lo / scale), ACT_MIN, ACT_MAX))
    return QParams(scale, zero_point)


def symmetric_scale(max_abs: float, bits: int = 8) -> float:
    """Scale of a symmetric signed quantiser with range ``[-(2**(bits-1)-1), 2**(bits-1)-1]``."""
    qmax = (1 << (bits - 1)) - 1
    return max(float(max_abs), 1e-12) / qmax


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Split a positive real multiplier into ``(M0, shift)`` with ``M0`` in ``[2**30, 2**31)``.

    ``real_multiplier ~= M0 * 2**-31 * 2**-shift``; ``shift`` may be negative (a left shift).
    """
    if not (real_multiplier > 0 and math.isfinite(real_multiplier)):
        raise SdhwError(f"requantisation multiplier must be positive and finite, not {real_multiplier!r}")
    mantissa, exponent = math.frexp(real_multiplier)      # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = int(round(mantissa * (1 << 31)))
    if m0 == 1 << 31:
        m0 //= 2
        exponent += 1
    shift = -exponent
    if shift > SHIFT_MAX:                                   # tiny multiplier: give up mantissa bits, keep the range
        m0 >>= shift - SHIFT_MAX
        shift = SHIFT_MAX
    if shift < SHIFT_MIN:
        raise SdhwError(f"requantisation multiplier {real_multiplier:g} is too large (max 2**{-SHIFT_MIN})")
    return m0, shift


def _trunc_div_pow2(x: np.ndarray, n: int) -> np.ndarray:
    """Integer division by ``2**n`` rounding toward zero, like C's ``/``."""
    return np.where(x >= 0, x >> n, -((-x) >> n))


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values: ``a * b / 2**31`` rounded to nearest.

    Ties round toward +infinity (``-1.5 -> -1``, ``0.5 -> 1``): the nudge is added before a division that
    truncates toward zero, exactly as gemmlowp does.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    result = _trunc_div_pow2(ab + nudge, 31)
    return np.where(overflow, INT32_MAX, result)


def rounding_divide_by_pot(x, exponent: int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded to nearest, ties away from zero."""
    if not 0 <= exponent <= 31:
        raise ValueError(f"exponent must be in 0..31, not {exponent!r}")
    x = np.asarray(x, dtype=np.int64)
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def saturate_int32(x) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.int64), INT32_MIN, INT32_MAX)


def requantize(acc, m0: int, shift: int, zero_point: int, act_min: int = ACT_MIN,
               act_max: int = ACT_MAX) -> np.ndarray:
    """Requantise int32 accumulators to int8 (see the module docstring for the exact rule)."""
    if not SHIFT_MIN <= shift <= SHIFT_MAX:
        raise SdhwError(f"requantisation shift must be in [{SHIFT_MIN}, {SHIFT_MAX}], not {shift!r}")
    acc = np.asarray(acc, dtype=np.int64)
    if np.any(acc < INT32_MIN) or np.any(acc > INT32_MAX):
        raise SdhwError("accumulator overflows int32; the layer's weights or bias are out of range")
    left, right = max(-shift, 0), max(shift, 0)
    x = saturate_int32(acc << left)
    y = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m0), right)
    return np.clip(zero_point + y, act_min, act_max)
