"""Run every proof harness (:data:`verify.proofs.PROOFS`) and their broken variants, print a PASS/FAIL table.

``python -m verify.run_formal [--out build/formal] [--only rebuild requant] [--no-mutants] [--jobs 2]
[--timeout S] [--solver yices|boolector]`` (``make formal``). A proof row passes when its proof task
passes and every cover is reached; a broken-variant row passes when the proof FAILs on it. Results go to
``OUT/formal.json`` and ``OUT/formal.md``; the exit status is 1 when any row does not pass.

:func:`run_proofs` (the job runner) and :func:`text_table` also serve ``sdhw verify ACC_DIR --formal``, which
runs the proofs of one build (:func:`verify.proofs.proofs_for`) without the broken variants.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from golden.format import write_atomic

from . import formal
from .formal import FormalToolsMissing
from .proofs import PROOFS, ProofSpec

#: a row's ``proof`` for a block with no proof harness (:attr:`verify.proofs.ProofSpec.runnable`)
NO_PROOF = "none"


def _job(spec: ProofSpec, mutant: str | None, out: Path, tools: Path | None, solver: str,
         timeout: float | None) -> dict:
    label = spec.name if mutant is None else f"{spec.name} / {mutant}"
    mode, depth = spec.check_of(mutant)
    row = {"name": label, "block": spec.block, "parameters": spec.parameters, "mutant": mutant, "mode": mode,
           "depth": depth,
           "claim": spec.claim if mutant is None else "the proof must fail on this broken variant"}
    if not spec.runnable:
        return {**row, "proof": NO_PROOF, "expected": None, "cover": None, "ok": None, "seconds": 0.0,
                "trace": None}
    result = formal.check(spec.harness(mutant), out / (spec.name if mutant is None else f"{spec.name}-{mutant}"),
                          name=label, depth=depth, mode=mode, cover_depth=spec.cover_depth,
                          cover=mutant is None, timeout=timeout, solver=solver, tools=tools)
    expected = "PASS" if mutant is None else "FAIL"
    cover = result.cover.status if result.cover else None
    ok = result.proof.status == expected and (cover in (None, "PASS"))
    return {**row, "proof": result.proof.status, "expected": expected, "cover": cover, "ok": ok,
            "seconds": round(result.proof.seconds + (result.cover.seconds if result.cover else 0), 1),
            "trace": str(result.proof.trace) if result.proof.trace else None}


def run_proofs(jobs: list[tuple[ProofSpec, str | None]], out: Path, *, solver: str | None = None,
               timeout: float | None = None, workers: int = 1,
               progress: Callable[[str], None] | None = None) -> tuple[list[dict], str, float]:
    """Check each ``(spec, mutant)`` (``mutant`` ``None``: the block itself, which must PASS with every cover
    reached; else the broken variant, whose proof must FAIL) with SBY under ``out``, ``workers`` at a time.

    Returns the rows (in ``jobs``' order; ``ok`` ``None`` for a block without a proof harness), the solver and
    the wall time in seconds. :class:`~verify.formal.FormalToolsMissing` when the tools are not installed.
    ``progress`` gets a line as each check starts and ends."""
    progress = progress or (lambda message: None)
    solver = solver or formal.default_solver()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tools = formal.tool_dir(out / "bin", solver) if any(spec.runnable for spec, _ in jobs) else None

    def one(job: tuple[ProofSpec, str | None]) -> dict:
        spec, mutant = job
        label = spec.name if mutant is None else f"{spec.name} / {mutant}"
        if spec.runnable:
            mode, depth = spec.check_of(mutant)
            progress(f"proving {label} ({spec.block}, {spec.parameters or 'default parameters'}): {mode} "
                     f"depth {depth}")
        row = _job(spec, mutant, out, tools, solver, timeout)
        if row["ok"] is None:
            progress(f"{label} ({spec.block}): no proof for this block")
        else:
            progress(f"{label}: proof {row['proof']}, cover {row['cover'] or '-'} ({row['seconds']} s)"
                     + ("" if row["ok"] else f" WRONG (expected {row['expected']})"))
        return row

    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(one, jobs))
    return rows, solver, time.monotonic() - begin


def failed(rows: list[dict]) -> list[dict]:
    """The rows whose check did not give the expected verdict (a block without a proof is not a failure)."""
    return [row for row in rows if row["ok"] is False]


def _verdict(row: dict, wrong: str = "WRONG") -> str:
    if row["ok"] is None:
        return "no proof for this block"
    return ("ok" if row["ok"] else wrong) + (" (FAIL expected)" if row["mutant"] else "")


def markdown(rows: list[dict], solver: str, seconds: float) -> str:
    lines = [f"Solver: {solver}; wall time {seconds:.0f} s.", "",
             "| harness | block | parameters | check | proof | cover | time (s) | verdict |",
             "|---|---|---|---|---|---|---:|---|"]
    for row in rows:
        verdict = _verdict(row, "**WRONG**")
        check = f"{row['mode']} depth {row['depth']}" if row["ok"] is not None else "-"
        lines.append(f"| {row['name']} | `{row['block']}` | {row['parameters']} | {check} | {row['proof']} | "
                     f"{row['cover'] or '-'} | {row['seconds']} | {verdict} |")
    return "\n".join(lines) + "\n"


def text_table(rows: list[dict]) -> str:
    """The rows as a plain-text table for a terminal: name, block, parameters, proof, cover, seconds, verdict."""
    header = ("proof", "block", "parameters", "result", "cover", "s", "verdict")
    body = [(row["name"], row["block"].rsplit(".", 1)[-1], row["parameters"], row["proof"], row["cover"] or "-",
             f"{row['seconds']:.1f}", _verdict(row)) for row in rows]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    right = {5}
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
                     for line in (header, *body))


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
    chosen = [spec for spec in PROOFS if not args.only or spec.name in args.only]
    jobs = [(spec, None) for spec in chosen]
    if not args.no_mutants:
        jobs += [(spec, mutant) for spec in chosen for mutant in spec.mutants]
    try:
        rows, solver, seconds = run_proofs(jobs, args.out, solver=args.solver, timeout=args.timeout,
                                           workers=args.jobs,
                                           progress=lambda line: print(f"formal: {line}", file=sys.stderr))
    except FormalToolsMissing as error:
        print(f"formal: error: {error}", file=sys.stderr)
        return 1
    table = markdown(rows, solver, seconds)
    write_atomic(args.out / "formal.json", json.dumps({"solver": solver, "seconds": round(seconds, 1),
                                                       "rows": rows}, indent=2).encode())
    write_atomic(args.out / "formal.md", table.encode())
    print(table, end="")
    for row in failed(rows):
        print(f"formal: {row['name']}: proof {row['proof']} (expected {row['expected']}), cover {row['cover']}; "
              f"trace {row['trace']}", file=sys.stderr)
    return 1 if failed(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
