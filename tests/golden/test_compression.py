"""Row-sparse SD-aware training (golden.train) and the bits/weight vs accuracy sweep (golden.curves)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from golden import format as fmt
from golden.compiler import CompileOptions, compile_model
from golden.curves import Sweep, main, markdown, sweep_model
from golden.datasets import DIGITS_MLP
from golden.model import Layer, Model, accuracy, forward_float
from golden.sd import structural_mask, to_rows
from golden.train import (
    compressibility_loss,
    learned_prune,
    prox_group_lasso,
    row_group_norms,
    train_row_sparse,
)


def _objective(v, w, step, group):
    sizes = [3 * min(group, v.shape[0] - f0) for f0 in range(0, v.shape[0], group)]
    norms = row_group_norms(v, group)
    return 0.5 * np.sum((v - w) ** 2) + step * float(np.sum(np.sqrt(sizes)[:, None] * norms))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prox_group_lasso_is_the_proximal_operator(seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (10, 14)) * rng.uniform(0, 1, (1, 14))      # FC: 5 rows of 3 (last one padded)
    step, group = 0.15, 4
    v = prox_group_lasso(w, step, group)
    norms_w, norms_v = row_group_norms(w, group), row_group_norms(v, group)
    sizes = np.array([3 * min(group, 10 - f0) for f0 in range(0, 10, group)])[:, None]
    shrink = step * np.sqrt(sizes)
    msg = f"seed {seed}"
    assert np.array_equal(norms_v == 0, norms_w <= shrink), msg                  # exact zeros below the step
    assert np.allclose(norms_v, np.maximum(norms_w - shrink, 0)), msg          # norm shrinks by the step
    base = _objective(v, w, step, group)
    for _ in range(50):                                                         # nothing nearby does better
        assert _objective(v + rng.normal(0, 1e-3, v.shape), w, step, group) >= base - 1e-12, msg


def test_compressibility_loss_gradient_and_scale_invariance():
    seed = 3
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (6, 4, 3, 3))
    loss, grad = compressibility_loss(w, group=2)
    assert compressibility_loss(5.0 * w, group=2)[0] == pytest.approx(loss)
    eps = 1e-6
    for _ in range(20):
        idx = tuple(int(rng.integers(0, s)) for s in w.shape)
        bump = np.zeros_like(w)
        bump[idx] = eps
        numeric = (compressibility_loss(w + bump, group=2)[0] - compressibility_loss(w - bump, group=2)[0]) / (2 * eps)
        assert grad[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), f"seed {seed} at {idx}"
    one = np.zeros_like(w)
    one[:2, 0, 0] = 1.0                                                         # a single live row group
    assert compressibility_loss(one, group=2)[0] == pytest.approx(1.0)


def test_compressibility_loss_descent_concentrates_row_groups():
    seed = 4
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (8, 30))
    start = compressibility_loss(w, group=8)[0]
    for _ in range(300):
        w -= 0.5 * compressibility_loss(w, group=8)[1]
    norms = np.sort(row_group_norms(w, group=8).ravel())
    assert compressibility_loss(w, group=8)[0] < 0.8 * start, f"seed {seed}"
    assert norms[:3].sum() < 0.1 * norms[-3:].sum(), f"seed {seed}: the weakest groups did not die out"


def test_learned_prune_drops_only_zero_row_groups():
    seed = 5
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (40, 8, 3, 3))                   # 24 rows, filter groups of 32 and 8
    rows = to_rows(w)
    rows[:32, [1, 5, 7]] = 0.0
    rows[32:, [2, 5, 9, 11]] = 0.0
    w = rows.reshape(w.shape)
    ratio = learned_prune(w)
    assert ratio == pytest.approx(3 / 24)
    keep = structural_mask(to_rows(w), ratio)
    assert np.all(np.abs(to_rows(w))[~keep] == 0.0), f"seed {seed}"
    assert learned_prune(rng.normal(0, 1, (4, 9))) == 0.0


def _toy_task(seed):
    """12 random inputs (four SD rows) of which only the first 6 (two rows) carry the label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (600, 12))
    y = (x[:, 0] + x[:, 1] - x[:, 3] > 0).astype(np.int64) + 2 * (x[:, 4] - x[:, 5] > 0)
    return x, y


@pytest.mark.parametrize("regulariser", ["group_lasso", "compressibility"])
def test_train_row_sparse_finds_the_informative_rows(regulariser):
    seed = 6
    x, y = _toy_task(seed)
    rng = np.random.default_rng(seed)
    model = Model((12,), [Layer("fc", rng.normal(0, 0.4, (16, 12)), np.zeros(16), relu=True),
                          Layer("fc", rng.normal(0, 0.3, (4, 16)), np.zeros(4))])
    strength = 0.5 if regulariser == "group_lasso" else 3.0
    res = train_row_sparse(model, x, y, strength=strength, epochs=15, finetune_epochs=5, lr=5e-3, seed=seed,
                           regulariser=regulariser, negligible=0.2)
    msg = f"seed {seed}, {regulariser}"
    first = model.layers[0].weight
    assert res.prune[0] == pytest.approx(0.5), msg                              # rows 2, 3 of 4 learned away
    assert np.all(first[:, 6:] == 0.0) and np.all(np.any(first[:, :6] != 0, axis=0)), msg
    assert accuracy(forward_float(model, x), y) > 0.8, msg
    result = compile_model(model, x, CompileOptions(method="paper", prune=tuple(res.prune[i] for i in (0, 1))))
    nonzero = result.program.layers[0].weights.nonzero_rows
    assert not nonzero[:, 2:].any(), msg                                       # the compiler drops exactly them


def test_train_row_sparse_rejects_bad_settings():
    model = Model((3,), [Layer("fc", np.ones((2, 3)), np.zeros(2))])
    x, y = np.ones((4, 3)), np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="regulariser"):
        train_row_sparse(model, x, y, strength=0.1, regulariser="l0")
    with pytest.raises(ValueError, match="min_prune"):
        train_row_sparse(model, x, y, strength=0.1, min_prune=0.9, max_prune=0.5)


def test_sweep_counts_every_stored_bit(tmp_path):
    res = sweep_model("mlp", Sweep(DIGITS_MLP, (0.5,), (2,), 0), seeds=1, log=lambda s: None)
    point = res["points"][0]
    from golden.datasets import load_digits_split
    from golden.model import load_npz
    model = load_npz(DIGITS_MLP)
    result = compile_model(model, load_digits_split()[0], CompileOptions(prune=0.5, epochs=0))
    assert point["bits_per_weight"] == pytest.approx(len(fmt.pack(result.program)) * 8 / model.n_weights)
    assert 0.0 < point["accuracy"] <= 1.0 and res["float_accuracy"] > 0.9
    assert "| uniform | 0.5 | 2 | 0 | 1 |" in markdown({"mlp": res})
    json.dumps(res)


def test_curves_rejects_unknown_model(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--out", str(out), "--models", "resnet"]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'resnet'" in err and "mlp" in err and "\n" not in err.strip()
    assert main(["--out", str(out), "--seeds", "0"]) == 1
    assert "--seeds" in capsys.readouterr().err
    assert not out.exists()
