"""Integer pooling and residual add on raw int8 activations, bit-exact definitions for the hardware.

Activations are channel-last batches ``(N, H, W, C)`` of int8 values held in ``int64`` arrays, quantised
as ``real = scale * (q - zero_point)`` (:class:`golden.quant.QParams`).

- :func:`max_pool_2x2`: the maximum of each 2x2 window (stride 2). Input and output share their
  quantisation: a positive scale keeps the order, so the result is exact.
- :func:`avg_pool_2x2`: the mean of each 2x2 window (stride 2), input and output sharing their
  quantisation. The sum of the four raw values is divided by 4 with gemmlowp's ``RoundingDivideByPOT``:
  round to nearest, ties away from zero (of the raw int8 value: ``2.5 -> 3``, ``-2.5 -> -3``), so the
  error is at most half a step. The mean of int8 values stays in int8: no clamp is needed.
- :func:`global_avg_pool`: the mean over ``H, W``; the count ``H * W`` is any number and the output may
  have its own quantisation, so the sum runs through the requantiser like a layer's accumulator:
  ``acc = sum(q - zero_point_in)``, then :func:`golden.quant.requantize` with the multiplier
  ``scale_in / (H * W * scale_out)``. Its rounding is gemmlowp's: ``SaturatingRoundingDoublingHighMul``
  rounds to nearest with ties toward +infinity, then ``RoundingDivideByPOT`` rounds again with ties away
  from zero; the result is within one step of the exact mean (e.g. a mean of ``1.25`` steps with a
  multiplier of ``1/4`` gives ``2``).
- :func:`residual_add`: the sum of two int8 tensors with their own quantisations into a third, as
  gemmlowp/TFLite's quantised add: both inputs, less their zero points, are shifted left by
  ``ADD_LEFT_SHIFT`` bits and scaled to the common scale ``2 * max(scale_a, scale_b)`` (multipliers
  <= 1/2, gemmlowp rounding), summed exactly, and the sum is requantised to the output
  (:func:`golden.quant.requantize`, ReLU fused as the clamp at the output zero point). The result is within
  one output step of the real sum, clamped to int8.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SdhwError
from .model import pool_windows
from .quant import (
    ACT_MAX,
    ACT_MIN,
    QParams,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

# precision bits of the residual add: |q - zp| <= 255, so the shifted inputs stay below 2**28 and their
# scaled sum fits int32, while rounding the scaled inputs costs ~2**-20 of an input step
ADD_LEFT_SHIFT = 20


def _int8_images(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise SdhwError(f"{name} must be a batch (N, H, W, C) of images, not an array of shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise SdhwError(f"{name} must hold int8 values, not {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (x.min() < ACT_MIN or x.max() > ACT_MAX):
        raise SdhwError(f"{name} must hold int8 values")
    return x


def max_pool_2x2(x) -> np.ndarray:
    """Maximum of each 2x2 window, stride 2: ``(N, H, W, C) -> (N, H // 2, W // 2, C)``, same quantisation."""
    return pool_windows(_int8_images(x, "max pool input")).max(axis=-1)


def avg_pool_2x2(x) -> np.ndarray:
    """Mean of each 2x2 window, stride 2, rounded to nearest with ties away from zero, same quantisation."""
    return rounding_divide_by_pot(pool_windows(_int8_images(x, "average pool input")).sum(axis=-1), 2)


def global_avg_pool(x, in_q: QParams, out_q: QParams | None = None, relu: bool = False) -> np.ndarray:
    """Mean over ``H, W`` of ``(N, H, W, C)`` requantised to ``out_q`` (default ``in_q``): ``(N, 1, 1, C)``.

    ``requantize(sum(q - in_q.zero_point), M0, shift, out_q.zero_point)`` with ``(M0, shift)`` from
    ``in_q.scale / (H * W * out_q.scale)``; ``relu`` clamps at the output zero point.
    """
    x = _int8_images(x, "global average pool input")
    out_q = in_q if out_q is None else out_q
    count = x.shape[1] * x.shape[2]
    acc = (x - in_q.zero_point).sum(axis=(1, 2), keepdims=True)
    m0, shift = quantize_multiplier(in_q.scale / (count * out_q.scale))
    act_min = out_q.zero_point if relu else ACT_MIN
    return requantize(acc, m0, shift, out_q.zero_point, act_min, ACT_MAX)


@dataclass(frozen=True)
class AddParams:
    """Integer parameters of :func:`residual_add`: zero points and ``(M0, shift)`` multipliers."""

    a_zero_point: int
    a_m0: int
    a_shift: int
    b_zero_point: int
    b_m0: int
    b_shift: int
    out_zero_point: int
    out_m0: int
    out_shift: int


def add_params(a_q: QParams, b_q: QParams, out_q: QParams) -> AddParams:
    """The integer parameters adding tensors quantised as ``a_q`` and ``b_q`` into ``out_q``."""
    twice_max = 2.0 * max(a_q.scale, b_q.scale)
    a_m0, a_shift = quantize_multiplier(a_q.scale / twice_max)
    b_m0, b_shift = quantize_multiplier(b_q.scale / twice_max)
    out_m0, out_shift = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * out_q.scale))
    return AddParams(a_q.zero_point, a_m0, a_shift, b_q.zero_point, b_m0, b_shift, out_q.zero_point, out_m0,
                     out_shift)


def _scale_input(q: np.ndarray, zero_point: int, m0: int, shift: int) -> np.ndarray:
    """``(q - zero_point) << ADD_LEFT_SHIFT`` times the input multiplier (<= 1/2, so ``shift >= 0``)."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul((q - zero_point) << ADD_LEFT_SHIFT, m0),
                                  shift)


def residual_add(a, b, p: AddParams, relu: bool = False) -> np.ndarray:
    """Quantised ``a + b`` of two int8 tensors of the same shape (rule in the module docstring).

    ``relu`` clamps at the output zero point (real 0) instead of -128.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise SdhwError(f"residual add of tensors of different shapes {a.shape} and {b.shape}")
    for name, t in (("a", a), ("b", b)):
        if not np.issubdtype(t.dtype, np.integer) or (t.size and (t.min() < ACT_MIN or t.max() > ACT_MAX)):
            raise SdhwError(f"residual add input {name} must hold int8 values")
    total = _scale_input(a.astype(np.int64), p.a_zero_point, p.a_m0, p.a_shift) \
        + _scale_input(b.astype(np.int64), p.b_zero_point, p.b_m0, p.b_shift)
    act_min = p.out_zero_point if relu else ACT_MIN
    return requantize(total, p.out_m0, p.out_shift, p.out_zero_point, act_min, ACT_MAX)
