"""The task engine shared by ``sdhw explore`` and the FPGA bench: pure tasks on Dask, results cached by content.

A piece of work is a :class:`Task`: ``func(*args)``, where an argument that is a :class:`Ref` is another task's
result (or an input given to :func:`run_tasks`). Its ``key`` is a content hash of everything the result depends
on (:func:`task_key` over the inputs, :func:`sources_digest` of the code, tool versions), so
:class:`ResultCache` keeps the result on disk under that key: an interrupted run resumes, a repeated one runs
nothing, and two callers that need the same result (the bench and ``sdhw explore`` synthesizing the same
configuration) share it.

:func:`run_tasks` runs what the cache does not hold on a ``distributed`` client: a ``LocalCluster`` sized to the
machine (:func:`open_client`) or a running cluster (``scheduler``), with progress and Ctrl-C handling.

The synthesis flow as tasks: :func:`hardware_point` (an accelerator configuration as a task input),
:func:`hardware_tasks` (yosys once, nextpnr per seed: :func:`yosys_task`, :func:`pnr_task`) and
:func:`synth_report`, which turns their results into the report ``fpga.synth.synthesize`` writes.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import os
import re
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from golden import SdhwError
from golden.format import write_atomic
from sdhw.config import DEVICES, FAMILY_DEFAULTS, AcceleratorConfig

from .synth import PNR_TARGETS

ROOT = Path(__file__).resolve().parent.parent
#: bumped when a task's result changes for the same inputs (part of every cache key)
TASK_VERSION = 1
#: one cache for every caller: a configuration the bench synthesized is not synthesized again by explore
DEFAULT_CACHE = Path("build/explore/cache")
#: place-and-route time limit per seed (CPU seconds): a few netlists route for very long (hundreds of overused
#: wires for many minutes) on some seeds; such a seed is reported as stopped
PNR_TIMEOUT = 1800.0


# ------------------------------------------------------------------------------------------------ keys, cache
def sources_digest(paths: tuple[str, ...]) -> str:
    """SHA-256 over the Python sources under ``paths`` (relative to the project): a task's code."""
    h = hashlib.sha256()
    for rel in paths:
        p = ROOT / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def task_key(*parts) -> str:
    """The content hash of a task's inputs (JSON-serialisable parts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sdhw")
    except metadata.PackageNotFoundError:
        return "unknown"


def _encode(value):
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class ResultCache:
    """Task results on disk, one file per content hash (``<key>.json.gz``), written atomically. ``executed``
    counts the results stored by this run (tasks that ran), ``hits`` the ones read back."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.executed = 0
        self.hits = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json.gz"

    def has(self, key: str) -> bool:
        return self._path(key).exists()

    def get(self, key: str):
        try:
            value = _decode(json.loads(gzip.decompress(self._path(key).read_bytes())))
        except (OSError, ValueError, EOFError):
            return None
        self.hits += 1
        return value

    def put(self, key: str, value) -> None:
        self.executed += 1
        write_atomic(self._path(key), gzip.compress(json.dumps(_encode(value)).encode(), 6))


# ------------------------------------------------------------------------------------------------ the graph
@dataclass
class Task:
    """One node: ``func(*args)`` where an argument that is a :class:`Ref` is the result of another task."""

    key: str
    kind: str
    func: object
    args: tuple
    label: str


@dataclass(frozen=True)
class Ref:
    key: str


# ------------------------------------------------------------------------------------------------ Dask
def reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a TCP scheduler address that nothing answers at (Dask itself retries until its timeout)."""
    if "://" in address:
        proto, rest = address.split("://", 1)
        if proto != "tcp":
            return
    else:
        rest = address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise SdhwError(f"scheduler address {address!r} is not tcp://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SdhwError(f"cannot reach the Dask scheduler at {address}: {exc.strerror or exc}") from None


def open_client(scheduler: str | None = None, workers: int | None = None):
    """``(client, cluster)``: a client of the running cluster at ``scheduler`` (``cluster`` None), or of a new
    ``LocalCluster`` of ``workers`` single-threaded worker processes (default: one per CPU)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SdhwError("the sweep runs on Dask, which is not installed: pip install 'sdhw[explore]'") from None
    if scheduler:
        reachable(scheduler)
        try:
            return Client(scheduler, timeout="15s", set_as_default=False), None
        except (OSError, TimeoutError) as exc:
            raise SdhwError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from None
    if workers is not None and not (isinstance(workers, int) and 1 <= workers <= 1024):
        raise SdhwError(f"--workers {workers!r} is not an integer in 1..1024")
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return Client(cluster, set_as_default=False), cluster


@dataclass
class Status:
    """A run's progress: tasks in total, done (from the cache or run), running, failed, seconds left."""

    total: int
    cached: int = 0
    done: int = 0
    running: int = 0
    failed: int = 0
    seconds: float = 0.0
    left_seconds: float | None = None
    client: object = field(default=None, repr=False)
    name: str = "explore"

    def line(self) -> str:
        left = "" if self.left_seconds is None else f", ~{_duration(self.left_seconds)} left"
        return (f"{self.name}: {self.done}/{self.total} tasks done ({self.cached} from the cache), {self.running} "
                f"running, {self.failed} failed{left}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_tasks(tasks: list[Task], cache: ResultCache, *, inputs: dict | None = None, client=None, scheduler=None,
              workers=None, progress=None, interval: float = 2.0, name: str = "explore") -> tuple[dict, dict, bool]:
    """Run every task not in ``cache`` on Dask; ``(results, failures, interrupted)`` by task key.

    ``inputs`` maps a :class:`Ref` key that is no task to ``(value, digest)``: data the tasks read (a model and
    its arrays). ``progress(status)`` is called when something changes and at least every ``interval`` seconds.
    Ctrl-C stops the run: running tasks are cancelled, finished ones stay in the cache, ``interrupted`` is
    true. A client is opened (``scheduler``'s cluster or a ``LocalCluster`` of ``workers``) only when some task
    is not cached."""
    inputs = inputs or {}
    results: dict[str, object] = {}
    failures: dict[str, str] = {}
    todo = []
    for task in tasks:
        cached = cache.get(task.key)
        if cached is not None:
            results[task.key] = cached
        else:
            todo.append(task)
    status = Status(total=len(tasks), cached=len(results), done=len(results), name=name)
    if not todo:
        if progress:
            progress(status)
        return results, failures, False
    own = client is None
    cluster = None
    if own:
        client, cluster = open_client(scheduler, workers)
    status.client = client
    interrupted = False
    futures = {}
    try:
        from distributed import as_completed

        # inputs that are data (the model and its arrays, a cached result a task depends on: a netlist can
        # be megabytes) enter the graph once, as a task of their own that the tasks reading them depend on;
        # unlike scattered data, the scheduler can compute it again when the worker holding it is lost
        given = {}

        def ref(key):
            if key in futures:
                return futures[key]
            if key not in given:
                value, digest = inputs[key] if key in inputs else (results[key], key)
                given[key] = client.submit(_given, value, key=f"sdhw-input-{digest[:24]}")
            return given[key]

        start = time.monotonic()
        for task in todo:
            args = [ref(a.key) if isinstance(a, Ref) else a for a in task.args]
            # a task raising is tried once more: the tasks report what goes wrong in the user's work as results,
            # so an exception is the cluster's (a connection lost with a worker) and may pass
            futures[task.key] = client.submit(task.func, *args, key=f"sdhw-{task.kind}-{task.key[:20]}",
                                              retries=1)
        by_future = {f.key: k for k, f in futures.items()}
        labels = {t.key: f"{t.kind} {t.label}" for t in todo}
        pending = as_completed(list(futures.values()), loop=client.loop)
        last = 0.0
        executed = 0
        while not pending.is_empty():
            changed = False
            for fut in pending.next_batch(block=False) if pending.has_ready() else []:
                key = by_future[fut.key]
                changed = True
                if fut.status not in ("finished", "error", "cancelled"):
                    # its result was on a worker that died since: the scheduler computes it again
                    pending.add(fut)
                    continue
                if fut.status == "finished":
                    value = fut.result()
                    results[key] = value
                    cache.put(key, value)
                    executed += 1
                else:
                    try:
                        exc = fut.exception()
                        failures[key] = f"{labels[key]}: {type(exc).__name__}: {exc}"
                    except Exception as why:            # noqa: BLE001 - cancelled by the scheduler, not by us
                        failures[key] = f"{labels[key]}: {fut.status} ({type(why).__name__})"
                    status.failed += 1
                status.done += 1
            now = time.monotonic()
            if progress and (changed or now - last >= interval):
                status.seconds = now - start
                status.running = _running(client, set(by_future))
                remaining = status.total - status.done
                # the tasks so far ran at this rate on the whole cluster; the rest take as long on average
                status.left_seconds = status.seconds * remaining / executed if executed else None
                progress(status)
                last = now
            if not changed:
                time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
        client.cancel([f for f in futures.values() if not f.done()])
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    return results, failures, interrupted


def _given(value):
    """A task's input as a task of its own (see :func:`run_tasks`)."""
    return value


def _running(client, keys: set[str]) -> int:
    try:
        processing = client.processing()
    except Exception:                               # noqa: BLE001 - progress only; a busy scheduler answers late
        return 0
    return sum(1 for ks in processing.values() for k in ks if k in keys)


# ------------------------------------------------------------------------------------------------ synthesis
def family_rebuild_lanes(device: str, pes: int) -> int:
    return min(pes, FAMILY_DEFAULTS[DEVICES[device].family]["max_rebuild_lanes"])


def hardware_point(device: str, pes: int, dense: bool = False, exp_bits: int = 2,
                   rebuild_lanes: int | None = None) -> dict:
    """A hardware configuration as a task input (``AcceleratorConfig`` keyword arguments), in one normal form
    whoever asks: SD builds name their rebuild lanes (the family's by default), dense builds leave them to the
    generator. ``hardware_point(device, n, dense)`` is the generator's default build."""
    if dense:
        return {"device": device, "pes": pes, "dense": True, "exp_bits": 2, "rebuild_lanes": None}
    r = min(rebuild_lanes, pes) if rebuild_lanes is not None else family_rebuild_lanes(device, pes)
    return {"device": device, "pes": pes, "dense": False, "exp_bits": exp_bits, "rebuild_lanes": r}


def make_config(hw: dict) -> AcceleratorConfig:
    """The accelerator configuration of a hardware point (``rebuild_lanes`` ``None``: the family default)."""
    values = {k: v for k, v in hw.items() if v is not None}
    return AcceleratorConfig(**values)


def hw_label(hw: dict) -> str:
    r = f" R={hw['rebuild_lanes']}" if hw.get("rebuild_lanes") else ""
    return f"{hw['device']} N={hw['pes']}{' dense' if hw['dense'] else ''}{r}"


def synth_dir(build_root, hw: dict) -> Path:
    """Where a worker synthesizes and places ``hw`` under ``build_root``."""
    tag = hashlib.sha256(json.dumps(hw, sort_keys=True).encode()).hexdigest()[:10]
    return Path(build_root) / f"{hw['device']}-{hw['pes']}{'-dense' if hw['dense'] else ''}-{tag}"


def yosys_task(hw: dict, build_root: str) -> dict:
    """Synthesize the configuration's serial harness with yosys (``fpga.synth``); cells, resources, the fit
    against the device and the netlist (gzip) for the place-and-route seeds."""
    from .synth import fit_problems as problems_of
    from .synth import harness_verilog, resources_from_cells, run_yosys

    try:
        cfg = make_config(hw)
    except SdhwError as exc:
        return {"ok": True, "fits": False, "reason": f"invalid configuration: {exc}"}
    build_dir = synth_dir(build_root, hw)
    try:
        syn = run_yosys(harness_verilog(cfg), cfg.device, build_dir)
    except SdhwError as exc:
        return {"ok": False, "error": f"synthesis: {exc}"}
    res = resources_from_cells(syn["cells"], PNR_TARGETS[cfg.device].family)
    problems = problems_of(res, cfg.device)
    out = {"ok": True, "fits": not problems, "reason": "; ".join(problems) or None, "resources": res,
           "variant": syn["variant"], "seconds": syn.get("seconds"), "config": cfg.as_dict()}
    if not problems:
        out["netlist"] = gzip.compress((build_dir / "netlist.json").read_bytes(), 6)
    return out


def placement_overflow(build_dir: Path, seeds) -> list[str]:
    """Resources nextpnr's device utilisation shows over capacity (e.g. iCE40 logic cells after packing), from
    the logs of ``seeds`` (seed numbers, or a count: seeds 1..count)."""
    over = set()
    for seed in range(1, seeds + 1) if isinstance(seeds, int) else seeds:
        try:
            text = (Path(build_dir) / f"pnr-seed{seed}.log").read_text(errors="replace")
        except OSError:
            continue
        for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M):
            if int(m[2]) > int(m[3]):
                over.add(f"{m[2]} {m[1]} > {m[3]}")
    return sorted(over)


def pnr_task(hw: dict, synthesized: dict, freq_mhz: float, seed: int, timeout: float | None,
             build_root: str) -> dict:
    """Place and route the synthesized netlist with one seed (``fpga.synth.run_nextpnr``); the seed's row
    (Fmax, utilisation, critical path), or ``skipped`` when the netlist does not fit. A seed that fails names
    the resources its log shows over capacity (``overflow``): the packed design is larger than the device."""
    from .synth import run_nextpnr

    if not synthesized.get("ok") or not synthesized.get("fits"):
        return {"seed": seed, "ok": False, "skipped": True, "error": "no netlist"}
    build_dir = synth_dir(build_root, hw)
    build_dir.mkdir(parents=True, exist_ok=True)
    netlist = gzip.decompress(synthesized["netlist"])
    path = build_dir / "netlist.json"
    if not path.exists() or path.read_bytes() != netlist:
        write_atomic(path, netlist)
    result = run_nextpnr(hw["device"], path, freq_mhz, seed, build_dir, timeout=timeout)
    if not result.get("ok") and not result.get("timed_out"):
        result = {**result, "overflow": placement_overflow(build_dir, [seed])}
    return result


def hardware_tasks(hw: dict, seeds, *, timeout: float | None, build_root) -> tuple[list[Task], dict]:
    """The tasks that synthesize ``hw`` (yosys once) and place it with each of ``seeds`` (nextpnr, at the
    device's target clock), and the entry naming their keys (``yosys``, ``seeds``, ``freq``) for
    :func:`synth_report`. The keys cover the configuration, the generator's and the flow's sources, the yosys
    scripts, nextpnr's arguments and the tool versions."""
    from .synth import REPORT_VERSION, flow_signature

    label = hw_label(hw)
    key = task_key("yosys", TASK_VERSION, package_version(), _code_digest("sdhw"),
                   _code_digest("fpga/harness.py", "fpga/synth.py"), flow_signature(hw["device"]), hw)
    tasks = [Task(key, "yosys", yosys_task, (hw, str(build_root)), label)]
    freq = PNR_TARGETS[hw["device"]].target_mhz
    seed_keys = []
    for seed in seeds:
        skey = task_key("pnr", TASK_VERSION, key, freq, seed, timeout, REPORT_VERSION)
        tasks.append(Task(skey, "pnr", pnr_task, (hw, Ref(key), freq, seed, timeout, str(build_root)),
                          f"{label} seed {seed}"))
        seed_keys.append(skey)
    return tasks, {"yosys": key, "seeds": seed_keys, "freq": freq}


def _capacity(device: str) -> dict:
    dev = DEVICES[device]
    return {"lut4": dev.luts, "dsp": dev.dsps, "bram": dev.bram_blocks, "spram": dev.spram_blocks}


_DIGESTS: dict[tuple, str] = {}


def _code_digest(*paths: str) -> str:
    """:func:`sources_digest`, read once per process (a plan asks for it per configuration)."""
    if paths not in _DIGESTS:
        _DIGESTS[paths] = sources_digest(paths)
    return _DIGESTS[paths]


def synth_report(hw: dict, entry: dict, results: dict, failures: dict, cache_hits=frozenset()) -> dict:
    """The report ``fpga.synth.synthesize`` gives for ``hw``, from its tasks' results (``entry`` as
    :func:`hardware_tasks` returns it): resources, the fit, the seeds, Fmax (median), critical path, verdict.
    ``cached`` is true when every task came from the cache (``cache_hits``: their keys).

    Raises :class:`SdhwError` when there is no report to give: a task failed or did not run, yosys failed,
    the configuration is invalid, or every seed failed for another reason than the design's size."""
    from sdhw.config import estimate_resources

    from . import synth

    ykey = entry["yosys"]
    for key in (ykey, *entry["seeds"]):
        if key in failures:
            raise SdhwError(failures[key])
        if key not in results:
            raise SdhwError("not run (interrupted)")
    syn = results[ykey]
    if not syn.get("ok"):
        raise SdhwError(syn["error"])
    if "config" not in syn:
        raise SdhwError(syn["reason"])
    cfg = syn["config"]
    target = PNR_TARGETS[hw["device"]]
    problems = syn["reason"].split("; ") if syn.get("reason") else []
    seeds = [results[k] for k in entry["seeds"]] if syn["fits"] else []
    report = {"tool": "sdhw synth", "device": hw["device"], "family": target.family,
              "top": f"{synth.TOP} (serial harness, registered I/O)", "pes": cfg["pes"], "dense": cfg["dense"],
              "channel_lanes": cfg["channel_lanes"], "pixel_lanes": cfg["pixel_lanes"], "config": cfg,
              "target_mhz": entry["freq"], "router": "router1",
              "synthesis": {"variant": syn.get("variant"), "seconds": syn.get("seconds")},
              "resources": syn["resources"], "device_capacity": _capacity(hw["device"]),
              "estimate": estimate_resources(make_config(hw)), "fits": bool(syn["fits"]), "fit_problems": problems,
              "seeds": seeds, "cached": all(k in cache_hits for k in (ykey, *entry["seeds"]))}
    failed = [s for s in seeds if not s.get("ok")]
    if failed and all(s.get("timed_out") for s in failed):
        pass                                # reported per seed and in the verdict, not an error
    elif failed and all(synth.is_placement_overflow(s.get("error", "")) for s in failed):
        report.update(fits=False, fit_problems=[f"placement failed: {failed[0]['error']}"])
    elif failed and len(failed) == len(seeds):
        over = sorted({o for s in failed for o in s.get("overflow") or []})
        if not over:
            raise SdhwError(f"nextpnr failed on every seed: {failed[0].get('error')}")
        report.update(fits=False, fit_problems=[f"placement failed, after packing {', '.join(over)} "
                                                f"({failed[0].get('error')})"])
    if not report["fits"]:
        report["seeds"] = []
    done = [s for s in report["seeds"] if s.get("ok") and s.get("fmax_mhz") is not None]
    if done:
        fmaxes = sorted(s["fmax_mhz"] for s in done)
        report["fmax_mhz"] = {"min": fmaxes[0], "median": round(statistics.median(fmaxes), 2), "max": fmaxes[-1]}
        report["seeds_met"] = sum(bool(s.get("met")) for s in done)
        report["critical_path"] = min(done, key=lambda s: s["fmax_mhz"]).get("critical_path")
        report["utilization"] = done[0].get("utilization")
    report["timing_met"] = bool(done) and report["seeds_met"] == len(done)
    report["verdict"] = synth.verdict(report)
    report["seconds"] = round((syn.get("seconds") or 0) + sum(s.get("pnr_seconds") or 0 for s in seeds), 1)
    return report
