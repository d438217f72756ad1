"""Row-sparse SD-aware training (golden.train) and the bits/weight vs accuracy sweep (golden.curves)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from golden import curves
from golden import format as fmt
from golden.compiler import CompileOptions, compile_model
from golden.curves import NpzData, Sweep, learned_ratios, main, markdown, sweep_model
from golden.datasets import DIGITS_MLP
from golden.model import Layer, Model, accuracy, forward_float, save_npz
from golden.sd import structural_mask, to_rows
from golden.staged import compile_staged
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


def _staged_toy(tmp_path, seed):
    """A conv -> max pool -> FC model file whose FC layer's last two SD rows are zero, and its data files."""
    rng = np.random.default_rng(seed)
    fc = rng.normal(0, 0.5, (3, 16))
    fc[:, 12:] = 0.0                                        # inputs 12..15: rows 4 and 5 of 6
    model = Model((4, 4, 2), [Layer("conv", rng.normal(0, 0.5, (4, 2, 3, 3)), np.zeros(4), relu=True),
                              Layer("maxpool"), Layer("fc", fc, np.zeros(3))])
    save_npz(model, tmp_path / "toy.npz")
    x = rng.uniform(0, 1, (60, 4, 4, 2))
    y = np.argmax(forward_float(model, x), axis=1)
    np.savez(tmp_path / "calib.npz", x=x[:30])
    np.savez(tmp_path / "test.npz", x=x[30:], y=y[30:])
    return model


def test_sweep_compiles_a_pooling_model_staged(tmp_path):
    seed = 7
    model = _staged_toy(tmp_path, seed)
    learned = learned_ratios(model)
    assert learned == (0.0, round(learned_prune(model.layers[2].weight), 4)) == (0.0, 0.3333)   # FC/conv only
    sweep = Sweep(tmp_path / "toy.npz", (0.5,), (3,), 0, data=NpzData(tmp_path / "calib.npz", tmp_path / "test.npz"),
                  dataset="toy", dense_layers=(0,), learned_exp_bits=(2, 3))
    res = sweep_model("toy", sweep, seeds=1, log=lambda s: None)
    msg = f"seed {seed}"
    assert res["staged"] and res["dataset"] == "toy" and res["test_samples"] == 30, msg
    assert [(p["setting"], p["exp_bits"]) for p in res["points"]] == [("uniform", 3), ("learned", 2), ("learned", 3)]
    x_cal = np.load(tmp_path / "calib.npz")["x"]
    for point in res["points"]:
        prune = tuple(point["prune"]) if isinstance(point["prune"], list) else point["prune"]
        opts = CompileOptions(prune=prune, exp_bits=point["exp_bits"], epochs=0, dense_layers=(0,))
        staged = compile_staged(model, x_cal, opts)
        assert point["bits_per_weight"] == pytest.approx(staged.bits_per_weight), msg   # header + FC/conv records
        assert not staged.runs[0].program.layers[0].is_sd, msg                           # first conv kept int8
        assert len(point["row_density"]) == 2, msg
    text = markdown({"toy": res})
    assert "toy test split (30 images, 1 image = 3.3 points)" in text and "`golden.staged`" in text
    assert "Layer 0 kept dense int8" in text and "| learned | 0,0.3333 | 2 | 0 | 1 |" in text


def _fake_result(name, acc):
    point = {"setting": "uniform", "prune": 0.5, "exp_bits": 2, "epochs": 60, "row_density": [0.5], "seeds": 2,
             "bits_per_weight": 2.0, "bits_per_weight_max": 2.0, "accuracy": acc, "accuracy_min": acc - 0.01,
             "accuracy_max": acc + 0.01, "accuracy_per_seed": [acc - 0.01, acc + 0.01], "seconds": 1.0,
             "delta_points": -0.5, "worst_delta_points": -1.5}
    return {"model": f"{name}.npz", "weights": 100, "float_accuracy": acc + 0.005, "test_samples": 450,
            "learned_prune": None, "points": [point], "smallest_within_target": None}


def test_curves_merges_into_the_earlier_results(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"mlp": _fake_result("mlp", 0.97), "cnn": _fake_result("cnn", 0.98)}
    (out / "compression.json").write_text(json.dumps(earlier))
    (out / "compression_mlp.png").write_bytes(b"earlier plot")
    monkeypatch.setattr(curves, "sweep_model", lambda name, sweep, seeds, log: {**_fake_result(name, 0.95),
                                                                                "dataset": "MNIST"})
    assert main(["--out", str(out), "--models", "mnist"]) == 0
    results = json.loads((out / "compression.json").read_text())
    assert list(results) == ["mlp", "cnn", "mnist"]
    assert results["mlp"] == earlier["mlp"] and results["cnn"] == earlier["cnn"]
    text = (out / "compression.md").read_text()
    for section in markdown(earlier).split("\n## ")[1:]:                   # the earlier sections, unchanged
        assert "\n## " + section.rstrip("\n") in text
    assert "## mnist (mnist.npz" in text and "MNIST test split (450 images" in text
    assert (out / "compression_mlp.png").read_bytes() == b"earlier plot"     # only the swept model's plot
    monkeypatch.setattr(curves, "sweep_model", lambda name, sweep, seeds, log: _fake_result(name, 0.9))
    assert main(["--out", str(out), "--models", "cnn"]) == 0                 # a swept model replaces its entry
    results = json.loads((out / "compression.json").read_text())
    assert list(results) == ["mlp", "cnn", "mnist"] and results["cnn"]["float_accuracy"] == pytest.approx(0.905)


def test_curves_refuses_to_overwrite_unreadable_results(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "compression.json").write_text("{not json")
    monkeypatch.setattr(curves, "sweep_model", lambda *a, **k: pytest.fail("swept before checking the results"))
    assert main(["--out", str(out), "--models", "mlp"]) == 1
    assert "move it away" in capsys.readouterr().err
    assert (out / "compression.json").read_text() == "{not json"
    assert sorted(p.name for p in out.iterdir()) == ["compression.json"]
