"""Run every proof harness (:data:`verify.proofs.PROOFS`) and their broken variants, print a PASS/FAIL table.

``python -m verify.run_formal [--out build/formal] [--only rebuild requant] [--no-mutants] [--jobs 2]
[--timeout S] [--solver yices|boolector]`` (``make formal``). A proof row passes when its proof task
passes and every cover is reached; a broken-variant row passes when the proof FAILs on it. Results go to
``OUT/formal.json`` and ``OUT/formal.md``; the exit status is 1 when any row does not pass.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from golden.format import write_atomic

from .formal import FormalToolsMissing, check, default_solver, tool_dir
from .proofs import PROOFS, ProofSpec


def _job(spec: ProofSpec, mutant: str | None, out: Path, tools: Path, solver: str, timeout: float | None) -> dict:
    label = spec.name if mutant is None else f"{spec.name} / {mutant}"
    result = check(spec.harness(mutant), out / (spec.name if mutant is None else f"{spec.name}-{mutant}"),
                   name=label, depth=spec.depth, mode=spec.mode, cover_depth=spec.cover_depth,
                   cover=mutant is None, timeout=timeout, solver=solver, tools=tools)
    expected = "PASS" if mutant is None else "FAIL"
    cover = result.cover.status if result.cover else None
    ok = result.proof.status == expected and (cover in (None, "PASS"))
    return {"name": label, "block": spec.block, "mutant": mutant, "mode": spec.mode, "depth": spec.depth,
            "proof": result.proof.status, "expected": expected, "cover": cover, "ok": ok,
            "seconds": round(result.proof.seconds + (result.cover.seconds if result.cover else 0), 1),
            "trace": str(result.proof.trace) if result.proof.trace else None,
            "claim": spec.claim if mutant is None else "the proof must fail on this broken variant"}


def markdown(rows: list[dict], solver: str, seconds: float) -> str:
    lines = [f"Solver: {solver}; wall time {seconds:.0f} s.", "",
             "| harness | block | check | proof | cover | time (s) | verdict |", "|---|---|---|---|---|---:|---|"]
    for row in rows:
        verdict = "ok" if row["ok"] else "**WRONG**"
        if row["mutant"]:
            verdict += " (FAIL expected)"
        lines.append(f"| {row['name']} | `{row['block']}` | {row['mode']} depth {row['depth']} | {row['proof']} | "
                     f"{row['cover'] or '-'} | {row['seconds']} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.run_formal", description=__doc__.splitlines()[0])
    names = [spec.name for spec in PROOFS]
    parser.add_argument("--out", type=Path, default=Path("build/formal"))
    parser.add_argument("--only", nargs="+", choices=names, help="harnesses to run (default: all)")
    parser.add_argument("--no-mutants", action="store_true", help="skip the broken variants")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per SBY task")
    parser.add_argument("--solver", choices=["yices", "boolector"])
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    try:
        solver = args.solver or default_solver()
        args.out.mkdir(parents=True, exist_ok=True)
        tools = tool_dir(args.out / "bin", solver)
    except FormalToolsMissing as error:
        print(f"formal: error: {error}", file=sys.stderr)
        return 1
    chosen = [spec for spec in PROOFS if not args.only or spec.name in args.only]
    jobs = [(spec, None) for spec in chosen]
    if not args.no_mutants:
        jobs += [(spec, mutant) for spec in chosen for mutant in spec.mutants]
    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda job: _job(*job, args.out, tools, solver, args.timeout), jobs))
    seconds = time.monotonic() - begin
    table = markdown(rows, solver, seconds)
    write_atomic(args.out / "formal.json", json.dumps({"solver": solver, "seconds": round(seconds, 1),
                                                       "rows": rows}, indent=2).encode())
    write_atomic(args.out / "formal.md", table.encode())
    print(table, end="")
    for row in rows:
        if not row["ok"]:
            print(f"formal: {row['name']}: proof {row['proof']} (expected {row['expected']}), cover {row['cover']}; "
                  f"trace {row['trace']}", file=sys.stderr)
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
