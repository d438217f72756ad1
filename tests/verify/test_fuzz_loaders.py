"""Fuzzed loaders (verify.fuzz): any bytes give a valid result or one SdhwError line, never a traceback, a hang
or a file left behind; the minimal inputs that once crashed each loader; the command line on corrupt files."""
from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from clirun import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden import SdhwError
from golden.datasets import DIGITS_MLP
from golden.model import load_calibration_data, load_eval_data, load_model, load_npy_array, load_npz
from rtl_gen.image import IMAGE_MAGIC, IMAGE_VERSION, ProgramImage, pack_image, unpack_image
from verify import fuzz

TARGETS = fuzz.targets()
QUICK_EXAMPLES = 30                 # per loader in the default run (a few seconds each)
SLOW_EXAMPLES = 1500
NAMES = sorted(TARGETS)


def needs(target: fuzz.Target) -> None:
    for module in target.requires:
        pytest.importorskip(module, reason=f"the {target.name} loader needs {', '.join(target.requires)}")


def check_inputs(name: str, data) -> None:
    needs(TARGETS[name])
    family, item = data.draw(TARGETS[name].strategy(), label="input")
    target, payload = fuzz.input_of(TARGETS[name], item)
    with tempfile.TemporaryDirectory() as tmp, fuzz.memory_limit():
        outcome = fuzz.attempt(target, payload, Path(tmp))
    assert outcome.kind in ("accepted", "clean error"), \
        f"{name} ({family} input of {len(payload)} bytes, derandomized: hypothesis' fixed seed): {outcome.kind}: " \
        f"{outcome.detail}"


def every_loader(examples: int):
    """A test run for each loader on ``examples`` inputs drawn with hypothesis' fixed seed."""
    def wrap(test):
        settled = settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        return pytest.mark.parametrize("name", NAMES)(settled(given(data=st.data())(test)))
    return wrap


@every_loader(QUICK_EXAMPLES)
def test_loader_gives_result_or_clean_error(name, data):
    check_inputs(name, data)


@pytest.mark.slow
@every_loader(SLOW_EXAMPLES)
def test_loader_gives_result_or_clean_error_long(name, data):
    check_inputs(name, data)


def test_every_family_reaches_past_the_first_check():
    """The mutated and structured inputs are not all refused at the magic or checksum: each loader accepts some
    of them and refuses others for reasons deeper in the file."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sdp", "sdimg"):
            tally = fuzz.fuzz_target(TARGETS[name], 40, 0, Path(tmp))
            assert tally.outcomes["crash"] == tally.outcomes["timeout"] == 0, tally.findings
            assert tally.outcomes["accepted"] >= 1, f"{name}: no fuzzed input accepted: {tally.families}"
            assert tally.families["structured"]["clean error"] >= 1, f"{name}: {tally.families}"


def test_attempt_classifies_outcomes(tmp_path):
    """The classifier itself: a traceback, a warning, a multi-line message, a hang and a stray file are findings."""
    def target(load):
        return fuzz.Target("t", ".bin", "test", load, lambda result: None)

    def crash(path):
        return [][1]

    def warn(path):
        import warnings
        warnings.warn("careful", RuntimeWarning, stacklevel=1)

    def two_lines(path):
        raise SdhwError("first\nsecond")

    def stray(path):
        (path.parent / "partial.out").write_bytes(b"x")
        raise SdhwError("refused")

    def hang(path):
        while True:
            pass

    assert fuzz.attempt(target(lambda p: p.read_bytes()), b"ok", tmp_path).kind == "accepted"
    assert fuzz.attempt(target(lambda p: (_ for _ in ()).throw(SdhwError("no"))), b"", tmp_path).kind == "clean error"
    for load, words in ((crash, "IndexError"), (warn, "RuntimeWarning"), (two_lines, "several lines"),
                        (stray, "partial.out")):
        outcome = fuzz.attempt(target(load), b"", tmp_path)
        assert outcome.kind == "crash" and words in outcome.detail, outcome
    assert fuzz.attempt(target(hang), b"", tmp_path, limit_s=0.2).kind == "timeout"
    assert list(tmp_path.iterdir()) == []


def test_report_files(tmp_path):
    rc = fuzz.main(["--out", str(tmp_path), "--examples", "3", "--loaders", "config,sdp"])
    assert rc == 0
    report = json.loads((tmp_path / "fuzz.json").read_text())
    assert set(report["loaders"]) == {"config", "sdp"}
    for r in report["loaders"].values():
        assert r["inputs"] == 3 and sum(r["outcomes"].values()) == 3
    assert "| loader | inputs | accepted | clean error | crash | timeout |" in (tmp_path / "fuzz.md").read_text()


# ------------------------------------------------------------------ regressions: minimal inputs that crashed
def refused(load, path: Path, *words: str) -> str:
    with pytest.raises(SdhwError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def valid_image() -> ProgramImage:
    return unpack_image(fuzz.sdimg_seeds()[0])


def image_file(tmp_path: Path, meta=None, sections=None, raw_meta: bytes | None = None) -> Path:
    """An image whose checksum and size are right, built from a valid one's parts."""
    image = valid_image()
    data = pack_image(ProgramImage(image.sections if sections is None else sections,
                                   image.meta if meta is None else meta))
    if raw_meta is not None:
        body = struct.pack("<I", len(raw_meta)) + raw_meta
        data = IMAGE_MAGIC + struct.pack("<HH", IMAGE_VERSION, 0) + bytes(8) + body
    path = tmp_path / "p.sdimg"
    path.write_bytes(fuzz.fix_header(data))
    return path


def test_image_regressions(tmp_path):
    from rtl_gen.image import load_image
    meta = valid_image().meta
    # was json.JSONDecodeError / UnicodeDecodeError
    refused(load_image, image_file(tmp_path, raw_meta=b"\x82   "), "not valid JSON")
    refused(load_image, image_file(tmp_path, raw_meta=b"{   "), "not valid JSON")
    # was KeyError / TypeError where the host read the metadata
    refused(load_image, image_file(tmp_path, meta={k: v for k, v in meta.items() if k != "output_region"}),
            "missing key", "output_region")
    refused(load_image, image_file(tmp_path, raw_meta=b"[1] "), "JSON list", "object")
    refused(load_image, image_file(tmp_path, meta={**meta, "output_region": 0}), "output_region", "ends in region")
    refused(load_image, image_file(tmp_path, meta={**meta, "input_scale": -1.0}), "input_scale", "positive")
    refused(load_image, image_file(tmp_path, meta={**meta, "config": {**meta["config"], "device": ["up5k"]}}),
            "image config", "device")
    # was ValueError (buffer is smaller than requested size): a section declaring more words than the file holds
    data = bytearray(pack_image(ProgramImage([(1, 0, [0, 0])], meta)))
    struct.pack_into("<I", data, len(data) - 8 - 4, 3)
    (tmp_path / "q.sdimg").write_bytes(fuzz.fix_header(bytes(data)))
    refused(load_image, tmp_path / "q.sdimg", "declares 3 words")
    # was struct.error: a section header cut short
    data = pack_image(ProgramImage([(1, 0, [7])], meta))
    (tmp_path / "r.sdimg").write_bytes(fuzz.fix_header(data[:-10]))
    refused(load_image, tmp_path / "r.sdimg", "truncated inside the header of section 0")
    # a metadata length past the end of the file
    data = bytearray(pack_image(ProgramImage([], meta)))
    struct.pack_into("<I", data, 16, 1 << 20)
    (tmp_path / "s.sdimg").write_bytes(fuzz.fix_header(bytes(data)))
    refused(load_image, tmp_path / "s.sdimg", "metadata length")
    # writes outside the loadable regions, or past the memory the config describes
    refused(load_image, image_file(tmp_path, sections=[(0, 3, [1])]), "region 0", "valid: 1 (descriptors)")
    refused(load_image, image_file(tmp_path, sections=[(5, 1024, [1])]), "words 1024..1024", "has 1024")
    # were accepted: two sections writing the same words (found by the fuzzer's check of accepted images)
    refused(load_image, image_file(tmp_path, sections=[(5, 0, [1, 2, 3]), (1, 0, [4]), (5, 2, [5])]),
            "overlap in region 5 (bias) at word 2")
    assert load_image(image_file(tmp_path)).meta == meta


def npz_file(tmp_path: Path, members: dict[str, bytes], name: str = "m.npz") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for key, data in members.items():
            zf.writestr(key, data)
    return path


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_npz_regressions(tmp_path):
    arrays = fuzz.npz_arrays()[0]
    good = {f"{k}.npy": npy(v) for k, v in arrays.items()}
    assert load_npz(npz_file(tmp_path, good)).input_shape == (12,)
    # was zipfile.BadZipFile: not a zip, and a member whose CRC does not match
    (tmp_path / "e.npz").write_bytes(b"")
    refused(load_npz, tmp_path / "e.npz", "cannot read", "not a zip file")
    data = bytearray((tmp_path / "m.npz").read_bytes())
    data[data.index(b"\x93NUMPY") + 128] ^= 0xFF                   # the first member's data, after its header
    (tmp_path / "crc.npz").write_bytes(bytes(data))
    refused(load_npz, tmp_path / "crc.npz", "cannot read", "CRC")
    # was TypeError: a plain .npy given as the model
    (tmp_path / "plain.npz").write_bytes(npy(np.zeros(3)))
    refused(load_npz, tmp_path / "plain.npz", "not a zip file")
    # was MemoryError: a header declaring 2**40 elements over 4 stored bytes
    giant = fuzz.npy_member("{'descr': '<i4', 'fortran_order': False, 'shape': (1099511627776,), }", bytes(4))
    refused(load_npz, npz_file(tmp_path, {**good, "input_shape.npy": giant}), "declares shape (1099511627776,)",
            "stores 4 bytes")
    # was tokenize.TokenError: numpy retries an unparsable version-1 header through the tokenizer
    broken = fuzz.npy_member("{'descr': (", b"")
    refused(load_npz, npz_file(tmp_path, {**good, "input_shape.npy": broken}), "unreadable .npy header")
    refused(load_npz, npz_file(tmp_path, {**good, "notes.txt": b"hi"}), "'notes.txt' is not an array")
    # was TypeError / ValueError converting input_shape
    for bad in (np.array(["SDPG"]), np.array([np.datetime64("2024-01-01")]), np.array([1.5])):
        refused(load_npz, npz_file(tmp_path, {**good, "input_shape.npy": npy(bad)}), "input_shape", "valid: integers")
    # was a ComplexWarning (an error under -W error) casting complex weights
    refused(load_npz, npz_file(tmp_path, {**good, "layer0.weight.npy": npy(arrays["layer0.weight"] + 1j)}),
            "layer0.weight", "real numbers")
    # object arrays need pickle: refused before reading
    obj = fuzz.npy_member("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x04N.")
    refused(load_npz, npz_file(tmp_path, {**good, "layer0.relu.npy": obj}), "Python objects")


def sklearn_mlp(coefs, intercepts, activation="relu"):
    return fuzz.sklearn_mlp(coefs, intercepts, activation)


def test_joblib_regressions(tmp_path):
    import joblib
    path = tmp_path / "m.joblib"
    rng = np.random.default_rng(0)
    w, b = [rng.standard_normal((4, 3))], [rng.standard_normal(3)]
    joblib.dump(sklearn_mlp(w, b), path)
    assert load_model(path).input_shape == (4,)
    # was IndexError (no layers) and TypeError (a 0-d array as the list of layers)
    for coefs, intercepts in (([], []), (np.array(0.0), b), (w, []), ("abc", "abc")):
        joblib.dump(sklearn_mlp(coefs, intercepts), path)
        refused(load_model, path, "coefs_ and intercepts_", "valid: a fitted MLPClassifier")
    joblib.dump(sklearn_mlp([np.zeros(3)], b), path)
    refused(load_model, path, "coefs_[0] has shape (3,)", "2-D")
    joblib.dump(sklearn_mlp([[[1.0], [1.0, 2.0]]], b), path)
    refused(load_model, path, "coefs_[0] is not an array")
    # was ValueError (the truth value of an array) comparing the activation
    joblib.dump(sklearn_mlp(w, b, np.array(["relu", "tanh"])), path)
    refused(load_model, path, "activation", "valid: 'relu', 'identity'")
    # was ModuleNotFoundError: the ImportError handler meant for a missing joblib caught the unpickler's
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(sklearn_mlp(w, b)).replace(b"sklearn", b"sklearX"))
    refused(load_model, tmp_path / "m.pkl", "cannot read", "sklearX")


def onnx_file(tmp_path: Path, edit) -> Path:
    models, _ = fuzz.onnx_base_models()
    model = models[0]
    edit(model.graph)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def node(graph, name):
    return next(n for n in graph.node if n.name == name)


def set_attr(graph, node_name, attr, value):
    from onnx import helper
    n = node(graph, node_name)
    kept = [a for a in n.attribute if a.name != attr]
    del n.attribute[:]
    n.attribute.extend(kept + [helper.make_attribute(attr, value)])


def set_init(graph, name, array):
    from onnx import numpy_helper
    k = next(i for i, t in enumerate(graph.initializer) if t.name == name)
    graph.initializer[k].CopyFrom(numpy_helper.from_array(array, name))


def test_onnx_regressions(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper
    assert load_model(onnx_file(tmp_path, lambda g: None)).input_shape == (6, 6, 2)
    # was TypeError: 'int' / 'float' object is not iterable (an INT where INTS belong)
    refused(load_model, onnx_file(tmp_path, lambda g: set_attr(g, "conv", "kernel_shape", 3)),
            "'kernel_shape' is of type INT", "valid: INTS")
    refused(load_model, onnx_file(tmp_path, lambda g: set_attr(g, "pool", "strides", 2.0)),
            "'strides' is of type FLOAT", "valid: INTS")
    refused(load_model, onnx_file(tmp_path, lambda g: set_attr(g, "fc", "alpha", float("inf"))),
            "'alpha' is inf", "finite")
    # was a RuntimeWarning (sqrt of a negative variance)
    refused(load_model, onnx_file(tmp_path, lambda g: set_init(g, "var", -np.ones(4, np.float32))),
            "variance", "positive")
    # was a ComplexWarning and a ValueError casting the weight
    refused(load_model, onnx_file(tmp_path, lambda g: set_init(g, "w0", np.zeros((4, 2, 3, 3), np.complex64))),
            "dtype complex64", "real numbers")
    refused(load_model, onnx_file(tmp_path, lambda g: set_init(g, "w1", np.full((5, 36), np.nan, np.float32))),
            "NaN or Inf", "finite")

    def clip_with_many_mins(g):
        g.node.insert(3, helper.make_node("Clip", ["r0", "b0"], ["r1"], name="clip"))
        node(g, "pool").input[0] = "r1"
    # was ValueError: cannot reshape array of size 4 into shape ()
    refused(load_model, onnx_file(tmp_path, clip_with_many_mins), "min has 4 values", "a single value")


def test_config_regressions(tmp_path):
    load_config = fuzz.load_config
    # was RecursionError, in the JSON and in the TOML parser
    for suffix, text in ((".json", "[" * 100_000 + "]" * 100_000), (".toml", "pes = " + "[" * 5000 + "]" * 5000)):
        (tmp_path / f"c{suffix}").write_text(text)
        refused(load_config, tmp_path / f"c{suffix}", "cannot parse config file")
    # was TypeError (unhashable) where the device name was looked up
    (tmp_path / "c.toml").write_text('device = ["up5k"]\n')
    refused(load_config, tmp_path / "c.toml", "device is a list", "valid: a single number, string or boolean")
    (tmp_path / "c.json").write_text('{"requant": {"a": 1}}')
    refused(load_config, tmp_path / "c.json", "requant is a dict")
    # were accepted: a boolean as exponent bits, a float as weight bits
    (tmp_path / "c.toml").write_text("exp_bits = true\n")
    refused(load_config, tmp_path / "c.toml", "exp_bits must be an integer in 1..4, not True")
    (tmp_path / "c.toml").write_text("weight_bits = 8.0\n")
    refused(load_config, tmp_path / "c.toml", "weight_bits must be 8")


def test_sdp_header_fields_are_checked(tmp_path):
    """Boundary values in every integer header field of a valid program, checksum and size fixed: each is
    refused with one line or gives a program that packs back to a valid file (exhaustive over the fields)."""
    from golden import format as fmt
    seed = fuzz.sdp_seeds()[0]
    outcomes = {"accepted": 0, "clean error": 0}
    for offset, size in fuzz.sdp_fields(seed):
        for value in (0, 1, 0xFF, (1 << (8 * size)) - 1):
            data = bytearray(seed)
            fuzz.put_int(data, offset, value, size)
            try:
                fmt.unpack(fmt.pack(fmt.unpack(fuzz.fix_header(bytes(data), True))))
                outcomes["accepted"] += 1
            except SdhwError as exc:
                assert "\n" not in str(exc)
                outcomes["clean error"] += 1
    assert outcomes["accepted"] and outcomes["clean error"], outcomes


# ------------------------------------------------------------------ the command line on corrupt files
@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    d = tmp_path_factory.mktemp("corrupt")
    (d / "bad.npz").write_bytes(b"PK\x03\x04" + bytes(40))
    (d / "bad.onnx").write_bytes(b"\x08\x07\x12\xff\xff")
    (d / "bad.joblib").write_bytes(b"\x80\x04\x95")
    (d / "bad.sdp").write_bytes(fuzz.fix_header(fuzz.sdp_seeds()[0][:200], True))
    data = bytearray(fuzz.sdimg_seeds()[0])
    struct.pack_into("<I", data, 16, 1 << 20)
    (d / "bad.sdimg").write_bytes(fuzz.fix_header(bytes(data)))
    (d / "bad.toml").write_text("pes = " + "[" * 5000 + "]" * 5000)
    np.save(d / "x.npy", np.zeros(64, dtype=np.int8))
    (d / "acc").mkdir()
    (d / "acc" / "manifest.json").write_text('{"manifest_version": 1, "config": [16]}')
    (d / "cal.npz").write_bytes(zip_bytes({"x": b"not an array"}))
    return d


@pytest.mark.parametrize("argv, words", [
    (["compile", "{d}/bad.npz", "-o", "{out}/p.sdp"], "cannot read"),
    (["compile", "{d}/bad.onnx", "-o", "{out}/p.sdp"], "ONNX"),
    (["compile", "{d}/bad.joblib", "-o", "{out}/p.sdp"], "scikit-learn"),
    (["inspect", "{d}/bad.sdp"], "program"),
    (["run", "--port", "{out}/tty", "--program", "{d}/bad.sdimg", "--input", "{d}/x.npy", "--output",
      "{out}/y.npy"], "metadata length"),
    (["sim", "--model", "{d}/bad.npz", "--build-dir", "{out}/sim"], "cannot read"),
    (["generate", "--config", "{d}/bad.toml", "-o", "{out}/acc"], "cannot parse config file"),
    (["compile", str(DIGITS_MLP), "-o", "{out}/p.sdp", "--calib", "{d}/cal.npz"], "has no array 'x'"),
    (["compile", str(DIGITS_MLP), "-o", "{out}/p.sdp", "--for", "{d}/acc"], "'config' is an object"),
], ids=["compile-npz", "compile-onnx", "compile-joblib", "inspect-sdp", "run-sdimg", "sim-npz", "generate-toml",
        "compile-calib", "compile-manifest"])
def test_cli_on_corrupt_file(corrupt, tmp_path, argv, words):
    out = tmp_path / "out"
    out.mkdir()
    if "onnx" in " ".join(argv):
        pytest.importorskip("onnx")
    rc, stdout, stderr = run([a.format(d=corrupt, out=out) for a in argv])
    lines = stderr.strip().splitlines()
    assert rc == 1, (rc, stderr)
    assert len(lines) == 1 and lines[0].startswith("sdhw: error: ") and words.lower() in lines[0].lower(), stderr
    assert list(out.iterdir()) == [], f"left behind: {list(out.iterdir())}"
    assert "Traceback" not in stdout + stderr


def test_checksummed_formats_refuse_a_wrong_checksum(tmp_path):
    """The fuzzers fix checksums up to reach the parsers; the checksum check itself still holds."""
    from golden import format as fmt
    from rtl_gen.image import load_image
    for seed, load, suffix in ((fuzz.sdp_seeds()[0], fmt.load, ".sdp"), (fuzz.sdimg_seeds()[0], load_image, ".sdimg")):
        data = bytearray(seed)
        data[-1] ^= 1
        (tmp_path / f"c{suffix}").write_bytes(bytes(data))
        refused(load, tmp_path / f"c{suffix}", "checksum")


# ------------------------------------------------------------------ the command line's arrays, manifests, PyTorch
def zip_bytes(members: dict[str, bytes], compressed: bool = False) -> bytes:
    return fuzz.zip_members(members, compressed)


def test_fuzz_module_does_not_import_torch():
    """torch is optional (not installed in CI): importing the fuzzers and building their targets leaves it alone."""
    code = "import sys; from verify import fuzz; fuzz.targets(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_calibration_and_eval_regressions(tmp_path):
    mlp, cnn = fuzz.digits_models()
    x, y = fuzz.eval_arrays()[0]["x"], fuzz.eval_arrays()[0]["y"]
    path = tmp_path / "d.npz"

    def write(members: dict[str, bytes], compressed: bool = False) -> Path:
        path.write_bytes(zip_bytes(members, compressed))
        return path

    def calib(p):
        return load_calibration_data(p, cnn, channels_first=True)

    def evaluate(p):
        return load_eval_data(p, mlp)

    assert calib(write({"x.npy": npy(x.reshape(-1, 1, 8, 8))})).shape == (12, 8, 8, 1)
    assert evaluate(write({"x.npy": npy(x), "y.npy": npy(y)}))[1].tolist() == y.tolist()
    # was AttributeError ('bytes' object has no attribute 'dtype'): numpy hands a member named "x" over as bytes
    refused(calib, write({"x": npy(x)}), "has no array 'x'")
    # was MemoryError: a header declaring 2**40 elements over a few stored bytes
    giant = fuzz.npy_member("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }", bytes(8))
    refused(evaluate, write({"x.npy": giant, "y.npy": npy(y)}), "cannot read evaluation file",
            "declares shape (1099511627776,)")
    # was zlib.error: a damaged deflate stream
    data = bytearray(write({"x.npy": npy(x)}, compressed=True).read_bytes())
    data[120] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(calib, path, "cannot read calibration file")
    # was a ComplexWarning in sdhw compile (the imaginary part dropped); NaN, inf and empty reached the compiler
    refused(calib, write({"x.npy": npy(x + 1j)}), "'x' must be real numbers", "complex128")
    refused(calib, write({"x.npy": npy(np.full((2, 64), np.inf))}), "NaN or Inf", "finite")
    refused(calib, write({"x.npy": npy(np.zeros((0, 64)))}), "shape (0, 64)", "one or more inputs")
    # an object array is refused before anything is unpickled
    runs = fuzz.PICKLES_RUN[0]
    refused(calib, write({"x.npy": fuzz.object_npy((12, 64))}), "Python objects")
    refused(evaluate, write({"x.npy": npy(x), "y.npy": fuzz.object_npy((12,))}), "Python objects")
    assert fuzz.PICKLES_RUN[0] == runs
    refused(calib, tmp_path / "absent.npz", "cannot read calibration file")
    np.save(tmp_path / "x.npy", x)
    refused(calib, tmp_path / "x.npy", "not a .npz archive", "'x'")


def test_npy_reader_regressions(tmp_path):
    """golden.model.load_npy_array, which the patch for fpga.host.load_input reads ``sdhw run --input`` through."""
    path = tmp_path / "x.npy"
    path.write_bytes(npy(np.arange(-6, 6, dtype=np.int8)))
    assert load_npy_array(path, "input").tolist() == list(range(-6, 6))
    for header, words in (("{'descr': (", "unreadable .npy header"),                 # TokenError in np.load
                          ("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }",
                           "declares shape (1099511627776,)")):                      # MemoryError in np.load
        path.write_bytes(fuzz.npy_member(header, bytes(8)))
        refused(lambda p: load_npy_array(p, "input"), path, "cannot read input", words)
    path.write_bytes(fuzz.object_npy())
    refused(lambda p: load_npy_array(p, "input"), path, "Python objects")
    path.write_bytes(zip_bytes({"x.npy": npy(np.zeros(3))}))
    refused(lambda p: load_npy_array(p, "input"), path, "not a .npz archive")


def test_board_input_regressions(tmp_path):
    from fpga.host import load_input
    path = tmp_path / "x.npy"
    for header in ("{'descr': (", "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }"):
        path.write_bytes(fuzz.npy_member(header, bytes(8)))
        refused(lambda p: load_input(fuzz.input_image(), p), path, "cannot read input")


def test_manifest_regressions(tmp_path):
    from rtl_gen.generate import load_manifest
    path = tmp_path / "manifest.json"
    manifest = json.loads(fuzz.manifest_seeds()[1])
    path.write_text(json.dumps(manifest))
    assert load_manifest(tmp_path)[1].pes == 4
    # was AttributeError ('list' object has no attribute 'items')
    path.write_text(json.dumps({**manifest, "config": [16]}))
    refused(load_manifest, path, "not valid", "'config' is an object")
    # was RecursionError in the JSON parser
    path.write_text('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(load_manifest, path, "not valid")
    for key, value, words in (("pes", 3, "pes"), ("exp_bits", 9, "exp_bits"),
                              ("device", ["up5k"], "device must be one of")):
        path.write_text(json.dumps({**manifest, "config": {**manifest["config"], key: value}}))
        refused(load_manifest, path, words)
    path.write_text(json.dumps({**manifest, "manifest_version": 2}))
    refused(load_manifest, path, "version 2", "reads version 1")


@pytest.fixture(scope="module")
def torch_seed():
    for module in fuzz.TORCH_MODULES:
        pytest.importorskip(module, reason="PyTorch archives need torch, onnxscript and onnx (sdhw[torch])")
    return fuzz.torch_seeds()[0]


def rebuilt(seed: bytes, place: str | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    with zipfile.ZipFile(io.BytesIO(seed)) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    if place:
        members = fuzz.plant_pickle(members, members[0][0].split("/")[0], place)
    return zip_bytes({**dict(members), **(extra or {})})


@pytest.mark.parametrize("place, words", [
    ("sample inputs", "weights only load failed"),
    ("weight", "weights only load failed"),
    ("legacy weights", "torch.export program"),
    ("constant", "pickled python constants"),
])
def test_torch_archive_pickles_never_run(torch_seed, tmp_path, place, words):
    """Were run by torch.export.load (torch.load(weights_only=False) and pickle.loads on members of the file):
    a planted pickle is refused, and never unpickled."""
    path = tmp_path / "m.pt2"
    path.write_bytes(rebuilt(torch_seed, place))
    runs = fuzz.PICKLES_RUN[0]
    refused(load_model, path, words)
    assert fuzz.PICKLES_RUN[0] == runs, f"the pickle planted in the {place} ran"


def test_torch_archive_regressions(torch_seed, tmp_path):
    path = tmp_path / "m.pt2"
    path.write_bytes(torch_seed)
    assert load_model(path).input_shape == (12,)
    # compiled AOTInductor code would be loaded (dlopen) by torch.export.load: refused before
    path.write_bytes(rebuilt(torch_seed, extra={"archive/data/aotinductor/model/model.so": b"\x7fELF"}))
    refused(load_model, path, "compiled code", "torch.export.save")
    for data, words in ((torch_seed[:len(torch_seed) // 2], "not a torch.export archive"), (b"", "not a torch"),
                        (zip_bytes({"archive/data.pkl": pickle.dumps(1)}), "pickled module")):
        path.write_bytes(data)
        refused(load_model, path, words)
