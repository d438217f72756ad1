"""A model end to end on the RTL: compile, generate, simulate its evaluation inputs, compare with golden
(``sdhw sim``; ``make demo`` and the digits benchmark on the bundled digits data)."""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.datasets import load_digits_split
from golden.model import WEIGHTED_KINDS, Model
from golden.staged import compile_staged, run_staged
from rtl_gen.image import build_image
from sdhw.config import DEPTH_FIELDS, DEVICES, AcceleratorConfig, check_fits

from .runner import Build, Job, SimulationFailed


def pick_device(programs, pes: int, dense: bool, device: str | None, batch: int = 1) -> AcceleratorConfig:
    """The given device, or the smallest whose default memories hold the program (or every program of a list:
    the runs of a staged model) and a batch of ``batch`` inputs at this PE count."""
    programs = programs if isinstance(programs, list) else [programs]
    # rebuild units as wide as the widest code field of the programs (the configuration's default otherwise)
    exp_bits = max([layer.weights.exp_bits for program in programs for layer in program.layers if layer.is_sd]
                   + [AcceleratorConfig.exp_bits])
    candidates = [device] if device else list(DEVICES)
    errors = []
    for name in candidates:
        try:
            cfg = AcceleratorConfig(pes=pes, dense=dense, device=name, exp_bits=exp_bits)
            check_fits(cfg)
            for program in programs:
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
              build_dir=None, progress=print, data: str = "inputs", batch: int = 1,
              options: CompileOptions | None = None) -> dict:
    """Compile ``model`` (calibrated on ``x_calib``, with ``options`` but their ``dense`` replaced by ``dense``),
    generate the accelerator (``device`` or the smallest that holds the program; rebuild units as wide as its
    widest code field), run ``x_eval`` (the first ``limit``) on its RTL, ``batch`` inputs per run, and check
    every output against golden; accuracy against the labels ``y_eval``, cycles and utilisation from the
    accelerator's counters: ``latency_cycles`` for one run (of ``batch`` inputs), ``cycles_per_inference`` the
    cycles of all runs over the inputs. Inputs in the model's layout (``model.input_shape``).

    A model with layers the accelerator does not run (pooling, global average pool, residual add) is compiled
    by :func:`golden.staged.compile_staged` into runs of FC/conv layers: each run goes through the RTL (its
    outputs checked against golden on the same inputs), the layers between the runs are computed on the host
    with golden's integer definitions, and the counters add up over the runs (``host_layers`` names them)."""
    if limit is not None:
        if limit < 1:
            raise SdhwError(f"--limit must be >= 1, not {limit}")
        x_eval, y_eval = x_eval[:limit], y_eval[:limit]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SdhwError(f"--batch must be a positive integer, not {batch!r}")
    host_layers = [f"{i}: {layer.describe()}" for i, layer in enumerate(model.layers)
                   if layer.kind not in WEIGHTED_KINDS]
    options = replace(options or CompileOptions(), dense=dense)
    progress(f"compiling ({'dense int8' if dense else 'SD'}{', in runs of FC/conv layers' if host_layers else ''})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if host_layers:
            staged = compile_staged(model, x_calib, options)
            programs = [run.program for run in staged.runs.values()]
            input_q = staged.input_q
            if not programs:
                raise SdhwError("the model has no FC or conv layer: nothing of it runs on the accelerator")
        else:
            program = compile_model(model, x_calib, options).program
            programs, input_q = [program], program.input_q
    cfg = pick_device(programs, pes, dense, device, batch)
    build_dir = Path(build_dir or f"build/sim-{cfg.device}-{pes}{'-dense' if dense else ''}")
    progress(f"generating and building {cfg.device}, {pes} PEs = {cfg.channel_lanes} x {cfg.pixel_lanes} "
             f"in {build_dir}")
    build = Build(cfg, build_dir, sim=sim, quiet=True)           # its output to build.log: stdout may be JSON
    x_q = input_q.quantize(x_eval)
    progress(f"simulating {len(x_q)} {data} on the RTL ({build.sim}"
             f"{f', in runs of {batch}' if batch > 1 else ''})")
    totals = {"cycles": [], "macs": [], "skipped": [], "outputs_checked": 0, "seconds": 0.0}

    def execute(first: int, program, x_in: np.ndarray) -> np.ndarray:
        """One program over every input on the RTL (outputs checked against golden by the testbench)."""
        name = "model" if first == 0 else f"run {first}"
        runs = [x_in[k:k + batch] for k in range(0, len(x_in), batch)]
        job = Job()
        full = [run for run in runs if len(run) == batch]
        if full:
            job.add_program(name, program, cfg, full, batch=batch, keep_outputs=True)
        if len(runs[-1]) < batch:                       # the inputs left over: a smaller batch of their own
            job.add_program(f"{name}, last inputs", program, cfg, [runs[-1]], batch=len(runs[-1]),
                            keep_outputs=True)
        start = time.monotonic()
        try:
            stats = build.run(job, seed=1, name=name.replace(" ", "_"), quiet=True)
        except SimulationFailed as exc:
            raise SdhwError(f"RTL simulation failed: {exc}") from None
        totals["seconds"] += time.monotonic() - start
        cycles = np.asarray(stats["cycles"])
        totals["cycles"].append(cycles)
        totals["macs"].append(np.asarray(stats["macs"]))
        totals["skipped"].append(np.asarray(stats["skipped"]))
        totals["outputs_checked"] += stats["outputs_checked"]
        if host_layers:
            progress(f"layers {first}..{first + len(program.layers) - 1} on the RTL: {cycles.sum() / len(x_in):.0f} "
                     f"cycles/inference, outputs equal golden")
        return np.concatenate([np.asarray(run) for run in stats["outputs"]])

    if host_layers:
        outputs, _ = run_staged(staged, x_q, execute)
        if not np.array_equal(outputs, run_staged(staged, x_q)[0]):       # each run was; so must the whole be
            raise SdhwError("the staged model's outputs differ from golden's (golden.staged.run_staged)")
    else:
        outputs = execute(0, programs[0], x_q)
    run_sizes = np.asarray([min(batch, len(x_q) - k) for k in range(0, len(x_q), batch)])
    cycles = np.sum(totals["cycles"], axis=0)               # per run of a batch, over the model's runs
    macs = np.sum(totals["macs"], axis=0)
    return {
        "model_layers": len(model.layers), "build": "dense" if dense else "sd", "device": cfg.device, "pes": pes,
        "channel_lanes": cfg.channel_lanes, "pixel_lanes": cfg.pixel_lanes, "exp_bits": cfg.exp_bits,
        "simulator": build.sim, "data": data, "images": len(x_q), "rtl_equals_golden": True,
        "outputs_checked": totals["outputs_checked"],
        "host_layers": host_layers, "accelerator_runs": len(programs),
        "accuracy": float(np.mean(np.argmax(np.asarray(outputs).reshape(len(x_q), -1), axis=1) == y_eval)),
        "batch": batch, "latency_cycles": float(cycles[run_sizes == run_sizes[0]].mean()),
        "cycles_per_inference": float(cycles.sum() / len(x_q)), "macs_per_inference": float(macs.sum() / len(x_q)),
        "utilisation": float(macs.sum() / (cycles.sum() * pes)),
        "rows_skipped_per_inference": float(np.sum(totals["skipped"]) / len(x_q)),
        "sim_seconds": round(totals["seconds"], 1),
        "depths": {k: getattr(cfg, k) for k in DEPTH_FIELDS},
    }
