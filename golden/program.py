"""Quantised programs and the reference integer inference (bit-exact with the hardware).

A :class:`Program` is what the accelerator runs: an input quantisation and a list of
:class:`QLayer`. Each layer computes, per output element::

    acc = bias + sum(w * x)                 (int8 x int8 products, int32 accumulator)
    out = requantize(acc, m0, shift, out_zero_point, act_min, act_max)

``x`` are raw int8 activations: the input zero point is folded into ``bias`` and convolution padding
uses the input zero point (real 0), so padded taps cancel exactly. ``w`` are int8 MAC weights, stored
dense or as SD codes + bases and rebuilt by :meth:`golden.sd.SDWeights.rebuild`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SdhwError
from .model import layer_matmul
from .quant import ACT_MAX, ACT_MIN, INT32_MAX, INT32_MIN, SHIFT_MAX, SHIFT_MIN, QParams, requantize
from .sd import SDWeights, check_codes, rows_shape

KINDS = ("fc", "conv")


@dataclass
class QLayer:
    kind: str                          # "fc" | "conv"
    in_shape: tuple[int, ...]          # (K,) or (H, W, C); an fc flattens its input in H, W, C order
    weights: np.ndarray | SDWeights    # dense int8 in the float weight's shape, or SD
    bias: np.ndarray                   # int32 values (int64 array), input zero point folded in
    in_q: QParams
    out_q: QParams
    m0: int
    shift: int
    relu: bool = False
    stride: int = 1
    groups: int = 1
    w_scale: float = 1.0               # real weight = w_scale * w (informational: requant already has it)

    @property
    def is_sd(self) -> bool:
        return isinstance(self.weights, SDWeights)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return tuple(self.weights.shape)

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def kernel(self) -> int:
        return self.weight_shape[2] if self.kind == "conv" else 1

    @property
    def act_min(self) -> int:
        return self.out_q.zero_point if self.relu else ACT_MIN

    @property
    def act_max(self) -> int:
        return ACT_MAX

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.kind == "fc":
            return (self.out_channels,)
        h, w, _ = self.in_shape
        pad = self.kernel // 2
        return ((h + 2 * pad - self.kernel) // self.stride + 1,
                (w + 2 * pad - self.kernel) // self.stride + 1, self.out_channels)

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.weight_shape))

    def mac_weights(self) -> np.ndarray:
        """int8 MAC weights in the float weight's shape (rebuilt when SD)."""
        if self.is_sd:
            return self.weights.rebuild()
        return np.asarray(self.weights, dtype=np.int64)

    def describe(self) -> str:
        if self.kind == "fc":
            return f"fc {int(np.prod(self.in_shape))}->{self.out_channels}"
        dw = " dw" if self.groups > 1 else ""
        return f"conv{self.kernel}x{self.kernel}{dw}/s{self.stride} {self.in_shape[2]}->{self.out_channels}"


@dataclass
class Program:
    input_shape: tuple[int, ...]
    input_q: QParams
    layers: list[QLayer]

    def __post_init__(self):
        validate_program(self)

    @property
    def output_q(self) -> QParams:
        return self.layers[-1].out_q

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].out_shape

    @property
    def n_weights(self) -> int:
        return sum(layer.n_weights for layer in self.layers)


def _check_int_range(where: str, name: str, value, lo: int, hi: int) -> None:
    arr = np.asarray(value)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise SdhwError(f"{where}: {name} outside [{lo}, {hi}]")


def validate_program(program: Program) -> None:
    """Check that every layer is consistent and chains to the next; raise :class:`SdhwError` if not."""
    if not program.layers:
        raise SdhwError("program has no layers")
    shape = tuple(program.input_shape)
    q = program.input_q
    for i, layer in enumerate(program.layers):
        where = f"layer {i}"
        if layer.kind not in KINDS:
            raise SdhwError(f"{where}: kind {layer.kind!r} is not one of {', '.join(KINDS)}")
        if tuple(layer.in_shape) != shape:
            raise SdhwError(f"{where}: input shape {tuple(layer.in_shape)} does not match the previous output {shape}")
        if layer.in_q != q:
            raise SdhwError(f"{where}: input quantisation does not match the previous layer's output")
        ws = layer.weight_shape
        if layer.kind == "fc":
            if len(ws) != 2 or ws[1] != int(np.prod(shape)):
                raise SdhwError(f"{where}: fc weight shape {ws} does not fit input {shape}")
        else:
            if len(shape) != 3:
                raise SdhwError(f"{where}: conv input {shape} is not (H, W, C)")
            c = shape[2]
            cg = c // layer.groups if layer.groups in (1, c) else -1
            if len(ws) != 4 or ws[1] != cg or ws[2] != ws[3] or ws[2] % 2 == 0 or layer.stride not in (1, 2):
                raise SdhwError(f"{where}: conv weight shape {ws} / stride {layer.stride} / groups {layer.groups}"
                                f" does not fit input {shape}")
        if layer.is_sd:
            sdw = layer.weights
            if layer.kind == "conv" and (layer.groups != 1 or ws[2] not in (1, 3)):
                raise SdhwError(f"{where}: SD weights need fc, conv 1x1 or conv 3x3 without groups")
            if not (1 <= sdw.exp_bits <= 4 and 2 <= sdw.weight_bits <= 16 and 0 <= sdw.wshift <= 31
                    and sdw.basis_group >= 1 and sdw.block_rows >= 1):
                raise SdhwError(f"{where}: SD parameters out of range (exp_bits {sdw.exp_bits}, valid 1..4; "
                                f"weight_bits {sdw.weight_bits}, valid 2..16; wshift {sdw.wshift}, valid 0..31; "
                                f"basis_group {sdw.basis_group} and block_rows {sdw.block_rows}, valid >= 1)")
            expect = rows_shape(ws)
            if sdw.codes.shape != expect:
                raise SdhwError(f"{where}: SD codes shape {sdw.codes.shape} does not match {expect}")
            check_codes(sdw.codes, sdw.exp_bits)
            ng, nb = -(-ws[0] // sdw.basis_group), -(-expect[1] // sdw.block_rows)
            if sdw.bases.shape != (ng, nb, 3, 3):
                raise SdhwError(f"{where}: SD bases shape {sdw.bases.shape} does not match {(ng, nb, 3, 3)}")
        else:
            _check_int_range(where, "dense weights", layer.weights, -127, 127)
        if np.asarray(layer.bias).shape != (ws[0],):
            raise SdhwError(f"{where}: bias shape {np.asarray(layer.bias).shape} does not match {ws[0]} outputs")
        _check_int_range(where, "bias", layer.bias, INT32_MIN, INT32_MAX)
        _check_int_range(where, "requantisation multiplier", layer.m0, 0, INT32_MAX)
        _check_int_range(where, "requantisation shift", layer.shift, SHIFT_MIN, SHIFT_MAX)
        for name, zp in (("input zero point", layer.in_q.zero_point), ("output zero point", layer.out_q.zero_point)):
            _check_int_range(where, name, zp, ACT_MIN, ACT_MAX)
        shape, q = layer.out_shape, layer.out_q
        if min(shape) < 1:
            raise SdhwError(f"{where}: empty output {shape}")


def run_layer(layer: QLayer, x: np.ndarray) -> np.ndarray:
    """Integer inference of one layer on a batch of raw int8 activations ``(N, *in_shape)``."""
    w = layer.mac_weights()
    acc = layer_matmul(layer.kind, np.asarray(x, dtype=np.int64), w, layer.stride, layer.groups,
                       layer.in_q.zero_point)
    acc = acc + np.asarray(layer.bias, dtype=np.int64)
    return requantize(acc, layer.m0, layer.shift, layer.out_q.zero_point, layer.act_min, layer.act_max)


def run_program(program: Program, x_q: np.ndarray, *, trace: bool = False):
    """Reference integer inference: raw int8 inputs ``(N, *input_shape)`` -> int8 outputs ``(N, *out)``."""
    x = np.asarray(x_q, dtype=np.int64).reshape((-1, *program.input_shape))
    if x.size and (x.min() < ACT_MIN or x.max() > ACT_MAX):
        raise SdhwError("program inputs must be int8 values")
    outs = []
    for layer in program.layers:
        x = run_layer(layer, x)
        outs.append(x)
    return (x, outs) if trace else x


def infer(program: Program, x_real: np.ndarray) -> np.ndarray:
    """Quantise real inputs, run the integer program, return dequantised outputs ``(N, -1)``."""
    x_q = program.input_q.quantize(np.asarray(x_real).reshape((-1, *program.input_shape)))
    out = run_program(program, x_q)
    return program.output_q.dequantize(out.reshape(out.shape[0], -1))
