"""The bundled digits data: scikit-learn's 8x8 digits (UCI), stored with a fixed train/test split.

Pixels are 0..16; models take them scaled to ``[0, 1]`` (``pixel / 16``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
DIGITS_PATH = DATA_DIR / "digits.npz"
DIGITS_MLP = DATA_DIR / "digits_mlp.npz"
DIGITS_CNN = DATA_DIR / "digits_cnn.npz"


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` with ``x`` as float ``(N, 64)`` in ``[0, 1]``."""
    with np.load(DIGITS_PATH) as d:
        return (d["x_train"] / 16.0, d["y_train"].astype(np.int64), d["x_test"] / 16.0,
                d["y_test"].astype(np.int64))
