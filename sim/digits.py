"""A model end to end on the RTL: compile, generate, simulate its evaluation inputs, compare with golden
(``sdhw sim``; ``make demo`` and the digits benchmark on the bundled digits data)."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.datasets import load_digits_split
from golden.model import Model
from rtl_gen.image import build_image
from sdhw.config import DEPTH_FIELDS, DEVICES, AcceleratorConfig, check_fits

from .runner import Build, Job, SimulationFailed


def pick_device(program, pes: int, dense: bool, device: str | None, batch: int = 1) -> AcceleratorConfig:
    """The given device, or the smallest whose default memories hold the program (and a batch of ``batch``
    inputs) at this PE count."""
    candidates = [device] if device else list(DEVICES)
    errors = []
    for name in candidates:
        try:
            cfg = AcceleratorConfig(pes=pes, dense=dense, device=name)
            check_fits(cfg)
            build_image(program, cfg, batch)
            return cfg
        except SdhwError as exc:
            errors.append(f"{name}: {exc}")
    if device:
        raise SdhwError(errors[0].split(": ", 1)[1])
    raise SdhwError(f"no device holds this program at pes={pes}: " + "; ".join(errors))


def run_digits(model: Model, *, pes: int, dense: bool = False, limit: int | None = None,
               device: str | None = None, sim: str | None = None, build_dir=None, progress=print,
               batch: int = 1) -> dict:
    """:func:`run_model` on the bundled digits data: calibrated on its train split, run on its test split."""
    if int(np.prod(model.input_shape)) != 64:
        raise SdhwError(f"the bundled digits data has 64 inputs (8x8x1); this model takes {model.input_shape}")
    x_train, _, x_test, y_test = load_digits_split()
    shape = (-1, *model.input_shape)
    return run_model(model, x_train.reshape(shape), x_test.reshape(shape), y_test, pes=pes, dense=dense,
                     limit=limit, device=device, sim=sim, build_dir=build_dir, progress=progress,
                     data="digits test images", batch=batch)


def run_model(model: Model, x_calib: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, *, pes: int,
              dense: bool = False, limit: int | None = None, device: str | None = None, sim: str | None = None,
              build_dir=None, progress=print, data: str = "inputs", batch: int = 1) -> dict:
    """Compile ``model`` (calibrated on ``x_calib``), generate the accelerator (``device`` or the smallest that
    holds the program), run ``x_eval`` (the first ``limit``) on its RTL, ``batch`` inputs per run, and check
    every output against golden; accuracy against the labels ``y_eval``, cycles and utilisation from the
    accelerator's counters: ``latency_cycles`` for one run (of ``batch`` inputs), ``cycles_per_inference`` the
    cycles of all runs over the inputs. Inputs in the model's layout (``model.input_shape``)."""
    if limit is not None:
        if limit < 1:
            raise SdhwError(f"--limit must be >= 1, not {limit}")
        x_eval, y_eval = x_eval[:limit], y_eval[:limit]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SdhwError(f"--batch must be a positive integer, not {batch!r}")
    progress(f"compiling ({'dense int8' if dense else 'SD'})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = compile_model(model, x_calib, CompileOptions(dense=dense)).program
    cfg = pick_device(program, pes, dense, device, batch)
    build_dir = Path(build_dir or f"build/sim-{cfg.device}-{pes}{'-dense' if dense else ''}")
    progress(f"generating and building {cfg.device}, {pes} PEs = {cfg.channel_lanes} x {cfg.pixel_lanes} "
             f"in {build_dir}")
    build = Build(cfg, build_dir, sim=sim)
    x_q = program.input_q.quantize(x_eval)
    runs = [x_q[k:k + batch] for k in range(0, len(x_q), batch)]
    job = Job()
    full = [run for run in runs if len(run) == batch]
    if full:
        job.add_program("model", program, cfg, full, batch=batch, keep_outputs=True)
    if len(runs[-1]) < batch:                       # the inputs left over: a smaller batch of their own
        job.add_program("model, last inputs", program, cfg, [runs[-1]], batch=len(runs[-1]), keep_outputs=True)
    progress(f"simulating {len(x_q)} {data} on the RTL ({build.sim}"
             f"{f', in runs of {batch}' if batch > 1 else ''})")
    start = time.monotonic()
    try:
        stats = build.run(job, seed=1, name="model", quiet=True)
    except SimulationFailed as exc:
        raise SdhwError(f"RTL simulation failed: {exc}") from None
    seconds = time.monotonic() - start
    outputs = np.concatenate([np.asarray(run) for run in stats["outputs"]])
    cycles, macs = np.asarray(stats["cycles"]), np.asarray(stats["macs"])
    run_sizes = np.asarray([len(run) for run in runs])
    return {
        "model_layers": len(program.layers), "build": "dense" if dense else "sd", "device": cfg.device, "pes": pes,
        "channel_lanes": cfg.channel_lanes, "pixel_lanes": cfg.pixel_lanes, "simulator": build.sim,
        "data": data, "images": len(x_q), "rtl_equals_golden": True, "outputs_checked": stats["outputs_checked"],
        "accuracy": float(np.mean(np.argmax(outputs.reshape(len(x_q), -1), axis=1) == y_eval)),
        "batch": batch, "latency_cycles": float(cycles[run_sizes == run_sizes[0]].mean()),
        "cycles_per_inference": float(cycles.sum() / len(x_q)), "macs_per_inference": float(macs.sum() / len(x_q)),
        "utilisation": float(macs.sum() / (cycles.sum() * pes)),
        "rows_skipped_per_inference": float(np.sum(stats["skipped"]) / len(x_q)), "sim_seconds": round(seconds, 1),
        "depths": {k: getattr(cfg, k) for k in DEPTH_FIELDS},
    }
