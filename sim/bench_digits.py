"""Benchmark: the whole digits test split through the RTL (Verilator), SD vs dense, several PE counts.

Writes ``bench/digits_rtl.json`` and ``bench/digits_rtl.md``: accuracy (the RTL's outputs, asserted equal to
golden's), cycles/inference, utilisation, zero rows skipped, and the wall time of the simulation; with
``--batch`` sizes above 1 also the latency (cycles of one run of a batch) beside the throughput (cycles per
inference) of batched runs.
Run: ``python -m sim.bench_digits [--pes 4 16 64] [--models mlp cnn] [--batch 1 8] [--sim verilator]``
(``make bench``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from golden.datasets import DIGITS_CNN, DIGITS_MLP
from golden.format import write_atomic
from golden.model import load_npz

from .digits import run_digits

MODELS = {"mlp": DIGITS_MLP, "cnn": DIGITS_CNN}


def markdown(rows: list[dict], command: str = "python -m sim.bench_digits") -> str:
    lines = ["# Digits test split on the RTL", "",
             f"Measured by `{command}`: every output of every image compared with golden "
             "(bit-exact), accuracy from the RTL's outputs.", "",
             "| model | build | N | device | lanes | images | accuracy | cycles/inference | utilisation | "
             "rows skipped/inf. | simulator | wall time |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|"]
    batched = [r for r in rows if r.get("batch", 1) > 1]
    rows = [r for r in rows if r.get("batch", 1) == 1]
    for r in rows:
        lines.append(f"| {r['model']} | {r['build']} | {r['pes']} | {r['device']} | {r['channel_lanes']} x "
                     f"{r['pixel_lanes']} | {r['images']} | {r['accuracy'] * 100:.2f} % | "
                     f"{r['cycles_per_inference']:.0f} | {r['utilisation'] * 100:.1f} % | "
                     f"{r['rows_skipped_per_inference']:.0f} | {r['simulator']} | {r['sim_seconds']} s |")
    pairs = {}
    for r in rows:
        pairs.setdefault((r["model"], r["pes"]), {})[r["build"]] = r
    lines += ["", "SD vs dense (same generator, same run):", ""]
    for (model, pes), pair in sorted(pairs.items()):
        if {"sd", "dense"} <= set(pair):
            ratio = pair["dense"]["cycles_per_inference"] / pair["sd"]["cycles_per_inference"]
            fewer = f"{ratio:.2f}x fewer" if ratio >= 1 else f"{1 / ratio:.2f}x more"
            lines.append(f"- {model} N={pes}: SD takes {fewer} cycles per inference than dense")
    if batched:
        single = {(r["model"], r["build"], r["pes"]): r for r in rows}
        lines += ["", "## Batches: latency and throughput", "",
                  "A batch of B images runs in one pass of the accelerator (`sdhw sim --batch B`): each channel "
                  "group's weights are rebuilt once for the batch. Latency: cycles of one run (B images); "
                  "throughput: cycles per image over the whole test split.", "",
                  "| model | build | N | batch | latency (cycles / run) | cycles / inference | vs batch 1 | "
                  "utilisation |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in batched:
            base = single.get((r["model"], r["build"], r["pes"]))
            gain = f"{base['cycles_per_inference'] / r['cycles_per_inference']:.2f}x" if base else "—"
            lines.append(f"| {r['model']} | {r['build']} | {r['pes']} | {r['batch']} | {r['latency_cycles']:.0f} | "
                         f"{r['cycles_per_inference']:.0f} | {gain} | {r['utilisation'] * 100:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pes", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(MODELS))
    parser.add_argument("--sim", default="verilator", choices=("icarus", "verilator"))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to run (default 1 8)")
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    rows = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m sim.bench_digits", *(sys.argv[1:] if argv is None else argv)])

    def write():
        """The rows so far (after each one: a run stopped half way keeps what it measured)."""
        write_atomic(out / "digits_rtl.json", (json.dumps({"command": command, "rows": rows}, indent=2)
                                               + "\n").encode())
        write_atomic(out / "digits_rtl.md", markdown(rows, command).encode())

    for name in args.models:
        model = load_npz(MODELS[name])
        for pes in args.pes:
            for dense in (False, True):
                for batch in args.batch:
                    result = run_digits(model, pes=pes, dense=dense, limit=args.limit, sim=args.sim, batch=batch,
                                        build_dir=f"build/bench-{name}-{pes}{'-dense' if dense else ''}",
                                        progress=lambda msg: print(msg, flush=True))
                    rows.append({"model": name, **result})
                    print(f"{name} N={pes} {rows[-1]['build']} batch {batch}: accuracy {result['accuracy']:.4f}, "
                          f"{result['cycles_per_inference']:.0f} cycles/inference", flush=True)
                    write()
    print(f"wrote {out / 'digits_rtl.json'} and {out / 'digits_rtl.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
