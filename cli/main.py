"""The ``sdhw`` command line.

User errors (:class:`golden.SdhwError`) are printed as one line ``sdhw: error: ...`` with exit code 1;
argument errors exit with code 2 (argparse). Output files are written atomically: a failed command
leaves no partial file behind.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np

from golden import SdhwError
from golden import format as fmt
from golden.compiler import METHODS, CompileOptions, compile_model
from golden.datasets import load_digits_split
from golden.model import (
    WEIGHTED_KINDS,
    Model,
    accuracy,
    channels_first,
    forward_float,
    load_calibration_data,
    load_eval_data,
    load_model,
)
from golden.program import infer
from golden.report import compile_report, format_table
from golden.staged import compile_staged, infer_staged, staged_report
from sdhw.config import DEVICES


class Progress:
    """Progress lines on stderr (silenced by ``--quiet`` or ``--json``), with elapsed time."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"sdhw: [{time.monotonic() - self.start:5.1f}s] {message}", file=sys.stderr, flush=True)


def _digits_for(model: Model, split: str) -> tuple[np.ndarray, np.ndarray]:
    x_train, y_train, x_test, y_test = load_digits_split()
    if int(np.prod(model.input_shape)) != 64:
        raise SdhwError(f"the bundled digits data has 64 inputs (8x8x1); this model takes {model.input_shape}")
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return x.reshape((-1, *model.input_shape)), y


def _calibration_inputs(model: Model, path: str | None, nchw: bool = False) -> np.ndarray:
    """Calibration inputs: the digits train split, or array ``x`` of ``path`` in the model's layout or, for
    an ONNX/PyTorch image model (``nchw``), as ``(N, C, H, W)``."""
    if path is None:
        try:
            return _digits_for(model, "train")[0]
        except SdhwError as exc:
            raise SdhwError(f"{exc}; give calibration inputs with --calib FILE.npz (array 'x')") from None
    return load_calibration_data(path, model, nchw)


def _evaluation_data(model: Model, path: str | None, nchw: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x, y, description)``: ``--eval-data`` (see :func:`golden.model.load_eval_data`) or the digits test split."""
    if path is not None:
        x, y = load_eval_data(path, model, nchw)
        return x, y, f"inputs of {path}"
    try:
        x, y = _digits_for(model, "test")
    except SdhwError as exc:
        raise SdhwError(f"{exc}; give labelled data with --eval-data FILE.npz (arrays 'x' and 'y')") from None
    return x, y, "digits test images"


def _accuracies(model: Model, x_cal: np.ndarray, opts: CompileOptions, result, evaluation, compile_fn, infer_fn,
                bits_per_weight, progress) -> dict:
    """Float, int8 dense, this compile's and the other SD method's accuracy on the evaluation data."""
    x_test, y_test, description = evaluation
    progress(f"evaluating on {len(y_test)} {description}")
    acc = {"float": accuracy(forward_float(model, x_test), y_test)}
    if not opts.dense:
        dense = compile_fn(model, x_cal, CompileOptions(dense=True), progress=None)
        acc["int8_dense"] = accuracy(infer_fn(dense, x_test), y_test)
    acc[f"{'int8_dense' if opts.dense else 'sd_' + opts.method}"] = accuracy(infer_fn(result, x_test), y_test)
    if not opts.dense:
        other = "paper" if opts.method == "finetune" else "finetune"
        progress(f"compiling with method {other} for comparison")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alt = compile_fn(model, x_cal, CompileOptions(**{**vars(opts), "method": other}), progress=progress)
        acc[f"sd_{other}"] = accuracy(infer_fn(alt, x_test), y_test)
        acc[f"sd_{other}_bits_per_weight"] = bits_per_weight(alt)
    acc["test_samples"] = len(y_test)
    acc["data"] = description
    return acc


def _compile_staged(args, model: Model, opts: CompileOptions, x_cal: np.ndarray, evaluation, not_run: int,
                    progress) -> NoReturn:
    """``--eval`` of a model with layers the accelerator does not run: figures from golden, no program file."""
    layer = model.layers[not_run]
    reason = (f"layer {not_run} ({layer.describe()}): the accelerator does not run {layer.kind} layers yet; it runs "
              f"{' and '.join(WEIGHTED_KINDS)} layers")
    progress(f"{reason}: evaluating in golden only (golden.staged), no program will be written")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compile_staged(model, x_cal, opts, progress=progress)
    for w in caught:
        print(f"sdhw: warning: {w.message}", file=sys.stderr)
    report = {"model": str(args.model), "output": None, "method": opts.method,
              "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()},
              **staged_report(result), "not_written": reason}
    report["accuracy"] = _accuracies(model, x_cal, opts, result, evaluation, compile_staged, infer_staged,
                                     lambda alt: alt.bits_per_weight, progress)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_compile(report)
    raise SdhwError(f"no program written to {str(args.output)!r}: {reason} (the figures above come from golden's "
                    "integer inference)")


def _layer_indices(text: str | None) -> tuple[int, ...] | None:
    """``--dense-layers``: comma-separated layer indices (negative from the end), or a clear error."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SdhwError(f"--dense-layers takes comma-separated layer indices such as 0,-1, not {text!r}") from None


def _options(args) -> CompileOptions:
    prune = args.prune
    if prune == "auto":
        pass
    elif prune is not None and "," in prune:
        prune = tuple(float(p) for p in prune.split(","))
    elif prune is not None:
        prune = float(prune)
    kwargs = {"method": args.method, "exp_bits": args.exp_bits, "threshold": args.thr,
              "block_rows": args.block_rows, "basis_group": args.basis_group, "max_iter": args.max_iter,
              "epochs": args.epochs, "seed": args.seed, "dense": args.dense, "target_bits": args.target_bits,
              "dense_layers": _layer_indices(args.dense_layers)}
    if prune is not None:
        kwargs["prune"] = prune
    return CompileOptions(**{k: v for k, v in kwargs.items() if v is not None})


def cmd_compile(args) -> int:
    out = Path(args.output)
    progress = Progress(not (args.quiet or args.json))
    if args.batch != 1 and not args.manifest:
        raise SdhwError(f"--batch {args.batch} lays out a program image: give --for with the accelerator's "
                        "manifest.json (or its directory)")
    if args.batch < 1:
        raise SdhwError(f"--batch must be a positive integer, not {args.batch}")
    target = None
    if args.manifest:
        from rtl_gen.generate import load_manifest
        target = load_manifest(args.manifest)[1]
        if args.dense is None:
            args.dense = target.dense or None
        if args.exp_bits is None:
            args.exp_bits = min(target.exp_bits, 2)
    model = load_model(args.model)
    try:
        opts = _options(args)
    except ValueError as exc:
        raise SdhwError(f"--prune must be a number, comma-separated numbers or 'auto': {exc}") from None
    first_is_nchw = channels_first(args.model, model)
    x_cal = _calibration_inputs(model, args.calib, first_is_nchw)
    evaluation = _evaluation_data(model, args.eval_data, first_is_nchw) if args.eval or args.eval_data else None
    not_run = next((i for i, layer in enumerate(model.layers) if layer.kind not in WEIGHTED_KINDS), None)
    if evaluation is not None and not_run is not None:
        _compile_staged(args, model, opts, x_cal, evaluation, not_run, progress)
    progress(f"compiling {args.model} ({len(model.layers)} layers, {model.n_weights} weights, "
             f"method {opts.method})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compile_model(model, x_cal, opts, progress=progress)
    for w in caught:
        print(f"sdhw: warning: {w.message}", file=sys.stderr)
    packed = fmt.pack(result.program)
    report = compile_report(result, packed)
    report = {"model": str(args.model), "output": str(out), "method": opts.method,
              "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()}, **report}
    if evaluation is not None:
        report["accuracy"] = _accuracies(model, x_cal, opts, result, evaluation, compile_model,
                                         lambda r, x: infer(r.program, x),
                                         lambda alt: len(fmt.pack(alt.program)) * 8 / alt.program.n_weights,
                                         progress)
    outputs = {out: packed}
    if target is not None:
        from rtl_gen.image import build_image, pack_image
        image = build_image(result.program, target, args.batch)
        image_data = pack_image(image)
        outputs[out.with_suffix(".sdimg")] = image_data
        report["image"] = {"path": str(out.with_suffix(".sdimg")), "bytes": len(image_data), "batch": image.batch,
                           **image.meta["usage"]}
    for path, data in outputs.items():
        try:
            fmt.write_atomic(path, data)
        except OSError as exc:
            for written in outputs:
                if written == path:
                    break
                written.unlink(missing_ok=True)
            raise SdhwError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_compile(report)
    return 0


def _print_compile(report: dict) -> None:
    rows = []
    for lay in report["layers"]:
        plain = lay["plain_pow2_rel_error"]
        sd = lay["mode"] == "sd"
        rows.append([lay["index"], lay["layer"], lay["mode"], "x".join(map(str, lay["shape"])),
                     f"{lay['prune']:.2f}" if sd else "-", f"{lay['row_density']:.2f}",
                     f"{lay['bits_per_weight']:.2f}", f"{lay['rel_error']:.3f}",
                     "-" if plain is None else f"{plain:.3f}"])
    print(format_table(rows, ["#", "layer", "mode", "shape", "prune", "row density", "bits/weight", "rel. error",
                              "plain pow2 err"]))
    p = report["program"]
    sizes = (f"{p['weights']} weights, {p['bits_per_weight']:.3f} bits/weight", f"{p['compression_vs_int8']:.2f}x vs "
             f"int8, {p['compression_vs_fp32']:.2f}x vs fp32")
    if report["output"] is None:
        print(f"\nno program written ({report['not_written']}); as a program would store the FC/conv layers "
              f"(one file header + their records, the other layers not counted): {sizes[0]}, {sizes[1]}")
    else:
        print(f"\nprogram {report['output']}: {p['bytes']} bytes, {sizes[0]} (every stored bit), {sizes[1]}")
    if "energy_estimate_pj" in report:
        e = report["energy_estimate_pj"]
        print(f"energy estimate per inference (Horowitz 45 nm table, not a measurement): "
              f"{e['sram'] / 1e3:.1f} nJ with weights in SRAM, {e['dram'] / 1e3:.1f} nJ with weights in DRAM")
    if "accuracy" in report:
        acc = report["accuracy"]
        parts = [f"{k} {v * 100:.2f}%" for k, v in acc.items() if k not in ("test_samples", "data")
                 and "bits" not in k]
        bits = [f"{k.removesuffix('_bits_per_weight')} {v:.3f}" for k, v in acc.items()
                if k.endswith("_bits_per_weight")]
        print(f"accuracy on {acc['test_samples']} {acc['data']}: " + ", ".join(parts)
              + (f" (bits/weight: {', '.join(bits)})" if bits else ""))


def cmd_inspect(args) -> int:
    program = fmt.load(args.program)
    packed = Path(args.program).read_bytes()
    rows = []
    for i, layer in enumerate(program.layers):
        sizes = fmt.layer_sizes(layer)
        density = f"{float(layer.weights.nonzero_rows.mean()):.2f}" if layer.is_sd else "-"
        rows.append([i, layer.describe(), "sd" if layer.is_sd else "dense", "x".join(map(str, layer.weight_shape)),
                     density, f"{sizes.total * 8 / layer.n_weights:.2f}", "relu" if layer.relu else "-"])
    summary = {"program": str(args.program), "bytes": len(packed), "weights": program.n_weights,
               "bits_per_weight": len(packed) * 8 / program.n_weights, "input_shape": list(program.input_shape),
               "output_shape": list(program.output_shape), "layers": len(program.layers)}
    if args.eval:
        x_test, y_test = load_digits_split()[2:]
        if int(np.prod(program.input_shape)) != 64:
            raise SdhwError(f"the bundled digits data has 64 inputs; this program takes {program.input_shape}")
        summary["accuracy"] = accuracy(infer(program, x_test.reshape((-1, *program.input_shape))), y_test)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(format_table(rows, ["#", "layer", "mode", "shape", "row density", "bits/weight", "act"]))
    print(f"\n{summary['program']}: {summary['bytes']} bytes, {summary['weights']} weights, "
          f"{summary['bits_per_weight']:.3f} bits/weight, input {tuple(program.input_shape)}, "
          f"output {tuple(program.output_shape)}")
    if args.eval:
        print(f"accuracy on {len(y_test)} digits test images (golden integer inference): "
              f"{summary['accuracy'] * 100:.2f}%")
    return 0


def _cli_config(args):
    """The accelerator config from ``--config``, ``--device``, ``--pes`` and ``--dense`` (no fit check)."""
    from rtl_gen.generate import load_config_file, make_config
    from sdhw.config import DEFAULT_DEVICE, DEFAULT_PES

    file_values = load_config_file(args.config) if args.config else {}
    device = args.device or file_values.get("device", DEFAULT_DEVICE)
    pes = args.pes if args.pes is not None else file_values.get("pes", DEFAULT_PES.get(device, 16))
    return make_config(file_values, pes=pes, device=device, dense=True if args.dense else None)


def cmd_generate(args) -> int:
    from rtl_gen.generate import generate

    cfg = _cli_config(args)
    manifest = generate(cfg, args.output)
    lanes = manifest["lanes"]
    res = manifest["resources_estimate"]
    print(f"{args.output}/{manifest['verilog']}: {'dense int8' if cfg.dense else 'SD'} accelerator, "
          f"{lanes['pes']} PEs = {lanes['channel_lanes']} channel lanes x {lanes['pixel_lanes']} pixel lanes, "
          f"device {cfg.device} (estimate: ~{res['luts']} LUTs, {res['dsps']} DSPs, {res['bram_blocks']} block RAMs)")
    print(f"{args.output}/manifest.json: parameters, ports and memory map")
    return 0


def cmd_sim(args) -> int:
    from sim.digits import run_model

    progress = Progress(not (args.quiet or args.json))
    model = load_model(args.model)
    nchw = channels_first(args.model, model)
    x_cal = _calibration_inputs(model, args.calib, nchw)
    x, y, data = _evaluation_data(model, args.data, nchw)
    try:
        opts = _options(args)
    except ValueError as exc:
        raise SdhwError(f"--prune must be a number, comma-separated numbers or 'auto': {exc}") from None
    result = run_model(model, x_cal, x, y, pes=args.pes, dense=args.dense, limit=args.limit, device=args.device,
                       sim=args.sim, build_dir=args.build_dir, progress=progress, data=data, batch=args.batch,
                       options=opts)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"RTL ({result['simulator']}, {result['device']}, {result['pes']} PEs = {result['channel_lanes']} x "
          f"{result['pixel_lanes']}, {result['build']}) on {result['images']} {data}: "
          f"outputs equal golden ({result['outputs_checked']} values checked)")
    if result["host_layers"]:
        print(f"{result['accelerator_runs']} runs of FC/conv layers on the accelerator; on the host between them "
              f"(golden's integer definitions): {', '.join(result['host_layers'])}")
    if result["batch"] > 1:
        print(f"batch {result['batch']}: {result['latency_cycles']:.0f} cycles per run of {result['batch']} inputs "
              "(latency)")
    print(f"accuracy {result['accuracy'] * 100:.2f}%, {result['cycles_per_inference']:.0f} cycles/inference, "
          f"utilisation {result['utilisation'] * 100:.1f}% (MACs issued / (cycles x N)), "
          f"{result['rows_skipped_per_inference']:.0f} zero rows skipped/inference, "
          f"simulated in {result['sim_seconds']} s")
    return 0


def cmd_synth(args) -> int:
    # the command line composes every stage: the FPGA flow is imported only when asked for
    from fpga.synth import format_markdown, synthesize, write_report

    cfg = _cli_config(args)
    out = Path(args.output or f"build/synth/{cfg.device}-{cfg.pes}{'-dense' if cfg.dense else ''}")
    progress = Progress(not (args.quiet or args.json))
    report = synthesize(cfg, freq_mhz=args.freq, seeds=args.seeds, build_dir=out, jobs=args.jobs,
                        pnr_timeout=args.pnr_timeout, router=args.router, log=progress)
    json_path, md_path = write_report(report, out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_markdown(report))
        print(f"report: {json_path}, {md_path}")
    if not report["fits"]:
        print(f"sdhw: error: {report['verdict']}", file=sys.stderr)
        return 1
    return 0


def cmd_build(args) -> int:
    from fpga.boards import BOARDS, build_board

    if args.board not in BOARDS:
        raise SdhwError(f"unknown board {args.board!r}; valid: {', '.join(BOARDS)}")
    args.device = BOARDS[args.board].device
    cfg = _cli_config(args)
    out = Path(args.output or f"build/board-{args.board}-{cfg.pes}{'-dense' if cfg.dense else ''}")
    progress = Progress(not (args.quiet or args.json))
    result = build_board(args.board, cfg, out_dir=out, freq_mhz=args.freq, seeds=args.seeds, baud=args.baud,
                         allow_timing_fail=args.allow_timing_fail, log=progress)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    util = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in sorted(result["utilization"].items()))
    print(f"{out}/{result['bitstream']}: {args.board}, {cfg.pes} PEs {'dense' if cfg.dense else 'SD'}, clock "
          f"{result['clock_mhz']:.2f} MHz (Fmax {result['fmax_mhz']:.2f} MHz), UART {result['baud']} baud on "
          f"{result['uart']}")
    builds = "; ".join(f"{a['clock_mhz']:.2f} MHz seed {a['seed']}: Fmax {a['fmax_mhz']:.2f} "
                       f"{'met' if a['met'] else 'missed'}" for a in result["attempts"])
    how = ("fixed by --freq" if result["clock_search"] == "fixed" else "the highest that met timing"
           if result["timing_met"] else "none met timing: the build with the highest Fmax")
    print(f"clock: {how}, of {len(result['attempts'])} build(s): {builds}")
    endpoints = result.get("endpoints") or {}
    if endpoints.get("failing"):
        worst = "; ".join(f"{g['from']} -> {g['to']} {g['failing']} ({g['worst_slack_ns']} ns)"
                          for g in endpoints["groups"][:5])
        print(f"failing paths: {endpoints['failing']} of {endpoints['endpoints']} endpoints miss "
              f"{result['clock_mhz']:.2f} MHz; worst by block: {worst}")
    print(f"resources: {util}")
    print(f"{out}/manifest.json: compile programs for it with: sdhw compile MODEL -o P.sdp --for {out}")
    return 0


def cmd_run(args) -> int:
    # the board's host driver, imported only when asked for (pyserial only when the port is opened)
    from fpga.host import load_input, open_serial, run_on_board
    from rtl_gen.image import load_image

    if args.retries < 0:
        raise SdhwError(f"--retries must be 0 or more, not {args.retries}")
    image = load_image(args.program)
    inputs = load_input(image, args.input)
    port = open_serial(args.port, args.baud, timeout=args.timeout)
    try:
        report = run_on_board(port, image, inputs, poll_timeout=args.timeout * 10, retries=args.retries)
    finally:
        port.close()
    outputs = np.stack([r["output"] for r in report["results"]]).astype(np.int8)
    out_shape = tuple(image.meta["output_shape"])
    outputs = outputs.reshape((-1, *out_shape) if len(inputs) > 1 else out_shape)
    if args.output:
        import io
        buf = io.BytesIO()
        np.save(buf, outputs)
        try:
            fmt.write_atomic(args.output, buf.getvalue())
        except OSError as exc:
            raise SdhwError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    counters = ("cycles", "macs", "skipped", "stalls")
    if args.json:
        print(json.dumps({"port": args.port, "program": str(args.program), "board": report["board"],
                          "words_loaded": report["words_loaded"], "retried": report["retried"],
                          "output_file": args.output,
                          "batch": image.batch,
                          "results": [{"output": r["output"].tolist(), "run": r["run"]} for r in report["results"]],
                          "runs": [{"status": r["status"], **{k: r[k] for k in counters}} for r in report["runs"]]},
                         indent=2))
        return 0
    b = report["board"]
    print(f"{args.port}: sdhw accelerator v{b['version']}, {b['pes']} PEs = {b['channel_lanes']} x "
          f"{b['pixel_lanes']}, {'dense int8' if b['dense'] else 'SD'}; loaded {report['words_loaded']} words "
          f"of {args.program}" + (f" (batch {image.batch})" if image.batch > 1 else ""))
    for k, r in enumerate(report["results"]):
        print(f"input {k}: output {r['output'].tolist()}")
        if k + 1 == len(report["results"]) or report["results"][k + 1]["run"] != r["run"]:
            run = report["runs"][r["run"]]
            what = "" if image.batch == 1 else f"run {r['run']} (batch {image.batch}): "
            print(f"  {what}status {run['status']:#x} (done), {run['cycles']} cycles, {run['macs']} MACs, "
                  f"{run['skipped']} zero rows skipped, {run['stalls']} stall cycles")
    if report["retried"]:
        print(f"{report['retried']} requests re-sent after line errors")
    if args.output:
        print(f"outputs (int8, shape {outputs.shape}) written to {args.output}")
    return 0


def _list(text: str, cast, option: str) -> tuple:
    """A comma-separated option value as a tuple (empty for an empty string)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return tuple(cast(t) for t in items)
    except ValueError:
        kind = "integers" if cast is int else "numbers" + (" or 'auto'" if option == "--prune" else "")
        raise SdhwError(f"{option} takes comma-separated {kind}, not {text!r}") from None


def cmd_explore(args) -> int:
    # the engine (and Dask) are imported only when asked for
    import hashlib

    from fpga.explore import Data, Sweep, explore, front_table, write_outputs

    sweep = Sweep(model=args.model, devices=tuple(d.strip() for d in args.devices.split(",") if d.strip()),
                  pes=_list(args.pes, int, "--pes"), exp_bits=_list(args.exp_bits, int, "--exp-bits"),
                  prune=_list(args.prune, lambda t: t if t == "auto" else float(t), "--prune"),
                  rebuild_lanes=_list(args.rebuild_lanes, int, "--rebuild-lanes") if args.rebuild_lanes else (None,),
                  dense=args.dense, method=args.method, epochs=args.epochs, max_accuracy_drop=args.max_accuracy_drop,
                  objective=args.objective, seeds=args.seeds, quick=args.quick, pnr_timeout=args.pnr_timeout or None)
    sweep.validate()
    if args.workers is not None and args.scheduler:
        raise SdhwError("--workers sizes the local cluster; it cannot be combined with --scheduler")
    model = load_model(args.model)
    x_cal = _calibration_inputs(model, args.calib)
    try:
        x_test, y_test = _digits_for(model, "test")
    except SdhwError:
        x_test = y_test = None                      # no accuracy for models that do not take the digits
    data = Data(model, hashlib.sha256(Path(args.model).read_bytes()).hexdigest(), x_cal, x_test, y_test)
    out = Path(args.output or f"build/explore/{Path(args.model).stem}")
    progress = Progress(not args.quiet)
    try:
        report, cache = explore(sweep, data, cache_dir=args.cache_dir, synth_dir=args.synth_dir,
                                scheduler=args.scheduler, workers=args.workers,
                                progress=lambda status: progress(status.line()),
                                config_path=str(out / "recommended.toml"))
    except KeyboardInterrupt:                       # before any task ran (a sweep's own Ctrl-C is handled inside)
        print("sdhw: interrupted", file=sys.stderr)
        return 130
    paths = write_outputs(report, out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(front_table(report)) if report["front"] else "no feasible point")
        rec = report["recommendation"]
        if rec:
            best = report["points"][rec["id"]]
            print(f"\nrecommended ({rec['objective']}): {best['device']} N={best['pes']}: {rec['why']}")
            for command in rec["commands"]:
                print("  " + command)
        for status in ("failed", "does not fit", "excluded", "not run"):
            bad = [r for r in report["points"] if r["status"] == status]
            for r in bad[:3]:
                print(f"{status}: point {r['id']} ({r['device']} N={r['pes']}): {r['reason']}")
            if len(bad) > 3:
                print(f"{status}: {len(bad) - 3} more points (explore.md lists each with its reason)")
        print(f"report: {', '.join(map(str, paths))} ({cache.executed} tasks run, {cache.hits} from the cache "
              f"{args.cache_dir})")
    if report["interrupted"]:
        print("sdhw: interrupted: finished tasks are kept in the cache; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 1 if report["counts"]["failed"] else 0


def cmd_verify(args) -> int:
    """Exit 0 when every check passes, 1 on a mismatch or a failed proof (``--formal``), 2 when the run cannot
    start (like an argument error; also missing formal tools): a mismatch and a bad directory stay apart for
    scripts."""
    from sim.runner import simulator
    from verify.regression import DEFAULT_COUNT, format_result, verify_accelerator

    try:
        sim = args.sim or simulator()
    except (SdhwError, ValueError) as exc:
        print(f"sdhw: error: {exc}", file=sys.stderr)
        return 2
    progress = Progress(not (args.quiet or args.json))
    try:
        count = DEFAULT_COUNT if args.count is None else args.count
        result = verify_accelerator(args.accelerator, count=count, seed=args.seed, sim=sim,
                                    plant_mismatch=args.plant_mismatch, formal=args.formal, progress=progress)
    except SdhwError as exc:
        print(f"sdhw: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_result(result))
    return 0 if result.passed else 1


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    """The compiler's options (:func:`_options` reads them), shared by ``compile`` and ``sim``."""
    parser.add_argument("--prune", help="structural prune ratio in [0, 1), one per layer separated by commas, or "
                                        "'auto' (per-layer ratios reaching --target-bits; default 0.3)")
    parser.add_argument("--target-bits", type=float, help="bits/weight that --prune auto aims for (default 3.0)")
    parser.add_argument("--thr", type=float, help="coefficient threshold during the fit (default 1e-3)")
    parser.add_argument("--exp-bits", type=int, help="exponent bits per coefficient code (1..4, default 2)")
    parser.add_argument("--method", choices=METHODS, help="paper: upstream weight-space fit only; "
                                                          "finetune (default): plus SD-preserving fine-tuning")
    parser.add_argument("--block-rows", type=int, help="rows per basis block (default 192)")
    parser.add_argument("--basis-group", type=int, help="output filters sharing one basis (default: automatic)")
    parser.add_argument("--max-iter", type=int, help="iteration cap of the alternating least squares (default 30)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default 60)")
    parser.add_argument("--seed", type=int, help="fine-tuning seed (default 0)")
    parser.add_argument("--dense-layers", help="layers kept dense int8 in an SD program, comma-separated indices, "
                                               "negative from the end (e.g. 0,-1); an SD accelerator runs them too")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdhw", description="SmartDeal accelerator generator and tools")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile a model into a packed SD program (.sdp)")
    c.add_argument("model", help="model file: .npz (see golden.model), .onnx (see golden.onnx_import; image inputs "
                   "become channel-last) or a scikit-learn MLP (.joblib/.pkl)")
    c.add_argument("-o", "--output", required=True, help="output program file (.sdp)")
    _add_compile_options(c)
    c.add_argument("--dense", action="store_true", default=None, help="int8 dense baseline, no SD layers")
    c.add_argument("--calib", help="calibration inputs: .npz with array 'x' in the model's layout, NCHW accepted "
                   "for ONNX/PyTorch (default: the digits train split)")
    c.add_argument("--eval", action="store_true", help="accuracy (float, int8 dense, SD) on the bundled digits test "
                   "split or --eval-data; a model with layers the accelerator does not run yet (pooling, residual "
                   "add) is then evaluated in golden and no program is written")
    c.add_argument("--eval-data", help="labelled evaluation data for --eval (implied): .npz with arrays 'x' (inputs "
                   "in the model's own layout, e.g. NCHW for ONNX/PyTorch) and 'y' (integer labels)")
    c.add_argument("--for", dest="manifest", help="also write the program image (.sdimg next to -o) laid out "
                                                   "for the accelerator of this manifest.json (or its directory)")
    c.add_argument("--batch", type=int, default=1, help="with --for: inputs per run of the image (default 1), one "
                                                        "after the other in the activation buffers")
    c.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    c.set_defaults(func=cmd_compile)
    g = sub.add_parser("generate", help="generate the accelerator's Verilog and manifest.json")
    g.add_argument("--pes", type=int, help="multipliers = peak MACs per cycle (power of two, 1..1024; "
                                           "default: the device's default)")
    g.add_argument("--dense", action="store_true", help="the dense int8 baseline (no decoder/rebuild)")
    g.add_argument("--device", choices=sorted(DEVICES), help="target device (default ecp5-25f; generic: "
                                                             "simulation only, no resource limits)")
    g.add_argument("--config", help="TOML or JSON file setting any generator parameter; flags override it")
    g.add_argument("-o", "--output", required=True, help="output directory")
    g.set_defaults(func=cmd_generate)
    sm = sub.add_parser("sim", help="run a model's evaluation inputs (default: the digits test split) on the "
                                    "generated RTL and compare every output with golden (pooling, global average "
                                    "pool and residual add run on the host between the accelerator's runs)")
    sm.add_argument("--model", required=True, help="model file, as for sdhw compile")
    sm.add_argument("--calib", help="calibration inputs: .npz with array 'x' in the model's layout, NCHW accepted "
                                    "for ONNX/PyTorch CNNs (default: the digits train split)")
    sm.add_argument("--data", help="labelled inputs to run: .npz with arrays 'x' (the model's layout) and 'y' "
                                   "(integer labels) (default: the digits test split)")
    sm.add_argument("--pes", type=int, default=16, help="PE count (default 16)")
    sm.add_argument("--dense", action="store_true", help="the dense int8 baseline")
    _add_compile_options(sm)
    sm.add_argument("--limit", type=int, help="only the first K inputs")
    sm.add_argument("--batch", type=int, default=1, help="inputs per run (default 1): each channel group's weights "
                                                         "are rebuilt once for the whole batch")
    sm.add_argument("--device", choices=sorted(DEVICES), help="device (default: the smallest that holds the program)")
    sm.add_argument("--sim", choices=("icarus", "verilator"), help="simulator (default: $SIM or icarus)")
    sm.add_argument("--build-dir", help="where to generate and build (default build/sim-DEVICE-N)")
    sm.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    sm.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sm.set_defaults(func=cmd_sim)
    sy = sub.add_parser("synth", help="synthesize, place and route for a device (YoWASP) and report resources "
                                      "and Fmax")
    sy.add_argument("--device", choices=("up5k", "hx8k", "ecp5-25f", "ecp5-45f", "ecp5-85f"),
                    help="target device (default ecp5-25f)")
    sy.add_argument("--pes", type=int, help="PE count (default: the device's default)")
    sy.add_argument("--dense", action="store_true", help="the dense int8 baseline")
    sy.add_argument("--config", help="TOML or JSON file setting any generator parameter; flags override it")
    sy.add_argument("--freq", type=float, help="target clock in MHz (default: the project's target for the "
                                               "device: 48 iCE40, 125 ECP5-25F/45F, 100 ECP5-85F)")
    sy.add_argument("--seeds", type=int, default=1, help="place-and-route seeds (default 1)")
    sy.add_argument("--jobs", type=int, default=1, help="seeds placed in parallel (default 1)")
    sy.add_argument("--pnr-timeout", type=float, metavar="SECONDS",
                    help="stop a seed's place-and-route after this many seconds of CPU time "
                         "(default: no limit)")
    sy.add_argument("--router", choices=("router1", "router2"), default="router1",
                    help="nextpnr router (default router1, the higher Fmax where it finishes; router2 "
                         "negotiates congestion instead, for netlists router1 routes very slowly; on ECP5 it "
                         "puts the clock on a dedicated clock pin)")
    sy.add_argument("-o", "--output", help="build and report directory (default build/synth/DEVICE-N)")
    sy.add_argument("--json", action="store_true", help="print the report as JSON")
    sy.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sy.set_defaults(func=cmd_synth)
    b = sub.add_parser("build", help="build a board bitstream: PLL, UART bridge and the accelerator")
    b.add_argument("--board", required=True, help="icebreaker, ulx3s-25f, ulx3s-85f or orangecrab")
    b.add_argument("--pes", type=int, help="PE count (default: the board device's default)")
    b.add_argument("--dense", action="store_true", help="the dense int8 baseline")
    b.add_argument("--config", help="TOML or JSON file setting any generator parameter; flags override it")
    b.add_argument("--freq", default="max", help="accelerator clock: a number of MHz, or max (default): the "
                                                  "highest PLL clock that meets timing, found over a few builds")
    b.add_argument("--seeds", type=int, default=1, help="builds (nextpnr seeds) tried at a clock until one meets "
                                                         "it (default 1)")
    b.add_argument("--baud", type=int, default=115200, help="UART rate (default 115200)")
    b.add_argument("--allow-timing-fail", action="store_true", help="write the bitstream even if the clock "
                                                                    "misses timing")
    b.add_argument("-o", "--output", help="output directory (default build/board-BOARD-N)")
    b.add_argument("--json", action="store_true", help="print the build report as JSON")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    b.set_defaults(func=cmd_build)
    i = sub.add_parser("inspect", help="check a packed program (.sdp) and print its layers")
    i.add_argument("program", help="program file (.sdp)")
    i.add_argument("--eval", action="store_true", help="accuracy on the bundled digits test split (golden)")
    i.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    i.set_defaults(func=cmd_inspect)
    r = sub.add_parser("run", help="run a program image on a board over its UART and print the outputs")
    r.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB1")
    r.add_argument("--baud", type=int, default=115200, help="UART rate the board was built for (default 115200)")
    r.add_argument("--program", required=True, help="program image (.sdimg from sdhw compile --for)")
    r.add_argument("--input", required=True, help=".npy input: int8 values, or floats quantised with the "
                                                  "program's input scale; one input or a batch")
    r.add_argument("--output", help="write the int8 outputs to this .npy file")
    r.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each response (default 1; "
                                                              "ten times that for a run to finish)")
    r.add_argument("--retries", type=int, default=2, help="times a request is re-sent after a line error "
                                                          "(default 2; a run is never started twice)")
    r.add_argument("--json", action="store_true", help="print the board, outputs and counters as JSON")
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("verify", help="run the random-program regression on a generated accelerator's Verilog "
                                      "against golden")
    v.add_argument("accelerator", help="directory written by sdhw generate -o DIR (manifest.json and Verilog)")
    v.add_argument("--count", type=int, help="random layers to check (default 100; drawn as programs of 1-3 "
                                              "layers), besides the edge, corrupt and reset cases")
    v.add_argument("--seed", type=int, default=1, help="random program i is drawn from seed SEED + i (default 1); "
                                                       "each mismatch is reported with its own seed")
    v.add_argument("--sim", choices=("icarus", "verilator"), help="simulator (default: $SIM or icarus; verilator "
                                                                  "takes 15-30 s to build, then runs ~10x faster)")
    v.add_argument("--plant-mismatch", action="store_true",
                   help="self-test of the checker: make one expected output of one random program wrong; the run "
                        "must report it with its seed and exit 1")
    v.add_argument("--formal", action="store_true",
                   help="also run the SBY proofs of the blocks this build contains, at its parameters (rebuild "
                        "unit, requantiser, sequencer; tens of seconds to minutes each; pip install 'sdhw[formal]')")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    v.set_defaults(func=cmd_verify)
    ex = sub.add_parser("explore", help="sweep devices, PE counts and compile settings for a model (on Dask) and "
                                        "recommend an accelerator")
    ex.add_argument("model", help="model file, as for sdhw compile")
    ex.add_argument("--devices", default="up5k,ecp5-25f",
                    help="comma-separated devices (default up5k,ecp5-25f; valid: up5k, hx8k, ecp5-25f, ecp5-45f, "
                         "ecp5-85f)")
    ex.add_argument("--pes", default="1,4,16,64", help="comma-separated PE counts N (default 1,4,16,64)")
    ex.add_argument("--exp-bits", default="2", help="comma-separated exponent bits (default 2)")
    ex.add_argument("--prune", default="0.3", help="comma-separated prune ratios, or 'auto' (sdhw compile --prune "
                                                   "auto; default 0.3)")
    ex.add_argument("--rebuild-lanes", help="comma-separated rebuild lanes R (default: the family's; capped at N)")
    ex.add_argument("--dense", action="store_true", help="also the dense int8 baseline at every device and N")
    ex.add_argument("--method", choices=METHODS, default="finetune", help="compile method (default finetune)")
    ex.add_argument("--epochs", type=int, help="fine-tuning epochs (default 60)")
    ex.add_argument("--calib", help="calibration inputs: .npz with array 'x' (default: the digits train split)")
    ex.add_argument("--max-accuracy-drop", type=float, default=1.0,
                    help="points of accuracy below the float model a point may lose (default 1.0)")
    ex.add_argument("--objective", choices=("throughput", "latency", "energy", "area"), default="throughput",
                    help="what the recommendation optimises (default throughput)")
    ex.add_argument("--seeds", type=int, default=1, help="place-and-route seeds per configuration (default 1)")
    ex.add_argument("--pnr-timeout", type=float, default=1800.0, metavar="SECONDS",
                    help="stop a seed's place-and-route after this many CPU seconds, 0 for no limit (default 1800)")
    ex.add_argument("--quick", action="store_true", help="the calibrated resource estimate and the documented "
                                                         "Fmax instead of synthesis and place-and-route")
    ex.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://HOST:8786 "
                                                           "(default: a local cluster)")
    ex.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per CPU)")
    ex.add_argument("--cache-dir", default="build/explore/cache", help="task results by content hash (default "
                                                                       "build/explore/cache)")
    ex.add_argument("--synth-dir", default="build/explore/synth",
                    help="where workers synthesize and place (default build/explore/synth, in their directory)")
    ex.add_argument("-o", "--output", help="report directory (default build/explore/MODEL)")
    ex.add_argument("--json", action="store_true", help="print the report as JSON")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    ex.set_defaults(func=cmd_explore)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SdhwError as exc:
        print(f"sdhw: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
