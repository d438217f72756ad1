"""sdhw.compare: comparisons against constants as bit logic, exhaustive on small widths."""
from __future__ import annotations

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from sdhw.compare import above


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_above_is_greater_than_for_every_value_and_bound(width):
    m = Module()
    value = Signal(width)
    bounds = range(-2, (1 << width) + 3)
    verdicts = {k: Signal(name=f"above_{k + 2}") for k in bounds}
    m.d.comb += [verdicts[k].eq(above(value, k)) for k in bounds]
    wrong = []

    async def testbench(ctx):
        for v in range(1 << width):
            ctx.set(value, v)
            wrong.extend((v, k) for k in bounds if ctx.get(verdicts[k]) != int(v > k))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert not wrong, f"above(value, bound) != value > bound for (value, bound) in {wrong[:8]}"
