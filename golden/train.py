"""A small NumPy trainer (FC and conv layers, manual backward) for the bundled examples and SD fine-tuning.

Only what the golden model needs: softmax cross-entropy, Adam, optional fake quantisation of
activations with a straight-through estimator, and a hook that maps each layer's weight gradient onto
whatever parameters produce that weight (plain weights, or SD's basis and latent coefficients).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .model import Model, conv_patches, layer_matmul
from .quant import ACT_MAX, ACT_MIN, QParams


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
        y = layer_matmul(layer.kind, inp, w, layer.stride, layer.groups, 0.0) + b
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
        if layer.kind == "fc":
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
          progress: Callable[[int, float], None] | None = None) -> None:
    """Minimise cross-entropy over ``params`` in place.

    ``materialise(params) -> (weights, biases)`` builds every layer's weight; ``pullback(params, gw, gb)``
    returns the gradients of ``params`` from the weight/bias gradients (chain rule, STE where quantised).
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
        if progress is not None:
            progress(epoch, total / len(x))


def train_float(model: Model, x: np.ndarray, y: np.ndarray, *, epochs: int = 40, lr: float = 2e-3,
                seed: int = 0, weight_decay: float = 1e-4) -> None:
    """Train a float model's weights and biases in place."""
    params = [a for layer in model.layers for a in (layer.weight, layer.bias)]
    train(model, params, lambda p: (p[0::2], p[1::2]),
          lambda p, gw, gb: [g for pair in zip(gw, gb) for g in pair],
          x, y, epochs=epochs, lr=lr, seed=seed, weight_decay=weight_decay)
