"""A small NumPy trainer (FC, conv and pooling layers, manual backward) for the bundled examples and SD fine-tuning.

Only what the golden model needs: softmax cross-entropy, Adam, optional fake quantisation of
activations with a straight-through estimator, and a hook that maps each layer's weight gradient onto
whatever parameters produce that weight (plain weights, or SD's basis and latent coefficients).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import SdhwError
from .model import WEIGHTED_KINDS, Model, conv_patches, layer_matmul, pool_windows
from .quant import ACT_MAX, ACT_MIN, QParams
from .sd import PRUNE_GROUP, from_rows, structural_mask, to_rows


def softmax_xent(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.mean(np.log(p[np.arange(n), labels] + 1e-12)))
    p[np.arange(n), labels] -= 1.0
    return loss, p / n


def fake_quant(x: np.ndarray, q: QParams) -> tuple[np.ndarray, np.ndarray]:
    """Quantise-dequantise ``x`` on ``q``'s int8 grid; also the straight-through mask (inside the range)."""
    lo, hi = q.scale * (ACT_MIN - q.zero_point), q.scale * (ACT_MAX - q.zero_point)
    return q.dequantize(q.quantize(x)), (x >= lo) & (x <= hi)


def _conv_backward(x_shape, weight, stride, groups, grad_out, patches):
    k = weight.shape[2]
    pad = k // 2
    n, ho, wo, m = grad_out.shape
    if groups == 1:
        g2 = grad_out.reshape(-1, m)
        dw = (g2.T @ patches.reshape(g2.shape[0], -1)).reshape(weight.shape)
        dp = (g2 @ weight.reshape(m, -1)).reshape(patches.shape)
    else:
        dw = np.einsum("nhwc,nhwcij->cij", grad_out, patches)[:, None]
        dp = grad_out[..., None, None] * weight[:, 0][None, None, None]
    _, h, w, c = x_shape
    dx = np.zeros((n, h + 2 * pad, w + 2 * pad, c))
    for i in range(k):
        for j in range(k):
            dx[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :] += dp[..., i, j]
    return dw, dx[:, pad:pad + h, pad:pad + w, :]


def _pool_forward(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "maxpool":
        return pool_windows(x).max(axis=-1)
    if kind == "avgpool":
        return pool_windows(x).mean(axis=-1)
    if kind == "gap":
        return x.mean(axis=(1, 2), keepdims=True)
    raise SdhwError(f"training does not support {kind} layers; it supports fc, conv, maxpool, avgpool, gap")


def _pool_backward(kind: str, x: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
    """Input gradient of a pooling layer; a max pool sends each window's gradient to its first maximum."""
    if kind == "gap":
        return np.broadcast_to(grad_out / (x.shape[1] * x.shape[2]), x.shape).copy()
    win = pool_windows(x)
    if kind == "maxpool":
        g_win = np.zeros_like(win)
        np.put_along_axis(g_win, win.argmax(axis=-1)[..., None], grad_out[..., None], axis=-1)
    else:
        g_win = np.broadcast_to(grad_out[..., None] / 4.0, win.shape)
    n, ho, wo, c, _ = win.shape
    dx = np.zeros(x.shape)
    dx[:, :2 * ho, :2 * wo] = g_win.reshape(n, ho, wo, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(
        n, 2 * ho, 2 * wo, c)
    return dx


@dataclass
class Forward:
    logits: np.ndarray
    cache: list


def forward(model: Model, weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray,
            act_q: list[QParams] | None = None) -> Forward:
    """Forward pass with the given weights; ``act_q`` (input + each layer output) adds fake quantisation."""
    x = x.reshape((-1, *model.input_shape))
    ste = np.ones_like(x, dtype=bool)
    if act_q is not None:
        x, ste = fake_quant(x, act_q[0])
    cache = []
    for n, (layer, w, b) in enumerate(zip(model.layers, weights, biases)):
        inp = x
        if layer.kind in WEIGHTED_KINDS:
            y = layer_matmul(layer.kind, inp, w, layer.stride, layer.groups, 0.0) + b
        else:
            y = _pool_forward(layer.kind, inp)
        relu_mask = y > 0 if layer.relu else np.ones_like(y, dtype=bool)
        if layer.relu:
            y = np.where(relu_mask, y, 0.0)
        ste = np.ones_like(y, dtype=bool)
        if act_q is not None:
            y, ste = fake_quant(y, act_q[n + 1])
        cache.append((inp, relu_mask & ste))
        x = y
    return Forward(x.reshape(x.shape[0], -1), cache)


def backward(model: Model, weights: list[np.ndarray], fwd: Forward, grad_logits: np.ndarray):
    """Gradients of the loss w.r.t. each layer's weight and bias."""
    grads_w, grads_b = [None] * len(model.layers), [None] * len(model.layers)
    g = grad_logits
    for n in range(len(model.layers) - 1, -1, -1):
        layer, w = model.layers[n], weights[n]
        inp, mask = fwd.cache[n]
        g = g.reshape(mask.shape) * mask
        if layer.kind not in WEIGHTED_KINDS:
            grads_w[n], grads_b[n] = np.zeros_like(w), np.zeros_like(model.layers[n].bias)
            g = _pool_backward(layer.kind, inp, g)
        elif layer.kind == "fc":
            x2 = inp.reshape(inp.shape[0], -1)
            grads_w[n] = g.T @ x2
            grads_b[n] = g.sum(axis=0)
            g = (g @ w).reshape(inp.shape)
        else:
            patches = conv_patches(inp, w.shape[2], layer.stride, 0.0)
            grads_b[n] = g.sum(axis=(0, 1, 2))
            grads_w[n], g = _conv_backward(inp.shape, w, layer.stride, layer.groups, g, patches)
    return grads_w, grads_b


class Adam:
    def __init__(self, params: list[np.ndarray], lr: float):
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray], b1=0.9, b2=0.999, eps=1e-8):
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / (1 - b1 ** self.t)) / (np.sqrt(v / (1 - b2 ** self.t)) + eps)


def train(model: Model, params: list[np.ndarray], materialise: Callable, pullback: Callable,
          x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch: int = 64, seed: int = 0,
          act_q: list[QParams] | None = None, weight_decay: float = 0.0,
          progress: Callable[[int, float], None] | None = None,
          after_step: Callable[[float], None] | None = None) -> None:
    """Minimise cross-entropy over ``params`` in place.

    ``materialise(params) -> (weights, biases)`` builds every layer's weight; ``pullback(params, gw, gb)``
    returns the gradients of ``params`` from the weight/bias gradients (chain rule, STE where quantised).
    ``after_step(lr)``, if given, runs after every optimiser step (a proximal step or a mask projection).
    """
    rng = np.random.default_rng(seed)
    opt = Adam(params, lr)
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            weights, biases = materialise(params)
            fwd = forward(model, weights, biases, x[idx], act_q)
            loss, grad = softmax_xent(fwd.logits, y[idx])
            total += loss * len(idx)
            gw, gb = backward(model, weights, fwd, grad)
            grads = pullback(params, gw, gb)
            if weight_decay:
                grads = [g + weight_decay * p for g, p in zip(grads, params)]
            opt.step(grads)
            if after_step is not None:
                after_step(opt.lr)
        if progress is not None:
            progress(epoch, total / len(x))


def train_float(model: Model, x: np.ndarray, y: np.ndarray, *, epochs: int = 40, lr: float = 2e-3,
                seed: int = 0, weight_decay: float = 1e-4) -> None:
    """Train a float model's weights and biases in place."""
    params = [a for layer in model.layers for a in (layer.weight, layer.bias)]
    train(model, params, lambda p: (p[0::2], p[1::2]),
          lambda p, gw, gb: [g for pair in zip(gw, gb) for g in pair],
          x, y, epochs=epochs, lr=lr, seed=seed, weight_decay=weight_decay)


# ------------------------------------------------------------ SD-aware training: learned structural sparsity
REGULARISERS = ("group_lasso", "compressibility")


def _row_groups(weight: np.ndarray, group: int):
    """``(rows, [(filter slice, group size in weights)])`` of a weight's SD rows (:func:`golden.sd.to_rows`)."""
    rows = to_rows(np.asarray(weight, dtype=np.float64))
    m = rows.shape[0]
    return rows, [(slice(f0, min(f0 + group, m)), 3 * (min(f0 + group, m) - f0)) for f0 in range(0, m, group)]


def row_group_norms(weight: np.ndarray, group: int = PRUNE_GROUP) -> np.ndarray:
    """L2 norm of every row group ``(n_filter_groups, R)``: row ``i`` of ``group`` consecutive filters.

    These are the units :func:`golden.sd.structural_mask` keeps or drops together.
    """
    rows, groups = _row_groups(weight, group)
    return np.stack([np.sqrt(np.sum(rows[fs] ** 2, axis=(0, 2))) for fs, _ in groups])


def prox_group_lasso(weight: np.ndarray, step: float, group: int = PRUNE_GROUP) -> np.ndarray:
    """Proximal operator of ``step * sum_g sqrt(d_g) * ||v_g||`` over the row groups (``d_g`` weights each).

    Each row group's norm shrinks by ``step * sqrt(d_g)``; a group whose norm is below that becomes exactly
    zero, which is what lets training choose the rows that structural pruning then drops for free.
    """
    if step < 0:
        raise ValueError(f"proximal step must be >= 0, not {step!r}")
    rows, groups = _row_groups(weight, group)
    out = rows.copy()
    for fs, size in groups:
        norm = np.sqrt(np.sum(rows[fs] ** 2, axis=(0, 2)))
        factor = np.maximum(0.0, 1.0 - step * np.sqrt(size) / np.maximum(norm, 1e-300))
        out[fs] *= factor[None, :, None]
    return from_rows(out, np.shape(weight))


def compressibility_loss(weight: np.ndarray, group: int = PRUNE_GROUP) -> tuple[float, np.ndarray]:
    """Aytekin et al.'s compressibility loss ``||n||_1 / ||n||_2`` on the row-group norms ``n``, and its gradient.

    Scale invariant, so it does not simply shrink the weights: it is smallest when few row groups carry all
    the energy (1 for a single live group, sqrt(#groups) when all are equal).
    """
    rows, groups = _row_groups(weight, group)
    norms = [np.sqrt(np.sum(rows[fs] ** 2, axis=(0, 2))) for fs, _ in groups]
    n = np.concatenate(norms)
    l1, l2 = float(n.sum()), float(np.sqrt(np.sum(n ** 2)))
    if l2 == 0.0:
        return 0.0, np.zeros(np.shape(weight))
    grad_rows = np.zeros_like(rows)
    for (fs, _), nf in zip(groups, norms):
        d_norm = 1.0 / l2 - l1 * nf / l2 ** 3                     # d loss / d n
        grad_rows[fs] = rows[fs] * (d_norm / np.maximum(nf, 1e-300))[None, :, None]
    return l1 / l2, from_rows(grad_rows, np.shape(weight))


def learned_prune(weight: np.ndarray, group: int = PRUNE_GROUP) -> float:
    """Largest prune ratio at which :func:`golden.sd.structural_mask` drops only all-zero row groups.

    That is the fewest all-zero rows of any filter group over the row count, so compiling with this
    ratio (``--prune``) removes exactly the sparsity training learned and nothing the model uses.
    """
    norms = row_group_norms(weight, group)
    return float(np.min(np.sum(norms == 0.0, axis=1))) / norms.shape[1]


@dataclass
class RowSparseResult:
    """What :func:`train_row_sparse` chose: per weighted layer index, the prune ratio that reproduces its mask."""

    prune: dict[int, float]
    history: list[float]


def train_row_sparse(model: Model, x: np.ndarray, y: np.ndarray, *, strength: float, epochs: int = 30,
                     finetune_epochs: int = 20, lr: float = 1e-3, seed: int = 0,
                     regulariser: str = "group_lasso", group: int = PRUNE_GROUP, negligible: float = 0.05,
                     min_prune: float | Sequence[float] = 0.0, max_prune: float = 0.8, weight_decay: float = 1e-4,
                     progress: Callable[[str], None] | None = None) -> RowSparseResult:
    """Train ``model`` in place so that SD's structural pruning costs (almost) nothing.

    1. Cross-entropy plus a row-group sparsity term on every SD-decomposable layer: ``group_lasso`` (a
       proximal step after each Adam step, scaled by its learning rate; exact zeros) or ``compressibility``
       (:func:`compressibility_loss` added to the loss with weight ``strength``).
    2. Per layer, the row groups whose norm is at most ``negligible`` times the layer's mean row-group norm
       are counted; their mean count per filter group (clipped to ``[min_prune, max_prune]`` of the rows;
       ``min_prune`` may give one floor per SD layer) sets the layer's ratio, and
       :func:`golden.sd.structural_mask` at that ratio (weakest row groups first) fixes the mask.
    3. Fine-tuning with the mask held (masked rows stay exactly zero).

    Returns the ratios; compiling with them (``--prune r0,r1,...``) drops exactly the learned rows.
    """
    if regulariser not in REGULARISERS:
        raise ValueError(f"regulariser must be one of {', '.join(REGULARISERS)}, not {regulariser!r}")
    sd_layers = [i for i, layer in enumerate(model.layers) if layer.sd_capable]
    floors = [float(min_prune)] * len(sd_layers) if np.isscalar(min_prune) else [float(p) for p in min_prune]
    if len(floors) != len(sd_layers):
        raise ValueError(f"{len(floors)} min_prune ratios given for {len(sd_layers)} SD layers")
    if strength < 0 or not all(0.0 <= p <= max_prune < 1.0 for p in floors):
        raise ValueError(f"need strength >= 0 and 0 <= min_prune <= max_prune < 1, not {strength!r}, "
                         f"{min_prune!r}, {max_prune!r}")
    params = [a for layer in model.layers for a in (layer.weight, layer.bias)]
    history: list[float] = []

    def materialise(p):
        return p[0::2], p[1::2]

    def plain_pullback(p, gw, gb):
        return [g for pair in zip(gw, gb) for g in pair]

    def sparse_pullback(p, gw, gb):
        grads = plain_pullback(p, gw, gb)
        if regulariser == "compressibility":
            for i in sd_layers:
                grads[2 * i] = grads[2 * i] + strength * compressibility_loss(p[2 * i], group)[1]
        return grads

    def prox(step_lr):
        if regulariser == "group_lasso":
            for i in sd_layers:
                params[2 * i][...] = prox_group_lasso(params[2 * i], step_lr * strength, group)

    def log(epoch, loss):
        history.append(loss)
        if progress is not None and epoch % 10 == 9:
            progress(f"row-sparse training epoch {epoch + 1}: loss {loss:.4f}")

    train(model, params, materialise, sparse_pullback, x, y, epochs=epochs, lr=lr, seed=seed,
          weight_decay=weight_decay, progress=log, after_step=prox)
    masks: dict[int, np.ndarray] = {}
    for i, floor in zip(sd_layers, floors):
        w = params[2 * i]
        norms = row_group_norms(w, group)
        small = norms <= negligible * max(float(norms.mean()), 1e-300)
        r = norms.shape[1]
        n_drop = int(np.clip(round(float(small.sum(axis=1).mean())), round(floor * r), int(max_prune * r)))
        keep = structural_mask(to_rows(w), n_drop / r, group)
        masks[i] = from_rows(np.repeat(keep[..., None], 3, axis=2).astype(np.float64), w.shape)
        w *= masks[i]

    def masked_pullback(p, gw, gb):
        grads = plain_pullback(p, gw, gb)
        for i in sd_layers:
            grads[2 * i] = grads[2 * i] * masks[i]
        return grads

    def project(_lr):
        for i in sd_layers:
            params[2 * i] *= masks[i]

    train(model, params, materialise, masked_pullback, x, y, epochs=finetune_epochs, lr=lr, seed=seed + 1,
          weight_decay=weight_decay, progress=log, after_step=project)
    return RowSparseResult({i: learned_prune(params[2 * i], group) for i in sd_layers}, history)
