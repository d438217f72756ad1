"""Quantised golden inference of models with layers the accelerator does not run yet (pooling, residual add).

:func:`golden.compiler.compile_model` takes FC and conv layers only. To give the int8 and SD accuracy of a
model with ``maxpool``, ``avgpool``, ``gap`` or ``add`` layers before the hardware runs them,
:func:`compile_staged` splits the model into *runs* of consecutive FC/conv layers and compiles each run
with ``compile_model`` (same options; calibrated and, for ``finetune``, fine-tuned on the float model's
activations at the run's input; per-layer prune ratios are given one per model layer or one per FC/conv
layer). The layers between the runs are the integer definitions of
:mod:`golden.qops`:

- ``maxpool`` / ``avgpool`` keep their input's quantisation; a fused ReLU clamps at the zero point;
- ``gap`` and ``add`` requantise to output parameters calibrated (min/max) on the float model's
  activation, like a layer's output.

Where a run's input quantisation (chosen by ``compile_model``) differs from the quantisation of the
activation it reads, the activation is requantised with the integer rule of :func:`golden.quant.requantize`
(multiplier ``scale_in / scale_out``). After a ReLU layer and a max pool the two are equal and nothing is
requantised.

Differences from a whole-model compile: each run is fine-tuned against its own float outputs, not the
model's, and no program file exists (format version 1 has no record for these layers). Bits are counted as
a program would store the runs' layers: one file header plus every FC/conv layer record; the layers
without weights would add their descriptors on top.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from . import format as fmt
from . import qops
from .compiler import CompileOptions, CompileResult, compile_model
from .errors import SdhwError
from .model import WEIGHTED_KINDS, Model, forward_float
from .program import Program, run_program
from .quant import ACT_MAX, QParams, choose_qparams, quantize_multiplier, requantize
from .report import compile_report


@dataclass
class StagedResult:
    """The compiled runs of a model and the quantisation of the activations between them."""

    model: Model
    input_q: QParams
    runs: dict[int, CompileResult]      # index of a run's first layer -> the run compiled
    act_q: dict[int, QParams]           # quantisation of the outputs of gap and add layers (activation index)
    options: CompileOptions

    @property
    def bits(self) -> int:
        """One file header plus the record of every FC/conv layer (see the module docstring)."""
        records = sum(fmt.layer_sizes(layer).total for run in self.runs.values() for layer in run.program.layers)
        return 8 * (fmt.FILE_HEADER.size + records)

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.model.n_weights


def weighted_runs(model: Model) -> list[tuple[int, int]]:
    """``(first, end)`` layer ranges of the maximal runs of consecutive FC/conv layers."""
    runs: list[tuple[int, int]] = []
    for i, layer in enumerate(model.layers):
        if layer.kind not in WEIGHTED_KINDS:
            continue
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _prune_per_layer(prune, model: Model, spans: list[tuple[int, int]]) -> tuple[float, ...] | None:
    """Per-layer prune ratios indexed by model layer, from one ratio per layer or per FC/conv layer."""
    if not isinstance(prune, tuple):
        return None
    n_layers = len(model.layers)
    weighted = [i for first, end in spans for i in range(first, end)]
    if len(prune) == n_layers:
        return prune
    if len(prune) == len(weighted):
        ratios = [0.0] * n_layers
        for i, p in zip(weighted, prune):
            ratios[i] = p
        return tuple(ratios)
    raise SdhwError(f"{len(prune)} prune ratios given; valid: one per layer ({n_layers}) or one per FC/conv "
                    f"layer ({len(weighted)})")


def compile_staged(model: Model, x_cal: np.ndarray, opts: CompileOptions | None = None, *,
                   progress: Callable[[str], None] | None = None) -> StagedResult:
    """Compile every run of FC/conv layers of ``model`` and calibrate the layers between them on ``x_cal``."""
    opts = CompileOptions() if opts is None else opts
    x_cal = np.asarray(x_cal, dtype=np.float64).reshape((-1, *model.input_shape))
    _, outs = forward_float(model, x_cal, trace=True)
    acts = [x_cal, *outs]
    shapes = model.shapes()
    spans = weighted_runs(model)
    prunes = _prune_per_layer(opts.prune, model, spans)
    dense = opts.dense_indices(len(model.layers))
    for i in sorted(dense):
        if not any(first <= i < end for first, end in spans):
            raise SdhwError(f"dense layer index {i} is layer {model.layers[i].describe()}, which has no weights; "
                            "--dense-layers names FC and conv layers")
    runs = {}
    for first, end in spans:
        run_progress = None
        if progress is not None:
            progress(f"compiling the run of layers {first}..{end - 1} (its layers are numbered from 0 below)")
            run_progress = lambda message, first=first: progress(f"run {first}: {message}")  # noqa: E731
        run_model = Model(shapes[first], model.layers[first:end])
        run_opts = opts if prunes is None else replace(opts, prune=prunes[first:end])
        run_opts = replace(run_opts, dense_layers=tuple(i - first for i in sorted(dense) if first <= i < end))
        runs[first] = compile_model(run_model, acts[first], run_opts, progress=run_progress)
    act_q = {}
    for i, layer in enumerate(model.layers):
        if layer.kind in ("gap", "add"):
            out = acts[i + 1]
            act_q[i + 1] = choose_qparams(0.0 if layer.relu else out.min(), out.max())
    input_q = runs[0].program.input_q if 0 in runs else choose_qparams(x_cal.min(), x_cal.max())
    return StagedResult(model, input_q, runs, act_q, opts)


def requantize_activation(x: np.ndarray, in_q: QParams, out_q: QParams) -> np.ndarray:
    """Int8 values on ``in_q`` moved onto ``out_q``: ``requantize(x - zp_in)`` by ``scale_in / scale_out``."""
    if in_q == out_q:
        return x
    m0, shift = quantize_multiplier(in_q.scale / out_q.scale)
    return requantize(np.asarray(x, dtype=np.int64) - in_q.zero_point, m0, shift, out_q.zero_point)


#: Runs a compiled run of FC/conv layers on int8 inputs: ``(index of its first layer, program, inputs)`` -> the
#: int8 outputs of the run's last layer (the accelerator's RTL, say, in place of golden).
RunExecutor = Callable[[int, Program, np.ndarray], np.ndarray]


def run_staged(result: StagedResult, x_q: np.ndarray, execute: RunExecutor | None = None
               ) -> tuple[np.ndarray, QParams]:
    """Integer inference of raw int8 inputs on ``result.input_q``: the int8 outputs and their quantisation.

    ``execute``: what runs each run of FC/conv layers (default: :func:`golden.program.run_program`); the layers
    between the runs are computed here. With an ``execute``, only a run's last output is known, so a residual
    ``add`` may read no activation from inside a run (an error naming both layers)."""
    model = result.model
    x = np.asarray(x_q, dtype=np.int64).reshape((-1, *model.input_shape))
    acts: dict[int, tuple[np.ndarray, QParams]] = {0: (x, result.input_q)}
    i = 0
    while i < len(model.layers):
        x, q = acts[i]
        if i in result.runs:
            program = result.runs[i].program
            x_in = requantize_activation(x, q, program.input_q)
            end = i + len(program.layers)
            if execute is None:
                _, outs = run_program(program, x_in, trace=True)
                for k, (out, layer) in enumerate(zip(outs, program.layers)):
                    acts[i + k + 1] = (out, layer.out_q)
            else:
                out = np.asarray(execute(i, program, x_in), dtype=np.int64)
                acts[end] = (out.reshape((len(x_in), *program.layers[-1].out_shape)), program.layers[-1].out_q)
            i = end
            continue
        layer = model.layers[i]
        if layer.kind in ("maxpool", "avgpool"):
            out = qops.max_pool_2x2(x) if layer.kind == "maxpool" else qops.avg_pool_2x2(x)
            out_q = q
            if layer.relu:
                out = np.clip(out, q.zero_point, ACT_MAX)
        elif layer.kind == "gap":
            out_q = result.act_q[i + 1]
            out = qops.global_avg_pool(x, q, out_q, relu=layer.relu)
        else:
            out_q = result.act_q[i + 1]
            if layer.source not in acts:
                raise SdhwError(f"layer {i} (add) reads the output of layer {layer.source - 1}, inside a run of "
                                "FC/conv layers whose executor gives only the run's last output; valid: a source at a "
                                "run's end or outside the runs")
            src, src_q = acts[layer.source]
            out = qops.residual_add(x, src, qops.add_params(q, src_q, out_q), relu=layer.relu)
        acts[i + 1] = (out, out_q)
        i += 1
    return acts[len(model.layers)]


def infer_staged(result: StagedResult, x_real: np.ndarray) -> np.ndarray:
    """Quantise real inputs, run :func:`run_staged`, return the dequantised outputs ``(N, -1)``."""
    x_q = result.input_q.quantize(np.asarray(x_real).reshape((-1, *result.model.input_shape)))
    out, out_q = run_staged(result, x_q)
    return out_q.dequantize(out.reshape(out.shape[0], -1))


def staged_report(result: StagedResult) -> dict:
    """Figures of a staged compile in the shape of :func:`golden.report.compile_report` (no energy)."""
    layers = []
    for first, run in result.runs.items():
        for row in compile_report(run, fmt.pack(run.program))["layers"]:
            layers.append({**row, "index": first + row["index"]})
    bits, n = result.bits, result.model.n_weights
    return {"program": {"bytes": bits // 8, "bits": bits, "weights": n, "bits_per_weight": bits / n,
                        "compression_vs_int8": 8 * n / bits, "compression_vs_fp32": 32 * n / bits},
            "layers": layers}
