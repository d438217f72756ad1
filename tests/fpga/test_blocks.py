"""Area per block (``fpga.blocks``): yosys' per-module statistics summed into budget rows, the budget tables'
instance names against the elaborated designs, and one real unflattened synthesis (slow)."""
from __future__ import annotations

import json

import pytest

from fpga import blocks, synth
from sdhw.config import AcceleratorConfig

# yosys `stat -json` of an unflattened iCE40 design, in its shape: Amaranth modules named after their paths, a
# parametrised wrapper module instantiated inside one of them
STAT = r"""{
  "creator": "Yosys",
  "modules": {
    "$paramod\\wrap\\PAIRS=32'00000000000000000000000000000010": {
      "num_cells": 2, "num_cells_by_type": {"SB_MAC16": 2}},
    "\\top": {"num_cells": 5, "num_cells_by_type": {"SB_PLL40_PAD": 1, "SB_LUT4": 2, "top.bridge": 1,
                                                     "top.accel": 1}},
    "\\top.bridge": {"num_cells": 19, "num_cells_by_type": {"SB_LUT4": 10, "SB_DFF": 5, "SB_DFFE": 3,
                                                             "SB_RAM40_4K": 1}},
    "\\top.accel": {"num_cells": 4, "num_cells_by_type": {"SB_LUT4": 4, "top.accel.fill": 1, "top.accel.mac": 1}},
    "\\top.accel.fill": {"num_cells": 38, "num_cells_by_type": {"SB_LUT4": 20, "SB_CARRY": 7, "SB_DFFESR": 9,
                                                                 "SB_SPRAM256KA": 2, "top.accel.fill.rebuild0": 1}},
    "\\top.accel.fill.rebuild0": {"num_cells": 42, "num_cells_by_type": {"SB_LUT4": 30, "SB_DFFSR": 12}},
    "\\top.accel.mac": {"num_cells": 3, "num_cells_by_type": {"SB_LUT4": 3, "SB_DFFR": 6,
                                                               "top.accel.mac.dsps": 1}},
    "\\top.accel.mac.dsps": {"num_cells": 0, "num_cells_by_type": {
      "$paramod\\wrap\\PAIRS=32'00000000000000000000000000000010": 1}}
  },
  "design": {"num_cells": 113, "num_cells_by_type": {"SB_LUT4": 69}}
}"""

POINT = blocks.BudgetPoint("up5k", 16, False, None, ("lc", "bram", "dsp", "spram"), (
    blocks.Block("board", ("", "bridge"), {"lc": 25, "bram": 1}, outside=True),
    blocks.Block("fill", ("fill",), {"lc": 30, "spram": 2}),
    blocks.Block("rebuild", ("fill.rebuild0",), {"lc": 50}),
    blocks.Block("mac", ("mac",), {"lc": 10, "dsp": 1}),
    blocks.ACCELERATOR_TOP,
), {"lc": 115, "bram": 1, "dsp": 1, "spram": 2}, "test point")


def measured_from(stat_text: str, lcs: dict[str, int]) -> dict:
    cells = blocks.module_cells(json.loads(stat_text), "top")
    instances = {p: {"cells": c, "resources": {**synth.resources_from_cells(c, "ice40"), "lc": lcs.get(p, 0)}}
                 for p, c in cells.items()}
    return {"family": "ice40", "instances": instances}


def test_module_cells_own_cells_per_instance_with_wrappers_folded_in():
    cells = blocks.module_cells(json.loads(STAT), "top")
    assert set(cells) == {"", "bridge", "accel", "accel.fill", "accel.fill.rebuild0", "accel.mac", "accel.mac.dsps"}
    assert cells[""] == {"SB_PLL40_PAD": 1, "SB_LUT4": 2}
    assert cells["accel.fill"] == {"SB_LUT4": 20, "SB_CARRY": 7, "SB_DFFESR": 9, "SB_SPRAM256KA": 2}
    assert cells["accel.mac.dsps"] == {"SB_MAC16": 2}
    res = synth.resources_from_cells(cells["bridge"], "ice40")
    assert (res["lut4"], res["ff"], res["bram"]) == (10, 8, 1)


def test_packed_logic_cells_by_longest_instance_path():
    packed = {"modules": {"top": {"cells": {
        "accel.fill.rebuild0.o__payload_SB_DFFSR_Q_DFFLC": {"type": "ICESTORM_LC"},
        "accel.fill.basis_addr_SB_LUT4_O_LC": {"type": "ICESTORM_LC"},
        "accel.wbuf.info.0.0_WADDR_SB_LUT4_O_LC": {"type": "ICESTORM_LC"},   # a dotted memory cell name
        "accel.fill.x$CARRY": {"type": "ICESTORM_LC"},
        "$PACKER_GND_DRV": {"type": "ICESTORM_LC"},
        "accel.mac.dsps.dsps.mac0": {"type": "ICESTORM_DSP"},
    }}}}
    paths = {"", "accel", "accel.fill", "accel.fill.rebuild0", "accel.wbuf"}
    assert blocks.packed_logic_cells(packed, paths) == {"accel.fill.rebuild0": 1, "accel.fill": 2, "accel.wbuf": 1,
                                                        "": 1}


def test_rows_sum_instances_into_budget_blocks():
    lcs = {"": 3, "bridge": 20, "accel": 4, "accel.fill": 35, "accel.fill.rebuild0": 40, "accel.mac": 9}
    rows = blocks.block_rows(POINT, measured_from(STAT, lcs))
    by = {row["block"]: row for row in rows}
    assert [row["block"] for row in rows] == ["board", "fill", "rebuild", "mac", blocks.ACCELERATOR_TOP.name, "total"]
    # the board row takes the top's own cells and the bridge, not the accelerator below the top
    assert by["board"]["measured"]["lc"] == 23 and by["board"]["measured"]["lut4"] == 12
    assert by["board"]["measured"]["bram"] == 1 and by["board"]["over"] == []
    # fill without its rebuild unit, which is a row of its own
    assert by["fill"]["measured"]["lc"] == 35 and by["fill"]["measured"]["lut4"] == 20
    assert by["fill"]["measured"]["spram"] == 2 and by["fill"]["over"] == ["lc"]
    assert by["fill"]["ratio"]["lc"] == pytest.approx(35 / 30, abs=0.01)
    assert by["rebuild"]["measured"]["ff"] == 12 and by["rebuild"]["over"] == []
    # the wrapper's DSPs count in the MAC array, through mac.dsps (absorbed: named by no row)
    assert by["mac"]["measured"]["dsp"] == 2 and by["mac"]["over"] == ["dsp"]
    assert by["mac"]["absorbed"] == ["accel.mac.dsps"]
    assert by[blocks.ACCELERATOR_TOP.name]["budget"] is None and by[blocks.ACCELERATOR_TOP.name]["over"] == []
    total = rows[-1]
    assert total["measured"]["lc"] == sum(lcs.values())
    assert total["measured"]["lut4"] == 2 + 10 + 4 + 20 + 30 + 3
    assert total["budget"] == {"lc": 115, "bram": 1, "dsp": 1, "spram": 2}
    assert total["over"] == ["dsp"]                  # 111 of 115 logic cells


def test_instances_named_by_no_block_get_a_row_of_their_own():
    point = blocks.BudgetPoint("up5k", 16, False, None, ("lc",), (blocks.Block("fill", ("fill",), {"lc": 100}),),
                               {"lc": 100}, "partial")
    # without a board, the accelerator sits at "accel"; the top, the bridge and the MAC array are nobody's
    rows = blocks.block_rows(point, measured_from(STAT, {}))
    assert [row["block"] for row in rows] == ["fill", "named by no block", "total"]
    assert rows[1]["absorbed"] == ["", "accel", "accel.mac", "accel.mac.dsps", "bridge"]
    assert rows[1]["measured"]["dsp"] == 2 and rows[1]["budget"] is None


def test_markdown_shows_over_budget_rows():
    lcs = {"accel.fill": 35}
    rep = {"point": POINT.name, "title": POINT.title, "device": "up5k", "pes": 16, "dense": False,
           "board": None, "resources": list(POINT.resources), "stated_total": {"lc": 120, "bram": 1, "dsp": 1,
                                                                                        "spram": 2},
           "rows": blocks.block_rows(POINT, measured_from(STAT, lcs)), "capacity": blocks.capacity("up5k"),
           "design": "d", "script": "s", "yosys_seconds": 1.0, "tools": [], "family": "ice40",
           "pack": {"ICESTORM_LC": {"used": 35, "available": 5280}},
           "flat": {"resources": {"lut4": 60, "ff": 30, "carry": 7, "bram": 1, "dsp": 2, "spram": 2},
                    "pack": {"ICESTORM_LC": {"used": 33, "available": 5280}}, "yosys_seconds": 1.0}}
    text = blocks.markdown({"command": "python -m fpga.blocks --out bench", "date": "today", "git": "git x",
                            "seconds": 2.0, "points": [rep]})
    fill = next(line for line in text.splitlines() if line.startswith("| fill |"))
    assert "**35**" in fill and "**over: LC**" in fill
    assert "its rows add up to 115 LC" in text            # the stated total differs from the rows' sum
    assert "33 logic cells after packing" in text
    assert "| UP5K capacity |" in text


def test_every_budget_instance_exists_in_the_elaborated_design():
    for point in blocks.BUDGETS:
        assert blocks.missing_instances(point) == {}, point.name
        assert blocks.budget_point(point.config()) is point


def test_budget_points_from_the_command_line():
    assert [p.name for p in blocks.parse_points("up5k:16,ecp5-25f:64")] == ["up5k:16", "ecp5-25f:64"]
    with pytest.raises(blocks.SdhwError, match="no budget"):
        blocks.parse_points("hx8k:4")


@pytest.mark.slow
def test_measure_blocks_on_a_small_board_build(tmp_path):
    if synth.tools_available("ice40"):
        pytest.skip(f"YoWASP tools absent: {synth.tools_available('ice40')}")
    cfg = AcceleratorConfig(device="up5k", pes=2)
    measured = blocks.measure(cfg, tmp_path, board="icebreaker")
    rows = blocks.block_rows(blocks.budget_point(cfg), measured)
    assert all(not row["absent"] for row in rows)
    total = rows[-1]["measured"]
    # every packed logic cell lands in a row, and the rows hold every mapped cell
    assert total["lc"] == measured["pack"]["ICESTORM_LC"]["used"] > 0
    stat = json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]
    assert total["lut4"] == stat["SB_LUT4"] and total["spram"] == stat.get("SB_SPRAM256KA", 0)
    by = {row["block"]: row["measured"] for row in rows}
    assert by["MAC array: 16 products on 8 SB_MAC16, accumulators"]["dsp"] == total["dsp"] == stat["SB_MAC16"] > 0
    assert by["board: PLL, reset, UART receiver and transmitter, framed bridge"]["lc"] > 0
    assert blocks.measure(cfg, tmp_path, board="icebreaker")["cached"]
