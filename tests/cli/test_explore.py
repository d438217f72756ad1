"""`sdhw explore`: the quick sweep end to end, the Dask engine (1 vs 2 workers, a worker killed, resume,
Ctrl-C), the synthesis path with stand-in tools, and bad options."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from fpga import engine  # noqa: E402
from fpga import explore as ex  # noqa: E402
from golden.datasets import DIGITS_MLP, load_digits_split  # noqa: E402
from golden.model import load_model  # noqa: E402
from tests.clirun import run  # noqa: E402

#: a small sweep whose compile tasks take about a second each (time enough to kill a worker running one)
SWEEP = ex.Sweep(model=str(DIGITS_MLP), devices=("up5k", "ecp5-25f"), pes=(1, 16), prune=(0.2, 0.5), epochs=30,
                 quick=True)


def _data() -> ex.Data:
    x_train, _, x_test, y_test = load_digits_split()
    return ex.Data(load_model(DIGITS_MLP), hashlib.sha256(Path(DIGITS_MLP).read_bytes()).hexdigest(), x_train,
                   x_test, y_test)


def _comparable(report: dict) -> dict:
    """The figures of a report, without the run's own bookkeeping (time, tasks run or cached)."""
    return {k: report[k] for k in ("points", "front", "recommendation", "counts", "best_per_device")}


def _sweep(cache, workers: int, **kwargs):
    client, cluster = engine.open_client(workers=workers)
    try:
        return ex.explore(SWEEP, _data(), cache_dir=cache, client=client, **kwargs)
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep on one worker: its report and cache."""
    cache = tmp_path_factory.mktemp("explore") / "cache"
    report, stats = _sweep(cache, 1)
    return report, cache, stats


def test_quick_sweep_prints_a_front_and_a_recommendation(tmp_path):
    out = tmp_path / "out"
    rc, stdout, stderr = run(["explore", DIGITS_MLP, "--devices", "up5k,ecp5-25f", "--quick", "--pes", "4,16",
                              "--workers", "2", "--cache-dir", tmp_path / "cache", "-o", out])
    assert rc == 0, stderr
    assert "| point | build | device |" in stdout and "(recommended)" in stdout
    assert "recommended (throughput): " in stdout and "sdhw generate --device " in stdout
    assert "tasks done" in stderr                                   # progress on stderr
    report = json.loads((out / "explore.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"explore.json", "explore.md", "explore_throughput.png",
                                                 "explore_accuracy.png"}
    assert report["front"] and report["recommendation"]
    best = report["points"][report["recommendation"]["id"]]
    # Fmax from bench/fpga.json where the bench measured the device, else the device's target, labelled so
    assert best["status"] == "ok" and best["pareto"] and best["fmax_source"].startswith(("estimated", "ASSUMED"))
    assert best["cycles"] > 0 and best["inferences_per_s"] == pytest.approx(
        best["fmax_mhz"]["median"] * 1e6 / best["cycles"])
    assert any(c.startswith("sdhw build --board ") for c in report["recommendation"]["commands"])
    # every point is accounted for, with a reason where it is not feasible
    assert len(report["points"]) == 4
    assert all(p["status"] == "ok" or p["reason"] for p in report["points"])
    assert "## Pareto front" in (out / "explore.md").read_text()


def test_one_and_two_workers_give_the_same_results(reference, tmp_path):
    report1, _, stats1 = reference
    assert stats1.executed == report1["tasks"] and stats1.hits == 0
    report2, _ = _sweep(tmp_path / "cache", 2)
    assert _comparable(report2) == _comparable(report1)
    assert report1["counts"]["failed"] == 0 and report1["counts"]["ok"] > 0


def test_a_worker_killed_mid_sweep_loses_nothing(reference, tmp_path):
    killed = []

    def kill_a_busy_worker(status):
        if killed or not status.running:
            return
        busy = [addr for addr, keys in status.client.processing().items() if keys]
        if busy:
            pid = status.client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    report, _ = _sweep(tmp_path / "cache", 2, progress=kill_a_busy_worker, interval=0.05)
    assert killed, "no worker was busy to kill"
    assert not report["interrupted"] and report["counts"]["failed"] == 0 and report["counts"]["not run"] == 0, \
        report["task_failures"]
    assert _comparable(report) == _comparable(reference[0])


def test_a_resumed_sweep_runs_only_what_is_not_cached(reference, tmp_path):
    report1, cache1, _ = reference
    cache = tmp_path / "cache"
    shutil.copytree(cache1, cache)
    again, stats = ex.explore(SWEEP, _data(), cache_dir=cache, workers=1)
    assert stats.executed == 0 and stats.hits == report1["tasks"]       # no task ran, no cluster needed
    assert _comparable(again) == _comparable(report1)
    removed = sorted(cache.rglob("*.json.gz"))[:3]
    for path in removed:
        path.unlink()
    resumed, stats = ex.explore(SWEEP, _data(), cache_dir=cache, workers=1)
    assert stats.executed == len(removed) and stats.hits == report1["tasks"] - len(removed)
    assert _comparable(resumed) == _comparable(report1)


def test_ctrl_c_keeps_what_finished(reference, tmp_path):
    report1 = reference[0]

    def interrupt_after_the_first(status):
        if status.done - status.cached >= 1:
            raise KeyboardInterrupt

    cache = tmp_path / "cache"
    partial, stats = _sweep(cache, 1, progress=interrupt_after_the_first, interval=0.05)
    assert partial["interrupted"] and partial["counts"]["not run"] > 0
    kept = stats.executed
    assert 1 <= kept < report1["tasks"]
    assert "Interrupted" in ex.format_markdown(partial)
    resumed, stats = _sweep(cache, 1)
    assert stats.hits == kept and stats.executed == report1["tasks"] - kept
    assert _comparable(resumed) == _comparable(report1)


def test_synthesis_path_with_stand_in_tools(tmp_path, monkeypatch):
    """Without --quick every configuration is synthesized once and placed per seed; the figures come from
    yosys' cells and the seeds' Fmax (here stand-ins for the tools, in a thread-based cluster)."""
    from distributed import Client, LocalCluster

    from fpga import synth

    fmax = {1: 40.0, 2: 44.0, 3: 42.0}
    calls = {"yosys": 0, "pnr": 0}

    def fake_yosys(verilog, device, build_dir, log=None):
        calls["yosys"] += 1
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "netlist.json").write_text("{}")
        return {"cells": {"SB_LUT4": 3000, "SB_DFF": 1000, "SB_MAC16": 2, "SB_RAM40_4K": 10}, "variant": "default",
                "seconds": 1.0}

    def fake_nextpnr(device, netlist, freq, seed, build_dir, *, timeout=None, router="router1"):
        calls["pnr"] += 1
        return {"seed": seed, "ok": True, "fmax_mhz": fmax[seed], "met": False, "pnr_seconds": 1.0,
                "utilization": {"ICESTORM_LC": {"used": 3500, "available": 5280}}, "critical_path": None}

    monkeypatch.setattr(synth, "run_yosys", fake_yosys)
    monkeypatch.setattr(synth, "run_nextpnr", fake_nextpnr)
    monkeypatch.setattr(synth, "harness_verilog", lambda cfg: f"// {cfg}")
    sweep = ex.Sweep(model=str(DIGITS_MLP), devices=("up5k",), pes=(4,), method="paper", seeds=3,
                     max_accuracy_drop=100.0)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        report, _ = ex.explore(sweep, _data(), cache_dir=tmp_path / "cache", synth_dir=tmp_path / "synth",
                               client=client)
    assert calls == {"yosys": 1, "pnr": 3}
    point = report["points"][0]
    assert point["status"] == "ok", point["reason"]
    assert point["fmax_mhz"] == {"median": 42.0, "min": 40.0, "max": 44.0}
    assert point["fmax_source"].startswith("measured") and point["logic"] == 3500
    assert "--freq 40" in " ".join(report["recommendation"]["commands"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--devices", "up5k,xc7a35t"], "unknown device 'xc7a35t' in --devices"),
    (["--pes", ""], "empty sweep: --pes lists no value"),
    (["--pes", "3"], "--pes 3 is not a power of two"),
    (["--prune", "0.3,x"], "--prune takes comma-separated numbers"),
    (["--scheduler", "tcp://127.0.0.1:PORT"], "cannot reach the Dask scheduler at tcp://127.0.0.1:"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, args, message):
    args = [a.replace("PORT", str(_free_port())) for a in args]
    out, cache = tmp_path / "out", tmp_path / "cache"
    rc, stdout, stderr = run(["explore", DIGITS_MLP, "--quick", "--cache-dir", cache, "-o", out, *args])
    assert rc == 1
    assert stderr.startswith("sdhw: error: ") and message in stderr and stderr.count("\n") == 1, stderr
    assert not out.exists() and not cache.exists()


def _bench_report(path, rows):
    path.write_text(json.dumps({"command": "python -m fpga.bench --out bench", "date": "2026-12-01 10:00 UTC",
                                "hardware": [{"device": d, "pes": n, "build": b, "status": status,
                                              "fmax_mhz": None if f is None else {"min": f - 1, "median": f,
                                                                                  "max": f + 1}}
                                             for d, n, b, status, f in rows]}))
    return path


def test_quick_fmax_comes_from_the_benchs_report(tmp_path):
    report = _bench_report(tmp_path / "fpga.json", [
        ("up5k", 1, "sd", "fits", 42.6), ("up5k", 16, "sd", "fits", 37.8), ("up5k", 16, "dense", "fits", 35.8),
        ("up5k", 64, "sd", "does not fit", None), ("ecp5-25f", 64, "sd", "fits", 99.5)])
    measured = ex.measured_fmax(report)
    assert measured["figures"] == {("up5k", "sd", 1): 42.6, ("up5k", "sd", 16): 37.8, ("up5k", "dense", 16): 35.8,
                                   ("ecp5-25f", "sd", 64): 99.5}
    fmax, source = ex.quick_fmax("up5k", "sd", 8, measured)             # nearest N (log scale): 16
    assert fmax == 37.8 and source.startswith("estimated: the bench's measured median Fmax of up5k N = 16 SD")
    assert "fpga.json: `python -m fpga.bench --out bench`, 2026-12-01 10:00 UTC" in source
    assert ex.quick_fmax("up5k", "dense", 1, measured)[0] == 35.8      # the same build before the other
    assert ex.quick_fmax("ecp5-25f", "dense", 4, measured)[0] == 99.5  # no dense figure: the SD build's
    fmax, source = ex.quick_fmax("ecp5-85f", "sd", 256, measured)      # same fabric, measured on the 25F
    assert fmax == 99.5 and "no measurement on ecp5-85f" in source
    fmax, source = ex.quick_fmax("hx8k", "sd", 4, measured)            # nothing to go by: the target, so named
    assert fmax == ex.PNR_TARGETS["hx8k"].target_mhz and source.startswith("ASSUMED, not measured")
    assert ex.measured_fmax(tmp_path / "missing.json") == {"figures": {}, "source": None}
    (tmp_path / "broken.json").write_text("{")
    assert ex.measured_fmax(tmp_path / "broken.json")["figures"] == {}


def test_a_quick_sweep_states_where_its_fmax_is_from(tmp_path):
    """The estimate tasks are keyed on the Fmax they are given: a new bench report is a new estimate."""
    report = _bench_report(tmp_path / "fpga.json", [("up5k", 4, "sd", "fits", 40.0)])
    sweep = ex.Sweep(model=str(DIGITS_MLP), devices=("up5k", "hx8k"), pes=(4,), method="paper", quick=True,
                     max_accuracy_drop=100.0)
    tasks, points = ex.plan(sweep, _data(), bench_report=report)
    estimates = [t for t in tasks if t.kind == "estimate"]
    assert [t.args[1] for t in estimates] == [40.0, ex.PNR_TARGETS["hx8k"].target_mhz]
    result = ex.estimate_task(*estimates[0].args)
    assert result["fmax_mhz"]["median"] == 40.0 and result["fmax_source"].startswith("estimated")
    _bench_report(report, [("up5k", 4, "sd", "fits", 41.0)])
    again, _ = ex.plan(sweep, _data(), bench_report=report)
    assert [t.key for t in again if t.kind == "estimate"][0] != estimates[0].key
    notes = ex.assemble(sweep, points, {}, {})["notes"]
    assert any("bench/fpga.json" in n for n in notes)


def test_pareto_front_and_objectives():
    def point(ips, logic, acc, energy, capacity=5280):
        return {"inferences_per_s": ips, "logic": logic, "accuracy": acc, "energy_nj": energy,
                "latency_us": 1e6 / ips, "resources": {"logic_capacity": capacity}}

    pts = [point(100, 1000, 0.9, 10), point(200, 2000, 0.9, 10), point(150, 2500, 0.9, 10),   # dominated
           point(100, 1000, 0.95, 20), point(200, 2000, 0.9, 10, capacity=24288)]            # larger device
    assert ex.pareto(pts) == [0, 1, 3]
    assert min(range(3), key=lambda i: ex._RANK["area"](pts[i])) == 0
    assert min(range(3), key=lambda i: ex._RANK["throughput"](pts[i])) == 1


@pytest.mark.slow
def test_a_small_sweep_with_place_and_route(tmp_path):
    """Synthesis and one nextpnr seed per configuration on the UP5K (minutes)."""
    from fpga.synth import tools_available

    if tools_available("ice40"):
        pytest.skip(tools_available("ice40"))
    out = tmp_path / "out"
    rc, stdout, stderr = run(["explore", DIGITS_MLP, "--devices", "up5k", "--pes", "1,4", "--seeds", "1",
                              "--workers", "2", "--cache-dir", tmp_path / "cache", "--synth-dir", tmp_path / "synth",
                              "-o", out])
    assert rc == 0, stderr
    report = json.loads((out / "explore.json").read_text())
    ok = [p for p in report["points"] if p["status"] == "ok"]
    assert ok and all(p["fmax_source"].startswith("measured") and p["seeds"] for p in ok)
    assert report["recommendation"] and "--freq" in " ".join(report["recommendation"]["commands"])
