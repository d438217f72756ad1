"""The drain: a finished pass's sums, one lane at a time with its bias, to the requantiser."""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


class Drain(wiring.Component):
    """Hold the MAC array's sums of one pass (a shadow register chain) and hand them to the requantiser while
    the next pass accumulates.

    ``load`` (the MAC array's ``done``) copies ``sums`` into the shadow together with the pass's output address
    (``out_addr``: lane 0's activation address), bias entry (``bias_addr``) and number of live lanes
    (``lanes``); lane ``q`` then leaves on ``o`` with tag ``out_addr + q`` and the bias entry
    ``bias_addr + q``, read from the bias memory through ``bias_rd_*`` (read latency ``bias_latency``). The
    shadow shifts one lane on per element taken (a multiplexer per bit into its own flip-flop: no lane
    multiplexer in front of the requantiser). ``busy`` is high while the shadow holds lanes not yet taken;
    ``load`` must not come while it is high (the issuer holds a pass's last op back until then). ``idle``:
    nothing left in the drain at all. The bias memory's read latency is one cycle; ``register_output`` puts
    the element in a register before the requantiser (the bias memory's slow clock-to-out on ECP5 ends there).

    Latency: 1 cycle from ``load`` to the first element (2 with ``register_output``). Throughput: one lane per
    cycle.
    """

    def __init__(self, *, lanes: int, acc_bits: int, tag_bits: int, bias_bits: int, register_output: bool = False):
        self.n, self.acc_bits, self.tag_bits, self.register_output = lanes, acc_bits, tag_bits, register_output
        out_layout = data.StructLayout({"acc": signed(acc_bits), "bias": signed(32), "tag": unsigned(tag_bits)})
        super().__init__({
            "sums": In(data.ArrayLayout(signed(acc_bits), lanes)),
            "load": In(1),
            "out_addr": In(tag_bits),
            "bias_addr": In(bias_bits),
            "lanes": In(range(lanes + 1)),
            "busy": Out(1),
            "idle": Out(1),
            "bias_rd_addr": Out(bias_bits),
            "bias_rd_en": Out(1),
            "bias_rd_data": In(32),
            "o": Out(stream.Signature(out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        shadow = Signal.like(self.sums)
        left = Signal(range(self.n + 1))             # lanes in the shadow not yet taken
        tag = Signal(self.tag_bits)
        bias_addr = Signal.like(self.bias_addr)
        # stage 1: the lane taken from the shadow while its bias is read; stage 2 (bias_latency 2): registered
        s1_valid = Signal()
        s1_acc = Signal(signed(self.acc_bits))
        s1_tag = Signal(self.tag_bits)
        advance = Signal()                           # the output stage can take a new element
        pop = Signal()
        m.d.comb += [self.busy.eq(left != 0), pop.eq((left != 0) & (~s1_valid | advance))]

        with m.If(self.load):
            m.d.sync += [shadow.eq(self.sums), left.eq(self.lanes), tag.eq(self.out_addr),
                         bias_addr.eq(self.bias_addr)]
        with m.Elif(pop):
            m.d.sync += [left.eq(left - 1), tag.eq(tag + 1), bias_addr.eq(bias_addr + 1)]
            m.d.sync += [shadow[q].eq(shadow[q + 1]) for q in range(self.n - 1)]
        with m.If(pop):
            m.d.sync += [s1_valid.eq(1), s1_acc.eq(shadow[0]), s1_tag.eq(tag)]
        with m.Elif(advance):
            m.d.sync += s1_valid.eq(0)
        # the bias of the lane entering stage 1 is read as it enters; the memory holds its output while the
        # read is not enabled, so a stalled stage 1 keeps its bias
        m.d.comb += [self.bias_rd_addr.eq(bias_addr), self.bias_rd_en.eq(pop)]
        if not self.register_output:
            m.d.comb += [advance.eq(self.o.ready), self.o.valid.eq(s1_valid), self.o.payload.acc.eq(s1_acc),
                         self.o.payload.bias.eq(self.bias_rd_data), self.o.payload.tag.eq(s1_tag)]
            m.d.comb += self.idle.eq(~self.busy & ~s1_valid)
        else:
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            m.d.comb += advance.eq(~self.o.valid | self.o.ready)
            with m.If(s1_valid & advance):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.acc.eq(s1_acc),
                             self.o.payload.bias.eq(self.bias_rd_data), self.o.payload.tag.eq(s1_tag)]
            m.d.comb += self.idle.eq(~self.busy & ~s1_valid & ~self.o.valid)
        return m
