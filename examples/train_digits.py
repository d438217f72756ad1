"""Train the bundled digits examples (fixed seeds) and write them under golden/data/.

Writes ``digits.npz`` (scikit-learn's bundled 8x8 digits with a fixed train/test split),
``digits_mlp.npz`` (a scikit-learn MLPClassifier) and ``digits_cnn.npz``
(a small CNN trained with golden's
NumPy trainer). Run with ``make models``.

Both models then get row-sparse SD-aware training (:func:`golden.train.train_row_sparse`): a group lasso
on the SD row groups that structural pruning drops together, a mask from what it learned, and
fine-tuning with that mask held, so compiling at the learned per-layer ratios (printed, and the
``learned`` points of ``python -m golden.curves``) drops only rows the model no longer uses.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from golden.datasets import DIGITS_PATH, load_digits_split  # noqa: E402
from golden.model import Layer, Model, accuracy, forward_float, from_sklearn, save_npz  # noqa: E402
from golden.train import learned_prune, train_float, train_row_sparse  # noqa: E402

SEED = 0
# Row-sparse training per model: group-lasso strength, epochs with it, the per-SD-layer floor of the
# prune ratio, epochs of fine-tuning with the mask held.
MLP_SPARSE = {"strength": 0.05, "epochs": 15, "min_prune": 0.4, "finetune_epochs": 25}
CNN_SPARSE = {"strength": 0.05, "epochs": 10, "min_prune": (0.0, 0.5, 0.5, 0.5), "finetune_epochs": 15}


def write_dataset() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.data.astype(np.uint8)
    y = digits.target.astype(np.uint8)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.25, random_state=SEED, stratify=y)
    arrays = {"x_train": x[train_idx], "y_train": y[train_idx], "x_test": x[test_idx], "y_test": y[test_idx]}
    if DIGITS_PATH.is_file():
        with np.load(DIGITS_PATH) as old:
            if set(old.files) == set(arrays) and all(np.array_equal(old[k], v) for k, v in arrays.items()):
                return          # unchanged: keep the file byte for byte
    np.savez_compressed(DIGITS_PATH, **arrays)


def sparsify(name: str, model: Model, x, y, xt, yt, settings: dict) -> Model:
    """Row-sparse SD-aware training in place; prints the per-layer prune ratios to compile with."""
    res = train_row_sparse(model, x, y, seed=SEED, **settings)
    ratios = ",".join(f"{learned_prune(model.layers[i].weight):.4g}" for i in sorted(res.prune))
    acc = accuracy(forward_float(model, xt), yt)
    print(f"{name} after row-sparse training: golden float {acc:.4f}; compile with --prune {ratios}")
    return model


def train_mlp(x, y, xt, yt) -> Model:
    from sklearn.neural_network import MLPClassifier
    mlp = MLPClassifier(hidden_layer_sizes=(128, 64), activation="relu", alpha=1e-3, max_iter=600,
                        random_state=SEED, learning_rate_init=2e-3)
    mlp.fit(x, y)
    model = from_sklearn(mlp)
    print(f"MLP sklearn accuracy {mlp.score(xt, yt):.4f}, golden float {accuracy(forward_float(model, xt), yt):.4f}")
    return model


def train_cnn(x, y, xt, yt) -> Model:
    rng = np.random.default_rng(SEED)

    def he(*shape):
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)

    model = Model((8, 8, 1), [
        Layer("conv", he(16, 1, 3, 3), np.zeros(16), relu=True, stride=1),
        Layer("conv", he(32, 16, 3, 3), np.zeros(32), relu=True, stride=2),
        Layer("conv", he(32, 32, 1, 1), np.zeros(32), relu=True, stride=1),
        Layer("fc", he(10, 4 * 4 * 32), np.zeros(10)),
    ])
    train_float(model, x.reshape(-1, 8, 8, 1), y, epochs=40, lr=2e-3, seed=SEED)
    print(f"CNN golden float accuracy {accuracy(forward_float(model, xt.reshape(-1, 8, 8, 1)), yt):.4f}")
    return model


def main() -> None:
    write_dataset()
    x, y, xt, yt = load_digits_split()
    mlp = sparsify("MLP", train_mlp(x, y, xt, yt), x, y, xt, yt, MLP_SPARSE)
    save_npz(mlp, DIGITS_PATH.parent / "digits_mlp.npz")
    xi, xti = x.reshape(-1, 8, 8, 1), xt.reshape(-1, 8, 8, 1)
    cnn = sparsify("CNN", train_cnn(x, y, xt, yt), xi, y, xti, yt, CNN_SPARSE)
    save_npz(cnn, DIGITS_PATH.parent / "digits_cnn.npz")


if __name__ == "__main__":
    main()
