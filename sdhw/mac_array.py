"""The MAC array: ``channel_lanes x pixel_lanes`` int8 multiply-accumulate lanes."""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .ecp5 import RegisteredMultipliers


class MacArray(wiring.Component):
    """Q x P int8 x int8 multiply-accumulate lanes; lane ``(q, p)`` accumulates ``weights[q] * acts[p]``.

    Every op broadcasts one weight per channel lane to the P pixel lanes (weight reuse) and one activation
    per pixel lane to the Q channel lanes. ``first`` starts a new sum (``acc = product``); ``last`` marks the
    final op of a sum. Accumulators are ``acc_bits`` wide and wrap (the compiler keeps sums in range).

    Products are ``*`` (mapped to DSP blocks by synthesis) except the last ``soft_products`` lanes, which
    are built from adders (no multiplier cell, so synthesis keeps them in LUTs): yosys maps every ``*`` to
    a DSP and fails placement when the device runs out, so the generator budgets DSPs itself. A soft
    product is radix 4: the activation's bit pairs pick 0, w, 2w or 3w (the top pair, signed: 0, w, -2w
    or -w), with ``3w`` formed once per channel lane in the input register, and four partial products are
    summed in two levels: about 30 LUT4 fewer per product than eight gated rows (yosys, ECP5 and iCE40).

    With ``running_totals`` the accumulators never restart: ``acc`` is the running total of every op and
    ``start`` the total just before the current sum's ``first`` op, so a finished sum is ``acc - start``
    (modulo ``2 ** acc_bits``), taken by the consumer after it has picked one lane. This saves the
    ``first`` multiplexer, a LUT per accumulator bit (Q*P*acc_bits in all), for two banks of flip-flops
    (``start`` and the consumer's copy of it) and a second lane multiplexer: worth it on ECP5, whose
    flip-flops are plentiful, but not on iCE40, where a flip-flop without a LUT takes a logic cell.

    With ``registered_dsps`` (ECP5) the DSP lanes are :class:`~sdhw.ecp5.RegisteredMultipliers`, fed
    straight from ``weights`` and ``acts``: their input and product registers are the DSP block's own
    (``vendor_primitives``: the ``MULT18X18D`` primitive; without, the same registers in logic for
    Amaranth's simulator), so no path runs through a multiplier between fabric registers. Same latency.

    Latency: :attr:`latency` cycles from an op to its accumulation: 3 (input register, product register,
    accumulate), 4 when there are soft products (their two partial products get a register of their own;
    the DSP lanes get the same extra register). ``done`` is high for one cycle right after the accumulation
    of a ``last`` op, while ``acc`` holds the finished sums (index ``q * P + p``; with ``running_totals``,
    ``acc - start`` does). Throughput: one op (Q x P MACs) per cycle.
    """

    LATENCY = 3                 # without soft products; see ``latency``

    def __init__(self, *, channel_lanes: int, pixel_lanes: int, acc_bits: int = 32, soft_products: int = 0,
                 running_totals: bool = False, registered_dsps: bool = False, vendor_primitives: bool = False):
        for name, value in (("channel_lanes", channel_lanes), ("pixel_lanes", pixel_lanes)):
            if not (isinstance(value, int) and 1 <= value <= 1024):
                raise ValueError(f"{name} must be an integer in 1..1024, not {value!r}")
        if not (isinstance(acc_bits, int) and 17 <= acc_bits <= 48):
            raise ValueError(f"acc_bits must be an integer in 17..48, not {acc_bits!r}")
        lanes = channel_lanes * pixel_lanes
        if not (isinstance(soft_products, int) and 0 <= soft_products <= lanes):
            raise ValueError(f"soft_products must be an integer in 0..{lanes}, not {soft_products!r}")
        for name, value in (("running_totals", running_totals), ("registered_dsps", registered_dsps),
                            ("vendor_primitives", vendor_primitives)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, not {value!r}")
        if vendor_primitives and not registered_dsps:
            raise ValueError("vendor_primitives needs registered_dsps (only the registered DSP lanes are primitives)")
        self._q, self._p, self._acc_bits = channel_lanes, pixel_lanes, acc_bits
        self._soft = soft_products
        self.running_totals = running_totals
        self._registered_dsps, self._vendor_primitives = registered_dsps, vendor_primitives
        self.latency = self.LATENCY + (1 if soft_products else 0)
        acc_layout = data.ArrayLayout(signed(acc_bits), channel_lanes * pixel_lanes)
        super().__init__({
            "weights": In(data.ArrayLayout(signed(8), channel_lanes)),
            "acts": In(data.ArrayLayout(signed(8), pixel_lanes)),
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "acc": Out(acc_layout),
            **({"start": Out(acc_layout)} if running_totals else {}),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p_n, n = self._p, self._q * self._p
        first_soft = n - self._soft
        # lanes whose product is formed in the fabric, behind the input register (registered DSP lanes have
        # theirs inside the DSP block)
        fabric_lanes = range(first_soft if self._registered_dsps else 0, n)
        if fabric_lanes:
            w_r = Signal.like(self.weights)
            a_r = Signal.like(self.acts)
            m.d.sync += [w_r.eq(self.weights), a_r.eq(self.acts)]
        # valid/first/last travel beside the data: stage k holds the op k + 1 cycles after it came in
        ctrl = [Signal(3, name=f"ctrl{k}") for k in range(self.latency - 1)]
        m.d.sync += ctrl[0].eq(Cat(self.valid, self.first, self.last))
        for k in range(1, len(ctrl)):
            m.d.sync += ctrl[k].eq(ctrl[k - 1])
        valid, first, last = ctrl[-1]

        products = Signal(data.ArrayLayout(signed(16), n))
        # 3 * weight for the channel lanes that have a soft product, registered beside the weight
        triple = {}
        for q in sorted({k // p_n for k in range(first_soft, n)}):
            triple[q] = Signal(signed(10), name=f"w3_{q}")
            m.d.sync += triple[q].eq(self.weights[q] + (self.weights[q] << 1))
        if self._registered_dsps and first_soft:
            # input and product registers inside the DSPs; with soft lanes, products[k] is the third stage
            # that the other lanes' partial-product register needs
            m.submodules.dsps = dsps = RegisteredMultipliers(lanes=first_soft, a_width=8, b_width=8,
                                                             primitive=self._vendor_primitives)
            # whole-vector assignments: per-lane ones become a Verilog assign per lane, and in simulation
            # every one of them wakes all the logic that reads the vector
            m.d.comb += [dsps.a.eq(Cat(self.weights[k // p_n] for k in range(first_soft))),
                         dsps.b.eq(Cat(self.acts[k % p_n] for k in range(first_soft)))]
            if self._soft:
                m.d.sync += [products[k].eq(dsps.p[k]) for k in range(first_soft)]
            else:
                m.d.comb += products.eq(dsps.p)
        for k in fabric_lanes:
            w, a = w_r[k // p_n], a_r[k % p_n]
            if not self._soft:
                m.d.sync += products[k].eq(w * a)
            elif k < first_soft:
                # the extra register on DSP products keeps every lane aligned with the soft ones
                early = Signal(signed(16), name=f"early{k}")
                m.d.sync += [early.eq(w * a), products[k].eq(early)]
            else:
                pp = _radix4_partial_products(w, triple[k // p_n], a)
                lo = Signal(signed(13), name=f"soft_lo{k}")          # digits 0, 1: |w * a[:4]| <= 1920
                hi = Signal(signed(16), name=f"soft_hi{k}")          # digits 2, 3: |...| <= 22528
                m.d.sync += [lo.eq(pp[0] + (pp[1] << 2)), hi.eq((pp[2] << 4) + (pp[3] << 6)),
                             products[k].eq(lo + hi)]

        m.d.sync += self.done.eq(valid & last)
        with m.If(valid):
            for k in range(n):
                if self.running_totals:
                    m.d.sync += self.acc[k].eq(self.acc[k] + products[k])
                    with m.If(first):
                        m.d.sync += self.start[k].eq(self.acc[k])
                else:
                    with m.If(first):
                        m.d.sync += self.acc[k].eq(products[k])
                    with m.Else():
                        m.d.sync += self.acc[k].eq(self.acc[k] + products[k])
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
