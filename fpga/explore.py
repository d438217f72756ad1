"""Design-space exploration (``sdhw explore``): which accelerator to build for a model, swept on Dask.

A sweep crosses compile settings (exponent bits, prune ratio) with hardware (device, PE count N, rebuild lanes
R) and, with ``dense``, the int8 dense baseline. Every point gets:

- accuracy on the bundled digits test split and bits/weight (the compiler, as ``sdhw compile --eval``), and the
  estimated energy per inference (``golden.report.energy_estimate``, weights in SRAM: the bench's estimate);
- cycles per inference from the exact cycle model (:func:`rtl_gen.cycles.expected_cycles`), after the program
  image is laid out for the configuration (a program that does not fit its memories is reported as such);
- resources and Fmax: ``quick`` takes the calibrated resource estimate (:func:`sdhw.config.estimate_resources`,
  :func:`sdhw.config.check_fits`) and the Fmax the bench measured (``bench/fpga.json``, :func:`quick_fmax`:
  same device and build at the nearest N, labelled as an estimate, or the device's place-and-route target where
  the bench has no figure, labelled as an assumption); otherwise synthesis (yosys) and one place-and-route per
  seed (nextpnr), Fmax the median;
- inferences/s and latency at that Fmax (one inference at a time, loading not counted).

The work is a graph of tasks, each a pure function of its inputs (:func:`compile_task`, :func:`estimate_task`,
:func:`evaluate_task`, and the synthesis tasks of :mod:`fpga.engine` the bench runs too), run by
:func:`fpga.engine.run_tasks` on a ``distributed`` client: a ``LocalCluster`` sized to the machine or a running
cluster (``scheduler``). A task's result is kept on disk by a content hash of its inputs (model bytes, data,
options, configuration, seed) and of the sources and tool versions it depends on
(:class:`fpga.engine.ResultCache`), so an interrupted sweep resumes and a repeated one runs nothing.

:func:`assemble` turns the results into the report (every point with its status and reason, the Pareto front,
the recommendation for the objective and the commands that build it); :func:`write_outputs` writes
``explore.json``, ``explore.md`` and the plots atomically.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from golden import SdhwError
from golden.format import write_files_atomic
from sdhw.config import DEVICES, VALID_PES, AcceleratorConfig

from .bench import format_si
from .engine import (
    DEFAULT_CACHE,
    PNR_TIMEOUT,
    TASK_VERSION,
    Ref,
    ResultCache,
    Task,
    family_rebuild_lanes,
    hardware_point,
    hardware_tasks,
    hw_label,
    make_config,
    package_version,
    reachable,
    run_tasks,
    sources_digest,
    task_key,
)
from .synth import PNR_TARGETS, SYNTH_DEVICES

ROOT = Path(__file__).resolve().parent.parent
OBJECTIVES = ("throughput", "latency", "energy", "area")
METHODS = ("finetune", "paper")
DEFAULT_SYNTH_DIR = Path("build/explore/synth")
#: the bench's report (``make bench``: ``python -m fpga.bench --out bench``), whose measured Fmax ``quick`` uses
BENCH_REPORT = ROOT / "bench" / "fpga.json"
#: a device the bench did not measure borrows the figures of one with the same fabric and speed grade
FMAX_BORROW = {"ecp5-45f": "ecp5-25f", "ecp5-85f": "ecp5-25f"}


# ------------------------------------------------------------------------------------------------ the sweep
@dataclass(frozen=True)
class Sweep:
    """What to explore. Lists are the values swept; ``rebuild_lanes`` ``None`` is the family's default and a
    value above N is capped at N. :meth:`validate` raises :class:`SdhwError` naming the first bad value."""

    model: str
    devices: tuple[str, ...] = ("up5k", "ecp5-25f")
    pes: tuple[int, ...] = (1, 4, 16, 64)
    exp_bits: tuple[int, ...] = (2,)
    prune: tuple[float | str, ...] = (0.3,)                # a ratio, or "auto" (the compiler's --prune auto)
    rebuild_lanes: tuple[int | None, ...] = (None,)
    dense: bool = False
    method: str = "finetune"
    epochs: int | None = None
    max_accuracy_drop: float = 1.0
    objective: str = "throughput"
    seeds: int = 1
    quick: bool = False
    pnr_timeout: float | None = PNR_TIMEOUT

    def validate(self) -> None:
        for name in ("devices", "pes", "exp_bits", "prune", "rebuild_lanes"):
            if not getattr(self, name):
                raise SdhwError(f"empty sweep: --{name.replace('_', '-')} lists no value")
        for d in self.devices:
            if d not in SYNTH_DEVICES:
                raise SdhwError(f"unknown device {d!r} in --devices; valid: {', '.join(SYNTH_DEVICES)}")
        for n in self.pes:
            if n not in VALID_PES:
                raise SdhwError(f"--pes {n!r} is not a power of two from 1 to 1024")
        for e in self.exp_bits:
            if not (isinstance(e, int) and 1 <= e <= 4):
                raise SdhwError(f"--exp-bits {e!r} is not an integer in 1..4")
        for p in self.prune:
            if p != "auto" and not (isinstance(p, float) and 0.0 <= p < 1.0):
                raise SdhwError(f"--prune {p!r} is not a ratio in [0, 1) or 'auto'")
        for r in self.rebuild_lanes:
            if r is not None and r not in VALID_PES:
                raise SdhwError(f"--rebuild-lanes {r!r} is not a power of two from 1 to 1024")
        if self.method not in METHODS:
            raise SdhwError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.epochs is not None and not (isinstance(self.epochs, int) and 0 <= self.epochs <= 10000):
            raise SdhwError(f"--epochs {self.epochs!r} is not an integer in 0..10000")
        if self.objective not in OBJECTIVES:
            raise SdhwError(f"--objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if not (isinstance(self.seeds, int) and 1 <= self.seeds <= 64):
            raise SdhwError(f"--seeds {self.seeds!r} is not an integer in 1..64")
        if not (math.isfinite(self.max_accuracy_drop) and self.max_accuracy_drop >= 0):
            raise SdhwError(f"--max-accuracy-drop {self.max_accuracy_drop!r} is not a number of points >= 0")
        if self.pnr_timeout is not None and not self.pnr_timeout > 0:
            raise SdhwError(f"--pnr-timeout {self.pnr_timeout!r} is not a positive number of seconds")

    def compile_options(self) -> list[dict]:
        """The distinct compile settings: SD per (exponent bits, prune ratio), then the dense baseline."""
        extra = {"method": self.method, **({"epochs": self.epochs} if self.epochs is not None else {})}
        out = [{"dense": False, "exp_bits": e, "prune": p, **extra} for e in self.exp_bits for p in self.prune]
        if self.dense:
            out.append({"dense": True, **extra})
        return out

    def hardware(self) -> list[dict]:
        """The distinct hardware configurations (as ``AcceleratorConfig`` keyword arguments), in sweep order;
        SD builds name their rebuild lanes, dense builds take the family's (their fill width follows from it)."""
        out: list[dict] = []
        for device in self.devices:
            for n in self.pes:
                for e in self.exp_bits:
                    for r in self.rebuild_lanes:
                        hw = hardware_point(device, n, exp_bits=e, rebuild_lanes=r)
                        if hw not in out:
                            out.append(hw)
                if self.dense:
                    out.append(hardware_point(device, n, dense=True))
        return out


@dataclass
class Data:
    """A sweep's inputs beside the settings: the model, calibration inputs and the evaluation split (``None``
    when the model does not take the bundled digits), and the model file's bytes' digest."""

    model: object
    model_digest: str
    x_cal: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def digest(self) -> str:
        h = hashlib.sha256(self.model_digest.encode())
        for a in (self.x_cal, self.x_test, self.y_test):
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes() + repr((a.dtype, a.shape)).encode())
        return h.hexdigest()


# ------------------------------------------------------------------------------------------------ tasks
def compile_task(data: Data, options: dict) -> dict:
    """Compile the model with ``options`` (:class:`golden.compiler.CompileOptions` fields); the packed program,
    bits/weight, estimated energy per inference (pJ, weights in SRAM) and accuracy on the evaluation split
    (with the float model's). ``ok`` is false with ``error`` when the compiler refuses the model."""
    from golden import format as fmt
    from golden.compiler import CompileOptions, compile_model
    from golden.model import accuracy, forward_float
    from golden.program import infer
    from golden.report import compile_report

    try:
        opts = CompileOptions(**options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = compile_model(data.model, data.x_cal, opts)
        packed = fmt.pack(result.program)
    except SdhwError as exc:
        return {"ok": False, "error": f"compile: {exc}"}
    report = compile_report(result, packed)
    out = {"ok": True, "program": packed, "bits_per_weight": report["program"]["bits_per_weight"],
           "bytes": len(packed), "weights": report["program"]["weights"],
           "energy_pj": report["energy_estimate_pj"]["sram"], "accuracy": None, "float_accuracy": None,
           "warnings": sorted({str(w.message) for w in caught})}
    if data.x_test is not None:
        out["accuracy"] = accuracy(infer(result.program, data.x_test), data.y_test)
        out["float_accuracy"] = accuracy(forward_float(data.model, data.x_test), data.y_test)
    return out


def measured_fmax(path=BENCH_REPORT) -> dict:
    """The bench's measured Fmax: ``{"figures": {(device, build, N): median MHz}, "source": ...}`` from its
    report's configurations that have one (empty figures when there is no readable report)."""
    try:
        report = json.loads(Path(path).read_text())
        rows = report["hardware"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"figures": {}, "source": None}
    figures = {}
    for r in rows:
        try:
            if r["status"] == "fits" and r["fmax_mhz"]:
                figures[r["device"], r["build"], int(r["pes"])] = float(r["fmax_mhz"]["median"])
        except (KeyError, TypeError, ValueError):
            continue
    name = Path(path).name if Path(path).resolve() != BENCH_REPORT.resolve() else "bench/fpga.json"
    source = f"{name}: `{report.get('command', 'python -m fpga.bench')}`, {report.get('date', 'undated')}"
    return {"figures": figures, "source": source}


def quick_fmax(device: str, build: str, pes: int, measured: dict) -> tuple[float, str]:
    """The Fmax ``quick`` assumes for ``(device, build, pes)`` and where it is from: the bench's measured median
    (``measured`` as :func:`measured_fmax` gives it) of the same device and build at the nearest N (else the
    SD build's, else a device of the same fabric's); without one, the device's place-and-route target."""
    for dev in dict.fromkeys((device, FMAX_BORROW.get(device, device))):
        for b in dict.fromkeys((build, "sd")):
            cands = [(abs(math.log2(n) - math.log2(pes)), n, f) for (d, bb, n), f in measured["figures"].items()
                     if d == dev and bb == b]
            if cands:
                _, n, f = min(cands)
                note = f"{dev} N = {n} {'SD' if b == 'sd' else 'dense'}"
                if dev != device:
                    note += f", no measurement on {device}"
                return f, f"estimated: the bench's measured median Fmax of {note} ({measured['source']})"
    target = PNR_TARGETS[device].target_mhz
    why = (f"no {device} figure in {measured['source'].split(':')[0]}" if measured["source"]
           else "no bench report bench/fpga.json")
    return target, (f"ASSUMED, not measured: the {device} place-and-route target of {target:g} MHz ({why}; "
                    "`make bench` measures it)")


def estimate_task(hw: dict, fmax: float, fmax_source: str) -> dict:
    """Resources from the calibrated cost models, and the given Fmax (:func:`quick_fmax`): the ``quick``
    hardware figures. ``fits`` false with ``reason`` when the estimate overflows the device (or the
    configuration is invalid)."""
    from sdhw.config import check_fits, estimate_resources

    try:
        cfg = make_config(hw)
    except SdhwError as exc:
        return {"ok": True, "fits": False, "reason": f"invalid configuration: {exc}"}
    est = estimate_resources(cfg)
    out = {"ok": True, "fits": True, "reason": None, "resources": _resources_from_estimate(cfg, est),
           "config": cfg.as_dict()}
    try:
        check_fits(cfg)
    except SdhwError as exc:
        out.update(fits=False, reason=str(exc))
        return out
    out["fmax_mhz"] = {"median": fmax, "min": fmax, "max": fmax}
    out["fmax_source"] = fmax_source
    return out


def _resources_from_estimate(cfg: AcceleratorConfig, est: dict) -> dict:
    dev = DEVICES[cfg.device]
    ice40 = dev.family == "ice40"
    return {"logic": est["logic_cells"] if ice40 else est["luts"],
            "logic_unit": "logic cells" if ice40 else "LUT4", "logic_capacity": dev.luts,
            "ff": est["ffs"], "dsp": est["dsps"], "dsp_capacity": dev.dsps, "bram": est["bram_blocks"],
            "bram_capacity": dev.bram_blocks, "spram": est["spram_blocks"], "source": "estimate (cost models)"}


def evaluate_task(compiled: dict, hw: dict) -> dict:
    """The program on the configuration: its image laid out (the memories' fit) and the exact cycles per
    inference (:func:`rtl_gen.cycles.expected_cycles`)."""
    from golden import format as fmt
    from rtl_gen.cycles import expected_cycles
    from rtl_gen.image import build_image

    if not compiled.get("ok"):
        return {"ok": False, "error": compiled.get("error", "compile failed")}
    try:
        cfg = make_config(hw)
        program = fmt.unpack(compiled["program"])
        image = build_image(program, cfg)
    except SdhwError as exc:
        return {"ok": True, "fits": False, "reason": f"program does not fit: {exc}"}
    cyc = expected_cycles(program, cfg)
    return {"ok": True, "fits": True, "cycles": cyc["cycles"], "layer_cycles": cyc["layer_cycles"],
            "macs": cyc["macs"], "utilisation": cyc["utilisation"], "memory": image.meta["usage"]}


def plan(sweep: Sweep, data: Data, *, synth_dir=DEFAULT_SYNTH_DIR,
         bench_report=BENCH_REPORT) -> tuple[list[Task], list[dict]]:
    """The sweep's tasks (dependencies first) and its points, each naming the tasks it is assembled from.
    ``quick`` takes its Fmax from ``bench_report`` (:func:`quick_fmax`)."""
    version = package_version()
    compile_code = sources_digest(("golden",))
    hw_code = sources_digest(("sdhw",))
    eval_code = sources_digest(("golden", "rtl_gen", "sdhw"))
    data_digest = data.digest()
    tasks: list[Task] = []
    compiles = {}
    for opts in sweep.compile_options():
        key = task_key("compile", TASK_VERSION, version, compile_code, data_digest, opts)
        compiles[json.dumps(opts, sort_keys=True)] = key
        tasks.append(Task(key, "compile", compile_task, (Ref("data"), opts), _opts_label(opts)))
    hardware = {}
    measured = measured_fmax(bench_report) if sweep.quick else None
    for hw in sweep.hardware():
        if sweep.quick:
            fmax = quick_fmax(hw["device"], "dense" if hw["dense"] else "sd", hw["pes"], measured)
            key = task_key("estimate", TASK_VERSION, version, hw_code, hw, fmax)
            tasks.append(Task(key, "estimate", estimate_task, (hw, *fmax), hw_label(hw)))
            hardware[_hw_id(hw)] = {"estimate": key}
        else:
            # the tasks the bench runs for the same configuration, under the same keys
            hw_tasks, entry = hardware_tasks(hw, range(1, sweep.seeds + 1), timeout=sweep.pnr_timeout,
                                             build_root=synth_dir)
            tasks += hw_tasks
            hardware[_hw_id(hw)] = entry
    points = []
    for hw in sweep.hardware():
        for opts in sweep.compile_options():
            if opts["dense"] != hw["dense"] or (not opts["dense"] and opts["exp_bits"] != hw["exp_bits"]):
                continue
            ckey = compiles[json.dumps(opts, sort_keys=True)]
            ekey = task_key("evaluate", TASK_VERSION, version, eval_code, ckey, hw)
            tasks.append(Task(ekey, "evaluate", evaluate_task, (Ref(ckey), hw), f"{_opts_label(opts)} on "
                                                                               f"{hw_label(hw)}"))
            points.append({"hw": hw, "options": opts, "compile": ckey, "evaluate": ekey, **hardware[_hw_id(hw)]})
    return tasks, points


def _hw_id(hw: dict) -> str:
    return json.dumps(hw, sort_keys=True)


def _opts_label(opts: dict) -> str:
    return "dense int8" if opts["dense"] else f"SD E={opts['exp_bits']} prune {_prune(opts['prune'])}"


# ------------------------------------------------------------------------------------------------ report
def _unfinished(key, results: dict, failures: dict) -> tuple[str, str] | None:
    """``(status, reason)`` of a task that has no result: it failed, or the sweep was interrupted first."""
    if key in failures:
        return "failed", failures[key]
    if key not in results:
        return "not run", "interrupted"
    return None


def _hardware_result(point: dict, results: dict, failures: dict) -> dict:
    """The hardware figures of a point: the estimate, or synthesis plus its seeds (as ``fpga.synth``)."""
    if "estimate" in point:
        key = point["estimate"]
        if stop := _unfinished(key, results, failures):
            return dict(zip(("status", "reason"), stop))
        est = results[key]
        if not est["fits"]:
            return {"status": "does not fit", "reason": est["reason"], "resources": est.get("resources")}
        return {"status": "ok", "resources": est["resources"], "fmax_mhz": est["fmax_mhz"],
                "fmax_source": est["fmax_source"], "seeds": []}
    from .synth import is_placement_overflow

    ykey = point["yosys"]
    if stop := _unfinished(ykey, results, failures):
        return dict(zip(("status", "reason"), stop))
    syn = results[ykey]
    if not syn.get("ok"):
        return {"status": "failed", "reason": syn["error"]}
    resources = None
    cap = DEVICES[point["hw"]["device"]]
    if syn.get("resources"):
        res = syn["resources"]
        resources = {"logic": res["lut4"], "logic_unit": "LUT4" if cap.family == "ecp5" else "logic cells",
                     "logic_capacity": cap.luts, "ff": res["ff"], "dsp": res["dsp"], "dsp_capacity": cap.dsps,
                     "bram": res["bram"], "bram_capacity": cap.bram_blocks, "spram": res.get("spram", 0),
                     "source": f"yosys ({syn.get('variant')})"}
    if not syn["fits"]:
        return {"status": "does not fit", "reason": syn["reason"], "resources": resources}
    seeds, missing = [], []
    for skey in point["seeds"]:
        if skey in failures:
            missing.append(failures[skey])
        elif skey in results:
            seeds.append(results[skey])
        else:
            missing.append("interrupted")
    done = [s for s in seeds if s.get("ok") and s.get("fmax_mhz") is not None]
    failed = [s for s in seeds if not s.get("ok")]
    if not done:
        if failed and all(is_placement_overflow(s.get("error", "")) or s.get("overflow") for s in failed):
            over = sorted({o for s in failed for o in s.get("overflow") or []})
            return {"status": "does not fit", "reason": f"placement failed: {failed[0]['error']}"
                    + (f" (after packing {', '.join(over)})" if over else ""), "resources": resources}
        why = "; ".join([s.get("error", "no Fmax") for s in failed] + missing) or "no seed finished"
        return {"status": "not run" if missing == ["interrupted"] * len(missing) and not failed else "failed",
                "reason": f"place and route: {why}", "resources": resources}
    fmaxes = sorted(s["fmax_mhz"] for s in done)
    util = done[0].get("utilization") or {}
    if resources and cap.family == "ice40" and "ICESTORM_LC" in util:
        resources["logic"] = util["ICESTORM_LC"]["used"]
        resources["source"] = "nextpnr (logic cells after packing)"
    return {"status": "ok", "resources": resources,
            "fmax_mhz": {"median": round(float(np.median(fmaxes)), 2), "min": fmaxes[0], "max": fmaxes[-1]},
            "fmax_source": f"measured: nextpnr, median of {len(done)} seed(s) at the {point['freq']:g} MHz target",
            "seeds": [{k: s.get(k) for k in ("seed", "ok", "fmax_mhz", "met", "pnr_seconds", "error")}
                      for s in seeds]}


def _point(point: dict, results: dict, failures: dict, max_drop: float) -> dict:
    """One point's row: its figures, or the first thing that kept it off the front (``status`` and ``reason``:
    failed, not run, does not fit, excluded by accuracy)."""
    hw, opts = point["hw"], point["options"]
    row = {"build": "dense" if hw["dense"] else "sd", "device": hw["device"], "pes": hw["pes"],
           "rebuild_lanes": None if hw["dense"] else hw["rebuild_lanes"],
           "exp_bits": None if hw["dense"] else hw["exp_bits"], "prune": None if hw["dense"] else opts["prune"],
           "options": opts, "status": "ok", "reason": None, "accuracy": None, "float_accuracy": None,
           "accuracy_drop": None, "bits_per_weight": None, "energy_nj": None, "cycles": None, "fmax_mhz": None,
           "fmax_source": None, "inferences_per_s": None, "latency_us": None, "resources": None, "logic": None,
           "pareto": False, "recommended": False}

    def fail(status, reason):
        row.update(status=status, reason=reason)
        return row

    def finished(key):
        """The task's result, or the reason the row stops there: it failed, or the sweep was interrupted."""
        if stop := _unfinished(key, results, failures):
            return None, stop
        if not results[key]["ok"]:
            return None, ("failed", results[key]["error"])
        return results[key], None

    comp, stop = finished(point["compile"])
    if stop:
        return fail(*stop)
    row.update(accuracy=comp["accuracy"], float_accuracy=comp["float_accuracy"],
               bits_per_weight=comp["bits_per_weight"], energy_nj=comp["energy_pj"] / 1000,
               compile_warnings=comp["warnings"])
    if comp["accuracy"] is not None:
        row["accuracy_drop"] = round((comp["float_accuracy"] - comp["accuracy"]) * 100, 4)
    hwres = _hardware_result(point, results, failures)
    row["resources"] = hwres.get("resources")
    row["logic"] = (hwres.get("resources") or {}).get("logic")
    if hwres["status"] != "ok":
        return fail(hwres["status"], hwres["reason"])
    row.update(fmax_mhz=hwres["fmax_mhz"], fmax_source=hwres["fmax_source"], seeds=hwres["seeds"])
    ev, stop = finished(point["evaluate"])
    if stop:
        return fail(*stop)
    if not ev["fits"]:
        return fail("does not fit", ev["reason"])
    fmax = hwres["fmax_mhz"]["median"]
    row.update(cycles=ev["cycles"], layer_cycles=ev["layer_cycles"], utilisation=ev["utilisation"],
               inferences_per_s=fmax * 1e6 / ev["cycles"], latency_us=ev["cycles"] / fmax)
    if row["accuracy_drop"] is not None and row["accuracy_drop"] > max_drop + 1e-9:
        return fail("excluded", f"accuracy {row['accuracy'] * 100:.2f} % is {row['accuracy_drop']:.2f} points "
                                f"below the float model's (--max-accuracy-drop {max_drop:g})")
    return row


#: per objective: what is best first (as a sort key over a feasible point), then ties broken
_RANK = {
    "throughput": lambda p: (-p["inferences_per_s"], p["logic"], -(p["accuracy"] or 0), p["energy_nj"]),
    "latency": lambda p: (p["latency_us"], p["logic"], -(p["accuracy"] or 0), p["energy_nj"]),
    "energy": lambda p: (p["energy_nj"], -p["inferences_per_s"], p["logic"], -(p["accuracy"] or 0)),
    "area": lambda p: (p["logic"], -p["inferences_per_s"], -(p["accuracy"] or 0), p["energy_nj"]),
}


def pareto(points: list[dict]) -> list[int]:
    """Indices of the points no other point dominates in inferences/s (up), logic (down), accuracy (up),
    energy per inference (down) and the device's size (down: of two points alike, the smaller device's)."""
    def vec(p):
        return (p["inferences_per_s"], -p["logic"], p["accuracy"] if p["accuracy"] is not None else 0.0,
                -p["energy_nj"], -p["resources"]["logic_capacity"])

    vecs = [vec(p) for p in points]
    front = []
    for i, a in enumerate(vecs):
        dominated = any(all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a))
                        for j, b in enumerate(vecs) if j != i)
        if not dominated:
            front.append(i)
    return front


def build_commands(point: dict, sweep: Sweep, quick: bool,
                   config_path: str = "recommended.toml") -> tuple[list[str], dict | None]:
    """The commands that build the recommended point, and the generator parameters they need written to
    ``config_path`` (None when the defaults are right)."""
    from .boards import BOARDS

    stem = Path(sweep.model).stem
    device, n = point["device"], point["pes"]
    acc = f"build/{stem}-{device}-{n}{'-dense' if point['build'] == 'dense' else ''}"
    config = None
    flags = f"--device {device} --pes {n}" + (" --dense" if point["build"] == "dense" else "")
    if point["build"] == "sd":
        custom = {}
        if point["exp_bits"] != 2:
            custom["exp_bits"] = point["exp_bits"]
        if point["rebuild_lanes"] != family_rebuild_lanes(device, n):
            custom["rebuild_lanes"] = point["rebuild_lanes"]
        if custom:
            config = custom
    cfg_flag = f" --config {config_path}" if config else ""
    opts = point["options"]
    compile_flags = " --dense" if opts["dense"] else f" --prune {_prune(opts['prune'])} --exp-bits {opts['exp_bits']}"
    if opts.get("method", "finetune") != "finetune":
        compile_flags += f" --method {opts['method']}"
    if opts.get("epochs") is not None:
        compile_flags += f" --epochs {opts['epochs']}"
    cmds = [f"sdhw generate {flags}{cfg_flag} -o {acc}",
            f"sdhw compile {sweep.model} -o {acc}/{stem}.sdp{compile_flags} --for {acc}"]
    boards = [b for b in BOARDS.values() if b.device == device]
    if boards:
        board = boards[0]
        freq = "" if quick else f" --freq {math.floor(point['fmax_mhz']['min'])}"
        cmds.append(f"sdhw build --board {board.name} --pes {n}{' --dense' if point['build'] == 'dense' else ''}"
                    f"{cfg_flag}{freq} -o build/board-{board.name}-{n}")
    return cmds, config


def assemble(sweep: Sweep, points: list[dict], results: dict, failures: dict, *, interrupted: bool = False,
             meta: dict | None = None, config_path: str = "recommended.toml") -> dict:
    """The report (pure): every point with its figures or its status and reason, the Pareto front of the
    feasible points, and the recommendation for the sweep's objective with the commands that build it (their
    generator parameters in ``config_path``, which :func:`write_outputs` writes beside the report)."""
    rows = [_point(p, results, failures, sweep.max_accuracy_drop) for p in points]
    for k, r in enumerate(rows):
        r["id"] = k
    feasible = [r for r in rows if r["status"] == "ok"]
    for i in pareto(feasible):
        feasible[i]["pareto"] = True
    front = sorted((r for r in feasible if r["pareto"]), key=_RANK[sweep.objective])
    recommendation = None
    if front:
        best = front[0]
        best["recommended"] = True
        cmds, config = build_commands(best, sweep, sweep.quick, config_path)
        recommendation = {"id": best["id"], "objective": sweep.objective, "commands": cmds, "config": config,
                          "why": _why(best, sweep)}
    best_per_device = {}
    for r in sorted(feasible, key=_RANK[sweep.objective]):
        best_per_device.setdefault(r["device"], r["id"])
    accuracy_known = any(r["accuracy"] is not None for r in rows)
    notes = [
        "Cycles per inference: exact cycle model of the accelerator (rtl_gen.cycles.expected_cycles, checked "
        "against the RTL), one inference at a time; loading programs and inputs over the host port is not "
        "counted.",
        "Inferences/s and latency at the median Fmax. " + (
            "Fmax is ESTIMATED: the bench's measurement (bench/fpga.json) of the same device and build at the "
            "nearest N, not a place-and-route of this configuration (or, where the bench has no figure for the "
            "device, its place-and-route target, marked ASSUMED); resources are the calibrated cost models' "
            "estimate." if sweep.quick
            else "Fmax measured by nextpnr on sdhw synth's serial harness (median over the seeds)."),
        "Energy per inference: ESTIMATE from golden.report.energy_estimate (Horowitz 45 nm per-operation table, "
        "weights in SRAM), the same as the bench's; it depends on the program, not on the device.",
        "Logic: iCE40 logic cells, ECP5 LUT4 (two per carry cell). The Pareto front is over inferences/s (more), "
        "logic (less), accuracy (more), energy (less) and the device's size (smaller); latency is the inverse of "
        "inferences/s here.",
    ]
    if sweep.quick:
        sources = sorted({r["fmax_source"] for r in rows if r["fmax_source"]})
        notes += [f"Fmax source: {src}." for src in sources]
    if not accuracy_known:
        notes.append("No accuracy: the model does not take the bundled digits data, so --max-accuracy-drop was "
                     "not applied.")
    return {
        "tool": "sdhw explore", **(meta or {}), "model": sweep.model, "sweep": _sweep_dict(sweep),
        "mode": "quick (estimates)" if sweep.quick else f"synthesis + place and route ({sweep.seeds} seed(s))",
        "interrupted": interrupted, "points": rows, "front": [r["id"] for r in front],
        "recommendation": recommendation, "best_per_device": best_per_device,
        "counts": {s: sum(r["status"] == s for r in rows) for s in ("ok", "does not fit", "excluded", "failed",
                                                                    "not run")},
        "notes": notes,
    }


def _sweep_dict(sweep: Sweep) -> dict:
    d = asdict(sweep)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _why(p: dict, sweep: Sweep) -> str:
    what = {"throughput": "the most inferences/s", "latency": "the lowest latency",
            "energy": "the least estimated energy per inference", "area": "the least logic"}[sweep.objective]
    acc = "" if p["accuracy"] is None else f", accuracy {p['accuracy'] * 100:.2f} %"
    return (f"{what} on the Pareto front: {format_si(p['inferences_per_s'])} inferences/s at "
            f"{p['fmax_mhz']['median']:.1f} MHz, {p['logic']:,} {p['resources']['logic_unit']}{acc}, "
            f"{p['bits_per_weight']:.2f} bits/weight, "
            f"{p['energy_nj']:.1f} nJ/inference (estimate)")


# ------------------------------------------------------------------------------------------------ outputs
def _prune(p) -> str:
    return p if isinstance(p, str) else f"{p:g}"


def _point_name(r: dict) -> str:
    if r["build"] == "dense":
        return f"{r['device']} N={r['pes']} dense"
    return f"{r['device']} N={r['pes']} R={r['rebuild_lanes']} E={r['exp_bits']} p={_prune(r['prune'])}"


def front_table(report: dict) -> list[str]:
    rows = {r["id"]: r for r in report["points"]}
    lines = ["| point | build | device | N | R | E | prune | accuracy | bits/weight | cycles | Fmax (MHz) | "
             "inferences/s | latency (µs) | logic | DSP | BRAM | energy (nJ, est.) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i in report["front"]:
        r = rows[i]
        res = r["resources"]
        mark = " **(recommended)**" if r["recommended"] else ""
        prune = "—" if r["prune"] is None else _prune(r["prune"])
        acc = "—" if r["accuracy"] is None else f"{r['accuracy'] * 100:.2f} %"
        lines.append(
            f"| {r['id']}{mark} | {r['build']} | {r['device']} | {r['pes']} | {r['rebuild_lanes'] or '—'} | "
            f"{r['exp_bits'] or '—'} | {prune} | {acc} | {r['bits_per_weight']:.2f} | "
            f"{r['cycles']:,} | {r['fmax_mhz']['median']:.1f} | {format_si(r['inferences_per_s'])} | "
            f"{r['latency_us']:.1f} | {res['logic']:,} / {res['logic_capacity']:,} | {res['dsp']} | "
            f"{res['bram']} | {r['energy_nj']:.1f} |")
    return lines


def format_markdown(report: dict) -> str:
    """The report as Markdown: front, recommendation, every other point, the ones that do not fit or fail."""
    sw = report["sweep"]
    lines = [f"# sdhw explore: {report['model']}", "",
             f"Mode: {report['mode']}. Devices {', '.join(sw['devices'])}; N {', '.join(map(str, sw['pes']))}; "
             f"exponent bits {', '.join(map(str, sw['exp_bits']))}; prune {', '.join(map(_prune, sw['prune']))}"
             f"; rebuild lanes {', '.join('default' if r is None else str(r) for r in sw['rebuild_lanes'])}"
             f"{'; and the dense int8 baseline' if sw['dense'] else ''}. Objective: {sw['objective']}; "
             f"accuracy at most {sw['max_accuracy_drop']:g} points below the float model.", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted**: the points marked \"not run\" had not finished; run the same command again "
                  "to finish the sweep (finished tasks come from the cache).", ""]
    c = report["counts"]
    lines += [f"{len(report['points'])} points: {c['ok']} feasible ({len(report['front'])} on the Pareto front), "
              f"{c['does not fit']} do not fit, {c['excluded']} excluded by accuracy, {c['failed']} failed"
              + (f", {c['not run']} not run" if c["not run"] else "") + ".", "", "## Pareto front", ""]
    lines += front_table(report) if report["front"] else ["No feasible point."]
    rec = report["recommendation"]
    lines += ["", "## Recommendation", ""]
    if rec:
        r = report["points"][rec["id"]]
        lines += [f"**{_point_name(r)}** ({rec['objective']}): {rec['why']}.", "", "```sh"]
        if rec["config"]:
            lines.append("# recommended.toml (written beside this report): "
                         + ", ".join(f"{k} = {v}" for k, v in rec["config"].items()))
        lines += [*rec["commands"], "```"]
        if r["fmax_source"]:
            lines += ["", f"Fmax {r['fmax_source']}."]
    else:
        lines.append("None: no point fits and meets the accuracy bound.")
    if report["best_per_device"]:
        lines += ["", f"## Best per device ({sw['objective']})", "", "| device | point | config | accuracy | "
                  "inferences/s | Fmax (MHz) | logic |", "|---|---|---|---:|---:|---:|---:|"]
        for device, i in report["best_per_device"].items():
            r = report["points"][i]
            acc = "—" if r["accuracy"] is None else f"{r['accuracy'] * 100:.2f} %"
            lines.append(f"| {device} | {i} | {_point_name(r)} | {acc} | {format_si(r['inferences_per_s'])} | "
                         f"{r['fmax_mhz']['median']:.1f} | {r['logic']:,} / {r['resources']['logic_capacity']:,} |")
    others = [r for r in report["points"] if r["status"] == "ok" and not r["pareto"]]
    if others:
        lines += ["", "## Other feasible points", "", "| point | config | accuracy | cycles | inferences/s | logic | "
                  "energy (nJ, est.) |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in others:
            acc = "—" if r["accuracy"] is None else f"{r['accuracy'] * 100:.2f} %"
            lines.append(f"| {r['id']} | {_point_name(r)} | {acc} | {r['cycles']:,} | "
                         f"{format_si(r['inferences_per_s'])} | {r['logic']:,} | {r['energy_nj']:.1f} |")
    bad = [r for r in report["points"] if r["status"] != "ok"]
    if bad:
        lines += ["", "## Points that do not fit, fail or are excluded", "", "| point | config | status | reason |",
                  "|---|---|---|---|"]
        for r in bad:
            reason = (r["reason"] or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['id']} | {_point_name(r)} | {r['status']} | {reason} |")
    lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def plots(report: dict) -> dict[str, bytes]:
    """``explore_throughput.png`` (inferences/s vs logic) and ``explore_accuracy.png`` (accuracy vs
    bits/weight), or none without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    import io

    ok = [r for r in report["points"] if r["status"] == "ok"]
    out = {}
    if ok:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        devices = sorted({r["device"] for r in ok})
        for k, d in enumerate(devices):
            pts = [r for r in ok if r["device"] == d]
            ax.scatter([r["logic"] for r in pts], [r["inferences_per_s"] for r in pts], s=22, alpha=0.5,
                       color=f"C{k}", label=d)
            fr = [r for r in pts if r["pareto"]]
            ax.scatter([r["logic"] for r in fr], [r["inferences_per_s"] for r in fr], s=50, color=f"C{k}",
                       edgecolors="black", linewidths=0.8)
        best = [r for r in ok if r["recommended"]]
        if best:
            ax.scatter([best[0]["logic"]], [best[0]["inferences_per_s"]], marker="*", s=260, color="gold",
                       edgecolors="black", zorder=5, label="recommended")
        ax.set_xlabel("logic (iCE40 logic cells / ECP5 LUT4)")
        ax.set_ylabel("inferences/s at Fmax" + (" (Fmax estimated)" if report["sweep"]["quick"] else ""))
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Throughput vs logic (outlined: Pareto front)")
        out["explore_throughput.png"] = _png(fig, plt, io)
    comp = {}
    for r in report["points"]:
        if r["accuracy"] is not None and r["bits_per_weight"] is not None:
            comp[(r["build"], r["exp_bits"], r["prune"])] = r
    if comp:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (build, e, p), r in sorted(comp.items(), key=lambda kv: kv[1]["bits_per_weight"]):
            ax.scatter([r["bits_per_weight"]], [r["accuracy"] * 100], s=40,
                       color="C7" if build == "dense" else f"C{e}")
            ax.annotate("dense" if build == "dense" else f"E={e} p={_prune(p)}",
                        (r["bits_per_weight"], r["accuracy"] * 100), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        flt = next((r["float_accuracy"] for r in comp.values() if r["float_accuracy"] is not None), None)
        if flt is not None:
            ax.axhline(flt * 100, color="black", lw=0.8, ls="--", label="float model")
            ax.axhline(flt * 100 - report["sweep"]["max_accuracy_drop"], color="red", lw=0.8, ls=":",
                       label="accuracy bound")
            ax.legend(fontsize=8)
        ax.set_xlabel("bits/weight (every stored bit)")
        ax.set_ylabel("accuracy on the digits test split (%)")
        ax.grid(True, alpha=0.3)
        ax.set_title("Accuracy vs bits/weight")
        out["explore_accuracy.png"] = _png(fig, plt, io)
    return out


def _png(fig, plt, io) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(report: dict, out_dir) -> list[Path]:
    """``explore.json``, ``explore.md``, the plots and (when the recommendation needs one) ``recommended.toml``
    in ``out_dir``, all staged before any is renamed into place."""
    out_dir = Path(out_dir)
    files = {"explore.json": (json.dumps(report, indent=2) + "\n").encode(),
             "explore.md": format_markdown(report).encode()}
    files.update(plots(report))
    rec = report.get("recommendation")
    if rec and rec["config"]:
        files["recommended.toml"] = "".join(f"{k} = {v}\n" for k, v in rec["config"].items()).encode()
    write_files_atomic(out_dir, files)
    return [out_dir / name for name in files]


# ------------------------------------------------------------------------------------------------ entry
def explore(sweep: Sweep, data: Data, *, cache_dir=DEFAULT_CACHE, synth_dir=DEFAULT_SYNTH_DIR, client=None,
            scheduler: str | None = None, workers: int | None = None, progress=None, interval: float = 2.0,
            config_path: str = "recommended.toml", bench_report=BENCH_REPORT) -> tuple[dict, ResultCache]:
    """Run the sweep (cached tasks are not run again) and assemble its report; ``(report, cache)``.

    ``client``: a ``distributed.Client`` to use (else ``scheduler``'s cluster, else a new ``LocalCluster`` of
    ``workers`` processes, started only when some task is not cached). ``progress(status)`` as
    :func:`run_tasks`. Raises :class:`SdhwError` for a bad sweep or an unreachable scheduler before any task
    runs or anything is written."""
    sweep.validate()
    if scheduler:
        reachable(scheduler)
    tasks, points = plan(sweep, data, synth_dir=synth_dir, bench_report=bench_report)
    cache = ResultCache(cache_dir)
    t0 = time.monotonic()
    results, failures, interrupted = run_tasks(tasks, cache, inputs={"data": (data, data.digest())}, client=client,
                                               scheduler=scheduler, workers=workers, progress=progress,
                                               interval=interval)
    meta = {"seconds": round(time.monotonic() - t0, 1), "tasks": len(tasks), "tasks_run": cache.executed,
            "tasks_cached": cache.hits, "task_failures": sorted(failures.values())}
    report = assemble(sweep, points, results, failures, interrupted=interrupted, meta=meta,
                      config_path=config_path)
    return report, cache
