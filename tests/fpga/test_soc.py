# amaranth: UnusedElaboratable=no
"""SystemTop's parameter checks and its Verilog ports."""
from __future__ import annotations

import re

import pytest

from fpga.soc import SYSTEM_NAME, SystemTop, system_verilog, uart_divisor
from golden import SdhwError
from sdhw.config import AcceleratorConfig

CFG = AcceleratorConfig(pes=1, device="generic", act_depth=16, code_depth=16, basis_depth=4,
                        bias_depth=4, desc_layers=2)


def test_divisor_rounds_and_checks_the_rate():
    assert uart_divisor(12_000_000, 115_200) == 104
    assert uart_divisor(8_000_000, 2_000_000) == 4
    with pytest.raises(SdhwError, match=r"1000000 / 500000 gives 2.00 clock cycles per bit.*at least 4"):
        SystemTop(CFG, clk_freq=1_000_000, baud=500_000)
    with pytest.raises(SdhwError, match="off by"):
        uart_divisor(1_000_000, 180_000)                 # 5.56 -> 6 cycles: 7 % slow
    for bad in (0, -9600, 9600.0, True):
        with pytest.raises(SdhwError, match="baud must be a positive integer"):
            uart_divisor(12_000_000, bad)
    with pytest.raises(SdhwError, match="timeout must be at least"):
        SystemTop(CFG, clk_freq=12_000_000, baud=115_200, timeout=100)
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        SystemTop({"pes": 1}, clk_freq=12_000_000, baud=115_200)


def test_default_timeout_and_verilog_ports():
    top = SystemTop(CFG, clk_freq=12_000_000, baud=115_200)
    assert top.divisor == 104 and top.timeout == 240_000
    text = system_verilog(CFG, clk_freq=12_000_000, baud=115_200)
    ports = re.search(rf"module {SYSTEM_NAME}\((.*?)\);", text, re.S).group(1)
    assert sorted(p.strip() for p in ports.split(",")) == ["clk", "leds", "rst", "rx", "tx"]
    assert re.search(r"output \[2:0\] leds;", text) and re.search(r"input rx;", text)
