"""The drain: a finished pass's sums, one lane at a time with its bias, to the requantiser."""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


class Drain(wiring.Component):
    """Hold the MAC array's sums of one pass (a shadow register chain) and hand them to the requantiser while
    the next pass accumulates.

    ``load`` (the MAC array's ``done``) copies ``sums`` into the shadow together with the pass's output address
    (``out_addr``: lane 0's activation address), bias entry (``bias_addr``) and number of live lanes (``lanes``, 1
    to N: the sequencer refuses a layer whose last pass has none); lane ``q`` then leaves on ``o`` with tag
    ``out_addr + q`` and the bias entry ``bias_addr + q``, read from the bias memory through ``bias_rd_*`` (read
    latency 1, a read every cycle: the entry of the lane that is at the head next cycle). The shadow shifts one lane
    on per element taken (a multiplexer per bit into its own flip-flop: no lane multiplexer in front of the
    requantiser). ``busy`` is high while the shadow holds lanes not yet taken; ``load`` must not come while it is
    high (the issuer holds a pass's last op back until then); ``busy_next`` is its value in the next cycle.
    ``idle``: nothing left in the drain at all. ``register_output`` puts the element in a register before the
    requantiser (the bias memory's slow clock-to-out on ECP5 ends there).

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
            "busy_next": Out(1),
            "idle": Out(1),
            "bias_rd_addr": Out(bias_bits),
            "bias_rd_en": Out(1),
            "bias_rd_data": In(32),
            "o": Out(stream.Signature(out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        # the pass's data is loaded with it and read only while head_valid says so: no reset, so the data path's
        # flush fans out to the few control flip-flops, not to every shadow bit
        shadow = Signal.like(self.sums, reset_less=True)
        left = Signal(range(self.n + 1))             # lanes in the shadow not yet taken
        tag = Signal(self.tag_bits, reset_less=True)
        bias_addr = Signal.like(self.bias_addr, reset_less=True)      # the bias entry of shadow[0]
        head_valid = Signal()                        # shadow[0] and its bias (read last cycle) are ready
        take = Signal()                              # shadow[0] leaves this cycle
        last_lane = Signal()                         # left == 1
        # busy (left != 0) as a register of its own, its next value an output (the issuer registers its decision
        # input from it); from flip-flops and the handshake only (a load brings 1 lane or more), so the
        # requantiser's ready reaches it and the issuer through one LUT
        m.d.comb += self.busy_next.eq(self.load | (self.busy & ~(take & last_lane)))
        m.d.sync += self.busy.eq(self.busy_next)
        with m.If(self.load):
            m.d.sync += [shadow.eq(self.sums), left.eq(self.lanes), tag.eq(self.out_addr),
                         bias_addr.eq(self.bias_addr), head_valid.eq(1), last_lane.eq(self.lanes == 1)]
        with m.Elif(take):
            m.d.sync += [left.eq(left - 1), tag.eq(tag + 1), bias_addr.eq(bias_addr + 1),
                         head_valid.eq(~last_lane), last_lane.eq(left == 2)]
            m.d.sync += [shadow[q].eq(shadow[q + 1]) for q in range(self.n - 1)]
        # the bias memory reads every cycle: the entry of the lane at the head next cycle
        m.d.comb += [self.bias_rd_en.eq(1),
                     self.bias_rd_addr.eq(Mux(self.load, self.bias_addr, Mux(take, bias_addr + 1, bias_addr)))]
        if not self.register_output:
            m.d.comb += [take.eq(head_valid & self.o.ready), self.o.valid.eq(head_valid),
                         self.o.payload.acc.eq(shadow[0]), self.o.payload.bias.eq(self.bias_rd_data),
                         self.o.payload.tag.eq(tag), self.idle.eq(~self.busy)]
        else:
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            m.d.comb += take.eq(head_valid & (~self.o.valid | self.o.ready))
            with m.If(take):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.acc.eq(shadow[0]),
                             self.o.payload.bias.eq(self.bias_rd_data), self.o.payload.tag.eq(tag)]
            m.d.comb += self.idle.eq(~self.busy & ~self.o.valid)
        return m
