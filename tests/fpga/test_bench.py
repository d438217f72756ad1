"""The FPGA benchmark: rows from synthetic synth reports, derived figures, Markdown and JSON; and its sweep on
the explore engine (a thread-based Dask cluster, stand-ins for yosys and nextpnr): the tasks, the cache a
rerun or a resumed run reads, placement failures.

No synthesis and no simulation here: the reports are made up in the shape ``fpga.synth.synthesize`` returns.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from fpga import bench, engine


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


UP5K_OVERFLOW_LOG = ("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    6927/   5280   131%\n"
                     "Info: \t        ICESTORM_RAM:      20/     30    66%\n"
                     "Info: \t        ICESTORM_DSP:       5/      8    62%\n"
                     "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 6927 ICESTORM_LCs\n")


def test_placement_overflow_reads_the_resources_over_capacity_from_the_logs(tmp_path):
    (tmp_path / "pnr-seed1.log").write_text(UP5K_OVERFLOW_LOG)
    assert engine.placement_overflow(tmp_path, seeds=3) == ["6927 ICESTORM_LC > 5280"]
    assert engine.placement_overflow(tmp_path, [2]) == []
    assert engine.placement_overflow(tmp_path / "missing", seeds=1) == []


# ------------------------------------------------------------------------------------------------ on the engine
CELLS = {"SB_LUT4": 3000, "SB_CARRY": 400, "SB_DFF": 1000, "SB_MAC16": 2, "SB_RAM40_4K": 10}


class StandInTools:
    """yosys and nextpnr stand-ins (the real flow takes minutes per configuration): cells per N, an Fmax per
    (N, build, seed), every call counted; ``unplaceable`` N fail placement with an overflow in their log."""

    def __init__(self, monkeypatch, unplaceable=()):
        from fpga import synth

        self.calls = {"yosys": [], "pnr": []}
        self.unplaceable = set(unplaceable)
        monkeypatch.setattr(synth, "run_yosys", self.yosys)
        monkeypatch.setattr(synth, "run_nextpnr", self.nextpnr)
        monkeypatch.setattr(synth, "harness_verilog", lambda cfg: f"// {cfg.as_dict()}")

    def yosys(self, verilog, device, build_dir, log=None):
        self.calls["yosys"].append(build_dir.name)
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "netlist.json").write_text(verilog)
        scale = 5 if "'pes': 4," in verilog else 4                 # N = 4 a quarter larger than N = 1
        return {"cells": {k: v * scale // 4 for k, v in CELLS.items()}, "variant": "default", "seconds": 2.0}

    def nextpnr(self, device, netlist, freq, seed, build_dir, *, timeout=None, router="router1"):
        self.calls["pnr"].append((build_dir.name, seed))
        if any(f"-{n}-" in build_dir.name for n in self.unplaceable):
            (build_dir / f"pnr-seed{seed}.log").write_text(UP5K_OVERFLOW_LOG)
            return {"seed": seed, "ok": False, "error": "ERROR: Failed to expand region (0, 0)", "pnr_seconds": 3.0}
        fmax = 40.0 + seed + (2.0 if "dense" in build_dir.name else 0.0) + len(build_dir.name) % 3
        return {"seed": seed, "ok": True, "fmax_mhz": fmax, "met": fmax >= freq, "pnr_seconds": 5.0,
                "utilization": {"ICESTORM_LC": {"used": 3500, "available": 5280}},
                "critical_path": {"from": "a", "to": "b", "delay_ns": 1000 / fmax, "logic_ns": 9.0, "routing_ns": 1.0,
                                  "cells": 2, "path": ["a", "b"]}}


#: part 1 at N = 4 on two seeds, the sweep adds N = 1 on one: 4 configurations, 4 yosys and 6 nextpnr tasks
SMALL_PLAN = bench.Plan({"up5k": (4,)}, {"up5k": (1, 4)}, ("mlp",), seeds=2, sweep_seeds=1, images=5)


@pytest.fixture
def client():
    """A thread-based cluster (the stand-ins are patched into this process): fast to start."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") \
            as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


def _figures(rows):
    """The rows without the run's own bookkeeping (cached, time spent)."""
    return [{k: v for k, v in r.items() if k not in ("cached", "wall_seconds")} for r in rows]


def test_the_sweep_runs_on_the_engine_and_a_rerun_runs_nothing(tmp_path, monkeypatch, client):
    tools = StandInTools(monkeypatch)
    run = dict(build_root=tmp_path / "build", cache_dir=tmp_path / "cache", client=client, pnr_timeout=60.0)
    rows, tasks, interrupted = bench.run_synthesis(SMALL_PLAN, **run)
    assert not interrupted and tasks == {"total": 10, "run": 10, "cached": 0}
    assert len(tools.calls["yosys"]) == 4 and len(tools.calls["pnr"]) == 6
    assert [(r["device"], r["pes"], r["build"]) for r in rows] == [("up5k", 1, "sd"), ("up5k", 1, "dense"),
                                                                   ("up5k", 4, "sd"), ("up5k", 4, "dense")]
    assert all(r["status"] == "fits" and not r["cached"] for r in rows)
    n4 = rows[2]
    assert n4["seeds"] == 2 and n4["resources"]["lut4"] == 3750 and rows[0]["resources"]["lut4"] == 3000
    assert n4["fmax_mhz"]["min"] < n4["fmax_mhz"]["max"] and n4["verdict"].startswith("fits but MISSES 48 MHz")
    assert n4["channel_lanes"] * n4["pixel_lanes"] == 4 and n4["wall_seconds"] == 2.0 + 2 * 5.0
    assert rows[0]["seeds"] == 1                                   # only in the sweep: one seed
    # the per-configuration report beside the worker's files, as sdhw synth writes it
    (synth_json,) = [p for p in (tmp_path / "build").glob("up5k-4-dense-*/synth.json")]
    assert json.loads(synth_json.read_text())["fmax_mhz"] == rows[3]["fmax_mhz"]

    again, tasks, _ = bench.run_synthesis(SMALL_PLAN, **run)
    assert tasks == {"total": 10, "run": 0, "cached": 10}
    assert len(tools.calls["yosys"]) == 4 and len(tools.calls["pnr"]) == 6      # nothing ran again
    assert _figures(again) == _figures(rows)
    assert all(r["cached"] and r["wall_seconds"] == 0 for r in again)


def test_an_interrupted_bench_resumes_with_what_had_not_finished(tmp_path, monkeypatch, client):
    tools = StandInTools(monkeypatch)
    run = dict(build_root=tmp_path / "build", cache_dir=tmp_path / "cache", client=client)
    rows, _, _ = bench.run_synthesis(SMALL_PLAN, **run)
    # the state of a run stopped before the second seed of N = 4 finished
    _, entries = bench.synthesis_tasks(SMALL_PLAN, build_root=tmp_path / "build")
    lost = entries["up5k", 4, False]["seeds"][1]
    (path,) = (tmp_path / "cache").rglob(f"{lost}.json.gz")
    path.unlink()
    resumed, tasks, _ = bench.run_synthesis(SMALL_PLAN, **run)
    assert tasks == {"total": 10, "run": 1, "cached": 9}
    assert tools.calls["pnr"][-1][1] == 2 and len(tools.calls["pnr"]) == 7 and len(tools.calls["yosys"]) == 4
    assert _figures(resumed) == _figures(rows)
    assert [r["cached"] for r in resumed] == [True, True, False, True]


def test_a_design_nextpnr_cannot_place_is_a_does_not_fit_row(tmp_path, monkeypatch, client):
    StandInTools(monkeypatch, unplaceable=[1])
    plan = bench.Plan({}, {"up5k": (1,)}, ("mlp",), seeds=1, sweep_seeds=1)
    rows, _, _ = bench.run_synthesis(plan, build_root=tmp_path / "build", cache_dir=tmp_path / "cache",
                                     client=client)
    for row in rows:
        assert row["status"] == "does not fit" and row["resources"]["lut4"] == 3000 and row["fmax_mhz"] is None
        assert row["reason"] == "placement failed: ERROR: Failed to expand region (0, 0)"


def test_every_seed_failing_otherwise_names_the_overflow_or_is_an_error():
    hw = engine.hardware_point("up5k", 1)
    entry = {"yosys": "y", "seeds": ["s1"], "freq": 48.0}
    syn = {"ok": True, "fits": True, "reason": None, "resources": {"lut4": 5195, "carry": 1649, "ff": 1376, "dsp": 5,
                                                                   "bram": 20, "spram": 0},
           "variant": "default", "seconds": 173.7, "config": engine.make_config(hw).as_dict()}
    failed = {"seed": 1, "ok": False, "error": "ERROR: Max frequency for clock unknown", "pnr_seconds": 9.0}
    report = engine.synth_report(hw, entry, {"y": syn, "s1": {**failed, "overflow": ["6927 ICESTORM_LC > 5280"]}},
                                 {})
    row = bench.hardware_row("up5k", 1, False, report)
    assert row["status"] == "does not fit" and row["resources"]["lut4"] == 5195 and row["resources"]["dsp"] == 5
    assert row["reason"] == ("placement failed, after packing 6927 ICESTORM_LC > 5280 "
                             "(ERROR: Max frequency for clock unknown)")
    with pytest.raises(bench.SdhwError, match="nextpnr failed on every seed: ERROR: Max frequency"):
        engine.synth_report(hw, entry, {"y": syn, "s1": failed}, {})
    with pytest.raises(bench.SdhwError, match="lost a worker"):
        engine.synth_report(hw, entry, {"y": syn}, {"s1": "pnr up5k N=1 seed 1: lost a worker"})


def test_the_bench_and_explore_share_the_synthesis_tasks(tmp_path):
    """The same configuration is the same task for both: whichever ran it first, the other reads the cache."""
    from fpga import explore

    _, entries = bench.synthesis_tasks(SMALL_PLAN, build_root=tmp_path, pnr_timeout=bench.PNR_TIMEOUT)
    sweep = explore.Sweep(model="m.npz", devices=("up5k",), pes=(4,), dense=True, seeds=2)
    data = explore.Data(None, "0" * 64, np.zeros((1, 64), np.float32))
    _, points = explore.plan(sweep, data, synth_dir=tmp_path / "elsewhere")
    assert {(p["yosys"], tuple(p["seeds"])) for p in points} == {
        (entries["up5k", 4, d]["yosys"], tuple(entries["up5k", 4, d]["seeds"])) for d in (False, True)}


class NoModelsLane:
    """The models process (compiles and Verilator runs) stood in for: no model rows, nothing started."""

    def __init__(self, job, build_root, log):
        self.job = job

    def wait(self):
        return {"models": {}, "memory": [], "cycles": [], "errors": []}

    def kill(self):
        pass


def test_main_sends_the_sweep_to_a_scheduler_and_writes_the_same_report(tmp_path, monkeypatch, client):
    """``--scheduler`` (here the thread-based cluster the stand-ins live in): the report's files and fields as
    before, the engine and its task counts in the JSON; a second run reads every task from the cache."""
    tools = StandInTools(monkeypatch)
    monkeypatch.setattr(bench, "ModelsLane", NoModelsLane)
    args = ["--quick", "--out", str(tmp_path / "out"), "--build-dir", str(tmp_path / "build"), "--cache-dir",
            str(tmp_path / "cache"), "--scheduler", client.scheduler.address]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "out" / "fpga.json").read_text())
    assert [(r["device"], r["pes"], r["build"], r["status"]) for r in result["hardware"]] == [
        ("up5k", 1, "sd", "fits"), ("up5k", 1, "dense", "fits"), ("ecp5-25f", 1, "sd", "fits"),
        ("ecp5-25f", 1, "dense", "fits")]
    assert result["tasks"] == {"total": 8, "run": 8, "cached": 0} and client.scheduler.address in result["engine"]
    assert (tmp_path / "out" / "fpga.md").read_text() == bench.markdown(result)
    assert len(tools.calls["pnr"]) == 4
    assert bench.main(args) == 0
    again = json.loads((tmp_path / "out" / "fpga.json").read_text())
    assert again["tasks"] == {"total": 8, "run": 0, "cached": 8} and len(tools.calls["pnr"]) == 4
    assert _figures(again["hardware"]) == _figures(result["hardware"])


def test_an_unreachable_scheduler_is_a_one_line_error_before_anything_runs(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = bench.main(["--out", str(tmp_path / "out"), "--quick", "--scheduler", f"tcp://127.0.0.1:{port}",
                     "--build-dir", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("fpga.bench: error: cannot reach the Dask scheduler") and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "build").exists()


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
