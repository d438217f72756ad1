# amaranth: UnusedElaboratable=no
"""``sdhw verify ACC_DIR --formal``: which proofs a build gets, at which parameters (:func:`verify.proofs.proofs_for`),
the report, JSON and exit status with the SBY check replaced by a fake verdict (and the simulation by a fake
testbench: the regression itself is tested in test_verify_cli.py), the one-line error when the tools are missing,
and one real proof of a build's block through the shared job runner (the ECP5 sequencer, ~15 s). The whole
``--formal`` run on a real build takes minutes: ``slow``."""
from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from amaranth import Const, Fragment, Module, signed
from clirun import run
from evaluate import evaluate

from golden.quant import INT32_MAX, INT32_MIN
from golden.sd import rebuild_exact, round_saturate
from rtl_gen.tools import which
from sdhw.config import AcceleratorConfig
from verify import formal, regression
from verify.proofs import (
    PROOFS,
    SEQUENCER_CONFIG,
    _saturated_sum,
    checksum_depth,
    lowest_rebuild_weight,
    proofs_for,
    sequencer_bound,
)
from verify.run_formal import NO_PROOF, failed, run_proofs, text_table

try:
    formal.find_tools()
    TOOLS_MISSING = None
except formal.FormalToolsMissing as error:
    TOOLS_MISSING = str(error)

#: the proofs of a UP5K SD build with the table requantiser, in the order ``sdhw verify --formal`` runs them
UP5K_PROOFS = ["rebuild", "threshold", "sequencer", "sequencer_checksum", "reader", "reader_ring", "drain",
               "writeback_table"]


def _by_name(cfg: AcceleratorConfig) -> dict:
    specs = proofs_for(cfg)
    assert len({spec.name for spec in specs}) == len(specs)
    return {spec.name: spec for spec in specs}


def test_sd_table_build_gets_the_table_requantiser_and_its_slots_capped():
    """The UP5K default (SD, table requantiser, 28-bit accumulators, RAM outputs unregistered, 8 slots): its
    proofs are exactly ``make formal``'s (which are stated for that build)."""
    cfg = AcceleratorConfig(device="up5k")
    specs = _by_name(cfg)
    assert list(specs) == UP5K_PROOFS
    assert specs["rebuild"].dut_kwargs == {"exp_bits": 2, "weight_bits": 8, "tag_bits": 3}
    assert specs["threshold"].dut_kwargs == {"acc_bits": 28, "tag_bits": 3, "units": 1}
    for name in ("sequencer", "sequencer_checksum"):
        kwargs = specs[name].dut_kwargs
        assert kwargs["desc_latency"] == 1 and kwargs["cfg"] == replace(cfg, desc_layers=SEQUENCER_CONFIG.desc_layers)
        assert "up5k, desc_latency=1, 2 slots of the build's 8" == specs[name].parameters
    assert "26 cycles per slot (proven for 2 of the build's 8 slots" in specs["sequencer"].claim
    defaults = {spec.name: spec for spec in PROOFS}
    for name, spec in specs.items():
        assert (spec.block, spec.depth, spec.cover_depth, spec.dut_kwargs, spec.mutants) == \
            (defaults[name].block, defaults[name].depth, defaults[name].cover_depth, defaults[name].dut_kwargs,
             defaults[name].mutants), name


def test_table_build_parameters_follow_the_config():
    cfg = AcceleratorConfig(device="up5k", exp_bits=3, acc_bits=26, requant_units=2, desc_layers=1)
    specs = _by_name(cfg)
    assert specs["rebuild"].dut_kwargs["exp_bits"] == 3 and "exp_bits=3" in specs["rebuild"].parameters
    assert specs["threshold"].dut_kwargs == {"acc_bits": 26, "tag_bits": 3, "units": 2}
    assert specs["sequencer"].dut_kwargs["cfg"] == cfg            # one slot: nothing to cap
    assert specs["sequencer"].parameters == "up5k, desc_latency=1, 1 slots"
    assert specs["sequencer"].depth == sequencer_bound(1, 1, 2) + 3


def test_sd_pipelined_ecp5_build_gets_latency_two_and_the_pipelined_requantiser():
    cfg = AcceleratorConfig(device="ecp5-45f", exp_bits=3, acc_bits=36)
    assert cfg.requant == "pipelined" and cfg.register_ram_outputs and cfg.desc_layers == 16
    specs = _by_name(cfg)
    assert list(specs) == ["rebuild", "requant", "sequencer", "sequencer_checksum", "reader_latency2",
                           "reader_ring_latency2", "drain_registered", "writeback_pipelined"]
    assert specs["rebuild"].dut_kwargs["exp_bits"] == 3
    assert specs["requant"].dut_kwargs == {"acc_bits": 36, "tag_bits": 2}
    sequencer, checksum = specs["sequencer"], specs["sequencer_checksum"]
    assert sequencer.dut_kwargs["desc_latency"] == checksum.dut_kwargs["desc_latency"] == 2
    assert sequencer.dut_kwargs["cfg"].device == "ecp5-45f" and sequencer.dut_kwargs["cfg"].desc_layers == 2
    assert sequencer.depth == sequencer_bound(2, 2, 2) + 3 and checksum.depth == checksum_depth(2)
    assert "of the build's 16 slots" in sequencer.claim
    for spec in specs.values():                     # each harness takes the build's parameters
        Fragment.get(spec.harness(), None)


def test_dense_build_has_no_rebuild_proof():
    specs = _by_name(AcceleratorConfig(dense=True, device="ecp5-25f"))
    assert list(specs) == ["requant", "sequencer", "sequencer_checksum", "reader_latency2", "reader_ring_latency2",
                           "drain_registered", "writeback_pipelined"]
    assert specs["sequencer"].dut_kwargs["cfg"].dense


def test_serial_requantiser_is_a_row_without_a_proof():
    specs = _by_name(AcceleratorConfig(requant="serial"))
    assert specs["writeback_serial"].runnable and specs["writeback_serial"].dut_kwargs["kind"] == "serial"
    spec = specs["serial_requant"]
    assert spec.block == "sdhw.requant.SerialRequantiser" and not spec.runnable
    assert spec.claim.startswith("no proof for this block")
    with pytest.raises(ValueError, match="no proof harness for sdhw.requant.SerialRequantiser"):
        spec.harness()


def test_block_without_a_proof_is_reported_not_run(tmp_path):
    """The runner reports the serial requantiser's row (no tools needed: nothing runs) and it is no failure."""
    spec = _by_name(AcceleratorConfig(requant="serial"))["serial_requant"]
    lines = []
    (row,), _, _ = run_proofs([(spec, None)], tmp_path, solver="yices", progress=lines.append)
    assert (row["proof"], row["cover"], row["ok"], row["trace"]) == (NO_PROOF, None, None, None)
    assert failed([row]) == [] and lines == ["serial_requant (sdhw.requant.SerialRequantiser): no proof for this block"]
    assert "no proof for this block" in text_table([row]).splitlines()[1]


@pytest.mark.parametrize("exp_bits, wshift", [(1, 2), (1, 5), (2, 2), (2, 5)])
def test_rebuild_cover_asks_for_the_lowest_weight_golden_reaches(exp_bits, wshift):
    """The rebuild proof's cover of its most negative weight: golden's minimum over every code triple and
    extreme basis column (one exponent bit cannot reach the clamp at shift 2, so asking for -127 there would
    leave the cover unreached)."""
    top = (1 << exp_bits) - 1
    codes = np.array(list(itertools.product(range(-top, top + 1), repeat=3)))
    lowest = min(int(round_saturate(rebuild_exact(codes, np.array([column] * 3).T), wshift).min())
                 for column in itertools.product((-128, 127), repeat=3))
    assert lowest_rebuild_weight(exp_bits=exp_bits, weight_bits=8, wshift=wshift) == lowest


@pytest.mark.parametrize("acc, bias, want", [((1 << 39) - 1, INT32_MAX, INT32_MAX), (-(1 << 39), -5, INT32_MIN),
                                             (-(1 << 35), (1 << 31) - 1, INT32_MIN), (1000, -7, 993)])
def test_reference_sum_saturates_wide_accumulators(acc, bias, want):
    """A 40-bit accumulator plus its bias saturates to int32 in the requantiser proofs' reference (no wrap)."""
    m = Module()
    assert evaluate(_saturated_sum(m, Const(acc, signed(40)), Const(bias, signed(32))), m) == want


# ------------------------------------------------------------------------------------------------- the CLI
CONFIG = """\
pes = 8
device = "up5k"
act_depth = 512
code_depth = 1024
weight_depth = 64
basis_depth = 128
bias_depth = 256
"""


@pytest.fixture(scope="module")
def accelerator(tmp_path_factory):
    """A UP5K build of 8 PEs (SD, table requantiser) with small memories (its largest-fit program is drawn
    quickly)."""
    root = tmp_path_factory.mktemp("verify-formal")
    (root / "acc.toml").write_text(CONFIG)
    rc, _, err = run(["generate", "--config", root / "acc.toml", "-o", root / "acc"])
    assert rc == 0, err
    return root / "acc"


class FakeBuild:
    """The simulator build and run, answering every case as passed (the proofs are what these tests check)."""

    def __init__(self, cfg, work, **kwargs):
        pass

    def run(self, job, **kwargs) -> dict:
        corrupt = sum(case["name"].startswith("corrupt") for case in job.cases)
        return {"failures": [], "errors_checked": corrupt, "resets": regression.RESET_PROGRAMS,
                "inferences": len(job.cases) - corrupt, "outputs_checked": 10 * len(job.cases)}


@pytest.fixture
def fake_tools(monkeypatch, tmp_path):
    """SBY replaced: each harness is elaborated (it must take the build's parameters) and gets the verdict in
    ``verdicts`` (default PASS); the names and depths checked are recorded."""
    checked, verdicts = [], {}

    def check(harness, workdir, *, name, depth, mode, cover_depth=None, cover=True, timeout=None, solver=None,
              tools=None):
        Fragment.get(harness, None)
        checked.append((name, depth, mode))
        status = verdicts.get(name, "PASS")
        log = Path(workdir) / "logfile.txt"
        trace = Path(workdir) / "trace.vcd" if status == "FAIL" else None
        return formal.ProofResult(name, mode, depth, formal.TaskResult("proof", status, 1.5, log, trace),
                                  formal.TaskResult("cover", "PASS", 0.5, log) if cover else None, solver="yices")

    monkeypatch.setattr(formal, "find_tools", lambda solver=None: {})
    monkeypatch.setattr(formal, "default_solver", lambda: "yices")
    monkeypatch.setattr(formal, "tool_dir", lambda directory=None, solver=None: tmp_path)
    monkeypatch.setattr(formal, "check", check)
    monkeypatch.setattr(regression, "Build", FakeBuild)
    monkeypatch.setattr(regression, "check_simulator", lambda sim: None)
    return checked, verdicts


def test_formal_proofs_pass(accelerator, fake_tools):
    checked, _ = fake_tools
    rc, out, err = run(["verify", accelerator, "--count", 2, "--formal", "--json"])
    assert rc == 0 and err == "", err
    result = json.loads(out)
    expected = proofs_for(regression.load_accelerator(accelerator)[0])
    assert [(name, depth) for name, depth, _ in checked] == [(spec.name, spec.depth) for spec in expected]
    rows = result["formal"]
    assert [row["name"] for row in rows] == UP5K_PROOFS
    assert all(row["ok"] and row["proof"] == "PASS" and row["cover"] == "PASS" and row["seconds"] == 2.0
               for row in rows)
    assert [row["parameters"] for row in rows] == [spec.parameters for spec in expected]
    assert result["passed"] and result["formal_solver"] == "yices" and result["kept"] is None


def test_formal_text_report_and_progress(accelerator, fake_tools):
    rc, out, err = run(["verify", accelerator, "--count", 2, "--formal"])
    assert rc == 0
    lines = out.splitlines()
    header = lines.index(f"proofs of this build's blocks ({len(UP5K_PROOFS)} run with SBY, yices):")
    assert lines[header + 1].split() == ["proof", "block", "parameters", "result", "cover", "s", "verdict"]
    assert lines[header + 2].split()[:2] == ["rebuild", "RebuildUnit"]
    assert "exp_bits=2, weight_bits=8" in lines[header + 2]
    assert lines[header + 2].split()[-4:] == ["PASS", "PASS", "2.0", "ok"]
    assert any(line.startswith("  sequencer: ") and "per slot" in line for line in lines)
    assert lines[-1].startswith("0 mismatches, 0 failed proofs; ")
    progress = [line.split("] ", 1)[1] for line in err.splitlines()]
    assert "sequencer: proof PASS, cover PASS (2.0 s)" in progress
    assert any(line.startswith("proving threshold (sdhw.requant.ThresholdRequantiser, acc_bits=28, units=1")
               for line in progress)


def test_failed_proof_exits_1_and_names_its_trace(accelerator, fake_tools):
    _, verdicts = fake_tools
    verdicts["sequencer"] = "FAIL"
    rc, out, err = run(["verify", accelerator, "--count", 2, "--formal", "-q"])
    assert rc == 1 and err == "", err
    lines = out.splitlines()
    failed = [line for line in lines if line.startswith("PROOF FAILED")]
    assert len(failed) == 1 and failed[0].startswith("PROOF FAILED sequencer: proof FAIL, cover PASS; trace ")
    assert lines[-1].startswith("0 mismatches, 1 failed proof; ")
    kept = next(line for line in lines if line.startswith("simulation files kept in "))
    shutil.rmtree(kept.removeprefix("simulation files kept in "))


def test_missing_formal_tools_is_one_line_before_anything_runs(accelerator, monkeypatch):
    monkeypatch.setattr(formal, "_which", lambda command: None)
    monkeypatch.setattr(regression, "check_simulator", lambda sim: None)
    rc, out, err = run(["verify", accelerator, "--formal"])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("sdhw: error: formal tools missing: "), err
    assert "yowasp-sby" in err and "pip install 'sdhw[formal]'" in err


# ------------------------------------------------------------------------------------------- real proofs
needs_tools = pytest.mark.skipif(TOOLS_MISSING is not None, reason=TOOLS_MISSING or "")


@needs_tools
def test_ecp5_sequencer_is_proved_at_read_latency_two(tmp_path):
    """The one real SBY run of the default set: the sequencer of an ECP5 build (RAM outputs registered, read
    latency 2; ``make formal`` proves latency 1) through the shared runner: PASS, every cover reached."""
    spec = _by_name(AcceleratorConfig(device="ecp5-25f"))["sequencer"]
    lines = []
    (row,), _, _ = run_proofs([(spec, None)], tmp_path, timeout=300, progress=lines.append)
    assert row["proof"] == "PASS" and row["cover"] == "PASS" and row["ok"], row
    assert row["parameters"] == "ecp5-25f, desc_latency=2, 2 slots of the build's 16"
    assert lines[0].startswith("proving sequencer (sdhw.sequencer.Sequencer, ecp5-25f, desc_latency=2")
    assert lines[1].startswith("sequencer: proof PASS, cover PASS")


@needs_tools
@pytest.mark.slow
@pytest.mark.skipif(which("iverilog") is None, reason="iverilog is not installed")
def test_formal_run_on_a_generated_build(accelerator):
    """The whole path for real: the regression and every proof of the UP5K build (minutes)."""
    rc, out, err = run(["verify", accelerator, "--count", 2, "--sim", "icarus", "--formal", "--json"])
    assert rc == 0 and err == "", err
    result = json.loads(out)
    assert [row["name"] for row in result["formal"]] == UP5K_PROOFS
    assert all(row["proof"] == "PASS" and row["cover"] == "PASS" for row in result["formal"]), result["formal"]
