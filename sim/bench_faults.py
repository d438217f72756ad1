"""Benchmark: fault injection on the RTL, the share of corrupted runs the accelerator's error flag catches.

For each build (the regression's N = 4 SD and N = 16 dense configurations), region (descriptors, code stream,
bases) and number of flipped bits, ``--runs`` random programs are loaded with that many random bits flipped
(``sim.faults``) and run; each run matches golden, raises the error flag (by code), finishes with wrong outputs
undetected (silent: what a host-side checksum over the loaded program would have to catch) or hangs (a bug).
Every faulted run is followed by its program loaded again unfaulted and checked in full.

Writes ``bench/faults.json`` and ``bench/faults.md``; exit status 1 when a run hung or a clean rerun failed (the
report lists them), 2 for bad arguments.
Run: ``python -m sim.bench_faults [--runs 40] [--flips 1 3] [--seed 2026] [--builds sd4 dense16]
[--sim icarus] [--out bench]`` (``make bench``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from sdhw import hostbus as hb
from sdhw.config import AcceleratorConfig

from .faults import ERROR, HANG, MATCH, REGION_NAMES, SILENT, fault_job, fault_regions, outcomes, tally
from .runner import SIMULATORS, Build

#: the regression's configurations (tests/sim/test_regression.py): small memories, so programs stay small
DEPTHS = {"act_depth": 512, "code_depth": 2048, "weight_depth": 64, "basis_depth": 256, "bias_depth": 256,
          "desc_layers": 4}
BUILDS = {"sd4": (4, False), "dense16": (16, True)}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"bench_faults: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def run_build(name: str, *, seed: int, runs: int, flips: list[int], sim: str, build_dir: Path,
              progress=print) -> dict:
    """Every region and flip count of one build; its rows, the failed cases and the simulation time."""
    pes, dense = BUILDS[name]
    cfg = AcceleratorConfig(pes=pes, dense=dense, device="ecp5-85f", **DEPTHS)
    progress(f"{name}: building ({sim})")
    build = Build(cfg, build_dir, sim=sim, quiet=True)
    rows, failures, clean, seconds = [], [], 0, 0.0
    for n in flips:
        job = fault_job(cfg, seed=seed, runs=runs, flips=n)
        progress(f"{name}: {runs} runs x {len(fault_regions(cfg))} regions, {n} bit(s) flipped each")
        start = time.monotonic()
        stats = build.run(job, seed=seed, idle=0.1, name=f"faults-{n}", quiet=True)
        seconds += time.monotonic() - start
        failures += [{"build": name, **f} for f in stats["failures"]]
        clean += stats["inferences"]
        results = outcomes(job, stats)
        for region in fault_regions(cfg):
            counts = tally([r for r in results if r["fault"]["region"] == region])
            rows.append({"build": "dense" if dense else "sd", "pes": pes, "region": REGION_NAMES[region],
                         "flips": n, **counts})
    return {"rows": rows, "failures": failures, "clean_reruns": clean, "sim_seconds": round(seconds, 1)}


def _rate(value) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def markdown(report: dict) -> str:
    lines = ["# Fault injection on the RTL", "",
             f"`{report['command']}` (seed {report['seed']}, {report['simulator']}): per build, region and number "
             f"of flipped bits, {report['runs']} random programs each loaded with that many random bits flipped "
             "in that region's words (stored bits only), then run. Outcomes: match (outputs equal golden's), error "
             "(the accelerator raised its error flag; by code), silent (finished without the flag, outputs "
             "differ: a host-side checksum over the loaded program would have to catch these; \"X\": of those, "
             "runs with outputs undefined in simulation, the hardware having read a memory word that holds no "
             "value, which on a device reads as whatever that word holds), hang (busy still high past the "
             "bound: a bug). Detection rate = error / (error + silent).", "",
             "| build | N | region | bits flipped | runs | match | error (by code) | silent | hang | detection rate |",
             "|---|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in report["rows"]:
        by_code = ", ".join(f"{code}: {n}" for code, n in r["errors_by_code"].items())
        undefined = f" ({r['silent_undefined']} X)" if r["silent_undefined"] else ""
        lines.append(f"| {r['build']} | {r['pes']} | {r['region']} | {r['flips']} | {r['runs']} | {r[MATCH]} | "
                     f"{r[ERROR]}{f' ({by_code})' if by_code else ''} | {r[SILENT]}{undefined} | {r[HANG]} | "
                     f"{_rate(r['detection_rate'])} |")
    codes = sorted({int(c) for r in report["rows"] for c in r["errors_by_code"]})
    if codes:
        lines += ["", "Error codes: " + "; ".join(f"{c} {hb.ERROR_NAMES.get(c, 'unknown')}" for c in codes) + "."]
    lines += ["", f"Clean reruns (each faulted program loaded again unfaulted, outputs and counters checked): "
              f"{report['clean_reruns']} passed. Simulation time: "
              + ", ".join(f"{name} {s} s" for name, s in report["sim_seconds"].items()) + "."]
    if report["failures"]:
        lines += ["", "## Failures", ""] + [f"- {f['build']}: {f['case']}: {f['message'].splitlines()[0]}"
                                           for f in report["failures"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = _Parser(prog="python -m sim.bench_faults", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="faulted runs per build, region and bit count")
    parser.add_argument("--flips", type=int, nargs="+", default=[1, 3], help="bits flipped per run (default 1 3)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--builds", nargs="+", default=list(BUILDS), choices=list(BUILDS))
    # Icarus by default: it shows a read of a word that holds no value as X, where Verilator makes up a value
    parser.add_argument("--sim", default="icarus", choices=SIMULATORS)
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be a positive integer, not {args.runs}")
    if min(args.flips) < 1:
        parser.error(f"--flips must be positive integers, not {min(args.flips)}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, not {args.seed}")
    command = shlex.join(["python", "-m", "sim.bench_faults", *(sys.argv[1:] if argv is None else argv)])
    report = {"command": command, "seed": args.seed, "simulator": args.sim, "runs": args.runs, "flips": args.flips,
              "rows": [], "failures": [], "clean_reruns": 0, "sim_seconds": {}}
    for name in args.builds:
        result = run_build(name, seed=args.seed, runs=args.runs, flips=args.flips, sim=args.sim,
                           build_dir=Path(f"build/bench-faults-{name}-{args.sim}"),
                           progress=lambda msg: print(msg, flush=True))
        report["rows"] += result["rows"]
        report["failures"] += result["failures"]
        report["clean_reruns"] += result["clean_reruns"]
        report["sim_seconds"][name] = result["sim_seconds"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "faults.md").write_text(markdown(report))
    for r in report["rows"]:
        print(f"{r['build']} N={r['pes']} {r['region']} {r['flips']}-bit: {r['runs']} runs, {r[MATCH]} match, "
              f"{r[ERROR]} error, {r[SILENT]} silent, {r[HANG]} hang, detection {_rate(r['detection_rate'])}")
    print(f"wrote {out / 'faults.json'} and {out / 'faults.md'}")
    for f in report["failures"]:
        print(f"FAILED {f['build']}: {f['case']}: {f['message'].splitlines()[0]}", file=sys.stderr)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
