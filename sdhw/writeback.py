"""The writeback: the requantiser the configuration chose, its per-layer parameters, and the output write."""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .requant import Requantiser, SerialRequantiser, ThresholdRequantiser

REQUANT_PARAMS = data.StructLayout({"m0": unsigned(31), "shift": signed(6), "zp_out": signed(8),
                                    "act_min": signed(8), "n_thresh": 9})


class Writeback(wiring.Component):
    """Requantise the drain's elements and write each into the output activation buffer at its tag.

    ``kind`` picks the requantiser once: ``"pipelined"`` (:class:`~sdhw.requant.Requantiser`, four DSPs, one
    element per cycle), ``"serial"`` (:class:`~sdhw.requant.SerialRequantiser`, no DSP) or ``"table"``
    (:class:`~sdhw.requant.ThresholdRequantiser`, ``units`` threshold searches whose table ``t_*`` writes fill
    at the start of a layer). The write port (``w_addr``, ``w_data``, ``w_en``) takes an element whenever one
    comes; ``idle`` (a register): no element inside.
    """

    def __init__(self, *, kind: str, acc_bits: int, tag_bits: int, units: int = 1):
        if kind not in ("pipelined", "serial", "table"):
            raise ValueError(f"kind must be pipelined, serial or table, not {kind!r}")
        self.kind, self.acc_bits, self.tag_bits, self.units = kind, acc_bits, tag_bits, units
        in_layout = data.StructLayout({"acc": signed(acc_bits), "bias": signed(32), "tag": unsigned(tag_bits)})
        super().__init__({
            "i": In(stream.Signature(in_layout)), "params": In(REQUANT_PARAMS),
            "t_en": In(1), "t_addr": In(8), "t_data": In(32),
            "w_addr": Out(tag_bits), "w_data": Out(8), "w_en": Out(1), "idle": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        if self.kind == "table":
            requant = ThresholdRequantiser(acc_bits=self.acc_bits, tag_bits=self.tag_bits, units=self.units)
            m.d.comb += [requant.base.eq(p.act_min), requant.n_thresh.eq(p.n_thresh), requant.w_en.eq(self.t_en),
                         requant.w_addr.eq(self.t_addr), requant.w_data.eq(self.t_data)]
        else:
            cls = Requantiser if self.kind == "pipelined" else SerialRequantiser
            requant = cls(acc_bits=self.acc_bits, tag_bits=self.tag_bits)
            m.d.comb += [requant.m0.eq(p.m0), requant.shift.eq(p.shift), requant.zero_point.eq(p.zp_out),
                         requant.act_min.eq(p.act_min), requant.act_max.eq(127)]
        m.submodules.requant = requant
        wiring.connect(m, wiring.flipped(self.i), requant.i)
        m.d.comb += [requant.o.ready.eq(1), self.w_en.eq(requant.o.valid), self.w_addr.eq(requant.o.payload.tag),
                     self.w_data.eq(requant.o.payload.value)]
        inside = Signal(range(64))
        taken, given = self.i.valid & self.i.ready, requant.o.valid
        m.d.sync += inside.eq(inside + taken - given)
        # idle next cycle: the count's comparisons made on the register beside the handshakes, not after its adder
        m.d.sync += self.idle.eq(Mux(taken == given, inside == 0, Mux(taken, inside == 63, inside == 1)))
        return m
