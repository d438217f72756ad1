"""The MAC array: ``channel_lanes x pixel_lanes`` int8 multiply-accumulate lanes."""
from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class MacArray(wiring.Component):
    """Q x P int8 x int8 multiply-accumulate lanes; lane ``(q, p)`` accumulates ``weights[q] * acts[p]``.

    Every op broadcasts one weight per channel lane to the P pixel lanes (weight reuse) and one activation
    per pixel lane to the Q channel lanes. ``first`` starts a new sum (``acc = product``); ``last`` marks the
    final op of a sum. Accumulators are ``acc_bits`` wide and wrap (the compiler keeps sums in range).

    Latency: 3 cycles from an op to its accumulation (input register, product register, accumulate);
    ``done`` is high for one cycle right after the accumulation of a ``last`` op, while ``acc`` holds the
    finished sums (index ``q * P + p``). Throughput: one op (Q x P MACs) per cycle.
    """

    LATENCY = 3

    def __init__(self, *, channel_lanes: int, pixel_lanes: int, acc_bits: int = 32):
        for name, value in (("channel_lanes", channel_lanes), ("pixel_lanes", pixel_lanes)):
            if not (isinstance(value, int) and 1 <= value <= 1024):
                raise ValueError(f"{name} must be an integer in 1..1024, not {value!r}")
        if not (isinstance(acc_bits, int) and 17 <= acc_bits <= 48):
            raise ValueError(f"acc_bits must be an integer in 17..48, not {acc_bits!r}")
        self._q, self._p, self._acc_bits = channel_lanes, pixel_lanes, acc_bits
        super().__init__({
            "weights": In(data.ArrayLayout(signed(8), channel_lanes)),
            "acts": In(data.ArrayLayout(signed(8), pixel_lanes)),
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "acc": Out(data.ArrayLayout(signed(acc_bits), channel_lanes * pixel_lanes)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        q_n, p_n = self._q, self._p
        w_r = Signal.like(self.weights)
        a_r = Signal.like(self.acts)
        v1, f1, l1 = Signal(), Signal(), Signal()
        m.d.sync += [w_r.eq(self.weights), a_r.eq(self.acts), v1.eq(self.valid), f1.eq(self.first),
                     l1.eq(self.last)]
        products = Signal(data.ArrayLayout(signed(16), q_n * p_n))
        v2, f2, l2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), f2.eq(f1), l2.eq(l1)]
        for q in range(q_n):
            for p in range(p_n):
                m.d.sync += products[q * p_n + p].eq(w_r[q] * a_r[p])
        m.d.sync += self.done.eq(v2 & l2)
        with m.If(v2):
            for k in range(q_n * p_n):
                with m.If(f2):
                    m.d.sync += self.acc[k].eq(products[k])
                with m.Else():
                    m.d.sync += self.acc[k].eq(self.acc[k] + products[k])
        return m
