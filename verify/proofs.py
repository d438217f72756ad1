"""Proof harnesses of the hardware blocks, one per block, each around the block's real Component.

Every harness states its block's properties with ``Assert`` over free inputs (``AnySeq``/``AnyConst``: every
value in every cycle, within the block's documented contract, which is ``Assume``d) and has ``Cover``
statements showing that the interesting case is reachable, so a pass is not vacuous. :data:`PROOFS` lists
them with the check each needs (:func:`verify.formal.check`); ``make formal`` runs them all
(``python -m verify.run_formal``).

The references are the golden model's rules (``golden.sd``, ``golden.quant``) rewritten as Amaranth
expressions of the block's inputs, independent of the block's own arithmetic.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.asserts import AnyConst, Initial
from amaranth.hdl import Assume, Cover

from golden.quant import INT32_MAX, INT32_MIN, quantize_multiplier
from sdhw.rebuild import RebuildUnit
from sdhw.requant import Requantiser

from .harness import Scoreboard, checked_sink, free_source, no_reset


# ----------------------------------------------------------------------------------------------- rebuild unit
def rebuild_reference(m: Module, codes, column, wshift, *, exp_bits: int, weight_bits: int) -> Signal:
    """``golden.sd.round_saturate(golden.sd.rebuild_exact(codes, B), wshift, weight_bits)[j]`` for one tap,
    ``column = B[:, j]``, as Amaranth logic added to ``m``: code ``c`` is ``sign * 2**(|c| - 1)`` (0 for
    ``|c| = 0``), the sum rounded half up by ``wshift`` bits (none for 0), then clamped to
    ``+-(2**(weight_bits-1) - 1)``."""
    terms = []
    for k in range(3):
        magnitude, negative = codes[k][:exp_bits], codes[k][exp_bits]
        # B * 2**(|c| - 1) as a shift, not a product (the solver proves shifts far faster than products)
        power = Signal(signed(24), name=f"ref_power{k}")
        term = Signal(signed(24), name=f"ref_term{k}")
        m.d.comb += [power.eq(column[k] << (magnitude - 1)[:exp_bits]),
                     term.eq(Mux(magnitude == 0, 0, Mux(negative, -power, power)))]
        terms.append(term)
    # |exact| < 3 * 2**(tb - 1) < 2**(tb + 1), tb = 8 + 2**E - 2 bits per term: for wshift > tb + 2 the rounded
    # value is 0, so the rule needs sums of tb + 4 bits only (narrow sums keep the solver fast)
    tb = 8 + (1 << exp_bits) - 2
    exact = Signal(signed(tb + 2), name="ref_exact")
    rounded = Signal(signed(tb + 4), name="ref_rounded")
    weight = Signal(signed(weight_bits), name="ref_weight")
    qmax = (1 << (weight_bits - 1)) - 1
    half = Mux(wshift == 0, 0, Const(1, tb + 3) << (wshift - 1)[:5])
    m.d.comb += [exact.eq(terms[0] + terms[1] + terms[2]),
                 rounded.eq(Mux(wshift > tb + 2, 0, (exact + half) >> wshift)),
                 weight.eq(Mux(rounded > qmax, qmax, Mux(rounded < -qmax, -qmax, rounded)))]
    return weight


#: the rounding shift of the rebuild unit's default proof (a proof per shift: ``wshift`` free takes the solver far
#: longer than one run per value)
DEFAULT_WSHIFT = 2


class RebuildProof(Elaboratable):
    """:class:`~sdhw.rebuild.RebuildUnit`: for every code triple and basis column, at rounding shift ``wshift``
    (``None``: any), the weight out equals the golden rebuild rule; each tap comes out once, in order, within
    ``LATENCY`` ready cycles; the output stream keeps the handshake rules. Contract: ``wshift`` held for the
    run and set a cycle before the first tap (so no tap in the first cycle)."""

    def __init__(self, dut: RebuildUnit | None = None, *, wshift: int | None = DEFAULT_WSHIFT, exp_bits: int = 2,
                 weight_bits: int = 8, tag_bits: int = 3):
        self.wshift = wshift
        self.dut = dut if dut is not None else RebuildUnit(exp_bits=exp_bits, weight_bits=weight_bits,
                                                           tag_bits=tag_bits)
        self.exp_bits, self.weight_bits, self.tag_bits = exp_bits, weight_bits, tag_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        wshift = AnyConst(5) if self.wshift is None else Const(self.wshift, 5)
        m.d.comb += dut.wshift.eq(wshift)
        free_source(m, dut.i, "i")
        m.d.comb += Assume(~(Initial() & dut.i.valid))
        checked_sink(m, dut.o, "o")
        weight = rebuild_reference(m, dut.i.payload.codes, dut.i.payload.column, wshift, exp_bits=self.exp_bits,
                                   weight_bits=self.weight_bits)
        expected = Cat(weight[:self.weight_bits], dut.i.payload.tag) if self.tag_bits else weight[:self.weight_bits]
        got = Cat(dut.o.payload.weight, dut.o.payload.tag) if self.tag_bits else dut.o.payload.weight
        board = Scoreboard(m, accepted=dut.i.valid & dut.i.ready, emitted=dut.o.valid & dut.o.ready,
                           expected=expected, got=got, ready=dut.o.ready, max_ready_cycles=RebuildUnit.LATENCY - 1,
                           index_bits=1)
        # the interesting cases, each for the second tap and after a stall: a saturated weight, a small one
        qmax = (1 << (self.weight_bits - 1)) - 1
        stalled = Signal()
        with m.If(dut.o.valid & ~dut.o.ready):
            m.d.sync += stalled.eq(1)
        out_weight = board.expected_q[:self.weight_bits].as_signed()
        m.d.comb += [Cover(board.taken & stalled & (board.index == 1) & (out_weight == -qmax)),
                     Cover(board.taken & stalled & (board.index == 1) & (out_weight == 3))]
        return m


# ---------------------------------------------------------------------------------------------- requantiser
def requant_reference(m: Module, acc, m0, shift, zero_point, act_min, act_max) -> Signal:
    """``golden.quant.requantize(acc, m0, shift, zero_point, act_min, act_max)`` for an ``acc`` (already the
    accumulator plus its bias, saturated to int32), as Amaranth logic added to ``m``."""
    def wire(name, shape, value):
        sig = Signal(shape, name=f"ref_{name}")
        m.d.comb += sig.eq(value)
        return sig
    left = wire("left", unsigned(6), Mux(shift < 0, -shift, 0))
    right = wire("right", unsigned(5), Mux(shift > 0, shift, 0))
    shifted = wire("shifted", signed(66), acc << left)
    x = wire("x", signed(32), Mux(shifted > INT32_MAX, INT32_MAX, Mux(shifted < INT32_MIN, INT32_MIN, shifted)))
    ab = wire("ab", signed(64), x * m0)
    nudged = wire("nudged", signed(65), ab + Mux(ab >= 0, 1 << 30, 1 - (1 << 30)))
    # SaturatingRoundingDoublingHighMul: the nudged product divided by 2**31, truncating toward zero (C's /);
    # no saturation case, as m0 >= 0
    high = wire("high", signed(32), Mux(nudged >= 0, nudged >> 31, -((-nudged) >> 31)))
    # RoundingDivideByPOT(high, right): round to nearest, ties away from zero
    mask = wire("mask", unsigned(32), (Const(1, 33) << right) - 1)
    remainder = wire("remainder", unsigned(32), high.as_unsigned() & mask)
    threshold = wire("threshold", unsigned(32), (mask >> 1) + (high < 0))
    y = wire("y", signed(33), (high >> right) + (remainder > threshold))
    out = wire("out", signed(34), zero_point + y)
    above_min = wire("above_min", signed(34), Mux(out < act_min, act_min, out))
    return wire("value", signed(34), Mux(above_min > act_max, act_max, above_min))


def _saturated_sum(m: Module, acc, bias) -> Signal:
    total = Signal(signed(34), name="ref_sum")
    saturated = Signal(signed(32), name="ref_sum_saturated")
    m.d.comb += [total.eq(acc + bias),
                 saturated.eq(Mux(total > INT32_MAX, INT32_MAX, Mux(total < INT32_MIN, INT32_MIN, total)))]
    return saturated


#: the fixed multiplier of the requantiser's proofs: a real layer's (scale 0.0123)
DEFAULT_M0, DEFAULT_SHIFT = quantize_multiplier(0.0123)


class RequantProof(Elaboratable):
    """:class:`~sdhw.requant.Requantiser`: for every accumulator and bias, zero point and clamp bounds, the
    output equals ``golden.quant.requantize`` (the sum saturated to int32: the block's documented extension)
    at multiplier ``m0`` and shift ``shift`` (``None``: every shift in -32..31); each element comes out once,
    in order, within ``LATENCY`` ready cycles; the output stream keeps the handshake rules. Contract: the
    per-layer inputs held for the run, set a cycle before the first element."""

    def __init__(self, dut: Requantiser | None = None, *, m0: int | None = DEFAULT_M0,
                 shift: int | None = DEFAULT_SHIFT, acc_bits: int = 32, tag_bits: int = 2):
        self.dut = dut if dut is not None else Requantiser(acc_bits=acc_bits, tag_bits=tag_bits)
        self.m0, self.shift = m0, shift

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        m0 = Const(self.m0, unsigned(31)) if self.m0 is not None else AnyConst(unsigned(31))
        shift = Const(self.shift, signed(6)) if self.shift is not None else AnyConst(signed(6))
        zero_point, act_min, act_max = AnyConst(signed(8)), AnyConst(signed(8)), AnyConst(signed(8))
        m.d.comb += [dut.m0.eq(m0), dut.shift.eq(shift), dut.zero_point.eq(zero_point),
                     dut.act_min.eq(act_min), dut.act_max.eq(act_max)]
        free_source(m, dut.i, "i")
        m.d.comb += Assume(~(Initial() & dut.i.valid))
        checked_sink(m, dut.o, "o")
        value = requant_reference(m, _saturated_sum(m, dut.i.payload.acc, dut.i.payload.bias), m0, shift, zero_point,
                                  act_min, act_max)
        board = Scoreboard(m, accepted=dut.i.valid & dut.i.ready, emitted=dut.o.valid & dut.o.ready,
                           expected=Cat(value[:8], dut.i.payload.tag), got=Cat(dut.o.payload.value, dut.o.payload.tag),
                           ready=dut.o.ready, max_ready_cycles=Requantiser.LATENCY - 1, index_bits=1)
        out = board.expected_q[:8].as_signed()
        stalled = Signal()
        with m.If(dut.o.valid & ~dut.o.ready):
            m.d.sync += stalled.eq(1)
        # an output inside the clamp bounds, not at them, after a stall
        m.d.comb += Cover(board.taken & stalled & (board.index == 1) & (out > act_min) & (out < act_max)
                          & (act_max - act_min > 100))
        return m


# ---------------------------------------------------------------------------------------------- the list
@dataclass(frozen=True)
class ProofSpec:
    """A harness and the check it needs: ``mode``/``depth`` (:func:`verify.formal.check`), what it proves, and
    the broken variants (:mod:`verify.mutants`) that must make it fail."""

    name: str
    block: str
    build: Callable[..., Elaboratable]
    depth: int
    mode: str = "bmc"
    cover_depth: int | None = None
    claim: str = ""
    dut_kwargs: dict = field(default_factory=dict)
    mutants: tuple[str, ...] = ()

    def harness(self, mutant: str | None = None) -> Elaboratable:
        """The harness around the block, or around its broken variant ``mutant`` (:data:`verify.mutants.MUTANTS`)."""
        if mutant is None:
            return self.build(**self.dut_kwargs)
        from .mutants import MUTANTS
        return self.build(MUTANTS[mutant](**self.dut_kwargs), **self.dut_kwargs)


PROOFS: list[ProofSpec] = [
    ProofSpec("rebuild", "sdhw.rebuild.RebuildUnit", RebuildProof, depth=9,
              dut_kwargs={"exp_bits": 2, "weight_bits": 8, "tag_bits": 3},
              claim=f"weight = golden rebuild rule for every code triple and basis column at wshift={DEFAULT_WSHIFT}; "
                    "taps in order, none lost or duplicated; handshake rules",
              mutants=("rebuild_flip_bit", "rebuild_drop_valid")),
    ProofSpec("requant", "sdhw.requant.Requantiser", RequantProof, depth=13, cover_depth=16,
              dut_kwargs={"acc_bits": 32, "tag_bits": 2},
              claim=f"output = golden requantize for every int32 sum, zero point and clamp at m0={DEFAULT_M0}, "
                    f"shift={DEFAULT_SHIFT}; order, no loss; handshake rules",
              mutants=("requant_flip_bit", "requant_duplicate")),
]

