"""Bits/weight vs accuracy of the bundled models across SD compression settings.

``python -m golden.curves --out bench`` compiles each model over a grid of prune ratios (and exponent
bits), counts every stored bit of each packed program (as ``sdhw compile`` reports it) and measures the
golden integer inference on the model's test split: the digits MLP and CNN (``mlp``, ``cnn``) on the
digits test split, the MNIST example CNN (``mnist``, ``examples/mnist_cnn.onnx``) on
``examples/mnist_test.npz``. Fine-tuning inside the compiler moves power-of-two codes one step at a time,
so accuracy at one setting varies with its seed by about a point: every setting is compiled with
``--seeds`` fine-tuning seeds and reported as mean, min and max. It writes ``compression.json``,
``compression.md`` and one ``compression_<model>.png`` per model swept (float accuracy and the 1-point band
as lines). ``--models`` sweeps a subset; the results are merged into an existing ``compression.json`` in
``--out``: the entries of the models not swept are kept as they are (their plots are not rewritten).

A model with layers the accelerator does not run yet (the MNIST CNN's max pooling) is compiled through
:func:`golden.staged.compile_staged`, as ``sdhw compile --eval-data`` does: each run of FC/conv layers is
compiled (and fine-tuned) on its own, and its bits are one file header plus every FC/conv layer record
(:attr:`golden.staged.StagedResult.bits_per_weight`).

Besides the uniform ratios, each model is compiled at its *learned* ratios (:func:`golden.train.learned_prune`
per FC/conv layer): the rows its row-sparse training zeroed, so pruning them loses nothing.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import format as fmt
from .compiler import CompileOptions, compile_model
from .datasets import DIGITS_CNN, DIGITS_MLP, load_digits_split
from .errors import SdhwError
from .model import (
    WEIGHTED_KINDS,
    Model,
    accuracy,
    channels_first,
    forward_float,
    load_calibration_data,
    load_eval_data,
    load_model,
)
from .program import infer
from .report import compile_report
from .staged import compile_staged, infer_staged, staged_report
from .train import learned_prune

TARGET_BITS = 2.5
TARGET_DROP_POINTS = 1.0


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: ``(x_cal, x_test, y_test)`` for a loaded model; the bool says whether its file lays images out NCHW.
DataLoader = Callable[[Model, bool], tuple[np.ndarray, np.ndarray, np.ndarray]]


def digits_data(model: Model, nchw: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digits train split (calibration) and test split, shaped for ``model``."""
    x_train, _, x_test, y_test = load_digits_split()
    return x_train.reshape((-1, *model.input_shape)), x_test.reshape((-1, *model.input_shape)), y_test


@dataclass(frozen=True)
class NpzData:
    """Calibration inputs (array ``x``) and labelled test data (``x``, ``y``) from ``.npz`` files, read as
    ``sdhw compile --calib CALIB --eval-data TEST`` reads them."""

    calib: Path
    test: Path

    def __call__(self, model: Model, nchw: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (load_calibration_data(self.calib, model, nchw), *load_eval_data(self.test, model, nchw))


@dataclass(frozen=True)
class Sweep:
    """The settings swept for one model; ``epochs`` is the compile fine-tuning length used for every point.

    ``path`` is any model file :func:`golden.model.load_model` reads; ``data`` loads its calibration and test
    data and ``dataset`` names them; ``dense_layers`` are kept dense int8 at every point
    (``--dense-layers``). The learned ratios are compiled at ``learned_exp_bits`` (default: ``exp_bits``).
    """

    path: Path
    prunes: tuple[float, ...]
    exp_bits: tuple[int, ...]
    epochs: int
    data: DataLoader = digits_data
    dataset: str = "digits"
    dense_layers: tuple[int, ...] = ()
    learned_exp_bits: tuple[int, ...] | None = None


SWEEPS = {
    "mlp": Sweep(DIGITS_MLP, (0.2, 0.35, 0.5, 0.65), (2,), 60),     # 60: the compiler's default fine-tuning
    "cnn": Sweep(DIGITS_CNN, (0.3, 0.45, 0.6), (2,), 60),
    # README "MNIST example": first conv dense int8 (1 input channel), learned ratios at 2 and 3 exponent bits
    "mnist": Sweep(EXAMPLES / "mnist_cnn.onnx", (0.3, 0.5), (3,), 60,
                   data=NpzData(EXAMPLES / "mnist_calib.npz", EXAMPLES / "mnist_test.npz"), dataset="MNIST",
                   dense_layers=(0,), learned_exp_bits=(2, 3)),
}


def is_staged(model: Model) -> bool:
    """Whether ``model`` has layers the accelerator does not run, so it compiles through golden.staged."""
    return any(layer.kind not in WEIGHTED_KINDS for layer in model.layers)


def learned_ratios(model: Model) -> tuple[float, ...] | None:
    """Per-FC/conv-layer ratios that drop exactly the model's all-zero row groups; None if it has none or a
    layer SD does not decompose. Layers without weights (pooling, ...) take no ratio: a staged compile maps
    one ratio per FC/conv layer onto the model (see :mod:`golden.staged`)."""
    weighted = [layer for layer in model.layers if layer.kind in WEIGHTED_KINDS]
    if not all(layer.sd_capable for layer in weighted):
        return None
    ratios = tuple(round(learned_prune(layer.weight), 4) for layer in weighted)
    return ratios if any(ratios) else None


def measure(model: Model, x_cal: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            opts: CompileOptions) -> dict:
    """One point: compile, pack, count every stored bit, run the golden integer inference.

    A model with pooling (:func:`is_staged`) compiles through :func:`golden.staged.compile_staged` and is
    counted and run as ``sdhw compile --eval-data`` does (:func:`golden.staged.staged_report`)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if is_staged(model):
            result = compile_staged(model, x_cal, opts)
            report, logits = staged_report(result), infer_staged(result, x_test)
        else:
            result = compile_model(model, x_cal, opts)
            report, logits = compile_report(result, fmt.pack(result.program)), infer(result.program, x_test)
    return {
        "prune": list(opts.prune) if isinstance(opts.prune, tuple) else opts.prune,
        "exp_bits": opts.exp_bits, "epochs": opts.epochs,
        "bits_per_weight": report["program"]["bits_per_weight"], "bytes": report["program"]["bytes"],
        "row_density": [lay["row_density"] for lay in report["layers"]],
        "accuracy": accuracy(logits, y_test),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def measure_seeds(model: Model, x_cal, x_test, y_test, opts: CompileOptions, seeds: int, float_acc: float) -> dict:
    """:func:`measure` for fine-tuning seeds ``0 .. seeds - 1``: bits (equal across seeds unless fine-tuning
    empties rows), accuracy mean, min and max, and the drop from float in points."""
    runs = [measure(model, x_cal, x_test, y_test, replace(opts, seed=s)) for s in range(seeds)]
    accs = [r["accuracy"] for r in runs]
    point = {k: runs[0][k] for k in ("prune", "exp_bits", "epochs", "row_density")}
    point.update({
        "seeds": seeds, "bits_per_weight": float(np.mean([r["bits_per_weight"] for r in runs])),
        "bits_per_weight_max": max(r["bits_per_weight"] for r in runs),
        "accuracy": float(np.mean(accs)), "accuracy_min": min(accs), "accuracy_max": max(accs),
        "accuracy_per_seed": accs, "seconds": round(sum(r["seconds"] for r in runs), 1)})
    point["delta_points"] = 100.0 * (point["accuracy"] - float_acc)
    point["worst_delta_points"] = 100.0 * (point["accuracy_min"] - float_acc)
    return point


def sweep_model(name: str, sweep: Sweep, seeds: int = 1, log=print) -> dict:
    model = load_model(sweep.path)
    x_cal, x_test, y_test = sweep.data(model, channels_first(sweep.path, model))
    float_acc = accuracy(forward_float(model, x_test), y_test)
    settings: list[tuple[str, float | tuple[float, ...], int]] = [
        ("uniform", p, e) for e in sweep.exp_bits for p in sweep.prunes]
    learned = learned_ratios(model)
    if learned is not None:
        learned_exp = sweep.exp_bits if sweep.learned_exp_bits is None else sweep.learned_exp_bits
        settings += [("learned", learned, e) for e in learned_exp]
    points = []
    for kind, prune, exp_bits in settings:
        opts = CompileOptions(prune=prune, exp_bits=exp_bits, epochs=sweep.epochs, dense_layers=sweep.dense_layers)
        point = {"setting": kind, **measure_seeds(model, x_cal, x_test, y_test, opts, seeds, float_acc)}
        points.append(point)
        log(f"{name}: {kind} prune {prune} E={exp_bits}: {point['bits_per_weight']:.3f} bits/weight, "
            f"{100 * point['accuracy']:.2f} % mean over {seeds} seeds ({point['delta_points']:+.2f} points, "
            f"worst {point['worst_delta_points']:+.2f}) in {point['seconds']} s")
    ok = [p for p in points
          if p["bits_per_weight_max"] <= TARGET_BITS and p["worst_delta_points"] >= -TARGET_DROP_POINTS]
    best = min(ok, key=lambda p: p["bits_per_weight"]) if ok else None
    return {"model": str(sweep.path.name), "weights": model.n_weights, "float_accuracy": float_acc,
            "dataset": sweep.dataset, "test_samples": len(y_test), "staged": is_staged(model),
            "dense_layers": list(sweep.dense_layers), "learned_prune": list(learned) if learned else None,
            "points": points, "smallest_within_target": best}


def markdown(results: dict) -> str:
    lines = ["# Bits/weight vs accuracy (bundled models)", "",
             "`python -m golden.curves --out bench [--models mlp,cnn,mnist]`; a run merges its models into the "
             "existing `compression.json` and keeps the other models' entries. Bits/weight count every stored "
             "bit of the packed program (headers, bias, bases, bitmap, codes, padding) over the float model's "
             "weights; accuracy is the golden integer inference on the model's test split: the digits test split "
             "(450 images, 1 image = 0.22 points) for the digits models, the split its section names otherwise. "
             f"Target: <= {TARGET_BITS} bits/weight within {TARGET_DROP_POINTS:g} point of float, for every "
             "seed. Accuracy: mean (min-max) over the compiler's fine-tuning seeds. `learned`: the per-layer "
             "ratios that drop exactly the row groups the model's row-sparse training zeroed.", ""]
    for name, res in results.items():
        lines += [f"## {name} ({res['model']}, {res['weights']} weights, float {100 * res['float_accuracy']:.2f} %)",
                  ""]
        notes = []
        if res.get("dataset", "digits") != "digits":
            n = res["test_samples"]
            notes.append(f"Accuracy on the {res['dataset']} test split ({n:,} images, 1 image = {100 / n:.2g} "
                         "points).")
        if res.get("staged"):
            notes.append("Its pooling layers are evaluated in golden (`golden.staged`, as `sdhw compile "
                         "--eval-data`): each run of FC/conv layers is compiled and fine-tuned on its own; bits: "
                         "one file header plus every FC/conv layer record.")
        if res.get("dense_layers"):
            dense = res["dense_layers"]
            notes.append(f"Layer{'s' * (len(dense) > 1)} {','.join(map(str, dense))} kept dense int8 at every point "
                         f"(`--dense-layers`), {'their' if len(dense) > 1 else 'its'} weights counted.")
        if notes:
            lines += [" ".join(notes), ""]
        lines += ["| setting | prune | E | fine-tune epochs | seeds | bits/weight | accuracy (min-max) | "
                  "vs float (worst) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for p in sorted(res["points"], key=lambda p: p["bits_per_weight"]):
            prune = ",".join(f"{v:g}" for v in p["prune"]) if isinstance(p["prune"], list) else f"{p['prune']:g}"
            lines.append(f"| {p['setting']} | {prune} | {p['exp_bits']} | {p['epochs']} | {p['seeds']} | "
                         f"{p['bits_per_weight']:.3f} | {100 * p['accuracy']:.2f} % ({100 * p['accuracy_min']:.2f}-"
                         f"{100 * p['accuracy_max']:.2f}) | {p['delta_points']:+.2f} "
                         f"({p['worst_delta_points']:+.2f}) |")
        best = res["smallest_within_target"]
        lines += ["", f"Smallest within target for every seed: {best['bits_per_weight']:.3f} bits/weight at "
                  f"{best['delta_points']:+.2f} points (worst seed {best['worst_delta_points']:+.2f})."
                  if best else "No point within target for every seed.", ""]
    return "\n".join(lines)


def plot(name: str, res: dict) -> bytes | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 5.2))
    for setting, marker in (("uniform", "o"), ("learned", "*")):
        for e in sorted({p["exp_bits"] for p in res["points"]}):
            pts = sorted((p for p in res["points"] if p["setting"] == setting and p["exp_bits"] == e),
                         key=lambda p: p["bits_per_weight"])
            if pts:
                acc = np.array([100 * p["accuracy"] for p in pts])
                spread = np.array([[a - 100 * p["accuracy_min"], 100 * p["accuracy_max"] - a]
                                   for a, p in zip(acc, pts)]).T
                ax.errorbar([p["bits_per_weight"] for p in pts], acc, yerr=spread, marker=marker, capsize=3,
                            linestyle="-" if setting == "uniform" else "none", markersize=10 if marker == "*" else 5,
                            label=f"SD, {setting} prune, E={e} (mean, min-max over seeds)")
    fa = 100 * res["float_accuracy"]
    ax.axhline(fa, color="k", linewidth=1, label=f"float {fa:.2f} %")
    ax.axhline(fa - TARGET_DROP_POINTS, color="k", linewidth=1, linestyle=":", label="float - 1 point")
    ax.axvline(TARGET_BITS, color="grey", linewidth=1, linestyle="--", label=f"{TARGET_BITS} bits/weight")
    ax.set_xlabel("bits/weight (every stored bit)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{name} ({res['model']}, {res.get('dataset', 'digits')} test split): bits/weight vs accuracy",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)     # below: covers no point
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def previous_results(path: Path) -> dict:
    """The results of an earlier run in ``path`` (``compression.json``), ``{}`` if there is none; an unreadable
    file is an error rather than silently replaced."""
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SdhwError(f"cannot read the earlier results {str(path)!r} to merge into: {exc}; move it away to "
                        "start afresh") from None
    if not isinstance(results, dict) or not all(isinstance(r, dict) and "points" in r for r in results.values()):
        raise SdhwError(f"{str(path)!r} does not hold golden.curves results (model name -> result); move it away "
                        "to start afresh")
    return results


def merge_results(earlier: dict, swept: dict) -> dict:
    """``earlier`` with the models of ``swept`` replaced or added, in :data:`SWEEPS` order, then any others."""
    merged = {**earlier, **swept}
    order = [n for n in SWEEPS if n in merged] + [n for n in merged if n not in SWEEPS]
    return {n: merged[n] for n in order}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m golden.curves", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench", help="output directory (default: bench)")
    parser.add_argument("--models", default=",".join(SWEEPS), help=f"comma-separated, from {', '.join(SWEEPS)}")
    parser.add_argument("--seeds", type=int, default=2, help="fine-tuning seeds per setting (default 2)")
    args = parser.parse_args(argv)
    try:
        names = [n for n in args.models.split(",") if n]
        bad = [n for n in names if n not in SWEEPS]
        if bad or not names:
            raise SdhwError(f"unknown model {bad[0] if bad else '(none)'!r}; valid: {', '.join(SWEEPS)}")
        if args.seeds < 1:
            raise SdhwError(f"--seeds must be a positive integer, not {args.seeds}")
        earlier = previous_results(Path(args.out) / "compression.json")
        swept = {n: sweep_model(n, SWEEPS[n], args.seeds, log=lambda s: print(s, flush=True)) for n in names}
        results = merge_results(earlier, swept)
        files = {"compression.json": (json.dumps(results, indent=2) + "\n").encode(),
                 "compression.md": markdown(results).encode()}
        for n, res in swept.items():
            png = plot(n, res)
            if png is not None:
                files[f"compression_{n}.png"] = png
        fmt.write_files_atomic(args.out, files)
    except SdhwError as exc:
        print(f"golden.curves: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(sorted(files))} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
