"""The MAC array: N int8 multiply-accumulate lanes sharing one activation per cycle."""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .ecp5 import RegisteredMultipliers
from .ice40 import DualMultipliers

DSP_KINDS = ("plain", "registered", "dual")


class MacArray(wiring.Component):
    """``lanes`` int8 x int8 multiply-accumulate lanes; lane ``q`` accumulates ``weights[q] * act``.

    Every op broadcasts one activation to all lanes, each with its own weight. An op with ``last`` ends a sum:
    the cycle after it is accumulated, ``done`` is high and ``sums`` (the accumulators themselves) holds every
    lane's finished sum, and the accumulators restart from zero at the end of that cycle (a synchronous reset,
    which iCE40 and ECP5 flip-flops have: no multiplexer per accumulator bit). So the op after a ``last`` op
    must come a cycle later than back to back (the issuer leaves that gap). The accumulators' flip-flops
    take nothing but their adder's output, so on iCE40 each shares a logic cell with its adder bit.
    Accumulators are ``acc_bits`` wide and wrap (the compiler refuses layers whose sums could leave them).

    Products: the first ``lanes - soft_products`` lanes on DSP blocks, ``dsp`` choosing how:

    * ``"plain"``: ``*`` between an input and a product register (Yosys maps it to a DSP or LUTs);
    * ``"registered"``: ECP5 ``MULT18X18D`` with their own registers (:class:`~sdhw.ecp5.RegisteredMultipliers`);
    * ``"dual"``: two per iCE40 ``SB_MAC16`` (:class:`~sdhw.ice40.DualMultipliers`).

    The last ``soft_products`` lanes are radix 4 in LUTs (no multiplier cell): the activation's bit pairs pick
    0, w, 2w or 3w (the top pair, signed: 0, w, -2w or -w), ``3w`` formed in the input register, and the four
    partial products summed into the product register. ``vendor_primitives`` instantiates the DSP wrappers
    (for Verilog); without it the same registers are built in logic (for Amaranth's simulator).

    Latency: 2 cycles from an op to its accumulation (input register, product register); ``done`` comes 3
    cycles after the ``last`` op. Throughput: one op (``lanes`` MACs) per cycle, with a cycle's gap after each
    sum.
    """

    LATENCY = 2

    def __init__(self, *, lanes: int, acc_bits: int = 32, soft_products: int = 0, dsp: str = "plain",
                 vendor_primitives: bool = False):
        if not (isinstance(lanes, int) and 1 <= lanes <= 1024):
            raise ValueError(f"lanes must be an integer in 1..1024, not {lanes!r}")
        if not (isinstance(acc_bits, int) and 17 <= acc_bits <= 48):
            raise ValueError(f"acc_bits must be an integer in 17..48, not {acc_bits!r}")
        if not (isinstance(soft_products, int) and 0 <= soft_products <= lanes):
            raise ValueError(f"soft_products must be an integer in 0..{lanes}, not {soft_products!r}")
        if dsp not in DSP_KINDS:
            raise ValueError(f"dsp must be one of {', '.join(DSP_KINDS)}, not {dsp!r}")
        if not isinstance(vendor_primitives, bool):
            raise ValueError(f"vendor_primitives must be a bool, not {vendor_primitives!r}")
        self.lanes, self.acc_bits, self.soft_products, self.dsp = lanes, acc_bits, soft_products, dsp
        self.vendor_primitives = vendor_primitives
        super().__init__({
            "weights": In(data.ArrayLayout(signed(8), lanes)),
            "act": In(signed(8)),
            "valid": In(1),
            "last": In(1),
            "sums": Out(data.ArrayLayout(signed(acc_bits), lanes)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        hard = n - self.soft_products
        products = Signal(data.ArrayLayout(signed(16), n))
        if hard:
            if self.dsp == "dual":
                m.submodules.dsps = dsps = DualMultipliers(lanes=hard, primitive=self.vendor_primitives)
            elif self.dsp == "registered":
                m.submodules.dsps = dsps = RegisteredMultipliers(lanes=hard, a_width=8, b_width=8,
                                                                 primitive=self.vendor_primitives)
            else:
                dsps = None
            if dsps is not None:
                # whole-vector assignments: a per-lane assign wakes every reader of the vector in simulation
                m.d.comb += [dsps.a.eq(Cat(self.weights[k] for k in range(hard))),
                             dsps.b.eq(Cat(self.act for _ in range(hard)))]
                m.d.comb += products.as_value()[:16 * hard].eq(dsps.p)
            else:
                w_r = Signal(data.ArrayLayout(signed(8), hard))
                a_r = Signal(signed(8))
                m.d.sync += [w_r.eq(Cat(self.weights[k] for k in range(hard))), a_r.eq(self.act)]
                m.d.sync += [products[k].eq(w_r[k] * a_r) for k in range(hard)]
        if self.soft_products:
            a_r = Signal(signed(8), name="soft_act")
            m.d.sync += a_r.eq(self.act)
            for k in range(hard, n):
                w_r = Signal(signed(8), name=f"soft_w{k}")
                w3 = Signal(signed(10), name=f"soft_w3_{k}")
                m.d.sync += [w_r.eq(self.weights[k]), w3.eq(self.weights[k] + (self.weights[k] << 1))]
                pp = _radix4_partial_products(w_r, w3, a_r)
                m.d.sync += products[k].eq(pp[0] + (pp[1] << 2) + (pp[2] << 4) + (pp[3] << 6))

        # valid and last travel beside the data
        valid, last = Signal(), Signal()
        v1, l1 = Signal(), Signal()
        m.d.sync += [v1.eq(self.valid), l1.eq(self.valid & self.last), valid.eq(v1), last.eq(l1),
                     self.done.eq(last)]
        acc = Signal(data.ArrayLayout(signed(self.acc_bits), n))
        m.d.comb += self.sums.eq(acc)
        for k in range(n):
            with m.If(self.done):
                m.d.sync += acc[k].eq(0)
            with m.Elif(valid):
                m.d.sync += acc[k].eq(acc[k] + products[k])
        return m


def _radix4_partial_products(w, w3, a):
    """The four partial products of ``w * a`` (``a`` signed 8-bit) by radix-4 digits, each to be weighted by
    ``4 ** i``: digits 0-2 are unsigned bit pairs (0..3 times ``w``), digit 3 is the signed top pair
    (``-2 * a[7] + a[6]``). No multiplier cell: each is a four-way choice between shifted copies of ``w``."""
    pps = []
    for i in range(4):
        lo_bit, hi_bit = a[2 * i], a[2 * i + 1]
        if i < 3:
            pp = Mux(hi_bit, Mux(lo_bit, w3, w << 1), Mux(lo_bit, w, 0))
        else:
            pp = Mux(hi_bit, Mux(lo_bit, -w, -(w << 1)), Mux(lo_bit, w, 0))
        pps.append(pp.as_signed())
    return pps
