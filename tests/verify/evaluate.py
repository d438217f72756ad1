"""The value of a combinational Amaranth expression, by simulation (for checks of the proofs' references)."""
from __future__ import annotations

from amaranth import Module, Signal, Value
from amaranth.sim import Simulator


def evaluate(value, m: Module | None = None) -> int:
    """``value`` (driven by ``m``'s logic, if given) in a one-step simulation; signed values come back signed."""
    value = Value.cast(value)
    m = m or Module()
    out = Signal(value.shape())
    m.d.comb += out.eq(value)
    result = []

    async def bench(ctx):
        result.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return result[0]
