"""The FPGA benchmark's pure parts: rows from synthetic synth reports, derived figures, Markdown and JSON.

No synthesis and no simulation here: the reports are made up in the shape ``fpga.synth.synthesize`` returns.
"""
from __future__ import annotations

import json

import pytest

from fpga import bench


def fit_report(device="ecp5-25f", pes=16, dense=False, fmax=(100.0, 110.0, 120.0), target=125.0, lut4=12000):
    seeds = [{"seed": i + 1, "ok": True, "fmax_mhz": f, "met": f >= target, "pnr_seconds": 60.0,
              "critical_path": {"from": "a", "to": "b", "delay_ns": 1000 / f, "logic_ns": 3.0, "routing_ns": 5.0}}
             for i, f in enumerate(fmax)]
    ordered = sorted(fmax)
    q, p = bench.default_lanes(pes)
    return {"device": device, "pes": pes, "dense": dense, "channel_lanes": q, "pixel_lanes": p, "target_mhz": target,
            "synthesis": {"variant": "default", "seconds": 100.0},
            "resources": {"lut4": lut4, "carry": 900, "ff": 5000, "dsp": 20, "bram": 40, "spram": 0},
            "fits": True, "fit_problems": [], "seeds": seeds,
            "fmax_mhz": {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]},
            "seeds_met": sum(s["met"] for s in seeds), "critical_path": seeds[0]["critical_path"],
            "verdict": "fits but MISSES", "seconds": 300.0}


def nofit_report(device="up5k", pes=16, dense=False):
    return {"device": device, "pes": pes, "dense": dense, "channel_lanes": 8, "pixel_lanes": 2, "target_mhz": 48.0,
            "synthesis": {"variant": "default", "seconds": 50.0},
            "resources": {"lut4": 14000, "carry": 2000, "ff": 6000, "dsp": 20, "bram": 31, "spram": 0},
            "fits": False, "fit_problems": ["14000 logic cells (LUT4) > 5280", "20 DSPs > 8"], "seeds": [],
            "timing_met": False, "verdict": "DOES NOT FIT up5k: 14000 logic cells (LUT4) > 5280; 20 DSPs > 8",
            "seconds": 50.0}


def test_derived_figures():
    assert bench.gmacs(16, 125.0) == pytest.approx(2.0)
    assert bench.gmacs(16, None) is None
    assert bench.inferences_per_second(100.0, 2000) == pytest.approx(50_000)
    assert bench.inferences_per_second(None, 2000) is None and bench.inferences_per_second(100.0, None) is None
    cap = bench.capacity("up5k")
    assert cap["lut4"] == 5280 and cap["dsp"] == 8 and cap["spram"] == 4
    assert cap["ram_kbit"] == pytest.approx((30 * 4096 + 4 * 262144) / 1024)


def test_fitting_row_reports_median_gap_and_peak():
    row = bench.hardware_row("ecp5-25f", 16, False, fit_report())
    assert row["status"] == "fits" and row["build"] == "sd"
    assert row["fmax_mhz"] == {"min": 100.0, "median": 110.0, "max": 120.0}
    assert row["gmacs_peak"] == pytest.approx(16 * 110 / 1000)
    assert row["target_met"] is False and row["gap_mhz"] == 15.0 and row["gap_pct"] == 12.0
    assert row["seeds"] == 3 and row["seeds_met"] == 0
    met = bench.hardware_row("ecp5-25f", 16, True, fit_report(dense=True, fmax=(126.0, 130.0, 140.0)))
    assert met["target_met"] and met["gap_mhz"] is None and met["seeds_met"] == 3 and met["build"] == "dense"


def test_a_seed_stopped_at_the_time_limit_is_named_beside_the_fmax():
    """A configuration whose other seeds ran out of time must not read as if one seed were all it was given."""
    report = fit_report(pes=64, fmax=(88.6,))
    report["seeds"].append({"seed": 2, "ok": False, "timed_out": True, "pnr_seconds": 3517.0, "time_limit": 2000.0,
                            "error": "stopped after the 2000 s place-and-route time limit (CPU time)"})
    row = bench.hardware_row("ecp5-25f", 64, False, report)
    assert row["seeds"] == 1 and row["seeds_stopped"] == 1
    note = "1 more seed stopped at the time limit, without an Fmax"
    assert bench._fmax_cells(row)[0] == f"88.6 (1 seed; {note})"
    check = next(c for c in bench.target_checks([row]) if (c["device"], c["build"]) == ("ecp5-25f", "sd"))
    assert check["text"] == f"not met: Fmax median 88.6 MHz (min 88.6, max 88.6; 0/1 seeds meet it; {note}), " \
                            "36.4 MHz (29.1 %) short"
    assert bench._fmax_cells(bench.hardware_row("ecp5-25f", 16, False, fit_report()))[0] == "110.0 (100.0–120.0)"


def test_rows_that_do_not_fit_or_fail_keep_the_reason():
    row = bench.hardware_row("up5k", 16, False, nofit_report())
    assert row["status"] == "does not fit" and row["reason"] == "14000 logic cells (LUT4) > 5280; 20 DSPs > 8"
    assert row["fmax_mhz"] is None and row["gmacs_peak"] is None and row["resources"]["lut4"] == 14000
    err = bench.hardware_row("ecp5-85f", 256, True, error="yosys failed on x.v: ERROR: out of memory")
    assert err["status"] == "error" and "out of memory" in err["reason"] and err["resources"] is None


def test_model_row_derives_throughput_only_where_everything_fits():
    hw = bench.hardware_row("ecp5-25f", 16, False, fit_report())
    program = {"bits_per_weight": 2.79, "golden_accuracy": 0.9689, "energy_estimate_pj": {"sram": 26000.0,
                                                                                          "dram": 980000.0}}
    memory = {"fits": True, "used_kbit": 40.0, "available_kbit": 400.0}
    cycles = {"cycles_per_inference": 1852.0, "source": "measured", "images": 20, "accuracy": 0.95}
    row = bench.model_row("mlp", hw, program, memory, cycles)
    assert row["inferences_per_s"] == pytest.approx(110e6 / 1852)
    assert row["energy_estimate_nj"] == {"sram": 26.0, "dram": 980.0} and row["no_throughput_because"] is None
    no_mem = bench.model_row("mlp", hw, program, {"fits": False, "reason": "program needs 900 code entries"}, cycles)
    assert no_mem["inferences_per_s"] is None and no_mem["no_throughput_because"] == "program does not fit the memories"
    assert no_mem["memory"]["reason"] == "program needs 900 code entries"
    no_hw = bench.model_row("mlp", bench.hardware_row("up5k", 16, False, nofit_report()), program, memory, cycles)
    assert no_hw["inferences_per_s"] is None and no_hw["no_throughput_because"] == "hardware does not fit"
    assert no_hw["hw_reason"] == "14000 logic cells (LUT4) > 5280; 20 DSPs > 8"
    assert no_hw["cycles_per_inference"] == 1852.0                 # cycles are still reported


def test_targets_say_met_not_met_or_not_run():
    hw = [bench.hardware_row("up5k", 16, False, nofit_report()),
          bench.hardware_row("ecp5-25f", 64, False, fit_report(pes=64, fmax=(90.0, 95.0, 99.0))),
          bench.hardware_row("ecp5-25f", 64, True, fit_report(pes=64, dense=True, fmax=(130.0, 131.0, 132.0)))]
    checks = {(c["device"], c["build"]): c for c in bench.target_checks(hw, {"ecp5-85f N=256": "opt-in: --big"})}
    assert checks["up5k", "sd"]["status"] == "not met" and "does not fit: " in checks["up5k", "sd"]["text"]
    assert checks["up5k", "dense"]["status"] == "not run"
    assert checks["ecp5-25f", "sd"]["text"].endswith("30.0 MHz (24.0 %) short")
    assert checks["ecp5-25f", "dense"]["met"] and checks["ecp5-25f", "dense"]["text"].startswith("met: ")
    assert checks["ecp5-85f", "sd"]["text"] == "not run (opt-in: --big)"


def synthetic_result():
    plan = bench.Plan({"up5k": (16,), "ecp5-25f": (16,)}, {"ecp5-25f": (1, 16)}, ("mlp",), seeds=3, images=20,
                      skipped={"ecp5-85f N=256": "opt-in: --big"})
    hw = [bench.hardware_row("ecp5-25f", 1, False, fit_report(pes=1, fmax=(130.0, 131.0, 135.0), lut4=6000)),
          bench.hardware_row("ecp5-25f", 1, True, fit_report(pes=1, dense=True, fmax=(140.0, 141.0, 142.0),
                                                             lut4=5000)),
          bench.hardware_row("ecp5-25f", 16, False, fit_report()),
          bench.hardware_row("ecp5-25f", 16, True, fit_report(dense=True, fmax=(115.0, 118.0, 121.0), lut4=9000)),
          bench.hardware_row("up5k", 16, False, nofit_report()),
          bench.hardware_row("up5k", 16, True, nofit_report(dense=True))]
    lane = {"models": {"mlp": {"sd": {"bits_per_weight": 2.79, "golden_accuracy": 0.9689,
                                      "energy_estimate_pj": {"sram": 26000.0, "dram": 980000.0}},
                               "dense": {"bits_per_weight": 8.32, "golden_accuracy": 0.9711,
                                         "energy_estimate_pj": {"sram": 49000.0, "dram": 2900000.0}}}},
            "memory": [{"model": "mlp", "build": b, "device": d, "pes": 16, "fits": True, "used_kbit": k,
                        "available_kbit": 500.0} for b, k in (("sd", 30.0), ("dense", 90.0))
                       for d in ("up5k", "ecp5-25f")],
            "cycles": [{"model": "mlp", "build": "sd", "pes": 16, "cycles_per_inference": 1852.0, "images": 20,
                        "source": "measured by this bench (verilator, 20 images)"},
                       {"model": "mlp", "build": "dense", "pes": 16, "cycles_per_inference": 2408.0, "images": 20,
                        "source": "measured by this bench (verilator, 20 images)"}],
            "errors": []}
    meta = {"command": "python -m fpga.bench --out bench", "date": "2026-11-29 12:00 UTC", "git": "git abc1234",
            "seconds": 600.0, "quick": False}
    return bench.assemble(plan, hw, lane, meta)


def test_assembled_report_and_markdown():
    result = synthetic_result()
    assert [(r["device"], r["build"]) for r in result["rows"]] == [("up5k", "sd"), ("up5k", "dense"),
                                                                   ("ecp5-25f", "sd"), ("ecp5-25f", "dense")]
    sd = result["rows"][2]
    assert sd["inferences_per_s"] == pytest.approx(110e6 / 1852)
    text = bench.markdown(result)
    assert "Produced by `python -m fpga.bench --out bench` on 2026-11-29 12:00 UTC" in text
    assert "**does not fit**: 14000 logic cells (LUT4) > 5280; 20 DSPs > 8" in text
    assert "110.0 (100.0–120.0)" in text and "**−15.0 MHz** (−12.0 %)" in text
    assert "1.30x fewer cycles" in text                       # 2408 / 1852
    assert f"{110 / 1852 / (118 / 2408):.2f}x inferences/s" in text
    assert "59.40 k" in text                                  # 110 MHz / 1852 cycles
    assert "26.0 nJ (est.)" in text and "ESTIMATE" in text
    assert "Not in this run: ecp5-85f N=256 (opt-in: --big)." in text
    assert "- ecp5-25f: SD N = 16 at 110.0 MHz (1.76 GMAC/s peak)" in text
    assert "### ecp5-25f" in text and "### up5k" not in text   # the sweep covers ecp5-25f only here


def test_markdown_tables_are_rectangular():
    text = bench.markdown(synthetic_result())
    header = None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = line.count("|") - line.count("\\|")
            if header is None:
                header = cells
            assert cells == header, line
        else:
            header = None


def test_outputs_are_written_atomically(tmp_path):
    result = synthetic_result()
    paths = bench.write_outputs(result, tmp_path, plots=False)
    assert [p.name for p in paths] == ["fpga.json", "fpga.md"]
    parsed = json.loads((tmp_path / "fpga.json").read_text())
    assert parsed["targets"][0]["device"] == "up5k" and parsed["hardware"][4]["status"] == "does not fit"
    assert (tmp_path / "fpga.md").read_text() == bench.markdown(result)
    assert not list(tmp_path.glob(".*.tmp"))


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    result = synthetic_result()
    paths = bench.write_outputs(result, tmp_path)
    assert {p.name for p in paths} == {"fpga.json", "fpga.md", "fpga_lut4_vs_pes.png", "fpga_fmax_vs_pes.png"}
    assert (tmp_path / "fpga_lut4_vs_pes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![LUT4 vs N](fpga_lut4_vs_pes.png)" in (tmp_path / "fpga.md").read_text()


def test_plan_matrix():
    quick = bench.make_plan(quick=True)
    assert quick.synth_points() == [("up5k", 1, False), ("up5k", 1, True), ("ecp5-25f", 1, False),
                                    ("ecp5-25f", 1, True)]
    assert quick.seeds == 1 and quick.images == 20
    full = bench.make_plan()
    assert ("ecp5-85f", 256, False) not in full.synth_points() and "ecp5-85f N=256" in full.skipped
    big = bench.make_plan(big=True)
    assert ("ecp5-85f", 256, True) in big.synth_points() and not big.skipped
    assert ("up5k", 16) in full.headline_points() and ("ecp5-25f", 64) in full.headline_points()
    assert full.seeds_for("ecp5-25f", 16) == 3 and full.seeds_for("ecp5-25f", 4) == 1
    assert full.seeds_for("up5k", 16) == 3 and full.seeds_for("up5k", 8) == 1
    only = bench.make_plan(devices=["hx8k"])
    assert only.headline_points() == [("hx8k", bench.DEFAULT_PES["hx8k"])] and not only.skipped
    # the HX8K has no DSP: its sweep finds the largest N whose LUT products fit
    assert only.sweep == {"hx8k": bench.OPTIONAL_SWEEP["hx8k"]}
    assert not bench.make_plan(devices=["hx8k"], sweep=False).sweep


def test_up5k_builds_are_compared_with_marlann():
    rows = [bench.hardware_row("up5k", 16, False, fit_report("up5k", 16, fmax=(40.0, 41.0, 42.0), target=48.0,
                                                              lut4=5000)),
            bench.hardware_row("up5k", 16, True, nofit_report()),
            bench.hardware_row("ecp5-25f", 16, False, fit_report())]
    (only,) = bench.marlann_comparison(rows)
    assert only["gmacs"] == pytest.approx(16 * 41 / 1000)
    assert only["vs_gmacs"] == pytest.approx(16 * 41 / 1000 / 0.47)
    assert only["vs_gmacs_per_klc"] == pytest.approx(16 * 41 / 1000 / 5 / 0.115)
    text = "\n".join(bench.marlann_lines(rows))
    assert "MARLANN" in text and f"{only['vs_gmacs']:.2f}" in text


def test_unplaceable_design_becomes_a_does_not_fit_row(tmp_path):
    (tmp_path / "pnr-seed1.log").write_text(
        "Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    6927/   5280   131%\n"
        "Info: \t        ICESTORM_RAM:      20/     30    66%\nInfo: \t        ICESTORM_DSP:       5/      8    62%\n"
        "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 6927 ICESTORM_LCs\n")
    (tmp_path / "synth.cache.json").write_text(json.dumps({"key": "k", "result": {
        "cells": {"SB_LUT4": 5195, "SB_CARRY": 1649, "SB_DFFESR": 1376, "SB_MAC16": 5, "SB_RAM40_4K": 20},
        "variant": "default", "seconds": 173.7}}))
    over = bench.placement_overflow(tmp_path, seeds=3)
    assert over == ["6927 ICESTORM_LC > 5280"]
    cfg = bench.AcceleratorConfig(pes=1, device="up5k")
    report = bench.unplaceable_report(cfg, tmp_path, over, "nextpnr failed (x): ERROR: Failed to expand region")
    row = bench.hardware_row("up5k", 1, False, report)
    assert row["status"] == "does not fit" and row["resources"]["lut4"] == 5195 and row["resources"]["dsp"] == 5
    assert row["reason"] == "placement failed, after packing 6927 ICESTORM_LC > 5280 (ERROR: Failed to expand region)"
    assert bench.placement_overflow(tmp_path / "missing", seeds=1) == []


def test_digits_rtl_rows_are_reused_only_when_fresh_and_large_enough(tmp_path):
    import os
    import time

    def row(model, build, pes, images=450, lanes=None):
        q, p = lanes or bench.default_lanes(pes)
        return {"model": model, "build": build, "pes": pes, "channel_lanes": q, "pixel_lanes": p, "images": images,
                "rtl_equals_golden": True, "accuracy": 0.97, "cycles_per_inference": 1852.0, "device": "ecp5-25f",
                "simulator": "verilator"}

    path = tmp_path / "digits_rtl.json"
    path.write_text(json.dumps({"rows": [row("mlp", "sd", 16), row("mlp", "dense", 16, images=10),
                                         row("cnn", "sd", 16, lanes=(8, 2))]}))
    future = time.time() + 3600
    os.utime(path, (future, future))
    rows = bench.digits_rtl_rows(path, images=50)
    assert list(rows) == [("mlp", "sd", 16)]                  # too few images, other lane split: measured anew
    assert rows["mlp", "sd", 16]["cycles_per_inference"] == 1852.0 and "450 images" in rows["mlp", "sd", 16]["source"]
    os.utime(path, (0, 0))                                     # older than the RTL sources: stale
    assert bench.digits_rtl_rows(path, images=50) == {}
    assert bench.digits_rtl_rows(tmp_path / "missing.json", images=50) == {}
