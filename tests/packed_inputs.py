"""Drive many input ports of a block under test with one ``ctx.set`` a cycle: every set makes Amaranth's simulator
settle the design again, so a testbench setting a dozen ports a cycle spends most of its time there."""
from __future__ import annotations

from amaranth import Elaboratable, Module, Signal
from amaranth.lib import data


class PackedInputs(Elaboratable):
    """``dut`` with the ports ``ports`` (name -> port) driven from the fields of one struct, :attr:`inputs`:
    ``ctx.set(h.inputs, {name: value, ...})`` sets them all (a field left out is set to 0)."""

    def __init__(self, dut, ports: dict):
        self.dut, self.ports = dut, dict(ports)
        self.inputs = Signal(data.StructLayout({name: port.shape() for name, port in self.ports.items()}))

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.comb += [port.eq(getattr(self.inputs, name)) for name, port in self.ports.items()]
        return m
