"""``sdhw compile --eval --eval-data``: accuracy on the user's labelled data, in the model's own layout.

The labels are onnxruntime's own predictions on the NCHW inputs, so the float accuracy is 100 % exactly
when the data reaches the model in the right layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clirun import run
from test_cli import assert_nothing_written, assert_one_line_error

pytest.importorskip("onnx", reason="ONNX models need the onnx package (pip install 'sdhw[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the reference labels come from onnxruntime (pip install 'sdhw[onnx]')")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from golden.compiler import CompileOptions  # noqa: E402
from golden.model import accuracy, forward_float, load_eval_data  # noqa: E402
from golden.onnx_import import from_onnx, to_channel_last  # noqa: E402
from golden.staged import compile_staged, infer_staged  # noqa: E402

SEED = 11
CHANNELS, SIDE = 2, 8          # two channels: NCHW and NHWC data differ


def cnn_proto(pool: bool):
    """A 2x8x8 CNN: conv 3x3 -> ReLU (-> max pool) -> flatten -> FC 10, random weights of a fixed seed."""
    rng = np.random.default_rng(SEED)
    side = SIDE // 2 if pool else SIDE
    inits = {"w0": rng.normal(0, 0.4, (6, CHANNELS, 3, 3)), "b0": rng.normal(0, 0.1, 6),
             "w1": rng.normal(0, 0.3, (10, 6 * side * side)), "b1": rng.normal(0, 0.1, 10)}
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    last = "r"
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"))
        last = "p"
    nodes += [helper.make_node("Flatten", [last], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "w1", "b1"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", CHANNELS, SIDE, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write_case(tmp_path, pool: bool, n: int = 120):
    """The model file, NCHW inputs in [0, 1] and onnxruntime's predicted labels."""
    proto = cnn_proto(pool)
    model = tmp_path / "m.onnx"
    model.write_bytes(proto.SerializeToString())
    x = np.random.default_rng(SEED + 1).random((n, CHANNELS, SIDE, SIDE)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0].argmax(axis=1)
    np.savez(tmp_path / "cal.npz", x=x[: n // 2])
    np.savez(tmp_path / "test.npz", x=x[n // 2:], y=y[n // 2:])
    return model


def compile_args(tmp_path, model, *extra):
    return ["compile", model, "-o", tmp_path / "p.sdp", "--epochs", "1", "--calib", tmp_path / "cal.npz", *extra]


def test_eval_data_writes_program_and_reports_accuracy(tmp_path):
    model = write_case(tmp_path, pool=False)
    rc, stdout, err = run(compile_args(tmp_path, model, "--eval-data", tmp_path / "test.npz", "--json"))
    assert rc == 0, err
    acc = json.loads(stdout)["accuracy"]
    assert acc["float"] == 1.0, acc                  # onnxruntime's labels: the NCHW data was read right
    assert acc["test_samples"] == 60 and "test.npz" in acc["data"]
    assert acc["int8_dense"] >= 0.85 and acc["sd_finetune"] >= 0.5 and acc["sd_paper"] >= 0.3, acc
    assert (tmp_path / "p.sdp").is_file()


def test_eval_data_on_a_pooled_model_reports_and_writes_nothing(tmp_path):
    model = write_case(tmp_path, pool=True)
    rc, stdout, err = run(compile_args(tmp_path, model, "--eval", "--eval-data", tmp_path / "test.npz", "--json"))
    assert_one_line_error(rc, err, "no program written", "p.sdp", "maxpool", "does not run")
    report = json.loads(stdout)
    assert report["output"] is None and "maxpool" in report["not_written"]
    acc = report["accuracy"]
    assert acc["float"] == 1.0, acc
    assert acc["int8_dense"] >= 0.85, acc
    # the SD figure is golden's staged inference of the same compile (random weights decompose poorly)
    model = from_onnx(tmp_path / "m.onnx")
    with np.load(tmp_path / "cal.npz") as cal, np.load(tmp_path / "test.npz") as test:
        result = compile_staged(model, to_channel_last(cal["x"]), CompileOptions(epochs=1))
        expect = accuracy(infer_staged(result, to_channel_last(test["x"])), test["y"])
    assert acc["sd_finetune"] == expect and report["program"]["bits"] == result.bits
    assert [row["index"] for row in report["layers"]] == [0, 2]
    assert_nothing_written(tmp_path, {"m.onnx", "cal.npz", "test.npz"})


def test_eval_data_text_output_names_the_data(tmp_path):
    model = write_case(tmp_path, pool=True)
    rc, stdout, err = run(compile_args(tmp_path, model, "--eval-data", tmp_path / "test.npz", "--dense"))
    assert rc == 1, err
    assert "accuracy on 60 inputs of" in stdout and "test.npz: float 100.00%" in stdout, stdout
    assert "no program written" in stdout


def test_nchw_calibration_equals_channel_last(tmp_path):
    model = write_case(tmp_path, pool=False)
    with np.load(tmp_path / "cal.npz") as data:
        np.savez(tmp_path / "cal_nhwc.npz", x=data["x"].transpose(0, 2, 3, 1))
    programs = []
    for calib in ("cal.npz", "cal_nhwc.npz"):
        out = tmp_path / f"{calib}.sdp"
        rc, _, err = run(["compile", model, "-o", out, "--dense", "-q", "--calib", tmp_path / calib])
        assert rc == 0, err
        programs.append(out.read_bytes())
    assert programs[0] == programs[1]


def test_eval_needs_data_for_other_models(tmp_path):
    model = write_case(tmp_path, pool=False)
    rc, _, err = run(compile_args(tmp_path, model, "--eval"))
    assert_one_line_error(rc, err, "64 inputs", "--eval-data")
    assert_nothing_written(tmp_path, {"m.onnx", "cal.npz", "test.npz"})


BAD_FILES = {
    "missing-x": ({"y": np.zeros(4, int)}, ["no array 'x'", "'x' and 'y'"]),
    "missing-y": ({"x": np.zeros((4, 2, 8, 8))}, ["no array 'y'", "'x' and 'y'"]),
    "channel-last": ({"x": np.zeros((4, 8, 8, 2)), "y": np.zeros(4, int)}, ["(4, 8, 8, 2)", "(N, 2, 8, 8)",
                                                                            "own layout"]),
    "flat": ({"x": np.zeros((4, 128)), "y": np.zeros(4, int)}, ["'x' has shape", "(N, 2, 8, 8)"]),
    "empty": ({"x": np.zeros((0, 2, 8, 8)), "y": np.zeros(0, int)}, ["N >= 1"]),
    "label-range": ({"x": np.zeros((4, 2, 8, 8)), "y": np.array([0, 3, 10, 1])}, ["label 10", "0..9", "10 outputs"]),
    "negative-label": ({"x": np.zeros((4, 2, 8, 8)), "y": np.array([0, -1, 2, 1])}, ["label -1", "0..9"]),
    "float-labels": ({"x": np.zeros((4, 2, 8, 8)), "y": np.zeros(4)}, ["'y'", "integer labels", "float64"]),
    "label-count": ({"x": np.zeros((4, 2, 8, 8)), "y": np.zeros(3, int)}, ["'y' has shape (3,)", "(4,)"]),
    "nan": ({"x": np.full((4, 2, 8, 8), np.nan), "y": np.zeros(4, int)}, ["'x'", "NaN"]),
    "text-x": ({"x": np.array(["a"] * 4), "y": np.zeros(4, int)}, ["'x' must be numeric"]),
}


@pytest.mark.parametrize("case", [*BAD_FILES, "not-npz", "absent", "corrupt"])
def test_bad_eval_data(tmp_path, case):
    model = write_case(tmp_path, pool=True, n=8)
    data = tmp_path / "bad.npz"
    if case in BAD_FILES:
        arrays, keywords = BAD_FILES[case]
        np.savez(data, **arrays)
    elif case == "not-npz":
        data = tmp_path / "bad.npy"
        np.save(data, np.zeros((4, 2, 8, 8)))
        keywords = ["not a .npz archive", "'x' and 'y'"]
    elif case == "corrupt":
        data.write_bytes(b"PK\x03\x04 not really a zip")
        keywords = ["cannot read evaluation file", "bad.npz"]
    else:
        keywords = ["cannot read evaluation file", "bad.npz"]
    before = {p.name for p in tmp_path.iterdir()}
    rc, _, err = run(compile_args(tmp_path, model, "--eval-data", data))
    assert_one_line_error(rc, err, *keywords)
    assert_nothing_written(tmp_path, before)


# ------------------------------------------------------------------------------ the bundled MNIST example
def test_mnist_example_files():
    """examples/mnist_*: the ONNX CNN, its test split (NCHW float32 in [0, 1]) and calibration images agree with
    onnxruntime."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    onnx_path, test_path, calib_path = (examples / name for name in ("mnist_cnn.onnx", "mnist_test.npz",
                                                                     "mnist_calib.npz"))
    assert all(p.stat().st_size < 400_000 for p in (onnx_path, test_path, calib_path))
    model = from_onnx(onnx_path)
    assert [layer.kind for layer in model.layers] == ["conv", "maxpool", "conv", "maxpool", "fc", "fc"]
    x, y = load_eval_data(test_path, model, channels_first=True)
    assert x.shape == (1000, 28, 28, 1) and np.bincount(y).tolist() == [100] * 10
    with np.load(test_path) as data:
        session = ort.InferenceSession(onnx_path.read_bytes(), providers=["CPUExecutionProvider"])
        ref = session.run(None, {"x": data["x"].astype(np.float32)})[0]
    logits = forward_float(model, x)
    assert np.mean(logits.argmax(axis=1) == ref.argmax(axis=1)) >= 0.99
    float_acc = accuracy(logits, y)
    assert float_acc >= 0.95
    with np.load(calib_path) as data:
        result = compile_staged(model, to_channel_last(data["x"]), CompileOptions(dense=True))
    assert accuracy(infer_staged(result, x), y) >= float_acc - 0.01
