"""The ``sdhw`` command line: ``compile`` and ``inspect``, their output and their one-line errors."""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from clirun import run

from golden import format as fmt
from golden.datasets import DIGITS_MLP
from golden.model import Layer, Model, save_npz

ROOT = Path(__file__).resolve().parents[2]
LAYER_KEYS = {"index", "layer", "mode", "shape", "row_density", "bits", "bits_per_weight", "rel_error",
              "plain_pow2_rel_error", "sections_bytes"}
MLP_ROWS = [["0", "fc", "64->128", "sd"], ["1", "fc", "128->64", "sd"], ["2", "fc", "64->10", "sd"]]
SECTION_KEYS = {"header", "bias", "bases", "bitmap", "codes", "dense_weights", "padding"}


def small_mlp(inputs: int = 64, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    return Model((inputs,), [Layer("fc", rng.normal(0, 0.3, (12, inputs)), rng.normal(0, 0.1, 12), relu=True),
                             Layer("fc", rng.normal(0, 0.3, (10, 12)), rng.normal(0, 0.1, 10))])


def npz_arrays(model: Model, path: Path) -> dict[str, np.ndarray]:
    save_npz(model, path)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def assert_one_line_error(rc, err: str, *keywords: str, code: int = 1) -> None:
    """Exit ``code``, then one line ``sdhw: error: ...`` (after any progress lines) naming the problem."""
    assert rc == code, f"exit code {rc}, stderr: {err!r}"
    *before, last = err.strip().splitlines() or [""]
    assert last.startswith("sdhw: error: "), f"stderr does not end with one error line: {err!r}"
    assert all(line.startswith("sdhw: [") for line in before), f"stray lines on stderr: {err!r}"
    for word in keywords:
        assert word.lower() in last.lower(), f"{word!r} not in {last!r}"


def assert_nothing_written(directory: Path, expected: set[str]) -> None:
    names = {p.name for p in directory.iterdir()}
    assert names == expected, f"unexpected files left behind: {sorted(names - expected)}"


# ------------------------------------------------------------------------------ a real compile
@pytest.fixture(scope="module")
def mlp_json(tmp_path_factory):
    """``sdhw compile digits_mlp.npz -o OUT --epochs 2 --json``, run once for the module."""
    out = tmp_path_factory.mktemp("mlp") / "mlp.sdp"
    rc, stdout, stderr = run(["compile", DIGITS_MLP, "-o", out, "--epochs", "2", "--json"])
    assert rc == 0, stderr
    return out, json.loads(stdout), stderr


def test_compile_json(mlp_json):
    out, report, stderr = mlp_json
    assert "error" not in stderr and "[" not in stderr, f"--json must silence progress: {stderr!r}"
    assert {"model", "output", "method", "options", "program", "layers", "energy_estimate_pj"} <= set(report)
    assert report["output"] == str(out) and report["model"] == str(DIGITS_MLP)
    assert report["method"] == "finetune"
    assert report["options"]["epochs"] == 2 and report["options"]["method"] == "finetune"
    p = report["program"]
    keys = {"bytes", "bits", "weights", "bits_per_weight", "compression_vs_int8", "compression_vs_fp32"}
    assert keys <= set(p), sorted(keys - set(p))
    size = out.stat().st_size
    assert p["bytes"] == size and p["bits"] == 8 * size
    assert p["weights"] == 64 * 128 + 128 * 64 + 64 * 10
    assert p["bits_per_weight"] == pytest.approx(8 * size / p["weights"])
    assert p["compression_vs_int8"] == pytest.approx(8 / p["bits_per_weight"])
    assert p["compression_vs_fp32"] == pytest.approx(32 / p["bits_per_weight"])
    assert p["bits_per_weight"] < 8, "SD must beat int8 dense on the bundled MLP"
    layers = report["layers"]
    assert [lay["index"] for lay in layers] == [0, 1, 2]
    assert [lay["shape"] for lay in layers] == [[128, 64], [64, 128], [10, 64]]
    for lay in layers:
        assert LAYER_KEYS <= set(lay), sorted(LAYER_KEYS - set(lay))
        assert lay["mode"] == "sd" and lay["layer"].startswith("fc ")
        assert set(lay["sections_bytes"]) == SECTION_KEYS
        assert lay["bits"] == 8 * sum(lay["sections_bytes"].values())
        assert lay["bits"] % 32 == 0
        assert lay["bits_per_weight"] == pytest.approx(lay["bits"] / (lay["shape"][0] * lay["shape"][1]))
        assert 0 < lay["row_density"] <= 1 and lay["rel_error"] >= 0 and lay["plain_pow2_rel_error"] >= 0
    assert p["bits"] == 8 * fmt.FILE_HEADER.size + sum(lay["bits"] for lay in layers)
    energy = report["energy_estimate_pj"]
    assert set(energy) >= {"sram", "dram"} and 0 < energy["sram"] < energy["dram"]
    assert fmt.load(out).n_weights == p["weights"]


def test_compile_text(tmp_path):
    out = tmp_path / "m.sdp"
    rc, stdout, stderr = run(["compile", DIGITS_MLP, "-o", out, "--epochs", "2"])
    assert rc == 0, stderr
    lines = stdout.splitlines()
    head = lines[0].split()
    assert head[:3] == ["#", "layer", "mode"] and "bits/weight" in head, lines[0]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert [line.split()[:4] for line in lines[2:5]] == MLP_ROWS
    size = out.stat().st_size
    summary = [line for line in lines if line.startswith(f"program {out}:")]
    assert len(summary) == 1 and f"{size} bytes" in summary[0] and "bits/weight" in summary[0], stdout
    assert any(line.startswith("energy estimate") for line in lines)
    progress = stderr.strip().splitlines()
    assert progress and all(line.startswith("sdhw: [") for line in progress), stderr
    assert "sdhw:" not in stdout


def test_compile_quiet(tmp_path):
    rc, stdout, stderr = run(["compile", DIGITS_MLP, "-o", tmp_path / "m.sdp", "--dense", "--epochs=0", "-q"])
    assert rc == 0 and stderr == "", stderr
    assert "dense" in stdout and " sd " not in stdout


def test_compile_eval_json(tmp_path):
    model = tmp_path / "tiny.npz"
    save_npz(small_mlp(), model)
    out = tmp_path / "tiny.sdp"
    rc, stdout, stderr = run(["compile", model, "-o", out, "--epochs", "2", "--eval", "--json"])
    assert rc == 0, stderr
    acc = json.loads(stdout)["accuracy"]
    assert {"float", "int8_dense", "sd_finetune", "sd_paper", "test_samples"} <= set(acc), sorted(acc)
    assert acc["test_samples"] == 450
    for key in ("float", "int8_dense", "sd_finetune", "sd_paper"):
        assert 0.0 <= acc[key] <= 1.0 and round(acc[key] * 450) == pytest.approx(acc[key] * 450), key
    assert out.is_file()


def test_inspect(mlp_json):
    out, report, _ = mlp_json
    rc, stdout, stderr = run(["inspect", out])
    assert rc == 0 and stderr == "", stderr
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["#", "layer", "mode"]
    assert [line.split()[:4] for line in lines[2:5]] == MLP_ROWS
    assert f"{out}: {report['program']['bytes']} bytes" in stdout
    assert f"{report['program']['bits_per_weight']:.3f} bits/weight" in stdout

    rc, stdout, stderr = run(["inspect", out, "--json"])
    assert rc == 0, stderr
    summary = json.loads(stdout)
    assert summary["bytes"] == report["program"]["bytes"] and summary["layers"] == 3
    assert summary["input_shape"] == [64] and summary["output_shape"] == [10]


def test_inspect_eval(mlp_json):
    out, _, _ = mlp_json
    rc, stdout, stderr = run(["inspect", out, "--eval"])
    assert rc == 0, stderr
    line = [x for x in stdout.splitlines() if x.startswith("accuracy on 450 digits test images")]
    assert len(line) == 1 and line[0].endswith("%"), stdout
    assert 50.0 < float(line[0].rsplit(" ", 1)[1].rstrip("%")) <= 100.0, line[0]


# ------------------------------------------------------------------------------ bad input -> one line
def bad_npz(tmp_path: Path, edit) -> Path:
    arrays = npz_arrays(small_mlp(), tmp_path / "base.npz")
    (tmp_path / "base.npz").unlink()
    edit(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


def _set(key, value):
    def edit(arrays):
        arrays[key] = value
    return edit


def _drop(key):
    return lambda arrays: arrays.pop(key)


def _nan_weight(arrays):
    arrays["layer0.weight"][3, 5] = np.nan


def _inf_bias(arrays):
    arrays["layer1.bias"][0] = np.inf


NPZ_CASES = {
    "missing-array": (_drop("layer1.bias"), ["missing", "layer1.bias"]),
    "extra-array": (_set("layer0.scale", np.ones(3)), ["unexpected", "layer0.scale"]),
    "wrong-K": (_set("layer0.weight", np.zeros((12, 63), np.float32)), ["layer0.weight", "63"]),
    "bias-shape": (_set("layer1.bias", np.zeros(9, np.float32)), ["layer1.bias", "(10,)"]),
    "nan-weight": (_nan_weight, ["layer0.weight", "NaN"]),
    "inf-bias": (_inf_bias, ["layer1.bias", "Inf"]),
    "bad-kind": (_set("layer1.kind", np.asarray("dense")), ["layer1.kind", "'dense'", "fc"]),
    "fc-with-stride": (_set("layer0.stride", np.asarray(2)), ["layer0.stride"]),
    "no-input-shape": (_drop("input_shape"), ["input_shape"]),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_compile_bad_npz(tmp_path, case):
    edit, keywords = NPZ_CASES[case]
    model = bad_npz(tmp_path, edit)
    out = tmp_path / "out" / "p.sdp"
    rc, stdout, err = run(["compile", model, "-o", out, "--epochs", "0"])
    assert_one_line_error(rc, err, *keywords)
    assert stdout == ""
    assert not out.exists() and not out.parent.exists()
    assert_nothing_written(tmp_path, {"bad.npz"})


OPTION_CASES = {
    "exp-bits-0": (["--exp-bits", "0"], ["exponent bits", "1..4"]),
    "prune-1": (["--prune", "1.0"], ["prune", "[0, 1)"]),
    "prune-negative": (["--prune", "-0.1"], ["prune", "-0.1"]),
    "prune-abc": (["--prune", "abc"], ["--prune", "abc"]),
    "prune-list-length": (["--prune", "0.1,0.2,0.3"], ["prune"]),
    "block-rows-0": (["--block-rows", "0"], ["block rows"]),
    "seed-negative": (["--seed", "-1"], ["seed"]),
    "dense-layers-word": (["--dense-layers", "0,last"], ["--dense-layers", "0,last", "0,-1"]),
    "dense-layers-outside": (["--dense-layers", "5"], ["dense layer index 5", "valid: -2..1"]),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_compile_bad_option(tmp_path, case):
    args, keywords = OPTION_CASES[case]
    model = tmp_path / "m.npz"
    save_npz(small_mlp(), model)
    out = tmp_path / "p.sdp"
    rc, stdout, err = run(["compile", model, "-o", out, "--epochs", "1", *args])
    assert_one_line_error(rc, err, *keywords)
    assert stdout == "" and not out.exists()
    assert_nothing_written(tmp_path, {"m.npz"})


def test_compile_missing_model(tmp_path):
    out = tmp_path / "p.sdp"
    rc, _, err = run(["compile", tmp_path / "nope.npz", "-o", out])
    assert_one_line_error(rc, err, "nope.npz", "does not exist")
    assert_nothing_written(tmp_path, set())


def test_compile_unknown_suffix(tmp_path):
    model = tmp_path / "model.txt"
    model.write_text("not a model")
    rc, _, err = run(["compile", model, "-o", tmp_path / "p.sdp"])
    assert_one_line_error(rc, err, "unknown type", ".npz")
    assert_nothing_written(tmp_path, {"model.txt"})


def test_compile_not_an_npz(tmp_path):
    model = tmp_path / "model.npz"
    model.write_bytes(b"garbage, not a zip archive")
    rc, _, err = run(["compile", model, "-o", tmp_path / "p.sdp"])
    assert_one_line_error(rc, err, "cannot read", "model.npz")
    assert_nothing_written(tmp_path, {"model.npz"})


def test_compile_needs_calibration(tmp_path):
    model = tmp_path / "m10.npz"
    save_npz(small_mlp(inputs=10), model)
    rc, _, err = run(["compile", model, "-o", tmp_path / "p.sdp", "--epochs", "0"])
    assert_one_line_error(rc, err, "64 inputs", "--calib")
    assert_nothing_written(tmp_path, {"m10.npz"})


@pytest.mark.parametrize("case", ["no-x", "npy", "missing", "wrong-size"])
def test_compile_bad_calibration(tmp_path, case):
    model = tmp_path / "m10.npz"
    save_npz(small_mlp(inputs=10), model)
    calib = tmp_path / ("cal.npy" if case == "npy" else "cal.npz")
    files = {"m10.npz", calib.name}
    if case == "no-x":
        np.savez(calib, inputs=np.zeros((5, 10)))
        keywords = ["'x'"]
    elif case == "npy":
        np.save(calib, np.zeros((5, 10)))
        keywords = ["cal.npy", ".npz"]
    elif case == "missing":
        files.remove(calib.name)
        keywords = ["calibration", "cal.npz"]
    else:
        np.savez(calib, x=np.zeros((5, 7)))
        keywords = ["'x'", "(5, 7)"]
    rc, _, err = run(["compile", model, "-o", tmp_path / "p.sdp", "--epochs", "0", "--calib", calib])
    assert_one_line_error(rc, err, *keywords)
    assert_nothing_written(tmp_path, files)


def test_compile_with_calibration(tmp_path):
    model = tmp_path / "m10.npz"
    save_npz(small_mlp(inputs=10), model)
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(3).random((40, 10)))
    out = tmp_path / "p.sdp"
    rc, _, err = run(["compile", model, "-o", out, "--epochs", "1", "-q", "--calib", tmp_path / "cal.npz"])
    assert rc == 0, err
    assert fmt.load(out).input_shape == (10,)


def test_compile_output_is_a_directory(tmp_path):
    model = tmp_path / "m.npz"
    save_npz(small_mlp(), model)
    (tmp_path / "d").mkdir()
    rc, _, err = run(["compile", model, "-o", tmp_path / "d", "--epochs", "0"])
    assert_one_line_error(rc, err, "cannot write")
    assert (tmp_path / "d").is_dir() and not any((tmp_path / "d").iterdir())
    assert_nothing_written(tmp_path, {"m.npz", "d"})


@pytest.mark.parametrize("args", [["--method", "bogus"], ["--exp-bits", "two"], ["--eval", "--nope"]])
def test_compile_argparse_errors(tmp_path, args):
    model = tmp_path / "m.npz"
    save_npz(small_mlp(), model)
    rc, stdout, err = run(["compile", model, "-o", tmp_path / "p.sdp", *args])
    assert rc == 2 and stdout == ""
    assert re.match(r"sdhw( compile)?: error: ", err.strip().splitlines()[-1]), err
    assert_nothing_written(tmp_path, {"m.npz"})


# ------------------------------------------------------------------------------ inspect errors
@pytest.fixture(scope="module")
def packed(mlp_json):
    return mlp_json[0].read_bytes()


def _truncated(data):
    return data[:len(data) // 2]


def _bad_magic(data):
    return b"SDPX" + data[4:]


def _bad_version(data):
    return data[:4] + struct.pack("<H", 9) + data[6:]


def _bad_crc(data):
    bad = bytearray(data)
    bad[len(data) // 3] ^= 0x20
    return bytes(bad)


def _trailing(data):
    return data + b"\x00\x00"


INSPECT_CASES = {"truncated": (_truncated, "truncated"), "magic": (_bad_magic, "magic"),
                 "version": (_bad_version, "version 9"), "checksum": (_bad_crc, "checksum"),
                 "trailing": (_trailing, "trailing"), "empty": (lambda d: b"", "truncated")}


@pytest.mark.parametrize("case", sorted(INSPECT_CASES))
def test_inspect_corrupt(tmp_path, packed, case):
    corrupt, keyword = INSPECT_CASES[case]
    path = tmp_path / "bad.sdp"
    path.write_bytes(corrupt(packed))
    for extra in ([], ["--eval"], ["--json"]):
        rc, stdout, err = run(["inspect", path, *extra])
        assert_one_line_error(rc, err, keyword)
        assert stdout == ""


def test_inspect_missing(tmp_path):
    rc, stdout, err = run(["inspect", tmp_path / "nope.sdp"])
    assert_one_line_error(rc, err, "nope.sdp", "does not exist")
    assert stdout == ""


# ------------------------------------------------------------------------------ the real process
def test_subprocess_exit_codes(tmp_path, mlp_json):
    """Through ``python -m cli``: real exit codes, one stderr line, no traceback, no output file."""
    out = tmp_path / "p.sdp"
    cmd = [sys.executable, "-m", "cli"]
    proc = subprocess.run([*cmd, "compile", str(tmp_path / "nope.npz"), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("sdhw: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()

    proc = subprocess.run([*cmd, "compile", str(tmp_path / "nope.npz")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "-o/--output" in proc.stderr

    bad = tmp_path / "bad.sdp"
    bad.write_bytes(b"SDPG\x02\x00" + mlp_json[0].read_bytes()[6:])
    proc = subprocess.run([*cmd, "inspect", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("sdhw: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "version 2" in proc.stderr

    proc = subprocess.run([*cmd, "inspect", str(mlp_json[0]), "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert json.loads(proc.stdout)["bytes"] == mlp_json[1]["program"]["bytes"]


# ------------------------------------------------------------------------------ scikit-learn models
def test_compile_sklearn_joblib(tmp_path):
    joblib = pytest.importorskip("joblib")
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = sklearn_datasets.load_digits(return_X_y=True)
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x / 16.0, y)
    path = tmp_path / "m.joblib"
    joblib.dump(mlp, path)
    out = tmp_path / "out.sdp"
    rc, stdout, err = run(["compile", path, "-o", out, "--epochs", "2", "--json"])
    assert rc == 0, err
    report = json.loads(stdout)
    assert [lay["shape"] for lay in report["layers"]] == [[16, 64], [10, 16]]
    program = fmt.load(out)
    assert [layer.relu for layer in program.layers] == [True, False]
    assert report["program"]["bytes"] == out.stat().st_size


@pytest.mark.parametrize("case", ["dict", "garbage"])
def test_compile_bad_joblib(tmp_path, case):
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "m.joblib"
    if case == "dict":
        joblib.dump({"coefs": [1, 2]}, path)
        keywords = ["not a fitted MLP"]
    else:
        path.write_bytes(b"\x80\x04garbage")
        keywords = ["cannot read", "m.joblib"]
    rc, _, err = run(["compile", path, "-o", tmp_path / "out.sdp", "--epochs", "0"])
    assert_one_line_error(rc, err, *keywords)
    assert_nothing_written(tmp_path, {"m.joblib"})


# ------------------------------------------------------------------------------ layers SD cannot take
def test_compile_depthwise_warns(tmp_path):
    rng = np.random.default_rng(5)
    model = Model((8, 8, 1), [
        Layer("conv", rng.normal(0, 0.3, (4, 1, 3, 3)), np.zeros(4), relu=True),
        Layer("conv", rng.normal(0, 0.3, (4, 1, 3, 3)), np.zeros(4), relu=True, groups=4),
        Layer("fc", rng.normal(0, 0.1, (10, 256)), np.zeros(10)),
    ])
    save_npz(model, tmp_path / "dw.npz")
    out = tmp_path / "dw.sdp"
    rc, stdout, err = run(["compile", tmp_path / "dw.npz", "-o", out, "--epochs", "2", "--json"])
    assert rc == 0, err
    warns = [line for line in err.splitlines() if line.startswith("sdhw: warning:")]
    assert len(warns) == 1 and "layer 1" in warns[0] and "dense" in warns[0], err
    assert [lay["mode"] for lay in json.loads(stdout)["layers"]] == ["sd", "dense", "sd"]
    program = fmt.load(out)
    assert [layer.is_sd for layer in program.layers] == [True, False, True]
    assert program.layers[1].groups == 4


def test_compile_dense_layers_keeps_them_int8(tmp_path):
    out = tmp_path / "mixed.sdp"
    rc, stdout, err = run(["compile", str(DIGITS_MLP), "-o", str(out), "--dense-layers", "0,-1", "--epochs", "0",
                           "--json"])
    assert rc == 0, err
    report = json.loads(stdout)
    assert [lay["mode"] for lay in report["layers"]] == ["dense", "sd", "dense"]
    assert report["options"]["dense_layers"] == [0, -1]
    assert [layer.is_sd for layer in fmt.load(out).layers] == [False, True, False]


def test_compile_prune_auto_per_layer(tmp_path):
    out = tmp_path / "auto.sdp"
    # 1.7: below the bundled MLP's unpruned size (1.97 bits/weight), so layers must be pruned
    rc, stdout, err = run(["compile", str(DIGITS_MLP), "-o", str(out), "--prune", "auto", "--target-bits", "1.7",
                           "--epochs", "0", "--json"])
    assert rc == 0, err
    report = json.loads(stdout)
    assert report["options"]["prune"] == "auto" and report["options"]["target_bits"] == 1.7
    assert report["program"]["bits_per_weight"] <= 1.75
    assert len({lay["prune"] for lay in report["layers"]}) > 1


# ------------------------------------------------------------------------------ ONNX models
def _onnx_model(extra_op: str | None = None, pool: bool = False):
    """An ONNX MLP on the digits' 64 inputs (or an 8x8x1 CNN with a max pool), optionally ending in ``extra_op``."""
    pytest.importorskip("onnx", reason="ONNX models need the onnx package (pip install 'sdhw[onnx]')")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(9)

    def init(name, shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    if pool:
        nodes = [helper.make_node("Conv", ["x", "w0"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                 helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
                 helper.make_node("Flatten", ["p"], ["f"]),
                 helper.make_node("Gemm", ["f", "w1"], ["y"], transB=1, name="fc")]
        inits = [init("w0", (4, 1, 3, 3)), init("w1", (10, 64))]
        x_shape = ["N", 1, 8, 8]
    else:
        nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1, name="fc0"),
                 helper.make_node("Relu", ["h"], ["r"], name="relu"),
                 helper.make_node("Gemm", ["r", "w1"], ["y"], transB=1, name="fc1")]
        inits = [init("w0", (12, 64)), init("b0", (12,)), init("w1", (10, 12))]
        x_shape = ["N", 64]
    out = "y"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["y"], ["z"], name="last"))
        out = "z"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_compile_onnx(tmp_path):
    (tmp_path / "m.onnx").write_bytes(_onnx_model().SerializeToString())
    out = tmp_path / "m.sdp"
    rc, stdout, err = run(["compile", tmp_path / "m.onnx", "-o", out, "--epochs", "1", "--json"])
    assert rc == 0, err
    assert [lay["shape"] for lay in json.loads(stdout)["layers"]] == [[12, 64], [10, 12]]
    assert [layer.relu for layer in fmt.load(out).layers] == [True, False]


@pytest.mark.parametrize("case", ["unsupported-op", "missing-initializer", "unknown-dim", "corrupt", "pool"])
def test_compile_onnx_errors(tmp_path, case):
    model = tmp_path / "m.onnx"
    proto = _onnx_model(extra_op="Softmax" if case == "unsupported-op" else None, pool=case == "pool")
    keywords = {"unsupported-op": ["Softmax", "'last'", "supported:"],
                "missing-initializer": ["Gemm node 'fc1'", "'w1'", "missing"],
                "unknown-dim": ["unknown dimension 1", "'features'", "batch"],
                "corrupt": ["cannot read", "m.onnx"],
                "pool": ["layer 1", "maxpool", "does not run"]}[case]
    if case == "missing-initializer":
        del proto.graph.initializer[2]
    elif case == "unknown-dim":
        proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    model.write_bytes(b"\x08\x07garbage\xff\xff" if case == "corrupt" else proto.SerializeToString())
    rc, _, err = run(["compile", model, "-o", tmp_path / "p.sdp", "--epochs", "0"])
    assert_one_line_error(rc, err, *keywords)
    assert_nothing_written(tmp_path, {"m.onnx"})
