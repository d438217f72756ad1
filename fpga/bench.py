"""Benchmark: SD vs dense int8 accelerators on FPGAs — resources, Fmax, throughput, per device and PE count.

``make bench`` runs ``python -m fpga.bench --out bench`` and writes ``bench/fpga.json``, ``bench/fpga.md`` and
the plots ``bench/fpga_*.png`` (each written atomically). Two parts:

1. **Per device**: the SD accelerator and the dense int8 baseline from the same generator at the device's
   default PE count and at the issue's target (UP5K 16 PEs >= 48 MHz, ECP5-25F 64 PEs >= 125 MHz, ECP5-85F
   256 PEs >= 100 MHz): resources, Fmax (median of the place-and-route seeds, min/max), target met or the gap,
   peak GMAC/s (N x Fmax), and for the bundled digits MLP and CNN: cycles/inference on the RTL, inferences/s
   at Fmax, bits/weight, the program's on-chip memory against the configuration's, and the **estimated**
   energy per inference (``golden.report``). A configuration that does not fit is a row saying so, with the
   synthesis report's reason. Default: UP5K and ECP5-25F at ``DEFAULT_PES`` and the target N; ``--big`` adds
   the ECP5-85F at ``DEFAULT_PES`` (128) and 256 (one place-and-route seed of N = 128 alone takes over 30 CPU
   minutes: about an hour per build at three seeds on two cores); ``--devices hx8k ecp5-45f`` adds those
   devices at their default N.
2. **PE-count sweep** per family (UP5K N = 1, 2, 4, 8, 16 and ECP5-25F N = 1, 4, 16, 64, SD and dense):
   resources and Fmax vs N, with plots. Points only in the sweep get ``--sweep-seeds`` (1) seeds.

Synthesis and place-and-route run on the task engine of ``sdhw explore`` (:mod:`fpga.engine`, on Dask): per
configuration one yosys task and one nextpnr task per seed, in worker processes of a ``LocalCluster``
(``--workers``, default 2: yosys and nextpnr use one core each) or on a running cluster (``--scheduler
tcp://HOST:8786``), working in ``build/bench-fpga/<device>-<N>[-dense]-<hash>``. Each task's result is cached
by a content hash of the configuration, the generator's and the flow's sources (``fpga.synth.flow_signature``:
the device's yosys scripts, nextpnr arguments, tool versions), the seed and the time limit, in the cache
``sdhw explore`` uses (``--cache-dir``, default ``build/explore/cache``): an interrupted bench resumes where it
stopped, a rerun only redoes what changed, and a configuration either of them synthesized is not synthesized
again by the other. The digits models are compiled once (cached on the model, the
options and the ``golden`` sources) and their cycles measured by a second process running alongside synthesis
(Verilator, the machinery of ``sim.digits.run_digits`` with the compiled program reused), unless
``bench/digits_rtl.json`` (``python -m sim.bench_digits``, run just before by ``make bench``) already holds that
model, build and N on at least as many images and is newer than every RTL, compiler and testbench source.

Run: ``python -m fpga.bench --out bench [--quick] [--seeds 3] [--images 50] [--big] [--scheduler ADDRESS]``.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from golden import SdhwError
from golden.format import write_atomic
from sdhw.config import DEFAULT_PES, DEVICES, AcceleratorConfig, check_fits, default_lanes, estimate_resources

from .engine import (
    DEFAULT_CACHE,
    PNR_TIMEOUT,
    ResultCache,
    hardware_point,
    hardware_tasks,
    reachable,
    run_tasks,
    synth_dir,
    synth_report,
)
from .synth import PNR_TARGETS

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = Path("build/bench-fpga")
BUILDS = ("sd", "dense")
MODELS = ("mlp", "cnn")

#: the issue's targets: PE count per device (the clock target is ``fpga.synth.PNR_TARGETS``' target_mhz)
ISSUE_PES = {"up5k": 16, "ecp5-25f": 64, "ecp5-85f": 256}
#: part 1 by default: the device's default N and the issue's target N, where they synthesize within the budget
HEADLINE = {d: tuple(sorted({DEFAULT_PES[d], ISSUE_PES[d]})) for d in ("up5k", "ecp5-25f")}
#: opt-in (``--big``): the ECP5-85F at its default and target N, the longest runs by far
BIG = {"ecp5-85f": tuple(sorted({DEFAULT_PES["ecp5-85f"], ISSUE_PES["ecp5-85f"]}))}
#: optional devices (``--devices hx8k ecp5-45f``): their default N
OPTIONAL = {"hx8k": (DEFAULT_PES["hx8k"],), "ecp5-45f": (DEFAULT_PES["ecp5-45f"],)}
#: part 2, the PE-count sweep per family (points also in part 1 get part 1's seeds)
SWEEP = {"up5k": (1, 2, 4, 8, 16), "ecp5-25f": (1, 4, 16, 64)}
#: the sweep of an optional device (with ``--devices``): the HX8K has no DSP, every product is built in LUTs
OPTIONAL_SWEEP = {"hx8k": (1, 2, 4, 8)}
#: MARLANN (open UP5K accelerator: 16 int8 MACs per cycle, 4,093 logic cells, 29.3 MHz with this project's
#: yosys + nextpnr), the iCE40 reference the bench compares with
MARLANN = {"gmacs": 0.47, "gmacs_per_klc": 0.115, "logic_cells": 4093, "mhz": 29.3}
QUICK = {"up5k": (1,), "ecp5-25f": (1,)}
QUICK_IMAGES, QUICK_SEEDS = 20, 1

#: what the cycle counts depend on besides the generated Verilog: the golden model the outputs are checked
#: against and the testbench that runs them
CYCLE_SOURCES = ("golden", "sim/cocotb_tb.py", "sim/runner.py", "sim/digits.py")


# ------------------------------------------------------------------------------------------------ plan
@dataclass
class Plan:
    headline: dict[str, tuple[int, ...]]
    sweep: dict[str, tuple[int, ...]]
    models: tuple[str, ...] = MODELS
    seeds: int = 3                   # per part-1 configuration
    sweep_seeds: int = 1             # per configuration only in the sweep
    images: int = 50
    skipped: dict[str, str] = field(default_factory=dict)     # "device N=n" -> why it is not in this run

    def synth_points(self) -> list[tuple[str, int, bool]]:
        """Every (device, N, dense) to synthesize: per device by increasing N, SD before dense."""
        pes = {}
        for table in (self.headline, self.sweep):
            for device, ns in table.items():
                pes.setdefault(device, set()).update(ns)
        order = [d for d in DEVICES if d in pes]
        return [(d, n, dense) for d in order for n in sorted(pes[d]) for dense in (False, True)]

    def headline_points(self) -> list[tuple[str, int]]:
        return [(d, n) for d in DEVICES if d in self.headline for n in self.headline[d]]

    def seeds_for(self, device: str, pes: int) -> int:
        return self.seeds if pes in self.headline.get(device, ()) else self.sweep_seeds


def make_plan(*, quick: bool = False, big: bool = False, devices=None, models=MODELS, seeds: int | None = None,
              sweep_seeds: int | None = None, images: int | None = None, sweep: bool = True) -> Plan:
    skipped: dict[str, str] = {}
    if quick:
        headline, sweep_table = dict(QUICK), dict(QUICK)
    else:
        headline = {d: tuple(ns) for d, ns in HEADLINE.items()}
        for d, ns in OPTIONAL.items():
            if devices and d in devices:
                headline[d] = ns
        for d, ns in BIG.items():
            if big:
                headline[d] = tuple(sorted(set(headline.get(d, ())) | set(ns)))
            else:
                skipped.update({f"{d} N={n}": "opt-in with --big: the longest synthesis" for n in ns})
        sweep_table = dict(SWEEP) if sweep else {}
        if sweep and devices:
            sweep_table.update({d: ns for d, ns in OPTIONAL_SWEEP.items() if d in devices})
    if devices:
        headline = {d: ns for d, ns in headline.items() if d in devices}
        sweep_table = {d: ns for d, ns in sweep_table.items() if d in devices}
        skipped = {k: v for k, v in skipped.items() if k.split()[0] in devices}
    seeds = seeds or (QUICK_SEEDS if quick else 3)
    return Plan(headline, sweep_table, tuple(models), seeds, sweep_seeds or min(seeds, 1),
                images or (QUICK_IMAGES if quick else 50), skipped)


# ------------------------------------------------------------------------------------------------ figures
def gmacs(pes: int, fmax_mhz: float | None) -> float | None:
    """Peak multiply-accumulates per second in GMAC/s: N products per cycle at Fmax."""
    return None if fmax_mhz is None else pes * fmax_mhz / 1000.0


def inferences_per_second(fmax_mhz: float | None, cycles: float | None) -> float | None:
    if fmax_mhz is None or not cycles:
        return None
    return fmax_mhz * 1e6 / cycles


def capacity(device: str) -> dict:
    dev = DEVICES[device]
    return {"lut4": dev.luts, "ff": dev.luts, "dsp": dev.dsps, "bram": dev.bram_blocks,
            "spram": dev.spram_blocks, "ram_kbit": (dev.bram_blocks * dev.bram_bits + dev.spram_blocks * 262144)
            / 1024}


def hardware_row(device: str, pes: int, dense: bool, report: dict | None = None, error: str | None = None) -> dict:
    """One synthesized configuration: resources, Fmax, target and peak throughput (pure: from the report)."""
    q, p = default_lanes(pes)
    target = PNR_TARGETS[device].target_mhz
    row = {"device": device, "pes": pes, "build": "dense" if dense else "sd", "channel_lanes": q,
           "pixel_lanes": p, "target_mhz": target, "status": "error", "reason": error, "resources": None,
           "capacity": capacity(device), "fmax_mhz": None, "seeds": 0, "seeds_met": 0, "target_met": None,
           "gap_mhz": None, "gap_pct": None, "gmacs_peak": None, "verdict": None, "synth_seconds": None,
           "yosys_variant": None, "critical_path": None, "cached": False}
    if report is None:
        row["verdict"] = f"error: {error}"
        return row
    row.update(channel_lanes=report.get("channel_lanes", q), pixel_lanes=report.get("pixel_lanes", p),
               target_mhz=report.get("target_mhz", target), resources=report.get("resources"),
               verdict=report.get("verdict"), synth_seconds=report.get("seconds"),
               yosys_variant=(report.get("synthesis") or {}).get("variant"), cached=bool(report.get("cached")))
    target = row["target_mhz"]
    if not report.get("fits"):
        row["status"] = "does not fit"
        row["reason"] = "; ".join(report.get("fit_problems") or ["no reason given"])
        return row
    ok = [s for s in report.get("seeds", []) if s.get("ok")]
    row["seeds"] = len(report.get("seeds", []))
    fmax = report.get("fmax_mhz")
    if not fmax:
        row["status"], row["reason"] = "no timing", report.get("verdict") or "no Fmax reported"
        return row
    cp = report.get("critical_path") or {}
    row.update(status="fits", reason=None, fmax_mhz=dict(fmax), seeds_met=sum(bool(s.get("met")) for s in ok),
               gmacs_peak=gmacs(pes, fmax["median"]), target_met=fmax["median"] >= target,
               critical_path={k: cp[k] for k in ("from", "to", "delay_ns", "logic_ns", "routing_ns") if k in cp}
               or None)
    row["seeds"] = len(ok)
    # seeds without an Fmax (stopped at the time limit) are named beside the ones that have one
    row["seeds_stopped"] = sum(bool(s.get("timed_out")) for s in report.get("seeds", []))
    if not row["target_met"]:
        row["gap_mhz"] = round(target - fmax["median"], 2)
        row["gap_pct"] = round(100 * (target - fmax["median"]) / target, 1)
    return row


def model_row(model: str, hw: dict, program: dict | None, memory: dict | None, cycles: dict | None) -> dict:
    """One digits model on one synthesized configuration (pure: derived from the parts' dicts)."""
    fmax = hw["fmax_mhz"]["median"] if hw.get("fmax_mhz") else None
    cyc = cycles.get("cycles_per_inference") if cycles else None
    fits_hw = hw["status"] == "fits"
    fits_mem = bool(memory and memory.get("fits"))
    ips = inferences_per_second(fmax, cyc) if fits_hw and fits_mem else None
    if not fits_hw:
        why = f"hardware {hw['status']}"
    elif not fits_mem:
        why = "program does not fit the memories"
    elif cyc is None:
        why = "no cycle count" + (f": {cycles['error']}" if cycles and cycles.get("error") else "")
    else:
        why = None
    return {
        "model": model, "device": hw["device"], "pes": hw["pes"], "build": hw["build"],
        "channel_lanes": hw["channel_lanes"], "pixel_lanes": hw["pixel_lanes"], "hw_status": hw["status"],
        "hw_reason": hw.get("reason"), "fmax_mhz": fmax, "gmacs_peak": hw.get("gmacs_peak"),
        "cycles_per_inference": cyc, "cycles_source": cycles.get("source") if cycles else None,
        "cycles_images": cycles.get("images") if cycles else None,
        "rtl_accuracy": cycles.get("accuracy") if cycles else None,
        "inferences_per_s": ips, "no_throughput_because": why,
        "bits_per_weight": program.get("bits_per_weight") if program else None,
        "golden_accuracy": program.get("golden_accuracy") if program else None,
        "energy_estimate_nj": ({k: v / 1000 for k, v in program["energy_estimate_pj"].items()}
                               if program and program.get("energy_estimate_pj") else None),
        "memory": memory,
    }


def target_checks(hardware: list[dict], skipped: dict[str, str] | None = None) -> list[dict]:
    """The issue's targets: per device and build, met / not met with the numbers."""
    checks = []
    for device, pes in ISSUE_PES.items():
        target = PNR_TARGETS[device].target_mhz
        for build in BUILDS:
            row = next((r for r in hardware if (r["device"], r["pes"], r["build"]) == (device, pes, build)), None)
            check = {"device": device, "pes": pes, "build": build, "target_mhz": target, "met": False}
            if row is None:
                why = (skipped or {}).get(f"{device} N={pes}", "not in this run's matrix")
                check.update(status="not run", text=f"not run ({why})")
            elif row["status"] == "fits":
                f = row["fmax_mhz"]
                span = f"Fmax median {f['median']:.1f} MHz (min {f['min']:.1f}, max {f['max']:.1f}; " \
                       f"{row['seeds_met']}/{row['seeds']} seeds meet it{_stopped_note(row)})"
                if row["target_met"]:
                    check.update(status="met", met=True, text=f"met: {span}")
                else:
                    check.update(status="not met", text=f"not met: {span}, {row['gap_mhz']:.1f} MHz "
                                                        f"({row['gap_pct']:.1f} %) short")
            else:
                check.update(status="not met", text=f"not met: {row['status']}: {row['reason']}")
            checks.append(check)
    return checks


def largest_fitting(hardware: list[dict]) -> dict[str, dict[str, dict]]:
    """Per device and build, the fitting configuration with the most PEs in this run."""
    best: dict[str, dict[str, dict]] = {}
    for r in hardware:
        if r["status"] == "fits":
            cur = best.setdefault(r["device"], {}).get(r["build"])
            if cur is None or r["pes"] > cur["pes"]:
                best[r["device"]][r["build"]] = r
    return best


# ------------------------------------------------------------------------------------------------ markdown
def _f(value, fmt: str = "{:.1f}", none: str = "—") -> str:
    return none if value is None else fmt.format(value)


def format_si(value: float | None) -> str:
    """``value`` with a k / M suffix (two decimals), ``—`` for None."""
    if value is None:
        return "—"
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.1f}"


def _kind(build: str) -> str:
    return "SD" if build == "sd" else "dense int8"


def _cell(text) -> str:
    """Free text in a Markdown table cell (tool messages contain '|')."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _resources_cells(r: dict) -> list[str]:
    res, cap = r.get("resources"), r["capacity"]
    if not res:
        return ["—"] * 5
    cells = [f"{res['lut4']} / {cap['lut4']}", f"{res['ff']}", f"{res['dsp']} / {cap['dsp']}",
             f"{res['bram']} / {cap['bram']}"]
    cells.append(f"{res.get('spram', 0)} / {cap['spram']}" if cap["spram"] else "—")
    return cells


def _stopped_note(r: dict) -> str:
    n = r.get("seeds_stopped") or 0
    return f"; {n} more seed{'s' if n > 1 else ''} stopped at the time limit, without an Fmax" if n else ""


def _fmax_cells(r: dict) -> list[str]:
    """Fmax, target met / gap, GMAC/s — or the reason the configuration has none."""
    if r["status"] != "fits":
        return [f"**{r['status']}**: {_cell(r['reason'])}", "—", "—"]
    f = r["fmax_mhz"]
    met = (f"met ({r['seeds_met']}/{r['seeds']} seeds)" if r["target_met"]
           else f"**−{r['gap_mhz']:.1f} MHz** (−{r['gap_pct']:.1f} %)")
    span = f"{f['min']:.1f}–{f['max']:.1f}" if r["seeds"] > 1 else "1 seed"
    return [f"{f['median']:.1f} ({span}{_stopped_note(r)})", f"{r['target_mhz']:g}: {met}",
            f"{r['gmacs_peak']:.2f}"]


def _memory_cell(m: dict | None) -> str:
    if not m:
        return "—"
    if not m.get("fits"):
        return "does not fit: " + _cell(str(m.get("reason")).split("; generate")[0])
    return f"{m['used_kbit']:.1f} / {m['available_kbit']:.1f} kbit ({m['used_kbit'] / m['available_kbit'] * 100:.0f} %)"


def marlann_comparison(hw: list[dict]) -> list[dict]:
    """UP5K builds that fit against MARLANN: peak GMAC/s and GMAC/s per 1,000 logic cells, and their ratios."""
    out = []
    for r in hw:
        if r["device"] != "up5k" or r["status"] != "fits" or not r.get("gmacs_peak"):
            continue
        per_klc = r["gmacs_peak"] / (r["resources"]["lut4"] / 1000)
        out.append({"pes": r["pes"], "build": r["build"], "gmacs": r["gmacs_peak"], "gmacs_per_klc": per_klc,
                    "vs_gmacs": r["gmacs_peak"] / MARLANN["gmacs"],
                    "vs_gmacs_per_klc": per_klc / MARLANN["gmacs_per_klc"]})
    return sorted(out, key=lambda c: (c["pes"], c["build"] != "sd"))


def marlann_lines(hw: list[dict]) -> list[str]:
    rows = marlann_comparison(hw)
    if not rows:
        return []
    lines = ["", f"Against MARLANN on the UP5K ({MARLANN['gmacs']} GMAC/s: 16 MACs at {MARLANN['mhz']} MHz in "
             f"{MARLANN['logic_cells']:,} logic cells, {MARLANN['gmacs_per_klc']} GMAC/s per 1,000 logic cells; "
             "peak = N x median Fmax, logic cells of the serial harness):", "",
             "| N | build | GMAC/s | x MARLANN | GMAC/s per 1k LC | x MARLANN |", "|---:|---|---:|---:|---:|---:|"]
    for c in rows:
        lines.append(f"| {c['pes']} | {_kind(c['build'])} | {c['gmacs']:.3f} | {c['vs_gmacs']:.2f} | "
                     f"{c['gmacs_per_klc']:.3f} | {c['vs_gmacs_per_klc']:.2f} |")
    return lines


def markdown(result: dict) -> str:
    hw = result["hardware"]
    lines = ["# SD vs dense int8 on FPGAs", "",
             f"Produced by `{result['command']}` on {result['date']} ({result['git']}; took "
             f"{result['seconds'] / 60:.1f} min). Place-and-route seeds: {result['seeds']} per configuration of "
             f"the per-device tables, {result.get('sweep_seeds', result['seeds'])} for the rest of the sweep; "
             "cycles on "
             f"{result['images']} digits test images." + (" **Quick run** (tiny matrix, for testing)."
                                                          if result.get("quick") else ""), "",
             "Both builds come from the same generator (`sdhw.accelerator.Accelerator`) on the same device: **SD** "
             "rebuilds int8 weights on chip from SD codes by shift-and-add, **dense int8** reads int8 weights. "
             "Top: the serial harness of `sdhw synth` (registered I/O), yosys + nextpnr from YoWASP.", ""]
    # targets
    lines += ["## Targets", ""]
    for c in result["targets"]:
        lines.append(f"- {c['device'].upper()}, {c['pes']} PEs, >= {c['target_mhz']:g} MHz, {_kind(c['build'])}: "
                     + (f"**met** — {c['text'][len('met: '):]}" if c["met"] else f"**{c['text']}**"))
    best = largest_fitting(hw)
    if best:
        lines += ["", "Largest configuration that fits, per device, in this run:", ""]
        for device in (d for d in DEVICES if d in best):
            parts = []
            for build in BUILDS:
                r = best[device].get(build)
                if r:
                    parts.append(f"{_kind(build)} N = {r['pes']} at {r['fmax_mhz']['median']:.1f} MHz "
                                 f"({r['gmacs_peak']:.2f} GMAC/s peak)")
            lines.append(f"- {device}: " + "; ".join(parts))
    lines += marlann_lines(hw)
    if result.get("skipped"):
        lines += ["", "Not in this run: " + "; ".join(f"{name} ({why})" for name, why in result["skipped"].items())
                  + "."]
    # part 1: hardware per device
    headline = {(d, n) for d, n in result["headline"]}
    lines += ["", "## Per device: hardware", "",
              "Resources from yosys' mapped cells (used / available; LUT4 on ECP5 counts 2 per carry cell); Fmax "
              "median (min–max) over the seeds from nextpnr; GMAC/s peak = N x median Fmax.", "",
              "| device | N (Q x P) | build | LUT4 | FF | DSP | BRAM | SPRAM | Fmax MHz | target MHz | GMAC/s peak |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    order = {d: i for i, d in enumerate(DEVICES)}
    for r in sorted(hw, key=lambda r: (order[r["device"]], r["pes"], r["build"] != "sd")):
        if (r["device"], r["pes"]) in headline:
            lines.append(f"| {r['device']} | {r['pes']} ({r['channel_lanes']} x {r['pixel_lanes']}) | "
                         f"{_kind(r['build'])} | " + " | ".join(_resources_cells(r) + _fmax_cells(r)) + " |")
    # part 1: models
    lines += ["", "## Per device: digits models", "",
              "Cycles/inference measured on the RTL (Verilator, every output checked against golden); "
              "inferences/s = median Fmax / cycles; bits/weight from the golden compile report (every stored bit "
              "/ float weights); memory = the program's codes/weights, bitmaps, bases, biases and descriptors "
              "against the configuration's memories of those kinds; energy per inference is an **ESTIMATE** "
              "(`golden.report`, Horowitz 45 nm per-operation table, weights in on-chip SRAM), not a measurement.",
              "",
              "| model | device | N | build | cycles/inference | inferences/s | SD vs dense | bits/weight | "
              "program memory (used / available) | est. energy/inference |",
              "|---|---|---:|---|---:|---:|---|---:|---|---:|"]
    rows = result["rows"]
    by_key = {(r["model"], r["device"], r["pes"], r["build"]): r for r in rows}
    for r in rows:
        ips = (format_si(r["inferences_per_s"]) if r["inferences_per_s"] is not None
               else f"— ({_cell(r['no_throughput_because'])})")
        versus = "—"
        other = by_key.get((r["model"], r["device"], r["pes"], "dense"))
        if r["build"] == "sd" and other:
            parts = []
            if r["cycles_per_inference"] and other["cycles_per_inference"]:
                parts.append(f"{other['cycles_per_inference'] / r['cycles_per_inference']:.2f}x fewer cycles")
            if r["inferences_per_s"] and other["inferences_per_s"]:
                parts.append(f"{r['inferences_per_s'] / other['inferences_per_s']:.2f}x inferences/s")
            versus = ", ".join(parts) or "—"
        energy = r["energy_estimate_nj"]
        lines.append(f"| {r['model']} | {r['device']} | {r['pes']} | {_kind(r['build'])} | "
                     f"{_f(r['cycles_per_inference'], '{:.0f}')} | {ips} | {versus} | "
                     f"{_f(r['bits_per_weight'], '{:.2f}')} | {_memory_cell(r['memory'])} | "
                     f"{_f(energy and energy.get('sram'), '{:.1f} nJ (est.)')} |")
    models = result.get("models", {})
    if models:
        lines += ["", "| model | build | bits/weight | golden accuracy (test split) | est. energy/inference, "
                      "weights in SRAM / DRAM |", "|---|---|---:|---:|---|"]
        for name, builds in models.items():
            for build, info in builds.items():
                if info.get("error"):
                    lines.append(f"| {name} | {_kind(build)} | error: {_cell(info['error'])} | | |")
                    continue
                e = info["energy_estimate_pj"]
                lines.append(f"| {name} | {_kind(build)} | {info['bits_per_weight']:.2f} | "
                             f"{info['golden_accuracy'] * 100:.2f} % | {e['sram'] / 1000:.1f} nJ / "
                             f"{e['dram'] / 1000:.0f} nJ (estimate) |")
    # part 2: sweep
    sweep_devices = [d for d in DEVICES if d in result["sweep"]]
    if sweep_devices:
        lines += ["", "## PE-count sweep", ""]
        for name, title in (("fpga_lut4_vs_pes.png", "LUT4 vs N"), ("fpga_fmax_vs_pes.png", "Fmax vs N")):
            if name in result.get("plots", []):
                lines.append(f"![{title}]({name})")
        for device in sweep_devices:
            lines += ["", f"### {device}", "",
                      "| N (Q x P) | build | LUT4 | FF | DSP | BRAM | SPRAM | Fmax MHz | target MHz | GMAC/s peak |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
            for r in sorted((r for r in hw if r["device"] == device), key=lambda r: (r["pes"], r["build"] != "sd")):
                lines.append(f"| {r['pes']} ({r['channel_lanes']} x {r['pixel_lanes']}) | {_kind(r['build'])} | "
                             + " | ".join(_resources_cells(r) + _fmax_cells(r)) + " |")
    # method
    lines += ["", "## How it was measured", ""]
    lines += [f"- {note}" for note in result.get("notes", [])]
    cycles_sources = sorted({r["cycles_source"] for r in rows if r.get("cycles_source")})
    if cycles_sources:
        lines.append("- cycle counts from: " + "; ".join(cycles_sources))
    errors = [f"synthesis of {r['device']} N={r['pes']} {_kind(r['build'])}: {r['reason']}" for r in hw
              if r["status"] == "error"] + list(result.get("errors", []))
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ output
def _plot_data(hw: list[dict], device: str, build: str, value) -> tuple[list, list, list]:
    pts = sorted((r for r in hw if r["device"] == device and r["build"] == build), key=lambda r: r["pes"])
    pts = [(r["pes"], value(r), r["status"] == "fits") for r in pts if value(r) is not None]
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def write_plots(result: dict, out: Path) -> list[str]:
    """``fpga_lut4_vs_pes.png`` and ``fpga_fmax_vs_pes.png`` (one panel per swept device, SD and dense)."""
    devices = [d for d in DEVICES if d in result["sweep"]]
    if not devices:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'sdhw[dev]')", flush=True)
        return []
    hw = result["hardware"]
    styles = {"sd": ("SD", "tab:blue", "o", "-"), "dense": ("dense int8", "tab:orange", "s", "--")}
    written = []

    def panel(ax, device, value, ylabel, hline, hlabel, errors=False):
        for build, (label, color, marker, ls) in styles.items():
            xs, ys, fits = _plot_data(hw, device, build, value)
            if not xs:
                continue
            ax.plot(xs, ys, ls=ls, color=color, label=label)
            if errors:
                rows = {r["pes"]: r for r in hw if r["device"] == device and r["build"] == build}
                lo = [y - rows[x]["fmax_mhz"]["min"] for x, y in zip(xs, ys)]
                hi = [rows[x]["fmax_mhz"]["max"] - y for x, y in zip(xs, ys)]
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor=color, capsize=3)
            ax.scatter([x for x, f in zip(xs, fits) if f], [y for y, f in zip(ys, fits) if f], color=color,
                       marker=marker, zorder=3)
            ax.scatter([x for x, f in zip(xs, fits) if not f], [y for y, f in zip(ys, fits) if not f],
                       facecolors="none", edgecolors=color, marker=marker, zorder=3)
        ax.axhline(hline, color="gray", ls=":", label=hlabel)
        ns = sorted({r["pes"] for r in hw if r["device"] == device})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("PEs (N)")
        ax.set_ylabel(ylabel)
        ax.set_title(device)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    figures = (
        ("fpga_lut4_vs_pes.png", "LUT4 (hollow: does not fit)",
         lambda r: r["resources"]["lut4"] if r.get("resources") else None,
         lambda d: (DEVICES[d].luts, "device LUT4"), False),
        ("fpga_fmax_vs_pes.png", "Fmax MHz (median, min–max over seeds)",
         lambda r: r["fmax_mhz"]["median"] if r.get("fmax_mhz") else None,
         lambda d: (PNR_TARGETS[d].target_mhz, "target"), True),
    )
    for name, ylabel, value, line, errors in figures:
        fig, axes = plt.subplots(1, len(devices), figsize=(5 * len(devices), 4), squeeze=False)
        for ax, device in zip(axes[0], devices):
            panel(ax, device, value, ylabel, *line(device), errors=errors)
        fig.suptitle(f"SD vs dense int8: {ylabel.split(' (')[0]} vs PE count", fontsize=11)
        fig.tight_layout()
        png = io.BytesIO()
        try:
            fig.savefig(png, format="png", dpi=110)
        finally:
            plt.close(fig)
        write_atomic(out / name, png.getvalue())
        written.append(name)
    return written


def write_outputs(result: dict, out, *, plots: bool = True) -> list[Path]:
    """``fpga.json``, ``fpga.md`` and the plots in ``out``, every file written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = write_plots(result, out) if plots else []
    write_atomic(out / "fpga.json", (json.dumps(result, indent=2) + "\n").encode())
    write_atomic(out / "fpga.md", markdown(result).encode())
    return [out / "fpga.json", out / "fpga.md"] + [out / p for p in result["plots"]]


# ------------------------------------------------------------------------------------------------ synthesis
def _sha(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _stamp(start: float, msg: str) -> None:
    print(f"[{time.monotonic() - start:6.0f}s] {msg}", flush=True)


def synthesis_tasks(plan: Plan, *, build_root, pnr_timeout: float | None = None) -> tuple[list, dict]:
    """The engine's tasks for every configuration of the plan (yosys, then nextpnr per seed), longest first
    (estimated logic x seeds: the scheduler starts them in this order, so the last to finish is a short one),
    and each configuration's entry for :func:`fpga.engine.synth_report`, by ``(device, N, dense)``."""
    points = plan.synth_points()
    order = sorted(points, key=lambda p: -estimate_resources(AcceleratorConfig(pes=p[1], dense=p[2], device=p[0]))
                   ["luts"] * (1 + plan.seeds_for(p[0], p[1])))
    tasks, entries = [], {}
    for device, pes, dense in order:
        hw = hardware_point(device, pes, dense)
        point_tasks, entry = hardware_tasks(hw, range(1, plan.seeds_for(device, pes) + 1), timeout=pnr_timeout,
                                            build_root=build_root)
        tasks += point_tasks
        entries[device, pes, dense] = {**entry, "hw": hw}
    return tasks, entries


def run_synthesis(plan: Plan, *, build_root: Path, cache_dir=DEFAULT_CACHE, pnr_timeout: float | None = None,
                  client=None, scheduler: str | None = None, workers: int | None = 2, start: float | None = None,
                  interval: float = 60.0) -> tuple[list[dict], dict, bool]:
    """Every configuration of the plan synthesized and placed on the engine; ``(rows, tasks, interrupted)``:
    the hardware rows in plan order, the task counts (``total``, ``run``, ``cached``) and whether Ctrl-C
    stopped the run (finished tasks stay in the cache; the rows are then incomplete)."""
    start = time.monotonic() if start is None else start
    tasks, entries = synthesis_tasks(plan, build_root=build_root, pnr_timeout=pnr_timeout)
    cache = ResultCache(cache_dir)
    hits = {t.key for t in tasks if cache.has(t.key)}
    last = {"done": -1}

    def progress(status):
        if status.done != last["done"] or status.seconds - last.get("at", 0.0) >= interval:
            last.update(done=status.done, at=status.seconds)
            _stamp(start, status.line())

    results, failures, interrupted = run_tasks(tasks, cache, client=client, scheduler=scheduler, workers=workers,
                                               progress=progress, interval=interval, name="synthesis")
    rows = []
    for device, pes, dense in plan.synth_points():
        entry = entries[device, pes, dense]
        try:
            report = synth_report(entry["hw"], entry, results, failures, hits)
        except SdhwError as exc:
            row = hardware_row(device, pes, dense, error=str(exc))
        else:
            row = hardware_row(device, pes, dense, report)
            local = synth_dir(build_root, entry["hw"])
            if report.get("resources") and local.is_dir():     # beside the logs, when the worker's files are here
                from .synth import write_report

                write_report(report, local)
        # the time this run spent on the configuration's tasks (none when all came from the cache)
        run_keys = [k for k in (entry["yosys"], *entry["seeds"]) if k not in hits and k in results]
        row["wall_seconds"] = round(sum((results[k].get("seconds") if k == entry["yosys"] else
                                         results[k].get("pnr_seconds")) or 0 for k in run_keys), 1)
        rows.append(row)
    counts = {"total": len(tasks), "run": cache.executed, "cached": len(hits)}
    return rows, counts, interrupted


# ------------------------------------------------------------------------------------------------ models lane
def _sources_digest(paths) -> str:
    files = []
    for rel in paths:
        p = ROOT / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return _sha(*[f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() for f in files if f.exists()])


def _newest_source_mtime() -> float:
    newest = 0.0
    for rel in ("sdhw", "rtl_gen", *CYCLE_SOURCES):
        p = ROOT / rel
        for f in (list(p.rglob("*.py")) + list(p.rglob("*.npz")) if p.is_dir() else [p]):
            if f.exists():
                newest = max(newest, f.stat().st_mtime)
    return newest


def compile_program(name: str, build: str, cache_dir: Path, log) -> tuple[object, dict]:
    """The compiled digits program (``CompileOptions(dense=...)`` as ``sim.digits.run_digits`` uses) and its
    compile figures; cached on the model file, the options and the ``golden`` sources."""
    from golden import format as fmt
    from golden.compiler import CompileOptions, compile_model
    from golden.datasets import DIGITS_CNN, DIGITS_MLP, load_digits_split
    from golden.model import accuracy, load_npz
    from golden.program import infer
    from golden.report import compile_report

    path = {"mlp": DIGITS_MLP, "cnn": DIGITS_CNN}[name]
    opts = CompileOptions(dense=build == "dense")
    key = _sha(Path(path).read_bytes(), repr(opts), _sources_digest(["golden"]))
    sdp, meta = cache_dir / f"{name}-{build}.sdp", cache_dir / f"{name}-{build}.json"
    if sdp.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("key") == key:
            return fmt.unpack(sdp.read_bytes()), {**info["figures"], "cached": True}
    model = load_npz(path)
    x_train, _, x_test, y_test = load_digits_split()
    log(f"compiling {name} ({_kind(build)})")
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compile_model(model, x_train.reshape((-1, *model.input_shape)), opts)
    packed = fmt.pack(result.program)
    rep = compile_report(result, packed)
    figures = {"bits_per_weight": rep["program"]["bits_per_weight"], "bytes": rep["program"]["bytes"],
               "weights": rep["program"]["weights"], "energy_estimate_pj": rep["energy_estimate_pj"],
               "golden_accuracy": accuracy(infer(result.program, x_test.reshape((-1, *model.input_shape))),
                                           y_test),
               "test_samples": len(y_test), "compile_seconds": round(time.monotonic() - t0, 1)}
    write_atomic(sdp, packed)
    write_atomic(meta, json.dumps({"key": key, "figures": figures}, indent=2).encode())
    return result.program, figures


def program_memory(program, cfg: AcceleratorConfig) -> dict:
    """The program's memory use on ``cfg`` against the configuration's memories of the same kinds (bits)."""
    from rtl_gen.image import build_image
    from sdhw.config import DESC_WORDS

    try:
        image = build_image(program, cfg)
    except SdhwError as exc:
        return {"fits": False, "reason": str(exc)}
    usage = image.meta["usage"]
    entry_bits = {"code": cfg.code_word_bits, "basis": 72, "bias": 32, "descriptors": DESC_WORDS * 32}
    used = {k: usage[k] * bits for k, bits in entry_bits.items() if k in usage}
    mems = cfg.memories()
    available = {name: d * w for name, (d, w) in mems.items() if name in ("codes", "bases", "bias", "descriptors")}
    act_bytes = max(max(math.prod(layer.in_shape), math.prod(layer.out_shape)) for layer in program.layers)
    return {"fits": True, "used_bits": used, "available_bits": available,
            "used_kbit": sum(used.values()) / 1024, "available_kbit": sum(available.values()) / 1024,
            "activations_peak_bytes": act_bytes, "act_depth": cfg.act_depth,
            "device_ram_kbit": capacity(cfg.device)["ram_kbit"]}


def digits_rtl_rows(path: Path, images: int) -> dict:
    """Valid rows of ``bench/digits_rtl.json``: newer than every cycle source, at least ``images`` images,
    checked against golden, default lane split; keyed ``(model, build, pes)``."""
    try:
        if path.stat().st_mtime <= _newest_source_mtime():
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    rows = {}
    for r in data.get("rows", []):
        try:
            if (r["images"] >= images and r["rtl_equals_golden"] and r.get("batch", 1) == 1
                    and (r["channel_lanes"], r["pixel_lanes"]) == default_lanes(r["pes"])):
                rows[r["model"], r["build"], r["pes"]] = {
                    "cycles_per_inference": r["cycles_per_inference"], "images": r["images"],
                    "accuracy": r["accuracy"], "device": r["device"],
                    "source": f"{path} (sim.bench_digits, {r['simulator']}, whole test split on "
                              f"{r['images']} images)"}
        except (KeyError, TypeError):
            continue
    return rows


def measurement_config(programs: list, pes: int, dense: bool, devices: list[str]) -> AcceleratorConfig:
    """The first of ``devices`` (at N) that the generator accepts and whose memories hold every program, else
    the simulation-only ``generic`` device with its memories grown (powers of two) until they do."""
    from rtl_gen.image import build_image

    for device in devices:
        cfg = AcceleratorConfig(pes=pes, dense=dense, device=device)
        try:
            check_fits(cfg)                       # the generator refuses what its estimate says cannot fit
        except SdhwError:
            continue
        if all(program_memory(p, cfg)["fits"] for p in programs):
            return cfg
    roomy = AcceleratorConfig(pes=pes, dense=dense, device="generic", act_depth=65536, code_depth=65536,
                              basis_depth=65536, bias_depth=65536)
    base = AcceleratorConfig(pes=pes, dense=dense, device="generic")
    grown = {k: getattr(base, k) for k in ("code_depth", "basis_depth", "bias_depth", "act_depth")}
    for p in programs:
        usage = build_image(p, roomy).meta["usage"]
        act = max(max(math.prod(layer.in_shape), math.prod(layer.out_shape)) for layer in p.layers)
        for key, used in (("code_depth", usage["code"]), ("basis_depth", usage["basis"]),
                          ("bias_depth", usage["bias"]), ("act_depth", act)):
            while grown[key] < used:
                grown[key] *= 2
    return AcceleratorConfig(pes=pes, dense=dense, device="generic", **grown)


def measure_cycles(programs: dict, cfg: AcceleratorConfig, images: int, build_dir: Path, log) -> dict:
    """Cycles/inference of each ``{model: program}`` on ``cfg``'s RTL (Verilator), outputs checked against
    golden by the testbench; one Verilator build shared by the models; cached on the inputs."""
    import numpy as np

    from golden import format as fmt
    from golden.datasets import load_digits_split
    from rtl_gen.generate import TOP_NAME, generate
    from sim.runner import Build, Job

    _, _, x_test, y_test = load_digits_split()
    # keyed on the Verilog the testbench simulates, not on the hardware sources: a change that leaves the
    # generated RTL alone (a docstring, a refactor) reuses the counts
    generate(cfg, build_dir)
    rtl = (build_dir / f"{TOP_NAME}.v").read_bytes()
    digest = _sources_digest(CYCLE_SOURCES)
    keys = {m: _sha(json.dumps(cfg.as_dict(), sort_keys=True), fmt.pack(p), images, rtl, digest)
            for m, p in programs.items()}
    results, todo = {}, {}
    for m, p in programs.items():
        cache = build_dir / f"cycles-{m}.json"
        try:
            cached = json.loads(cache.read_text())
            if cached.get("key") == keys[m]:
                results[m] = {**cached["result"], "cached": True}
                continue
        except (OSError, ValueError):
            pass
        todo[m] = p
    if not todo:
        return results
    log(f"Verilator build {build_dir.name} ({cfg.device}, {cfg.pes} PEs, {'dense' if cfg.dense else 'SD'})")
    build = Build(cfg, build_dir, sim="verilator", generated=True)
    for m, program in todo.items():
        x = x_test[:images].reshape((-1, *program.input_shape))
        x_q = program.input_q.quantize(x)
        job = Job()
        job.add_program("digits", program, cfg, list(x_q), keep_outputs=True)
        t0 = time.monotonic()
        stats = build.run(job, seed=1, name=f"digits-{m}", quiet=True)
        cycles = np.asarray(stats["cycles"])
        outputs = np.asarray(stats["outputs"])
        res = {"cycles_per_inference": float(cycles.mean()), "cycles_min": int(cycles.min()),
               "cycles_max": int(cycles.max()), "images": len(x_q), "device": cfg.device,
               "accuracy": float(np.mean(np.argmax(outputs, axis=1) == y_test[:images])),
               "outputs_checked": stats["outputs_checked"], "sim_seconds": round(time.monotonic() - t0, 1),
               "source": f"measured by this bench ({build.sim}, {len(x_q)} images)"}
        write_atomic(build_dir / f"cycles-{m}.json", json.dumps({"key": keys[m], "result": res}).encode())
        results[m] = res
        log(f"{m} on {build_dir.name}: {res['cycles_per_inference']:.0f} cycles/inference")
    return results


def run_models_lane(job: dict, log) -> dict:
    """Compile the models, lay them out per headline configuration, count cycles (the second process)."""
    build_root = Path(job["build_dir"])
    out = {"models": {}, "memory": [], "cycles": [], "errors": []}
    programs: dict[tuple[str, str], object] = {}
    for name in job["models"]:
        for build in BUILDS:
            try:
                programs[name, build], figures = compile_program(name, build, build_root / "programs", log)
            except Exception as exc:
                figures = {"error": f"{type(exc).__name__}: {exc}"}
                out["errors"].append(f"compiling {name} {build}: {figures['error']}")
            out["models"].setdefault(name, {})[build] = figures
    headline = [tuple(p) for p in job["headline"]]
    for device, pes in headline:
        for build in BUILDS:
            cfg = AcceleratorConfig(pes=pes, dense=build == "dense", device=device)
            for name in job["models"]:
                if (name, build) not in programs:
                    continue
                try:
                    mem = program_memory(programs[name, build], cfg)
                except Exception as exc:                # e.g. the image builder mid-edit
                    mem = {"fits": False, "reason": f"{type(exc).__name__}: {exc}"}
                    out["errors"].append(f"laying out {name} {build} for {device} N={pes}: {mem['reason']}")
                out["memory"].append({"model": name, "build": build, "device": device, "pes": pes, **mem})
    reused = digits_rtl_rows(Path(job["digits_json"]), job["images"]) if job.get("digits_json") else {}
    for pes in sorted({n for _, n in headline}):
        for build in BUILDS:
            names = [m for m in job["models"] if (m, build) in programs]
            cycles = {m: reused[m, build, pes] for m in names if (m, build, pes) in reused}
            need = [m for m in names if m not in cycles]
            if need:
                try:
                    devices = [d for d, n in headline if n == pes]
                    cfg = measurement_config([programs[m, build] for m in need], pes, build == "dense", devices)
                    bdir = build_root / f"sim-{cfg.device}-{pes}{'-dense' if build == 'dense' else ''}"
                    cycles.update(measure_cycles({m: programs[m, build] for m in need}, cfg, job["images"],
                                                 bdir, log))
                except Exception as exc:
                    msg = f"{type(exc).__name__}: {exc}"
                    out["errors"].append(f"RTL simulation N={pes} {build}: {msg}")
                    cycles.update({m: {"error": msg} for m in need})
            for m, res in cycles.items():
                out["cycles"].append({"model": m, "build": build, "pes": pes, **res})
    return out


class ModelsLane:
    """The models lane as a child process (own output, own environment), its log tee'd with progress lines."""

    def __init__(self, job: dict, build_root: Path, log):
        build_root.mkdir(parents=True, exist_ok=True)
        self.job_path = build_root / "models-job.json"
        self.result_path = build_root / "models-result.json"
        self.log_path = build_root / "models.log"
        self.result_path.unlink(missing_ok=True)
        write_atomic(self.job_path, json.dumps({**job, "result": str(self.result_path)}).encode())
        # its own session: stopping the bench stops the lane's compilers and simulators with it
        self.proc = subprocess.Popen([sys.executable, "-m", "fpga.bench", "--lane", str(self.job_path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8",
                                     errors="replace", bufsize=1, start_new_session=True)
        self.thread = threading.Thread(target=self._tee, args=(log,), daemon=True)
        self.thread.start()

    def _tee(self, log):
        with open(self.log_path, "w") as f:
            for line in self.proc.stdout:
                f.write(line)
                f.flush()
                if line.startswith("lane: "):
                    log("models: " + line[len("lane: "):].rstrip())

    def wait(self) -> dict:
        rc = self.proc.wait()
        self.thread.join()
        try:
            return json.loads(self.result_path.read_text())
        except (OSError, ValueError):
            return {"models": {}, "memory": [], "cycles": [],
                    "errors": [f"the models process failed (exit {rc}); see {self.log_path}"]}

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait()


def _lane_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    result = run_models_lane(job, log=lambda msg: print(f"lane: {msg}", flush=True))
    write_atomic(Path(job["result"]), json.dumps(result).encode())
    return 0


# ------------------------------------------------------------------------------------------------ assembly
def assemble(plan: Plan, hardware: list[dict], lane: dict, meta: dict) -> dict:
    """The report dict: hardware rows, model rows per headline configuration, targets, notes (pure)."""
    by_hw = {(r["device"], r["pes"], r["build"]): r for r in hardware}
    memory = {(m["model"], m["build"], m["device"], m["pes"]): m for m in lane.get("memory", [])}
    cycles = {(c["model"], c["build"], c["pes"]): c for c in lane.get("cycles", [])}
    rows = []
    for name in plan.models:
        for device, pes in plan.headline_points():
            for build in BUILDS:
                hw = by_hw.get((device, pes, build))
                if hw is None:
                    continue
                mem = memory.get((name, build, device, pes))
                mem = {k: v for k, v in mem.items() if k not in ("model", "build", "device", "pes")} if mem else None
                rows.append(model_row(name, hw, lane.get("models", {}).get(name, {}).get(build), mem,
                                      cycles.get((name, build, pes))))
    notes = [
        "Fmax: nextpnr's achieved clock per seed at the device's target (`fpga.synth.PNR_TARGETS`); the target "
        "counts as met when the median over the seeds reaches it (the seeds meeting it are given too).",
        "Configurations that do not fit are reported with the synthesis flow's reason (yosys cell counts "
        "against the device, or placement failing); they have no Fmax.",
        "Cycles/inference do not depend on the device or the memory depths, only on N, the lane split and the "
        "program: one measurement per (model, build, N) serves every device with that N.",
        "Inferences/s assume the accelerator runs back to back at the median Fmax (program and input loading "
        "over the host port are not counted).",
        "Energy per inference: ESTIMATE from `golden.report.energy_estimate` (Horowitz, ISSCC 2014, 45 nm "
        "per-operation energies: MACs, SD rebuild shift-adds, requantisation, every stored weight bit read once, "
        "activations in SRAM); not measured on the FPGA.",
        "Synthesis and place-and-route run as tasks of `sdhw explore`'s engine (`fpga.engine`, on Dask: "
        f"{meta.get('engine', 'a local cluster')}): yosys once per configuration, nextpnr once per seed, each "
        "result cached by a content hash of the configuration, the generator's and the flow's sources, the "
        "yosys scripts, nextpnr's arguments, the seed, the time limit and the tool versions, in "
        f"`{meta.get('cache_dir', DEFAULT_CACHE)}` (shared with `sdhw explore`); a rerun, or a run resumed "
        "after an interruption, runs only the tasks whose inputs changed or that had not finished. Reports and "
        f"logs per configuration in `{meta.get('build_dir', BUILD_DIR)}/<device>-<N>[-dense]-<hash>`. Cycle "
        "counts are cached on the generated Verilog, the program and the testbench.",
    ]
    return {
        "tool": "python -m fpga.bench", **meta, "quick": meta.get("quick", False), "seeds": plan.seeds,
        "sweep_seeds": plan.sweep_seeds,
        "images": plan.images, "headline": [list(p) for p in plan.headline_points()],
        "sweep": {d: list(ns) for d, ns in plan.sweep.items()}, "skipped": dict(plan.skipped),
        "hardware": hardware, "models": lane.get("models", {}), "rows": rows,
        "targets": target_checks(hardware, plan.skipped), "errors": lane.get("errors", []), "notes": notes,
        "plots": [],
    }


def _git() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sdhw", "rtl_gen", "fpga", "golden"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "git revision unknown"
    return f"git {rev or 'unknown'}" + (", uncommitted changes in the sources" if dirty else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench", help="report directory (default bench)")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny matrix for testing: up5k and ecp5-25f at N = 1, {QUICK_SEEDS} seed, "
                             f"{QUICK_IMAGES} images")
    parser.add_argument("--seeds", type=int, help="place-and-route seeds per part-1 configuration (default 3)")
    parser.add_argument("--sweep-seeds", type=int, help="seeds per configuration only in the sweep (default 1)")
    parser.add_argument("--images", type=int, help="digits test images for cycles/inference (default 50)")
    parser.add_argument("--big", action="store_true",
                        help="add the ECP5-85F at N = 128 (its default) and 256 (the issue's target): hours")
    parser.add_argument("--devices", nargs="+", choices=[d for d in DEVICES if d in PNR_TARGETS],
                        help="only these devices (hx8k and ecp5-45f are added only when named here)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--no-sweep", action="store_true", help="skip the PE-count sweep (part 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of the local Dask cluster: yosys and nextpnr runs at once (default 2)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the synthesis tasks on this running Dask cluster, e.g. tcp://HOST:8786")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE),
                        help=f"task results by content hash, shared with sdhw explore (default {DEFAULT_CACHE})")
    parser.add_argument("--pnr-timeout", type=float, default=PNR_TIMEOUT,
                        help=f"stop a place-and-route seed after this many CPU seconds, 0 for no limit (default "
                             f"{PNR_TIMEOUT:g}: some netlists route for very long on some seeds)")
    parser.add_argument("--build-dir", default=str(BUILD_DIR))
    parser.add_argument("--digits-json", help="reuse cycles from this sim.bench_digits report when valid "
                        "(default OUT/digits_rtl.json)")
    parser.add_argument("--lane", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lane:
        return _lane_main(args.lane)
    for name in ("seeds", "sweep_seeds"):
        if getattr(args, name) is not None and not 1 <= getattr(args, name) <= 64:
            parser.error(f"--{name.replace('_', '-')} must be in 1..64")
    if args.images is not None and not 1 <= args.images <= 450:
        parser.error("--images must be in 1..450")
    if args.pnr_timeout < 0:
        parser.error("--pnr-timeout must be >= 0 seconds")
    if not 1 <= args.workers <= 1024:
        parser.error("--workers must be in 1..1024")
    if args.scheduler:
        try:
            reachable(args.scheduler)
        except SdhwError as exc:
            print(f"fpga.bench: error: {exc}", file=sys.stderr)
            return 1
    start = time.monotonic()

    def log(msg):
        _stamp(start, msg)

    plan = make_plan(quick=args.quick, big=args.big, devices=args.devices, models=args.models, seeds=args.seeds,
                     sweep_seeds=args.sweep_seeds, images=args.images, sweep=not args.no_sweep)
    build_root = Path(args.build_dir)
    out = Path(args.out)
    points = plan.synth_points()
    log(f"plan: {len(points)} configurations to synthesize (seeds: {plan.seeds} in part 1, {plan.sweep_seeds} in "
        "the rest of the sweep): " + ", ".join(f"{d}-{n}{'-dense' if dense else ''}" for d, n, dense in points))
    log(f"models {', '.join(plan.models)} on " + ", ".join(f"{d} N={n}" for d, n in plan.headline_points())
        + f"; cycles on {plan.images} images; models log: {build_root / 'models.log'}")
    digits_json = Path(args.digits_json) if args.digits_json else out / "digits_rtl.json"
    lane = ModelsLane({"models": list(plan.models), "images": plan.images, "build_dir": str(build_root),
                       "headline": [list(p) for p in plan.headline_points()], "digits_json": str(digits_json)},
                      build_root, log)
    engine = (f"the cluster at {args.scheduler}" if args.scheduler
              else f"a local cluster of {args.workers} worker process{'es' if args.workers > 1 else ''}")
    log(f"synthesis on {engine}; task cache {args.cache_dir}")
    try:
        hardware, tasks, interrupted = run_synthesis(
            plan, build_root=build_root, cache_dir=args.cache_dir, pnr_timeout=args.pnr_timeout or None,
            scheduler=args.scheduler, workers=None if args.scheduler else args.workers, start=start)
        if interrupted:
            log("interrupted: the finished synthesis tasks are kept in the cache; run the same command again to "
                "resume (nothing was written to the report)")
            return 130
        log(f"synthesis: {tasks['run']} tasks run, {tasks['cached']} from the cache; waiting for the models process")
        lane_result = lane.wait()
    finally:
        lane.kill()
    command = "python -m fpga.bench " + " ".join(sys.argv[1:] if argv is None else list(argv))
    meta = {"command": command.strip(), "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "git": _git(), "quick": args.quick, "build_dir": str(build_root), "cache_dir": str(args.cache_dir),
            "engine": engine, "tasks": tasks, "seconds": round(time.monotonic() - start, 1)}
    result = assemble(plan, hardware, lane_result, meta)
    paths = write_outputs(result, out)
    for c in result["targets"]:
        log(f"target {c['device']} N={c['pes']} {c['build']}: {c['text']}")
    for e in result["errors"]:
        log(f"error: {e}")
    log("wrote " + ", ".join(map(str, paths)))
    failed = [r for r in hardware if r["status"] == "error"] or result["errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
