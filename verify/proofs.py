"""Proof harnesses of the hardware blocks, one per block, each around the block's real Component.

Every harness states its block's properties with ``Assert`` over free inputs (``AnySeq``/``AnyConst``: every
value in every cycle, within the block's documented contract, which is ``Assume``d) and has ``Cover``
statements showing that the interesting case is reachable, so a pass is not vacuous. :data:`PROOFS` lists
them with the check each needs (:func:`verify.formal.check`); ``make formal`` runs them all
(``python -m verify.run_formal``). The UART bridge's harness is :mod:`verify.bridge_proof`.

The references are the golden model's rules (``golden.sd``, ``golden.quant``, the descriptor checksum of
``sdhw.descriptor``) rewritten as Amaranth expressions of the block's inputs, independent of the block's own
arithmetic; the table requantiser's table is the compiler's (``rtl_gen.image.thresholds``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

from amaranth import Array, Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed, unsigned
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.hdl import Assert, Assume, Cover

from golden.quant import ACT_MAX, ACT_MIN, INT32_MAX, INT32_MIN, QParams, quantize_multiplier
from rtl_gen.image import thresholds
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import CHECKSUM_SEED, CHECKSUM_WORD
from sdhw.drain import Drain
from sdhw.reader import SequentialReader
from sdhw.rebuild import RebuildUnit
from sdhw.requant import Requantiser, SerialRequantiser, ThresholdRequantiser, ThresholdSearch
from sdhw.sequencer import Sequencer
from sdhw.writeback import Writeback

from .bridge_proof import BRIDGE_MAX_WORDS, BRIDGE_TIMEOUT, BridgeProof, bridge_cover_depth, bridge_mutant_depth
from .harness import Scoreboard, checked_sink, free_source, last_cycle, no_reset


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


def lowest_rebuild_weight(*, exp_bits: int, weight_bits: int, wshift: int | None) -> int:
    """The most negative weight the rebuild rule gives at rounding shift ``wshift`` (``None``: any):
    ``-(2**(weight_bits-1) - 1)`` (the clamp) unless three taps of basis -128 at the largest exponent round above
    it (one exponent bit at ``wshift`` 2: -96)."""
    qmax = (1 << (weight_bits - 1)) - 1
    if wshift is None:                            # shift 0 is among the free ones: three taps of -128 saturate
        return -qmax
    exact = -3 * 128 << ((1 << exp_bits) - 2)
    half = (1 << wshift) >> 1
    return max((exact + half) >> wshift, -qmax)


#: the rounding shift of the rebuild unit's default proof (a proof per shift: ``wshift`` free takes the solver far
#: longer than one run per value)
DEFAULT_WSHIFT = 2


class RebuildProof(Elaboratable):
    """:class:`~sdhw.rebuild.RebuildUnit`: for every code triple and basis column, at rounding shift ``wshift``
    (``None``: any), the weight out equals the golden rebuild rule; each tap comes out once, in order, within
    ``LATENCY`` ready cycles; the output stream keeps the handshake rules. Contract: ``wshift`` held for the
    run and set two cycles before the first tap (so no tap in the first two cycles)."""

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
        settled = Signal(2)                         # the unit's shift, then its rounding constant, registered
        m.d.sync += settled.eq(Cat(1, settled[0]))
        m.d.comb += Assume(settled[1] | ~dut.i.valid)
        checked_sink(m, dut.o, "o")
        weight = rebuild_reference(m, dut.i.payload.codes, dut.i.payload.column, wshift, exp_bits=self.exp_bits,
                                   weight_bits=self.weight_bits)
        expected = Cat(weight[:self.weight_bits], dut.i.payload.tag) if self.tag_bits else weight[:self.weight_bits]
        got = Cat(dut.o.payload.weight, dut.o.payload.tag) if self.tag_bits else dut.o.payload.weight
        board = Scoreboard(m, accepted=dut.i.valid & dut.i.ready, emitted=dut.o.valid & dut.o.ready,
                           expected=expected, got=got, ready=dut.o.ready, max_ready_cycles=RebuildUnit.LATENCY - 1,
                           index_bits=1)
        # the interesting cases, each for the second tap and after a stall: the most negative weight (saturated
        # where the exponents reach past the clamp), a small one
        stalled = Signal()
        with m.If(dut.o.valid & ~dut.o.ready):
            m.d.sync += stalled.eq(1)
        out_weight = board.expected_q[:self.weight_bits].as_signed()
        lowest = lowest_rebuild_weight(exp_bits=self.exp_bits, weight_bits=self.weight_bits, wshift=self.wshift)
        m.d.comb += [Cover(board.taken & stalled & (board.index == 1) & (out_weight == lowest)),
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
    total = Signal(signed(max(len(Value.cast(acc)), 32) + 2), name="ref_sum")
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


# ---------------------------------------------------------------------------------------- table requantiser
#: the table requantiser proof's layer: the requantiser proof's real multiplier with a fused ReLU at zero point
#: 120, so its outputs are 120..127 and the compiler's table is short (7 thresholds, written in 7 cycles)
TABLE_ZERO_POINT = 120


def requant_layer(m0: int, shift: int, zero_point: int, relu: bool) -> SimpleNamespace:
    """A layer's requantisation parameters as ``rtl_gen.image.thresholds`` reads them (``golden.program.QLayer``'s
    ``m0``, ``shift``, ``out_q``, ``act_min``, ``act_max``)."""
    return SimpleNamespace(m0=m0, shift=shift, out_q=QParams(1.0, zero_point),
                           act_min=zero_point if relu else ACT_MIN, act_max=ACT_MAX)


class ThresholdProof(Elaboratable):
    """:class:`~sdhw.requant.ThresholdRequantiser` (the iCE40 builds' ``requant = "table"``): with the table the
    compiler (``rtl_gen.image.thresholds``) makes for a layer written through ``w_*`` and ``base``/``n_thresh``
    set as ``sdhw.writeback`` sets them, every output equals ``golden.quant.requantize`` of the sum saturated to
    int32 (the block's definition: a sum past int32 counts every threshold or none), for every accumulator and
    bias; each element comes out exactly once (any order: the block's outputs may overtake each other, so
    elements are followed by their tag), within ``LATENCY + 3`` ready cycles; the output stream keeps the
    handshake rules.

    Contract: the table written before the first element (cycles ``0 .. n_thresh - 1``); entries past
    ``n_thresh`` keep whatever the memory held (free values: a formal memory without initial contents)."""

    def __init__(self, dut: ThresholdRequantiser | None = None, *, m0: int = DEFAULT_M0, shift: int = DEFAULT_SHIFT,
                 zero_point: int = TABLE_ZERO_POINT, relu: bool = True, acc_bits: int = 28, tag_bits: int = 3,
                 units: int = 1):
        self.layer = requant_layer(m0, shift, zero_point, relu)
        self.base, self.table = thresholds(self.layer)
        self.acc_bits, self.tag_bits = acc_bits, tag_bits
        self.dut = dut if dut is not None else ThresholdRequantiser(acc_bits=acc_bits, tag_bits=tag_bits, units=units)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        layer, count = self.layer, len(self.table)
        written = Signal(range(count + 1), name="table_written")
        writing = written < count
        with m.If(writing):
            m.d.sync += written.eq(written + 1)
        entries = Array(Const(t, signed(32)) for t in self.table)
        m.d.comb += [dut.w_en.eq(writing), dut.w_addr.eq(written), dut.w_data.eq(entries[written]),
                     dut.base.eq(self.base), dut.n_thresh.eq(count)]
        free_source(m, dut.i, "i")
        m.d.comb += Assume(~(writing & dut.i.valid))
        checked_sink(m, dut.o, "o")
        # the followed element's accumulator and bias are free constants, so the reference (a 64-bit product)
        # is worked out once, tied to a free value in the first cycle, not unrolled into every cycle
        acc, bias = AnyConst(signed(self.acc_bits)), AnyConst(signed(32))
        expected = AnyConst(signed(8))
        value = requant_reference(m, _saturated_sum(m, acc, bias), Const(layer.m0, unsigned(31)),
                                  Const(layer.shift, signed(6)), layer.out_q.zero_point, layer.act_min, layer.act_max)
        m.d.comb += Assume(~Initial() | (expected == value[:8]))
        board = Scoreboard(m, accepted=dut.i.valid & dut.i.ready, emitted=dut.o.valid & dut.o.ready,
                           expected=expected, got=dut.o.payload.value, ready=dut.o.ready,
                           max_ready_cycles=ThresholdSearch.LATENCY + 3, index_bits=1, count_bits=self.tag_bits,
                           out_tag=dut.o.payload.tag)
        m.d.comb += Assume(dut.i.payload.tag == board.count_in)
        with m.If(dut.i.valid & (board.count_in == board.index)):
            m.d.comb += Assume((dut.i.payload.acc == acc) & (dut.i.payload.bias == bias))
        # the second element out, after a stall, between two thresholds (neither the ReLU nor 127)
        stalled = Signal()
        with m.If(dut.o.valid & ~dut.o.ready):
            m.d.sync += stalled.eq(1)
        out = board.expected_q.as_signed()
        m.d.comb += Cover(board.taken & stalled & (board.index == 1) & (out > layer.act_min) & (out < ACT_MAX))
        return m


# ---------------------------------------------------------------------------------------------- sequencer
#: the sequencer proof's build: the UP5K's (read latency 1, table requantiser) with two descriptor slots, so that a
#: program of every kind fits the check's depth: an end marker, a layer then an end marker, two layers and no end
SEQUENCER_CONFIG = AcceleratorConfig(device="up5k", desc_layers=2)
#: the data path's bound in the sequencer proof: a started layer reports done at most this many cycles after its
#: ``layer_start`` (the sequencer's bound holds for any such layer time; one value per proof keeps it short)
DEFAULT_LAYER_CYCLES = 2


def sequencer_bound(desc_layers: int, desc_latency: int, layer_cycles: int) -> int:
    """The most cycles ``busy`` stays up after ``start``: every slot a layer (no end marker, ``ERR_NO_END``
    after the last), each fetched and checked in ``DESC_WORDS + desc_latency + 4`` cycles and running until its
    done (at most ``layer_cycles`` after ``layer_start``) has gone through the sequencer's register and waited
    out the two cycles the sequencer ignores a stale done for: ``layer_cycles + 2``, then steps to the next slot in a
    cycle of its own."""
    return desc_layers * (DESC_WORDS + desc_latency + 7 + layer_cycles)


def checksum_by_halves(words) -> Value:
    """``golden``'s descriptor checksum, ``CHECKSUM_SEED + sum(words)`` modulo 2**32, summed in 16-bit halves:
    each word's low half into a 17-bit sum, its high half and the low sum's carry of the word before into the
    high sum, the last carry folded in at the end.

    A SAT solver cannot prove this equal to a 32-bit running sum over 15 free words in reasonable time (adder
    chains in a different order: 45 s for 8 words, and growing fast), so the sequencer proof states the
    checksum this way and :func:`split_sum_step_lemma` proves the two equal by induction over the words."""
    low, high = Const(CHECKSUM_SEED & 0xFFFF, 17), Const(CHECKSUM_SEED >> 16, 16)
    for word in words:
        low, high = (low[:16] + word[:16])[:17], (high + word[16:] + low[16])[:16]
    return Cat(low[:16], (high + low[16])[:16])


def split_sum_step_lemma(m: Module) -> None:
    """The induction step behind :func:`checksum_by_halves`: if a 32-bit sum ``total`` equals the halves
    ``(low, high)`` (``low[:16]`` its low half, ``high + low[16]`` its high half), adding a word to both keeps
    them equal; the base case is the seed in both (``low[16] = 0``). Asserted for free values."""
    total, low, high, word = AnyConst(32), AnyConst(17), AnyConst(16), AnyConst(32)
    next_low, next_high = (low[:16] + word[:16])[:17], (high + word[16:] + low[16])[:16]
    before = total == Cat(low[:16], (high + low[16])[:16])
    after = (total + word)[:32] == Cat(next_low[:16], (next_high + next_low[16])[:16])
    m.d.comb += Assert(~before | after, "checksum: the sum by halves differs from the 32-bit sum")


class SequencerProof(Elaboratable):
    """:class:`~sdhw.sequencer.Sequencer`: no program hangs the accelerator.

    Free inputs: the descriptor memory's contents (every word of every slot any 32-bit value, constant as the
    host cannot write while ``busy``; read like ``sdhw.memories.HostMemory``, latency ``desc_latency``), the
    host's ``start`` and ``clear`` in every cycle, and the data path's ``layer_done``, ``fail`` and ``fail_code``
    in every cycle. Assumed (the data path's contract): a started layer reports ``layer_done`` within
    ``layer_cycles`` cycles of its ``layer_start`` (``fail`` may end it at any time, ``layer_done`` may be high at
    any other time).

    Asserted in every cycle of a bounded model check from reset, so for every run that starts early enough to
    end within the check's depth (the sequencer's ``IDLE`` clears every register a run's timing depends on, so
    a later run behaves the same; the check does not prove that part):

    * ``busy`` never stays up for more than :func:`sequencer_bound` cycles, and when it falls, ``done`` or
      ``error`` rises with it (never both);
    * ``layer_start`` pulses only for a slot inside the descriptor memory;
    * every copy of ``busy``, ``flush`` and ``layer_start`` (``busy_copy``, ``flush_copy``, ``layer_start_copy``)
      equals the original.

    Covers: a run that ends with ``done`` after a layer, one that ends with ``error``, and one that lasts exactly
    the bound (so the bound is tight).
    """

    def __init__(self, dut: Sequencer | None = None, *, cfg: AcceleratorConfig = SEQUENCER_CONFIG,
                 desc_latency: int = 1, layer_cycles: int = DEFAULT_LAYER_CYCLES):
        self.cfg, self.desc_latency, self.layer_cycles = cfg, desc_latency, layer_cycles
        self.dut = dut if dut is not None else Sequencer(cfg, desc_latency=desc_latency, busy_copies=2,
                                                                 flush_copies=2, start_copies=2)
        self.bound = sequencer_bound(cfg.desc_layers, desc_latency, layer_cycles)

    def descriptor_memory(self, m: Module) -> list:
        """Drive ``desc_data`` from a memory of free constant words; returns the words."""
        dut = self.dut
        words = [AnyConst(32) for _ in range(self.cfg.desc_layers * DESC_WORDS)]
        read = Signal(32, name="desc_read")                 # the memory's registered read ...
        with m.If(dut.desc_en):
            m.d.sync += read.eq(Array(words)[dut.desc_addr])
        for _ in range(self.desc_latency - 1):              # ... then a latency-2 build's output register
            read = last_cycle(m, read, "desc_read_reg")
        m.d.comb += dut.desc_data.eq(read)
        return words

    def data_path(self, m: Module, *, exact: bool) -> None:
        """The data path's answers: ``layer_done`` within ``layer_cycles`` of ``layer_start`` (cycle 0), free
        at other times, and ``fail`` free; ``exact``: ``layer_done`` exactly ``layer_cycles`` after it, no
        ``fail``."""
        dut = self.dut
        pending = Signal()                     # a started layer has not reported done yet
        age = Signal(range(self.layer_cycles + 1))
        with m.If(dut.layer_start):
            m.d.sync += [pending.eq(1), age.eq(1)]
        with m.Else():
            with m.If(age < self.layer_cycles):
                m.d.sync += age.eq(age + 1)
            with m.If(dut.layer_done):
                m.d.sync += pending.eq(0)
        due = pending & ~dut.layer_start & (age == self.layer_cycles)
        if exact:
            m.d.comb += [dut.layer_done.eq(due), dut.fail.eq(0), dut.fail_code.eq(0)]
        else:
            m.d.comb += [dut.layer_done.eq(AnySeq(1)), dut.fail.eq(AnySeq(1)), dut.fail_code.eq(AnySeq(8))]
            m.d.comb += Assume(~due | dut.layer_done)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        slots = self.cfg.desc_layers
        self.descriptor_memory(m)
        m.d.comb += [dut.start.eq(AnySeq(1)), dut.clear.eq(AnySeq(1))]
        self.data_path(m, exact=False)
        busy_for = Signal(range(self.bound + 2), name="busy_for")
        m.d.sync += busy_for.eq(Mux(dut.busy, Mux(busy_for > self.bound, busy_for, busy_for + 1), 0))
        m.d.comb += Assert(busy_for <= self.bound, f"sequencer: busy for more than {self.bound} cycles")
        was_busy = last_cycle(m, dut.busy, "was_busy")
        fell = was_busy & ~dut.busy
        m.d.comb += [Assert(~fell | dut.done | dut.error, "sequencer: busy fell without done or error"),
                     Assert(~(dut.done & dut.error), "sequencer: done and error together"),
                     Assert(~dut.layer_start | (dut.layer_index < slots), "sequencer: a slot past the memory")]
        m.d.comb += [Assert(copy == dut.busy, "sequencer: a copy of busy differs from busy") for copy in dut.busy_copy]
        m.d.comb += [Assert(copy == dut.flush, "sequencer: a copy of flush differs from flush")
                     for copy in dut.flush_copy]
        m.d.comb += [Assert(copy == dut.layer_start, "sequencer: a copy of layer_start differs from it")
                     for copy in dut.layer_start_copy]
        layers = Signal(range(slots + 1), name="layers_started")
        with m.If(dut.start & ~dut.busy):
            m.d.sync += layers.eq(0)
        with m.Elif(dut.layer_start):
            m.d.sync += layers.eq(layers + 1)
        m.d.comb += [Cover(fell & dut.done & (layers > 0)),
                     Cover(fell & dut.error),
                     Cover(fell & (busy_for == self.bound))]
        return m


class SequencerChecksumProof(SequencerProof):
    """:class:`~sdhw.sequencer.Sequencer`: a descriptor slot whose checksum word is not ``CHECKSUM_SEED`` plus
    the sum of its other words (modulo 2**32) never pulses ``layer_start``.

    For any descriptor-memory contents (free constant words, as in :class:`SequencerProof`), in a run started in
    the first cycle after reset, checked to the depth of the first slot's decision (:data:`CHECKSUM_DEPTH`):
    the first slot's verdict. The sums restart at every slot's fetch, so later slots go through the same logic,
    but the check does not reach them: with the second slot's decision in reach (a layer answering exactly
    ``layer_cycles`` after its start, so that the words arrive in known cycles) the solver takes over seven
    minutes. The slot's verdict is :func:`checksum_by_halves` (equal to the 32-bit sum by
    :func:`split_sum_step_lemma`, also asserted here).

    Covers: a layer started (the solver found words with a matching checksum) and a run stopped by
    ``ERR_CHECKSUM``."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        words = self.descriptor_memory(m)
        m.d.comb += [dut.start.eq(Initial()), dut.clear.eq(0)]
        self.data_path(m, exact=True)
        # each slot's verdict worked out once (the words are constants): a free bit tied to it in the first cycle,
        # so the sums are not unrolled into every cycle of the check
        good = []
        for slot in range(self.cfg.desc_layers):
            first = slot * DESC_WORDS
            ok = AnyConst(1)
            verdict = checksum_by_halves(words[first:first + CHECKSUM_WORD]) == words[first + CHECKSUM_WORD]
            m.d.comb += Assume(~Initial() | (ok == verdict))
            good.append(ok)
        split_sum_step_lemma(m)
        m.d.comb += Assert(~dut.layer_start | Array(good)[dut.layer_index],
                           "sequencer: a layer started from a slot whose checksum is wrong")
        m.d.comb += [Cover(dut.layer_start),
                     Cover(dut.error & (dut.err_code == hb.ERR_CHECKSUM))]
        return m


# ---------------------------------------------------------------------------------------------- the list
@dataclass(frozen=True)
class ProofSpec:
    """A harness and the check it needs: ``mode``/``depth`` (:func:`verify.formal.check`), what it proves, the
    parameters it proves it for, and the broken variants (:mod:`verify.mutants`) that must make it fail.

    ``build`` is ``None`` for a block a build uses that has no proof harness (``claim`` says which): a row in a
    build's list of proofs that is reported, never run.

    ``mutant_mode``/``mutant_depth``: the check of the broken variants, when it is not the proof's. A k-induction
    proof is short (its base case checks only ``depth`` cycles from reset), shorter than a variant needs to show
    its fault from reset, and a failed induction step alone does not show a fault (``UNKNOWN``), so such a proof's
    variants get a bounded check deep enough to fail."""

    name: str
    block: str
    build: Callable[..., Elaboratable] | None
    depth: int
    mode: str = "bmc"
    cover_depth: int | None = None
    claim: str = ""
    parameters: str = ""
    dut_kwargs: dict = field(default_factory=dict)
    mutants: tuple[str, ...] = ()
    mutant_mode: str | None = None
    mutant_depth: int | None = None

    @property
    def runnable(self) -> bool:
        return self.build is not None

    def check_of(self, mutant: str | None = None) -> tuple[str, int]:
        """The mode and depth of the check of the block itself (``mutant`` ``None``) or of its broken variant."""
        if mutant is None:
            return self.mode, self.depth
        return self.mutant_mode or self.mode, self.mutant_depth or self.depth

    def harness(self, mutant: str | None = None) -> Elaboratable:
        """The harness around the block, or around its broken variant ``mutant`` (:data:`verify.mutants.MUTANTS`)."""
        if self.build is None:
            raise ValueError(f"{self.name}: no proof harness for {self.block}")
        if mutant is None:
            return self.build(**self.dut_kwargs)
        from .mutants import MUTANTS
        return self.build(MUTANTS[mutant](**self.dut_kwargs), **self.dut_kwargs)


def rebuild_spec(*, exp_bits: int = 2, weight_bits: int = 8) -> ProofSpec:
    """The rebuild unit's proof at ``exp_bits``/``weight_bits`` (rounding shift :data:`DEFAULT_WSHIFT`)."""
    return ProofSpec(
        "rebuild", "sdhw.rebuild.RebuildUnit", RebuildProof, depth=9,
        dut_kwargs={"exp_bits": exp_bits, "weight_bits": weight_bits, "tag_bits": 3},
        parameters=f"exp_bits={exp_bits}, weight_bits={weight_bits}, wshift={DEFAULT_WSHIFT}",
        claim=f"weight = golden rebuild rule for every code triple ({exp_bits} exponent bits) and basis column at "
              f"wshift={DEFAULT_WSHIFT}; taps in order, none lost or duplicated; handshake rules",
        mutants=("rebuild_flip_bit", "rebuild_drop_valid"))


def requant_spec(*, acc_bits: int = 32) -> ProofSpec:
    """The pipelined requantiser's proof for ``acc_bits``-bit accumulators (multiplier :data:`DEFAULT_M0`)."""
    return ProofSpec(
        "requant", "sdhw.requant.Requantiser", RequantProof, depth=13, cover_depth=16,
        dut_kwargs={"acc_bits": acc_bits, "tag_bits": 2},
        parameters=f"acc_bits={acc_bits}, m0={DEFAULT_M0}, shift={DEFAULT_SHIFT}",
        claim=f"output = golden requantize for every int32 sum of a {acc_bits}-bit accumulator and its bias, every "
              f"zero point and clamp at m0={DEFAULT_M0}, shift={DEFAULT_SHIFT}; order, no loss; handshake rules",
        mutants=("requant_flip_bit", "requant_duplicate"))


def serial_requant_spec(*, acc_bits: int = 32) -> ProofSpec:
    """The serial requantiser's row: a block with no proof harness (its latency depends on the shift, which
    :class:`RequantProof`'s bound does not)."""
    return ProofSpec(
        "serial_requant", "sdhw.requant.SerialRequantiser", None, depth=0, parameters=f"acc_bits={acc_bits}",
        claim="no proof for this block's values (the requant proof is of the pipelined Requantiser; the serial "
              "one's, requant = \"serial\", are checked by the regression only; its stream, counts and tags are "
              "writeback_serial's)")


def threshold_spec(*, acc_bits: int = 28, units: int = 1) -> ProofSpec:
    """The table requantiser's proof for ``acc_bits``-bit accumulators and ``units`` threshold searches."""
    return ProofSpec(
        "threshold", "sdhw.requant.ThresholdRequantiser", ThresholdProof, depth=32, cover_depth=36,
        dut_kwargs={"acc_bits": acc_bits, "tag_bits": 3, "units": units},
        parameters=f"acc_bits={acc_bits}, units={units}, m0={DEFAULT_M0}, shift={DEFAULT_SHIFT}",
        claim=f"with the compiler's table for m0={DEFAULT_M0}, shift={DEFAULT_SHIFT}, ReLU at zero point "
              f"{TABLE_ZERO_POINT}: output = golden requantize for every {acc_bits}-bit accumulator and bias "
              f"({units} search unit{'s' if units > 1 else ''}); each element out once (by tag); handshake rules",
        mutants=("threshold_flip_bit", "threshold_ignore_count"))


def _sequencer_parameters(cfg: AcceleratorConfig, desc_latency: int, build_slots: int | None) -> str:
    slots = f"{cfg.desc_layers} slots" + (f" of the build's {build_slots}" if build_slots is not None else "")
    return f"{cfg.device}, desc_latency={desc_latency}, {slots}"


def sequencer_spec(*, cfg: AcceleratorConfig = SEQUENCER_CONFIG, desc_latency: int = 1,
                   build_slots: int | None = None) -> ProofSpec:
    """The sequencer's no-hang proof for ``cfg`` (its ``desc_layers`` slots: the check's depth grows with them)
    read at ``desc_latency``; ``build_slots``: the slots of the build ``cfg`` stands for, when it has more."""
    slots = cfg.desc_layers
    bound = sequencer_bound(slots, desc_latency, DEFAULT_LAYER_CYCLES)
    per_slot = sequencer_bound(1, desc_latency, DEFAULT_LAYER_CYCLES)
    proven = f"proven for {slots} of the build's {build_slots} slots" if build_slots else f"proven for {slots} slots"
    return ProofSpec(
        "sequencer", "sdhw.sequencer.Sequencer", SequencerProof, depth=bound + 3,
        dut_kwargs={"cfg": cfg, "desc_latency": desc_latency},
        parameters=_sequencer_parameters(cfg, desc_latency, build_slots),
        claim=f"for any descriptor contents, host and data path whose done comes within {DEFAULT_LAYER_CYCLES} "
              f"cycles of layer_start, busy falls with done or error within {per_slot} cycles per slot "
              f"({proven}: {bound} cycles, tight; the check's depth grows with the slots)",
        mutants=("sequencer_miss_done",))


def checksum_depth(desc_latency: int) -> int:
    """The checksum proof's depth: the first slot's layer_start (or error), ``DESC_WORDS + desc_latency + 5``
    cycles after ``start`` in the first cycle."""
    return DESC_WORDS + desc_latency + 5 + 1


#: the checksum proof's depth at read latency 1
CHECKSUM_DEPTH = checksum_depth(1)


def sequencer_checksum_spec(*, cfg: AcceleratorConfig = SEQUENCER_CONFIG, desc_latency: int = 1,
                            build_slots: int | None = None) -> ProofSpec:
    """The sequencer's checksum proof for ``cfg`` read at ``desc_latency`` (see :func:`sequencer_spec`)."""
    return ProofSpec(
        "sequencer_checksum", "sdhw.sequencer.Sequencer", SequencerChecksumProof, depth=checksum_depth(desc_latency),
        dut_kwargs={"cfg": cfg, "desc_latency": desc_latency},
        parameters=_sequencer_parameters(cfg, desc_latency, build_slots),
        claim="for any descriptor contents, a first slot with a bad checksum never pulses layer_start (a run "
              "from reset; every slot goes through the same check)",
        mutants=("sequencer_start_bad_checksum",))


def bridge_spec(*, max_words: int = BRIDGE_MAX_WORDS, timeout: int = BRIDGE_TIMEOUT) -> ProofSpec:
    """The UART bridge's proof (:class:`~verify.bridge_proof.BridgeProof`) at ``max_words`` words per request and
    an inter-byte timeout of ``timeout`` cycles: a k-induction, for runs of any length; the covers and the broken
    variants are checked from reset, to the depths they need."""
    return ProofSpec(
        "bridge", "fpga.bridge.UartBridge", BridgeProof, depth=2, mode="prove",
        cover_depth=bridge_cover_depth(max_words, timeout),
        dut_kwargs={"max_words": max_words, "timeout": timeout},
        parameters=f"max_words={max_words}, timeout={timeout}",
        claim=f"in every reachable state (k-induction, no bound), for any bytes, framing errors, tx stalls and bus "
              f"read latency: a bus write or read only for a good frame (known command, ADDR[23:20] = 0, COUNT in "
              f"1..{max_words}, no framing error, no {timeout}-cycle gap, CRC over CMD..CHECK 0), the k-th at "
              f"ADDR + k with the k-th payload word, exactly COUNT, writes before the response; one response per "
              f"frame with the status, count, data and CRC the frame earns; rx.ready and tx stream rules",
        mutants=("bridge_write_rejected", "bridge_drop_second_write", "bridge_read_wrong_address",
                 "bridge_crc_init_zero"),
        mutant_mode="bmc", mutant_depth=bridge_mutant_depth(max_words))


# ---------------------------------------------------------------------------------------------- memory reader
#: the reader proofs' memory: 4 words of 4 bits (pointers of 3 bits when limited), so a run wraps the memory and,
#: limited, the pointers, within the check's depth
READER_ADDR_BITS, READER_WIDTH = 2, 4


def reader_window(latency: int) -> int:
    """Cycles from a word becoming readable (a ``seek`` to it, or the ``limit`` passing it) to its offer on ``o``
    (the docstring's ``c + 2`` / ``c + 4``): the reader sees it in a register, reads it, and the memory (and, at
    latency 2, its output register and the reader's queue) hand it on."""
    return 2 if latency == 1 else 4


class ReaderProof(Elaboratable):
    """:class:`~sdhw.reader.SequentialReader` over a modelled memory (a registered read with enable, non-transparent,
    plus an output register at ``latency`` 2), under any consumer backpressure and any ``seek`` in any cycle.

    Unlimited (the code-word reader): the memory holds free constant words, ``seek_addr`` is free. Limited (the
    issuer's entry reader over the fill's ring buffer): a free producer writes any word to any slot not holding a
    word still wanted (pointer below ``consumed + 2**addr_bits``, and not published yet) and publishes written
    words by moving ``limit`` on (any number at a time, only over words it has written); a ``seek`` goes back
    to a word still in the ring (at most ``2**addr_bits`` behind ``limit``, every word from it to ``limit``
    intact) -- the contract the issuer keeps. The harness tracks pointers unwrapped (two bits more than the
    block's, never wrapping in a check) and hands the block their low bits, so a word's pointer is unambiguous
    across wraps; the producer starts at 0 (reset) or, with a seek to it in the first cycle, two words before
    the block's pointers wrap.

    Asserted: ``o`` keeps the stream rules, but for the word a ``seek`` drops (the consumer's own request: its
    offer may end in the cycle after the seek); every word taken is the memory's word at the next pointer of the
    run (from the last ``seek``, or 0 from reset), so each once, in address order, none dropped or stale (words
    read before a ``seek``, also in flight, never come out); limited, none at or past ``limit``; ``consumed`` is
    the next pointer in every cycle. Bounds (the docstring's latency and throughput): no word is offered in the
    ``reader_window - 1`` cycles after a seek; a word that was readable ``reader_window`` cycles ago (the
    ``limit`` past it then; unlimited: always) with no seek since is offered now -- one word per cycle, no
    bubble. Unlimited this makes ``o.valid`` exactly "no seek in the last ``reader_window - 1`` cycles".

    Covers: after a stall, the word past the memory's last (unlimited: the run wrapped the memory), and the word
    after a ``seek`` that dropped an offered word; limited: a run's last published word taken after a stall with
    the pointers wrapped, and a rewind (a seek back over words already read) whose second word is taken."""

    def __init__(self, dut: SequentialReader | None = None, *, addr_bits: int = READER_ADDR_BITS,
                 width: int = READER_WIDTH, latency: int = 1, limited: bool = False):
        self.addr_bits, self.width, self.latency, self.limited = addr_bits, width, latency, limited
        self.dut = dut if dut is not None else SequentialReader(addr_bits=addr_bits, width=width, latency=latency,
                                                                limited=limited)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        ab, depth = self.addr_bits, 1 << self.addr_bits
        ptr = ab + (1 if self.limited else 0)
        wide = ptr + 2 if self.limited else ptr          # limited: pointers unwrapped (never wrap in a check)
        seek = AnySeq(1)
        m.d.comb += dut.seek.eq(seek)
        head = Signal(wide, name="reader_head")          # the pointer of the next word to take
        run = Signal(range(depth + 3), name="reader_run")  # words taken since the seek (saturating)
        # ---- the memory and the producer
        slots = [Signal(self.width, name=f"slot{s}") for s in range(depth)]
        if not self.limited:
            m.d.comb += [slot.eq(AnyConst(self.width)) for slot in slots]
            seek_to = AnySeq(ptr)
            m.d.comb += dut.seek_addr.eq(seek_to)
            limit = None
        else:
            tags = [Signal(wide, name=f"slot{s}_tag") for s in range(depth)]      # the pointer a slot's word is of
            written = [Signal(name=f"slot{s}_written") for s in range(depth)]
            # the producer's pointer starts at 0 (the reset state) or two words before the pointers wrap, the
            # consumer seeking to it in the first cycle (as the issuer does at a layer's start): a wrap comes soon
            start = Mux(AnyConst(1), (1 << ptr) - 2, 0)
            published = Signal(wide, name="reader_published")
            limit = Signal(wide, name="reader_limit")
            m.d.comb += [limit.eq(start + published), dut.limit.eq(limit[:ptr]),
                         Assume(limit < (1 << wide) - 2 * depth), Assume(~Initial() | seek | (start == 0))]

            def intact(p, tag_of=tags, written_of=written):
                return (Array(tag_of)[p[:ab]] == p) & Array(written_of)[p[:ab]]

            back = AnySeq(range(depth + 1))               # a seek to the word this far behind the limit
            seek_to = Signal(wide, name="reader_seek_to")
            m.d.comb += [seek_to.eq(limit - back), dut.seek_addr.eq(seek_to[:ptr])]
            m.d.comb += Assume(~seek | (back <= limit))
            m.d.comb += [Assume(~seek | (back <= i) | intact((seek_to + i)[:wide])) for i in range(depth)]
            w_en, w_ptr, w_data = AnySeq(1), AnySeq(wide), AnySeq(self.width)
            oldest = Mux(seek, seek_to, head)             # the oldest word still wanted
            m.d.comb += Assume(~w_en | ((w_ptr >= limit) & (w_ptr < oldest + depth)))
            tags_next = [Signal(wide, name=f"slot{s}_tag_next") for s in range(depth)]
            written_next = [Signal(name=f"slot{s}_written_next") for s in range(depth)]
            for s in range(depth):
                here = w_en & (w_ptr[:ab] == s)
                m.d.comb += [tags_next[s].eq(Mux(here, w_ptr, tags[s])), written_next[s].eq(here | written[s])]
                m.d.sync += [tags[s].eq(tags_next[s]), written[s].eq(written_next[s])]
                with m.If(here):
                    m.d.sync += slots[s].eq(w_data)
            step = AnySeq(range(depth + 1))               # words published this cycle
            m.d.comb += Assume(limit + step <= oldest + depth)
            m.d.comb += [Assume((step <= i) | intact((limit + i)[:wide], tags_next, written_next))
                         for i in range(depth)]
            m.d.sync += published.eq(published + step)
        # the memory's read: registered, with enable, the word before this cycle's write; latency 2 one register more
        read = Signal(self.width, name="mem_read")
        with m.If(dut.rd_en):
            m.d.sync += read.eq(Array(slots)[dut.rd_addr])
        if self.latency == 2:
            read = last_cycle(m, read, "mem_read_reg")
        m.d.comb += dut.rd_data.eq(read)
        # ---- the consumer and the reference
        # the stream rules, but for the word a seek drops: the consumer's own request (the fill and the issuer seek
        # the reader they consume), so the offer may end in the cycle after a seek
        m.d.comb += dut.o.ready.eq(AnySeq(1))
        offered = last_cycle(m, dut.o.valid & ~dut.o.ready & ~seek, "o_stalled")
        was_data = last_cycle(m, dut.o.payload.data, "o_was_data")
        with m.If(offered):
            m.d.comb += [Assert(dut.o.valid, "reader: valid dropped before ready (no seek)"),
                         Assert(dut.o.payload.data == was_data, "reader: data changed before ready (no seek)")]
        take = dut.o.valid & dut.o.ready
        with m.If(seek):
            m.d.sync += [head.eq(seek_to), run.eq(0)]
        with m.Elif(take):
            m.d.sync += [head.eq(head + 1), run.eq(Mux(run == depth + 2, run, run + 1))]
        m.d.comb += Assert(dut.consumed == head[:ptr], "reader: consumed is not the next word's address")
        with m.If(take):
            m.d.comb += Assert(dut.o.payload.data == Array(slots)[head[:ab]],
                               "reader: a word out of order, repeated, stale or not the memory's")
            if self.limited:
                m.d.comb += [Assert(head < limit, "reader: a word at or past the limit"),
                             Assert((head >= limit) | intact(head), "reader proof: the harness lost a wanted word")]
        # ---- the bounds: nothing in the window after a seek (reset counts as a seek the cycle before), and a word
        # readable a window ago offered now
        window = reader_window(self.latency)
        recent = []
        for k in range(1, window):
            s = Signal(name=f"seek_{k}_ago", init=int(k == 1))
            m.d.sync += s.eq(seek if k == 1 else recent[-1])
            recent.append(s)
        seeked = Cat(*recent).any()
        m.d.comb += Assert(~(seeked & dut.o.valid), "reader: a word offered too soon after a seek")
        if limit is None:
            m.d.comb += Assert(seeked | dut.o.valid, "reader: no word offered (a bubble)")
        else:
            limit_then = limit
            for k in range(window):
                limit_then = last_cycle(m, limit_then, f"limit_{k + 1}_ago")
            m.d.comb += Assert(seeked | (limit_then <= head) | dut.o.valid,
                               f"reader: a word readable {window} cycles ago not offered (a bubble)")
        # ---- the covers
        stalled, dropped = Signal(name="run_stalled"), Signal(name="seek_dropped")
        with m.If(seek):
            m.d.sync += [stalled.eq(0), dropped.eq(dut.o.valid & ~dut.o.ready)]
        with m.Elif(dut.o.valid & ~dut.o.ready):
            m.d.sync += stalled.eq(1)
        if limit is None:
            m.d.comb += [Cover(take & stalled & (run == depth)),
                         Cover(take & dropped & (run == 1))]
        else:
            rewound = Signal(name="rewound")
            with m.If(seek):
                m.d.sync += rewound.eq(seek_to < head)
            m.d.comb += [Cover(take & stalled & (head + 1 == limit) & (run >= 2) & (head >= (1 << ptr))),
                         Cover(take & rewound & dropped & (run == 1))]
        return m


# ---------------------------------------------------------------------------------------------------- drain
#: the drain proof's default shape: 3 lanes of 4-bit sums, 3-bit tags, a 4-entry bias memory of free 32-bit words
DRAIN_LANES, DRAIN_ACC_BITS, DRAIN_TAG_BITS, DRAIN_BIAS_BITS = 3, 4, 3, 2


class DrainProof(Elaboratable):
    """:class:`~sdhw.drain.Drain`: passes loaded with free sums, output and bias addresses and live lanes, under
    any consumer backpressure; the bias memory holds free constant words, read with latency 1 (registered, with
    enable). Contract (``Assume``d): ``load`` never while ``busy``; ``lanes`` in 1..``lanes`` (the sequencer
    refuses a ``last_lanes`` of 0).

    Asserted: ``o`` keeps the stream rules; the ``k``-th element out (``k`` solver-chosen) is lane ``q`` of the
    pass it was loaded in, with that lane's sum, the bias entry ``bias_addr + q`` and tag ``out_addr + q``, so
    lanes leave in lane order, each once, none extra (an element out only if one is pending: count in = count
    out); ``o.valid`` exactly when an element is pending and not loaded in the cycle before (``register_output``;
    without it, whenever one is pending): the first element 1 cycle after ``load`` (2), then one per cycle, no
    bubble; ``busy`` exactly when the shadow holds lanes not yet taken, ``busy_next`` its next value, ``idle``
    exactly when nothing is pending.

    Covers: the last lane of a second full pass taken after a stall; a pass loaded right behind the one before
    (with ``register_output``: while its last element still waits in the output register)."""

    def __init__(self, dut: Drain | None = None, *, lanes: int = DRAIN_LANES, acc_bits: int = DRAIN_ACC_BITS,
                 tag_bits: int = DRAIN_TAG_BITS, bias_bits: int = DRAIN_BIAS_BITS, register_output: bool = False):
        self.n, self.acc_bits, self.tag_bits, self.bias_bits = lanes, acc_bits, tag_bits, bias_bits
        self.register_output = register_output
        self.dut = dut if dut is not None else Drain(lanes=lanes, acc_bits=acc_bits, tag_bits=tag_bits,
                                                     bias_bits=bias_bits, register_output=register_output)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        n = self.n
        biases = [AnyConst(signed(32)) for _ in range(1 << self.bias_bits)]
        bias_read = Signal(signed(32), name="bias_read")
        with m.If(dut.bias_rd_en):
            m.d.sync += bias_read.eq(Array(biases)[dut.bias_rd_addr])
        m.d.comb += dut.bias_rd_data.eq(bias_read)
        load = AnySeq(1)
        sums = Signal(dut.sums.shape(), name="sums_in")
        m.d.comb += [sums.as_value().eq(AnySeq(len(sums.as_value()))), dut.sums.eq(sums), dut.load.eq(load),
                     dut.out_addr.eq(AnySeq(self.tag_bits)), dut.bias_addr.eq(AnySeq(self.bias_bits)),
                     dut.lanes.eq(AnySeq(len(dut.lanes)))]
        m.d.comb += Assume(~load | (~dut.busy & (dut.lanes >= 1) & (dut.lanes <= n)))
        checked_sink(m, dut.o, "o")
        emit = dut.o.valid & dut.o.ready
        # elements counted in (at load, all of a pass's lanes) and out; one, chosen by the solver, followed
        count_bits = (4 * n).bit_length() + 1
        count_in = Signal(count_bits, name="drain_count_in")
        count_out = Signal(count_bits, name="drain_count_out")
        m.d.comb += Assume(count_in < (1 << count_bits) - n)
        index = AnyConst(count_bits - 1)
        # the followed element's sum and tag, and one bit of its bias (the bit chosen by the solver too: the proof holds
        # for every bit; all 32 at once make the check three times slower)
        bit = AnyConst(range(32))
        captured = Signal(name="drain_captured")
        want_acc, want_tag = Signal(signed(self.acc_bits), name="want_acc"), Signal(self.tag_bits, name="want_tag")
        want_bias_bit = Signal(name="want_bias_bit")
        lane = (index - count_in)[:len(dut.lanes)]
        with m.If(load):
            m.d.sync += count_in.eq(count_in + dut.lanes)
            with m.If((index >= count_in) & (index < count_in + dut.lanes)):
                entry = Array(biases)[(dut.bias_addr + lane)[:self.bias_bits]]
                m.d.sync += [captured.eq(1), want_acc.eq(Array(sums[q] for q in range(n))[lane]),
                             want_tag.eq(dut.out_addr + lane), want_bias_bit.eq(entry.bit_select(bit, 1))]
        pending = Signal(count_bits, name="drain_pending")
        m.d.comb += pending.eq(count_in - count_out)
        taken = emit & (count_out == index)
        with m.If(emit):
            m.d.sync += count_out.eq(count_out + 1)
            m.d.comb += Assert(pending != 0, "drain: an element out that was never loaded")
        with m.If(taken):
            m.d.comb += Assert(captured & (dut.o.payload.acc == want_acc) & (dut.o.payload.tag == want_tag)
                               & (dut.o.payload.bias.bit_select(bit, 1) == want_bias_bit),
                               "drain: an element out of lane order, or with the wrong sum, bias or tag")
        # the bounds and the flags
        if self.register_output:
            fresh = Signal.like(dut.lanes, name="drain_fresh")       # lanes loaded in the cycle before
            m.d.sync += fresh.eq(Mux(load, dut.lanes, 0))
            in_shadow = dut.o.valid
        else:
            fresh, in_shadow = 0, 0
        m.d.comb += [Assert(dut.o.valid == (pending > fresh), "drain: o.valid is not 'an element pending, past the "
                                                              "latency' (a bubble, or an element too soon)"),
                     Assert(dut.busy == (pending > in_shadow), "drain: busy is not 'lanes left in the shadow'"),
                     Assert(dut.busy == last_cycle(m, dut.busy_next, "busy_next_before"),
                            "drain: busy differs from busy_next a cycle before"),
                     Assert(dut.idle == (pending == 0), "drain: idle is not 'nothing pending'")]
        # the covers
        stalled = Signal(name="drain_stalled")
        with m.If(dut.o.valid & ~dut.o.ready):
            m.d.sync += stalled.eq(1)
        m.d.comb += Cover(taken & stalled & (index == 2 * n - 1) & (count_in == 2 * n))
        if self.register_output:
            m.d.comb += Cover(load & dut.o.valid & ~dut.o.ready)
        else:
            m.d.comb += Cover(load & last_cycle(m, emit, "emitted_before") & (count_in == n))
        return m


# ------------------------------------------------------------------------------------------------ writeback
#: the writeback proofs' shape: 16-bit sums (the requantisers' narrowest), 3-bit tags, one table search unit
WRITEBACK_ACC_BITS, WRITEBACK_TAG_BITS, WRITEBACK_UNITS = 16, 3, 1


#: the table writeback's fewest and most cycles from take to write (one unit, two searches): the input register,
#: the search and the output register; at most, the third of three elements taken back to back waits in the input
#: register for the first one's search to finish (``LATENCY - 1`` cycles after that search took it, 4 cycles
#: before the third's take)
WRITEBACK_TABLE_LATENCY = (ThresholdSearch.LATENCY + 2, 2 * ThresholdSearch.LATENCY - 4)


def writeback_latency(kind: str) -> tuple[int, int]:
    """The fewest and most cycles from an element's input handshake to its write, per requantiser ``kind`` (the
    write port never stalls): the pipelined one's ``LATENCY``, the table one's :data:`WRITEBACK_TABLE_LATENCY`,
    the serial one's ``latency(shift)`` over every shift."""
    if kind == "pipelined":
        return Requantiser.LATENCY, Requantiser.LATENCY
    if kind == "serial":
        return SerialRequantiser.BASE_LATENCY, SerialRequantiser.latency(-32)
    return WRITEBACK_TABLE_LATENCY


class WritebackProof(Elaboratable):
    """:class:`~sdhw.writeback.Writeback` with the requantiser of ``kind`` inside (``"table"``: the iCE40 builds',
    ``"pipelined"``: the ECP5 builds', ``"serial"``): the stream into it and the write port out of it, counted and
    followed by tag. Free: the producer on ``i`` (keeping the stream rules) with any sums, biases and tags; the
    per-layer parameters (constants, held for the run as the sequencer holds them); the table writes ``t_*`` (any
    entry, any value), which come only while no element is inside and none offered (``Assume``d: the contract).

    Asserted: a write only while an element is inside (taken and not yet written: never more writes than
    takes); ``idle`` exactly when none is inside (count in = count out); the element of a tag, chosen by the
    solver, that is taken once in the run is written exactly once at that tag, between :func:`writeback_latency`'s
    bounds after its take. The values written are the requantisers' proofs' (``requant``, ``threshold``; the
    serial one's have none).

    Covers: pipelined, the followed element written behind two others and ahead of three more; table, written
    after the longest wait (the bound is tight) with the producer stalled before it and two more taken behind it,
    and a table write once two elements have gone through; serial, written after the longest shift's latency, and
    a second element written after a stall."""

    def __init__(self, dut: Writeback | None = None, *, kind: str = "table", acc_bits: int = WRITEBACK_ACC_BITS,
                 tag_bits: int = WRITEBACK_TAG_BITS, units: int = WRITEBACK_UNITS):
        self.kind, self.tag_bits = kind, tag_bits
        self.dut = dut if dut is not None else Writeback(kind=kind, acc_bits=acc_bits, tag_bits=tag_bits,
                                                         units=units)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        no_reset(m)
        params = dut.params.as_value()
        m.d.comb += params.eq(AnyConst(len(params)))
        free_source(m, dut.i, "i")
        take = dut.i.valid & dut.i.ready
        count_in = Signal(6, name="wb_count_in")
        count_out = Signal(6, name="wb_count_out")
        inside = Signal(6, name="wb_inside")
        m.d.comb += [inside.eq(count_in - count_out), Assume(count_in != (1 << len(count_in)) - 1)]
        with m.If(take):
            m.d.sync += count_in.eq(count_in + 1)
        with m.If(dut.w_en):
            m.d.sync += count_out.eq(count_out + 1)
        m.d.comb += [dut.t_en.eq(AnySeq(1)), dut.t_addr.eq(AnySeq(8)), dut.t_data.eq(AnySeq(32)),
                     Assume(~dut.t_en | ((inside == 0) & ~dut.i.valid))]
        m.d.comb += [Assert(~dut.w_en | (inside != 0), "writeback: a write with no element inside"),
                     Assert(dut.idle == (inside == 0), "writeback: idle is not 'no element inside'")]
        # the followed element: the one taken with tag `tag`, a tag no other element of the run carries
        tag = AnyConst(self.tag_bits)
        mine_in = take & (dut.i.payload.tag == tag)
        mine_out = dut.w_en & (dut.w_addr == tag)
        pending, written = Signal(name="wb_pending"), Signal(name="wb_written")
        low, high = writeback_latency(self.kind)
        age = Signal(range(high + 2), name="wb_age")        # cycles since its take
        m.d.comb += Assume(~mine_in | ~(pending | written))
        with m.If(mine_in):
            m.d.sync += [pending.eq(1), age.eq(1)]
        with m.Elif(pending & (age <= high)):
            m.d.sync += age.eq(age + 1)
        with m.If(mine_out):
            m.d.sync += [pending.eq(0), written.eq(1)]
        m.d.comb += [Assert(~mine_out | pending, "writeback: a write at a tag not inside (an element written "
                                                 "twice, before its take, or at a wrong tag)"),
                     Assert(~(mine_out & (age < low)), f"writeback: an element written sooner than {low} cycles"),
                     Assert(~pending | mine_out | (age < high),
                            f"writeback: an element not written within {high} cycles (lost)")]
        # the covers
        stalled = Signal(name="wb_stalled")                 # the producer stalled before the followed element
        with m.If(dut.i.valid & ~dut.i.ready & ~pending & ~written):
            m.d.sync += stalled.eq(1)
        after = Signal(2, name="wb_after")                  # elements taken after the followed one (saturating)
        with m.If(take & pending & (after != 3)):
            m.d.sync += after.eq(after + 1)
        if self.kind == "table":
            m.d.comb += [Cover(mine_out & stalled & (age == high) & (after == 2) & (inside > 1)),
                         Cover(written & dut.t_en & (count_in >= 2))]
        elif self.kind == "serial":
            m.d.comb += [Cover(mine_out & (age == high)), Cover(mine_out & stalled & (count_out >= 1))]
        else:
            m.d.comb += Cover(mine_out & (after == 3) & (count_out >= 2) & (inside > 3))
        return m


def reader_depth(latency: int) -> int:
    """The reader proofs' depth: 8 cycles past the first word's (from reset, or from the first cycle's seek), enough
    for a run to wrap the memory and, limited, the pointers after a stall and a rewind (the covers)."""
    return 8 + reader_window(latency)


#: the drain proof's depth: two passes of :data:`DRAIN_LANES` lanes through, one stalled
DRAIN_DEPTH = 10


def reader_spec(*, latency: int = 1, limited: bool = False) -> ProofSpec:
    """The memory reader's proof at read ``latency``, ``limited`` (the issuer's entry reader over the fill's ring
    buffer) or not (the code-word reader), on a memory of :data:`READER_ADDR_BITS` address bits and
    :data:`READER_WIDTH`-bit words (small fixed parameters: the reader's logic does not depend on them beyond
    the wrap, which these reach)."""
    name = "reader" + ("_ring" if limited else "") + ("_latency2" if latency == 2 else "")
    window = reader_window(latency)
    word = ("word the producer published for that pointer (never at or past limit)" if limited else
            "memory's word")
    return ProofSpec(
        name, "sdhw.reader.SequentialReader", ReaderProof, depth=reader_depth(latency),
        dut_kwargs={"addr_bits": READER_ADDR_BITS, "width": READER_WIDTH, "latency": latency, "limited": limited},
        parameters=f"addr_bits={READER_ADDR_BITS}, width={READER_WIDTH} (fixed, small), latency={latency}, "
                   f"limited={limited}",
        claim=f"for any memory contents, seeks and backpressure: every word out is the {word} at the next "
              f"address from the last seek (each once, in order, none stale after a seek); consumed = that "
              f"address; none in the "
              f"{window - 1} cycle{'s' if window > 2 else ''} after a seek, and a word readable {window} cycles "
              f"earlier is offered (no bubble); stream rules (an offer ends only at a seek)",
        mutants=("reader_keep_after_seek",) + (("reader_past_limit",) if limited else ()))


def drain_spec(*, register_output: bool = False) -> ProofSpec:
    """The drain's proof, with or without its output register, at a small fixed shape (:data:`DRAIN_LANES` lanes of
    :data:`DRAIN_ACC_BITS`-bit sums, :data:`DRAIN_TAG_BITS`-bit tags, :data:`DRAIN_BIAS_BITS` bias address bits:
    every lane goes through the same shift)."""
    latency = 2 if register_output else 1
    return ProofSpec(
        "drain_registered" if register_output else "drain", "sdhw.drain.Drain", DrainProof, depth=DRAIN_DEPTH,
        dut_kwargs={"lanes": DRAIN_LANES, "acc_bits": DRAIN_ACC_BITS, "tag_bits": DRAIN_TAG_BITS,
                    "bias_bits": DRAIN_BIAS_BITS, "register_output": register_output},
        parameters=f"lanes={DRAIN_LANES}, acc_bits={DRAIN_ACC_BITS}, tag_bits={DRAIN_TAG_BITS}, "
                   f"bias_bits={DRAIN_BIAS_BITS} (fixed, small), register_output={register_output}",
        claim=f"for any passes (1..{DRAIN_LANES} live lanes, loaded while not busy), bias memory and backpressure: "
              f"each lane out once, in lane order, with its sum, bias entry bias_addr + q and tag out_addr + q, none "
              f"extra (count in = count out); o.valid exactly while an element is pending ({latency} cycle"
              f"{'s' if latency > 1 else ''} after load, then one per cycle); busy, busy_next and idle exact; "
              f"stream rules",
        mutants=("drain_extra_after_stall",))


#: the writeback proofs' depths: the table one a cycle past the longest wait's end (which starts 5 cycles in), the
#: pipelined one 6 elements past its latency, the serial one a few cycles past its longest latency
WRITEBACK_DEPTH = {"table": WRITEBACK_TABLE_LATENCY[1] + 6, "pipelined": Requantiser.LATENCY + 6,
                   "serial": SerialRequantiser.latency(-32) + 4}


def writeback_spec(*, kind: str = "table") -> ProofSpec:
    """The writeback's proof with the requantiser of ``kind`` (``"table"``: the iCE40 builds', ``"pipelined"``:
    the ECP5 builds', ``"serial"``) at a small fixed shape (:data:`WRITEBACK_ACC_BITS`-bit sums,
    :data:`WRITEBACK_TAG_BITS`-bit tags, :data:`WRITEBACK_UNITS` search unit: the counts and tags go through the
    same logic at any width)."""
    low, high = writeback_latency(kind)
    latency = f"{low} cycles after its take" if low == high else f"{low} to {high} cycles after its take"
    table = "table writes (any, only while idle and nothing offered), " if kind == "table" else ""
    return ProofSpec(
        f"writeback_{kind}", "sdhw.writeback.Writeback", WritebackProof, depth=WRITEBACK_DEPTH[kind],
        dut_kwargs={"kind": kind, "acc_bits": WRITEBACK_ACC_BITS, "tag_bits": WRITEBACK_TAG_BITS,
                    "units": WRITEBACK_UNITS},
        parameters=f"kind={kind}, acc_bits={WRITEBACK_ACC_BITS}, tag_bits={WRITEBACK_TAG_BITS}"
                   + (f", units={WRITEBACK_UNITS}" if kind == "table" else "") + " (fixed, small)",
        claim=f"for any producer, sums, biases, tags, layer parameters and {table}each element taken (followed: "
              f"one whose tag no other element of the run carries) is written once, at its tag, {latency}; no "
              f"write without an element inside (count in = count out); idle exact",
        mutants=("writeback_write_twice",))


PROOFS: list[ProofSpec] = [rebuild_spec(), requant_spec(), threshold_spec(), sequencer_spec(),
                           sequencer_checksum_spec(), bridge_spec(),
                           reader_spec(), reader_spec(latency=2), reader_spec(limited=True),
                           reader_spec(latency=2, limited=True), drain_spec(), drain_spec(register_output=True),
                           writeback_spec(), writeback_spec(kind="pipelined"), writeback_spec(kind="serial")]


def proofs_for(cfg: AcceleratorConfig) -> list[ProofSpec]:
    """The proofs of the blocks the build ``cfg`` contains, at its parameters: the rebuild unit (SD builds) at
    its ``exp_bits``; the requantiser it chose (``cfg.requant``) at its ``acc_bits`` (the table one with its
    ``requant_units``; the serial one has no proof of its values: a row saying so); the sequencer of its device,
    read latency (``cfg.ram_latency``) and descriptor checks, with its slots capped at :data:`SEQUENCER_CONFIG`'s
    (the check's depth grows with the slots; the bound is per slot); the two memory readers (code words, and the
    entries over the fill's ring) at its read latency and the drain with its output register or not
    (``cfg.register_ram_outputs``), both at their small fixed shapes (:func:`reader_spec`, :func:`drain_spec`); the
    writeback with the build's requantiser inside, at its small fixed shape (:func:`writeback_spec`)."""
    specs = []
    if not cfg.dense:
        specs.append(rebuild_spec(exp_bits=cfg.exp_bits, weight_bits=8))
    if cfg.requant == "table":
        specs.append(threshold_spec(acc_bits=cfg.acc_bits, units=cfg.requant_units))
    elif cfg.requant == "pipelined":
        specs.append(requant_spec(acc_bits=cfg.acc_bits))
    else:
        specs.append(serial_requant_spec(acc_bits=cfg.acc_bits))
    desc_latency = cfg.ram_latency
    slots = min(cfg.desc_layers, SEQUENCER_CONFIG.desc_layers)
    proof_cfg = replace(cfg, desc_layers=slots)
    build_slots = cfg.desc_layers if cfg.desc_layers > slots else None
    specs += [sequencer_spec(cfg=proof_cfg, desc_latency=desc_latency, build_slots=build_slots),
              sequencer_checksum_spec(cfg=proof_cfg, desc_latency=desc_latency, build_slots=build_slots)]
    specs += [reader_spec(latency=cfg.ram_latency), reader_spec(latency=cfg.ram_latency, limited=True),
              drain_spec(register_output=cfg.register_ram_outputs), writeback_spec(kind=cfg.requant)]
    return specs
