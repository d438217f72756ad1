"""Train the bundled digits examples (fixed seeds) and write them under golden/data/.

Writes ``digits.npz`` (scikit-learn's bundled 8x8 digits with a fixed train/test split),
``digits_mlp.npz`` (a scikit-learn MLPClassifier) and ``digits_cnn.npz``
(a small CNN trained with golden's
NumPy trainer). Run with ``make models``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from golden.datasets import DIGITS_PATH, load_digits_split  # noqa: E402
from golden.model import Layer, Model, accuracy, forward_float, from_sklearn, save_npz  # noqa: E402
from golden.train import train_float  # noqa: E402

SEED = 0


def write_dataset() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.data.astype(np.uint8)
    y = digits.target.astype(np.uint8)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.25, random_state=SEED, stratify=y)
    np.savez_compressed(DIGITS_PATH, x_train=x[train_idx], y_train=y[train_idx], x_test=x[test_idx],
                        y_test=y[test_idx])


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
    save_npz(train_mlp(x, y, xt, yt), DIGITS_PATH.parent / "digits_mlp.npz")
    save_npz(train_cnn(x, y, xt, yt), DIGITS_PATH.parent / "digits_cnn.npz")


if __name__ == "__main__":
    main()
