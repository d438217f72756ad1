"""Model -> quantised SD (or dense int8) program: calibration, decomposition, fine-tuning, integer layers.

Methods
-------
``paper``
    The upstream SmartDeal fit: structural pruning, weight-space alternating least squares with an
    element threshold, power-of-two coefficients, no retraining.
``finetune`` (default)
    Starts from the ``paper`` fit, then runs SD-preserving fine-tuning on calibration inputs: the
    bases ``B`` and biases by gradient descent, the coefficients through a latent value whose power-of-
    two rounding moves one exponent step at a time (straight-through estimator), the sparsity mask
    fixed, and activations fake-quantised on their int8 grids. The loss matches the float model's
    outputs (mean squared error on the final layer), so no labels are needed.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import SdhwError
from .model import WEIGHTED_KINDS, Layer, Model, forward_float, layer_matmul
from .program import Program, QLayer
from .quant import QParams, choose_qparams, quantize_multiplier, symmetric_scale
from .sd import (
    UPSTREAM_BLOCK_ROWS,
    Decomposition,
    block_slices,
    decompose,
    from_rows,
    pow2_quantize,
    quantize_decomposition,
    structural_mask,
    to_rows,
)
from .train import Adam, backward, forward

METHODS = ("paper", "finetune")
BASIS_TARGET_WEIGHTS = 576      # weights per basis the automatic basis group aims at (upstream: 192 rows x 3)


@dataclass(frozen=True)
class CompileOptions:
    """Every knob of :func:`compile_model`, validated once."""

    method: str = "finetune"
    prune: float | tuple[float, ...] | str = 0.3  # one ratio for all SD layers, one per layer, or "auto"
    target_bits: float = 3.0                     # bits/weight that prune="auto" aims for
    threshold: float = 1e-3                      # |Ce| below this is zeroed during the fit
    exp_bits: int = 2
    block_rows: int = UPSTREAM_BLOCK_ROWS
    basis_group: int | None = None               # filters sharing a basis; None: automatic per layer
    max_iter: int = 30
    weight_bits: int = 8
    dense: bool = False                          # the int8 dense baseline: no SD layer at all
    dense_layers: tuple[int, ...] = ()           # layers kept dense int8 in an SD program (negative: from the end)
    epochs: int = 60
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise SdhwError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        prunes = self.prune if isinstance(self.prune, tuple) else (self.prune,)
        if self.prune == "auto":
            prunes = ()
            if not (isinstance(self.target_bits, (int, float)) and 0.5 <= self.target_bits <= 32):
                raise SdhwError(f"target bits/weight must be in [0.5, 32], not {self.target_bits!r}")
        for p in prunes:
            if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
                raise SdhwError(f"prune ratio must be in [0, 1), not {p!r}")
        if not (isinstance(self.exp_bits, int) and 1 <= self.exp_bits <= 4):
            raise SdhwError(f"exponent bits must be in 1..4, not {self.exp_bits!r}")
        if not (self.threshold >= 0 and math.isfinite(self.threshold)):
            raise SdhwError(f"threshold must be a finite number >= 0, not {self.threshold!r}")
        if not (isinstance(self.block_rows, int) and 1 <= self.block_rows <= 4096):
            raise SdhwError(f"block rows must be in 1..4096, not {self.block_rows!r}")
        if self.basis_group is not None and not (isinstance(self.basis_group, int) and self.basis_group >= 1):
            raise SdhwError(f"basis group must be a positive integer, not {self.basis_group!r}")
        if not (isinstance(self.max_iter, int) and 1 <= self.max_iter <= 1000):
            raise SdhwError(f"iteration cap must be in 1..1000, not {self.max_iter!r}")
        if not (isinstance(self.weight_bits, int) and 2 <= self.weight_bits <= 16):
            raise SdhwError(f"weight bits must be in 2..16, not {self.weight_bits!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise SdhwError(f"epochs must be an integer >= 0, not {self.epochs!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise SdhwError(f"seed must be an integer >= 0, not {self.seed!r}")
        if not (isinstance(self.dense_layers, tuple)
                and all(isinstance(i, int) and not isinstance(i, bool) for i in self.dense_layers)):
            raise SdhwError(f"dense layers must be a tuple of layer indices, not {self.dense_layers!r}")

    def dense_indices(self, n_layers: int) -> set[int]:
        """``dense_layers`` as indices 0 .. n_layers - 1; an index outside the model is a clear error."""
        for i in self.dense_layers:
            if not -n_layers <= i < n_layers:
                raise SdhwError(f"dense layer index {i} is outside the model's {n_layers} layers "
                                f"(valid: {-n_layers}..{n_layers - 1})")
        return {i % n_layers for i in self.dense_layers}

    def prune_for(self, index: int, n_layers: int) -> float:
        if isinstance(self.prune, tuple):
            if len(self.prune) != n_layers:
                raise SdhwError(f"{len(self.prune)} prune ratios given for a model of {n_layers} layers")
            return float(self.prune[index])
        return float(self.prune)


@dataclass
class LayerReport:
    """Per-layer figures of a compile (bits are filled in by the report once the program is packed)."""

    index: int
    describe: str
    mode: str                                   # "sd" | "dense"
    shape: tuple[int, ...]
    prune: float = 0.0
    row_density: float = 1.0
    element_density: float = 1.0
    rel_error: float = 0.0                      # ||W - W_hw|| / ||W||, W_hw the rebuilt MAC weights * scale
    plain_pow2_rel_error: float = float("nan")  # same for plain pow2 rounding of W (no basis)
    history: list[float] = field(default_factory=list)


@dataclass
class CompileResult:
    program: Program
    layers: list[LayerReport]
    options: CompileOptions


def auto_basis_group(rows_per_block: int, n_filters: int) -> int:
    """Smallest power of two of filters whose blocks hold about ``BASIS_TARGET_WEIGHTS`` weights."""
    want = max(1, BASIS_TARGET_WEIGHTS // (3 * rows_per_block))
    return min(1 << (want.bit_length() - 1), n_filters)


@dataclass
class _SDState:
    """A layer's SD parameters during compilation (float)."""

    shape: tuple[int, ...]
    keep: np.ndarray            # (M, R) row keep-mask
    latent: np.ndarray          # (M, R, 3) coefficients before power-of-two rounding
    bases: np.ndarray           # (ng, nb, 3, 3)
    e_lo: int
    e_hi: int
    basis_group: int
    block_rows: int
    history: list[float]

    def cq(self) -> np.ndarray:
        return pow2_quantize(self.latent, self.e_lo, self.e_hi) * self.keep[..., None]

    def rows(self, cq: np.ndarray | None = None) -> np.ndarray:
        cq = self.cq() if cq is None else cq
        out = np.zeros_like(cq)
        m, r, _ = cq.shape
        for g, b, fs, rs in block_slices(m, r, self.basis_group, self.block_rows):
            out[fs, rs] = cq[fs, rs] @ self.bases[g, b]
        return out

    def weight(self) -> np.ndarray:
        return from_rows(self.rows(), self.shape)

    def pullback(self, grad_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of (bases, latent) from the weight gradient; straight-through the pow2 rounding."""
        g_rows = to_rows(grad_w)
        cq = self.cq()
        g_bases = np.zeros_like(self.bases)
        g_latent = np.zeros_like(self.latent)
        m, r, _ = cq.shape
        for g, b, fs, rs in block_slices(m, r, self.basis_group, self.block_rows):
            g_bases[g, b] = cq[fs, rs].reshape(-1, 3).T @ g_rows[fs, rs].reshape(-1, 3)
            g_latent[fs, rs] = g_rows[fs, rs] @ self.bases[g, b].T
        return g_bases, g_latent * self.keep[..., None]

    def decomposition(self) -> Decomposition:
        return Decomposition(self.cq(), self.bases, self.e_lo, self.e_hi, 0, self.history)


def _calibrate(model: Model, x: np.ndarray) -> list[QParams]:
    """Activation quantisation of the input and of every layer output, from min/max on ``x``."""
    _, outs = forward_float(model, x, trace=True)
    qs = [choose_qparams(x.min(), x.max())]
    for layer, out in zip(model.layers, outs):
        qs.append(choose_qparams(0.0 if layer.relu else out.min(), out.max()))
    return qs


def _decompose_layer(layer: Layer, prune: float, opts: CompileOptions) -> tuple[_SDState, float]:
    rows = to_rows(layer.weight)
    keep = structural_mask(rows, prune)
    block_rows = min(opts.block_rows, rows.shape[1])
    group = opts.basis_group or auto_basis_group(block_rows, rows.shape[0])
    group = min(group, rows.shape[0])
    dec = decompose(rows, exp_bits=opts.exp_bits, keep=keep, threshold=opts.threshold, basis_group=group,
                    block_rows=block_rows, max_iter=opts.max_iter)
    plain = np.where(keep[..., None], pow2_quantize(rows, dec.e_lo, dec.e_hi), 0.0)
    plain_err = float(np.linalg.norm(rows - plain) / max(np.linalg.norm(rows), 1e-30))
    return _SDState(tuple(layer.weight.shape), keep, dec.cq.copy(), dec.bases.copy(), dec.e_lo, dec.e_hi,
                    group, block_rows, list(dec.history)), plain_err


AUTO_PRUNE_STEPS = tuple(round(0.1 * k, 1) for k in range(9))      # 0.0 .. 0.8


def _estimated_bits(state: _SDState, exp_bits: int) -> float:
    """Stored bits of an SD layer record (header, ~20-bit biases, bases, bitmap, codes), before packing."""
    m, r = state.keep.shape
    nonzero_rows = int(np.any(state.cq() != 0, axis=2).sum())
    return 8 * 56 + 20 * m + 72 * state.bases.shape[0] * state.bases.shape[1] + m * r \
        + nonzero_rows * 3 * (1 + exp_bits)


def _auto_prune(model: Model, x: np.ndarray, opts: CompileOptions, sd_layers: list[int], cache: dict,
                progress: Callable[[str], None] | None) -> dict[int, float]:
    """Per-layer prune ratios reaching ``opts.target_bits`` with the least relative output error.

    Greedy: from no pruning, repeatedly raise by 0.1 the ratio of the layer whose output error (the
    layer's float inputs through the SD weights vs the float weights) grows least per bit saved.
    Dense layers count at 8 bits/weight.
    """
    _, outs = forward_float(model, x, trace=True)
    inputs = [x] + outs[:-1]

    def candidate(i: int, p: float) -> tuple[float, float]:
        if (i, p) not in cache:
            cache[i, p] = _decompose_layer(model.layers[i], p, opts)
        state = cache[i, p][0]
        layer = model.layers[i]
        ref = layer_matmul(layer.kind, inputs[i], layer.weight, layer.stride, layer.groups, 0.0)
        got = layer_matmul(layer.kind, inputs[i], state.weight(), layer.stride, layer.groups, 0.0)
        err = float(np.sum((ref - got) ** 2) / max(np.sum(ref ** 2), 1e-30))
        return _estimated_bits(state, opts.exp_bits), err

    budget = opts.target_bits * model.n_weights - 8 * 40
    fixed = sum(8 * model.layers[i].weight.size for i in range(len(model.layers)) if i not in sd_layers)
    step = {i: 0 for i in sd_layers}
    current = {i: candidate(i, 0.0) for i in sd_layers}
    while fixed + sum(b for b, _ in current.values()) > budget:
        best = None
        for i in sd_layers:
            # the next ratio that saves bits: a step that only drops rows already all-zero saves none
            for nxt in range(step[i] + 1, len(AUTO_PRUNE_STEPS)):
                bits, err = candidate(i, AUTO_PRUNE_STEPS[nxt])
                if bits < current[i][0]:
                    break
            else:
                continue
            saved = current[i][0] - bits
            cost = (err - current[i][1]) / saved
            if best is None or cost < best[0]:
                best = (cost, i, nxt, (bits, err))
        if best is None:
            warnings.warn(f"prune=auto cannot reach {opts.target_bits} bits/weight; using the largest ratios",
                          stacklevel=3)
            break
        _, i, step[i], current[i] = best
    ratios = {i: AUTO_PRUNE_STEPS[step[i]] for i in sd_layers}
    if progress is not None:
        progress("prune=auto chose " + ", ".join(f"layer {i}: {p}" for i, p in ratios.items()))
    return ratios


def _finetune(model: Model, states: list[_SDState | None], act_q: list[QParams], x: np.ndarray,
              opts: CompileOptions, progress: Callable[[str], None] | None) -> list[np.ndarray]:
    """SD-preserving fine-tuning against the float model's outputs; returns the tuned biases."""
    target = forward_float(model, x).reshape(len(x), -1)
    scale = max(float(np.std(target)), 1e-12)
    biases = [layer.bias.copy() for layer in model.layers]
    dense_w = [None if s is not None else layer.weight.copy() for layer, s in zip(model.layers, states)]
    params: list[np.ndarray] = []
    for s, b, dw in zip(states, biases, dense_w):
        params += [s.bases, s.latent] if s is not None else [dw]
        params.append(b)

    def weights():
        return [s.weight() if s is not None else dw for s, dw in zip(states, dense_w)]

    opt = Adam(params, opts.lr)
    rng = np.random.default_rng(opts.seed)
    batch = 64
    for epoch in range(opts.epochs):
        opt.lr = opts.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / opts.epochs))     # cosine decay
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            ws = weights()
            fwd = forward(model, ws, biases, x[idx], act_q)
            diff = (fwd.logits - target[idx]) / scale
            total += float(np.sum(diff ** 2))
            gw, gb = backward(model, ws, fwd, 2.0 * diff / (scale * len(idx)))
            grads = []
            for s, g_w, g_b in zip(states, gw, gb):
                grads += list(s.pullback(g_w)) if s is not None else [g_w]
                grads.append(g_b)
            opt.step(grads)
        if progress is not None and (epoch % 10 == 9 or epoch == opts.epochs - 1):
            progress(f"fine-tune epoch {epoch + 1}/{opts.epochs}: output mse {total / x.size:.5f}")
    for s, dw, layer in zip(states, dense_w, model.layers):
        if s is None:
            layer.weight[...] = dw
    return biases


def _integer_layer(layer: Layer, in_shape, in_q: QParams, out_q: QParams, weights, w_scale: float,
                   bias: np.ndarray, mac_weights: np.ndarray, where: str) -> QLayer:
    acc_scale = in_q.scale * w_scale
    taps = mac_weights.reshape(mac_weights.shape[0], -1).sum(axis=1)
    bias_q = np.round(bias / acc_scale).astype(np.int64) - in_q.zero_point * taps
    if np.abs(bias_q).max(initial=0) >= 1 << 31:
        raise SdhwError(f"{where}: the bias does not fit int32 at this quantisation; rescale the layer")
    m0, shift = quantize_multiplier(acc_scale / out_q.scale)
    return QLayer(layer.kind, tuple(in_shape), weights, bias_q, in_q, out_q, m0, shift, layer.relu,
                  layer.stride, layer.groups, w_scale)


def compile_model(model: Model, x_cal: np.ndarray, opts: CompileOptions = CompileOptions(), *,
                  progress: Callable[[str], None] | None = None) -> CompileResult:
    """Quantise ``model`` into a program (SD where possible), calibrated and tuned on inputs ``x_cal``."""
    for i, layer in enumerate(model.layers):
        if layer.kind not in WEIGHTED_KINDS:
            raise SdhwError(f"layer {i} ({layer.describe()}): the accelerator does not run {layer.kind} layers yet; "
                            f"it runs {' and '.join(WEIGHTED_KINDS)} layers")
    x_cal = np.asarray(x_cal, dtype=np.float64).reshape((-1, *model.input_shape))
    if len(x_cal) == 0:
        raise SdhwError("no calibration inputs given")
    if not np.all(np.isfinite(x_cal)):
        raise SdhwError("calibration inputs contain NaN or Inf")
    model = Model(model.input_shape, [replace(layer, weight=layer.weight.copy(), bias=layer.bias.copy())
                                      for layer in model.layers])
    n = len(model.layers)
    kept_dense = opts.dense_indices(n)
    sd_layers = [] if opts.dense else [i for i, layer in enumerate(model.layers)
                                       if layer.sd_capable and i not in kept_dense]
    for i, layer in enumerate(model.layers):
        if not opts.dense and not layer.sd_capable:
            warnings.warn(f"layer {i} ({layer.describe()}) is not decomposable by SD; it stays dense int8",
                          stacklevel=2)
    cache: dict = {}
    if opts.prune == "auto":
        ratios = _auto_prune(model, x_cal, opts, sd_layers, cache, progress)
    else:
        ratios = {i: opts.prune_for(i, n) for i in sd_layers}
    states: list[_SDState | None] = []
    reports: list[LayerReport] = []
    for i, layer in enumerate(model.layers):
        rep = LayerReport(i, layer.describe(), "dense", tuple(layer.weight.shape))
        if i not in ratios:
            states.append(None)
        else:
            if progress is not None:
                progress(f"decomposing layer {i} ({layer.describe()}, prune {ratios[i]})")
            if (i, ratios[i]) not in cache:
                cache[i, ratios[i]] = _decompose_layer(layer, ratios[i], opts)
            state, rep.plain_pow2_rel_error = cache[i, ratios[i]]
            rep.mode, rep.prune = "sd", ratios[i]
            states.append(state)
        reports.append(rep)
    act_q = _calibrate(model, x_cal)
    float_weights = [layer.weight.copy() for layer in model.layers]
    biases = [layer.bias for layer in model.layers]
    # the dense baseline stays plain post-training int8 quantisation: fine-tuning is part of the SD method
    if opts.method == "finetune" and opts.epochs > 0 and any(s is not None for s in states):
        biases = _finetune(model, states, act_q, x_cal, opts, progress)
    layers = []
    shapes = model.shapes()
    for i, (layer, state) in enumerate(zip(model.layers, states)):
        rep = reports[i]
        if state is None:
            dense_bits = min(opts.weight_bits, 8)           # dense weights are stored as int8
            w_scale = symmetric_scale(np.abs(layer.weight).max(), dense_bits)
            qmax = (1 << (dense_bits - 1)) - 1
            weights = np.clip(np.round(layer.weight / w_scale), -qmax, qmax).astype(np.int8)
            mac = weights.astype(np.int64)
        else:
            sdw, w_scale = quantize_decomposition(state.decomposition(), shape=state.shape, exp_bits=opts.exp_bits,
                                                  basis_group=state.basis_group, block_rows=state.block_rows,
                                                  weight_bits=opts.weight_bits, target=state.rows())
            weights, mac = sdw, sdw.rebuild()
            rep.row_density = float(sdw.nonzero_rows.mean())
            rep.element_density = float(np.mean(sdw.codes != 0))
            rep.history = state.history
        ref = float_weights[i]
        rep.rel_error = float(np.linalg.norm(ref - mac * w_scale) / max(np.linalg.norm(ref), 1e-30))
        layers.append(_integer_layer(layer, shapes[i], act_q[i], act_q[i + 1], weights, w_scale, biases[i], mac,
                                     f"layer {i}"))
    return CompileResult(Program(model.input_shape, act_q[0], layers), reports, opts)
