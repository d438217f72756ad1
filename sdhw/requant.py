"""Requantiser: int32 accumulator + bias -> int8 activation, bit-exact with :func:`golden.quant.requantize`."""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.quant import INT32_MAX, INT32_MIN

from . import compare

__all__ = ["Requantiser", "SerialRequantiser", "ThresholdRequantiser", "ThresholdSearch"]


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


def _saturate_int32(value):
    """``value`` clamped to the int32 range (the caller assigns the result to a 32-bit signal)."""
    return Mux(value > INT32_MAX, INT32_MAX, Mux(value < INT32_MIN, INT32_MIN, value))


class _RequantiserPorts(wiring.Component):
    """The ports and parameters both requantisers share (see :class:`Requantiser` for their meaning)."""

    def __init__(self, *, acc_bits: int = 32, tag_bits: int = 16):
        _check_int("acc_bits", acc_bits, 16, 40)
        _check_int("tag_bits", tag_bits, 1, 32)
        self._acc_bits = acc_bits
        self._tag_bits = tag_bits
        in_layout = data.StructLayout({"acc": signed(acc_bits), "bias": signed(32), "tag": unsigned(tag_bits)})
        out_layout = data.StructLayout({"value": signed(8), "tag": unsigned(tag_bits)})
        super().__init__({
            "m0": In(unsigned(31)),
            "shift": In(signed(6)),
            "zero_point": In(signed(8)),
            "act_min": In(signed(8)),
            "act_max": In(signed(8)),
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
        })

    @property
    def acc_bits(self) -> int:
        return self._acc_bits

    @property
    def tag_bits(self) -> int:
        return self._tag_bits


class Requantiser(_RequantiserPorts):
    """Requantise an accumulator plus bias to an int8 activation (gemmlowp rounding, fused clamp).

    For each stream element, bit-exact with
    ``golden.quant.requantize(acc + bias, m0, shift, zero_point, act_min, act_max)``::

        s   = saturate_int32(acc + bias)
        x   = saturate_int32(s << max(-shift, 0))
        y   = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, m0), max(shift, 0))
        out = min(max(zero_point + y, act_min), act_max)

    Differences from the golden model, both outside its domain:

    * ``acc + bias`` is computed exactly and then *saturated* to int32; the golden model raises
      instead (an int32 overflow means the layer's weights or bias are out of range).
    * ``shift = -32`` (the port is ``signed(6)``; programs use -31..31) is accepted and left-shifts by 32,
      as the golden model does arithmetically.

    ``m0`` is non-negative, so the ``INT32_MIN * INT32_MIN`` overflow case of
    SaturatingRoundingDoublingHighMul cannot occur. The clamp is ``max`` then ``min``, so
    ``act_min > act_max`` yields ``act_max`` (NumPy's ``clip``).

    Pipeline (one register stage each):

    1. ``s = sat32(acc + bias)``;
    2. ``x = sat32(s << max(-shift, 0))``;
    3. the four 16 x 16 partial products of ``x * m0`` (the only multipliers: one DSP each, no adder);
    4. the two middle products summed; gemmlowp's nudge (``2**30`` if ``ab >= 0``, else ``1 - 2**30``)
       added to the low product;
    5. and 6. the 64-bit ``ab + nudge`` assembled in two adds of at most 35 bits each (no 64-bit carry);
    7. truncating (toward zero) division by ``2**31``;
    8. RoundingDivideByPOT by ``max(shift, 0)`` (ties away from zero): the arithmetic shift and the
       rounding decision, side by side (its thresholds are per-layer registers);
    9. the rounding added to the shifted value saturated to 10 bits (any value beyond stays beyond the
       int8 clamp after an int8 zero point);
    10. ``+ zero_point`` and the clamp; the output register.

    Latency: :attr:`LATENCY` = 10 cycles from the input handshake to the output handshake when the output is
    never stalled. Throughput: one element per cycle (valid/ready streams; the whole pipeline advances
    when the output register is empty or being read, so backpressure stalls every stage).

    The per-layer inputs ``m0``, ``shift``, ``zero_point``, ``act_min`` and ``act_max`` are read by the
    stage that needs them, so they must be held stable while any element is in the pipeline (change
    them only between layers, once the output has drained); the amounts and masks derived from ``shift``
    (and the clamp thresholds) are registered, so ``shift`` must also be stable one cycle before the first
    element. ``tag`` passes
    through unchanged and the order of elements is kept.

    Parameters
    ----------
    acc_bits : int
        Width of the signed accumulator input, 16..40.
    tag_bits : int
        Width of the pass-through tag, 1..32.

    Attributes
    ----------
    m0 : In(unsigned(31))
        Requantisation multiplier (Q31 mantissa).
    shift : In(signed(6))
        Requantisation shift; negative is a left shift.
    zero_point, act_min, act_max : In(signed(8))
        Output zero point and clamp bounds (``act_min = zero_point`` fuses a ReLU).
    i : In(stream.Signature(StructLayout({"acc": signed(acc_bits), "bias": signed(32), "tag": unsigned(tag_bits)})))
        Input elements.
    o : Out(stream.Signature(StructLayout({"value": signed(8), "tag": unsigned(tag_bits)})))
        Requantised activations with their tags.
    """

    LATENCY = 10

    def elaborate(self, platform):
        m = Module()
        tag_bits = self._tag_bits

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        # Stage 1: exact sum, saturated to int32.
        s1_valid = Signal()
        s1_tag = Signal(tag_bits)
        s1_sum = Signal(signed(32))
        sum_full = Signal(signed(max(self._acc_bits, 32) + 1))
        m.d.comb += sum_full.eq(self.i.payload.acc + self.i.payload.bias)
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(self.i.valid),
                s1_tag.eq(self.i.payload.tag),
                s1_sum.eq(_saturate_int32(sum_full)),
            ]

        # per-layer constants from ``shift``, registered (they are off every element's path)
        left_shift = Signal(range(33))
        right_shift = Signal(range(32))
        overflow_mask = Signal(32)              # bits that must all equal the sign for s << left_shift to fit
        shift_32 = Signal()                     # left shift by 32: only 0 fits
        round_mask = Signal(32)
        round_half = Signal(32)                 # RoundingDivideByPOT's threshold for a non-negative value
        round_half_neg = Signal(32)             # ... and for a negative one (one more)
        # two register stages: the amounts, then the shifts and masks made from them (both well ahead of the
        # stages that use them: an element reaches stage 2 a cycle after its handshake)
        right = Signal(5)
        left = Signal(range(33))
        m.d.sync += [
            right.eq(Mux(self.shift > 0, self.shift, 0).as_unsigned()[:5]),
            left.eq(Mux(self.shift < 0, -self.shift, 0)),
        ]
        m.d.sync += [
            left_shift.eq(left),
            right_shift.eq(right),
            # masks as shifted runs of ones (no carry chains)
            overflow_mask.eq(Mux(left >= 31, 0xFFFFFFFF, (Const(0xFFFFFFFF, 32) << (31 - left)[:5])[:32])),
            shift_32.eq(left == 32),
            round_mask.eq(~(Const(0xFFFFFFFF, 32) << right)[:32]),
            round_half.eq(~(Const(0xFFFFFFFF, 32) << right)[1:32]),
            round_half_neg.eq(Mux(right == 0, 1, (Const(1, 32) << (right - 1)[:5])[:32])),
        ]

        # Stage 2: left shift (0..32), saturated to int32: it overflows unless the bits under the mask all
        # equal the sign, which is decided beside the shifter, not after it.
        s2_valid = Signal()
        s2_tag = Signal(tag_bits)
        s2_x = Signal(signed(32))
        sign_fill = Signal(32)
        overflow = Signal()
        m.d.comb += [
            sign_fill.eq(Mux(s1_sum < 0, 0xFFFFFFFF, 0)),
            overflow.eq((((s1_sum.as_unsigned() ^ sign_fill) & overflow_mask) != 0) | (shift_32 & (s1_sum != 0))),
        ]
        with m.If(advance):
            m.d.sync += [
                s2_valid.eq(s1_valid),
                s2_tag.eq(s1_tag),
                s2_x.eq(Mux(overflow, Mux(s1_sum < 0, -(1 << 31), (1 << 31) - 1), (s1_sum << left_shift)[:32])),
            ]

        # Stage 3: the multiply as four 16 x 16 partial products, each one DSP multiplier with no fabric adder
        # behind it: x = xh * 2**16 + xl (xl unsigned), m0 = mh * 2**16 + ml (m0 is 31 bits, non-negative).
        s3_valid = Signal()
        s3_tag = Signal(tag_bits)
        s3_ll = Signal(unsigned(32))            # xl * ml
        s3_lh = Signal(unsigned(31))            # xl * mh
        s3_hl = Signal(signed(32))              # xh * ml
        s3_hh = Signal(signed(31))              # xh * mh
        s3_prod_neg = Signal()                  # x * m0 < 0, known from the operands' signs
        x_low, x_high = s2_x.as_unsigned()[:16], s2_x[16:].as_signed()
        m0_low, m0_high = self.m0[:16], self.m0[16:]
        with m.If(advance):
            m.d.sync += [
                s3_valid.eq(s2_valid),
                s3_tag.eq(s2_tag),
                s3_ll.eq(x_low * m0_low),
                s3_lh.eq(x_low * m0_high),
                s3_hl.eq(x_high * m0_low),
                s3_hh.eq(x_high * m0_high),
                s3_prod_neg.eq((s2_x < 0) & (self.m0 != 0)),
            ]

        # Stage 4: the two middle products summed, the nudge added to the low one (gemmlowp: nudge =
        # x * m0 >= 0 ? 2**30 : 1 - 2**30); the sum ab_64 + nudge = low + mid * 2**16 + hh * 2**32.
        s4_valid = Signal()
        s4_tag = Signal(tag_bits)
        s4_low = Signal(signed(34))
        s4_mid = Signal(signed(34))
        s4_hh = Signal(signed(31))
        with m.If(advance):
            m.d.sync += [
                s4_valid.eq(s3_valid),
                s4_tag.eq(s3_tag),
                s4_low.eq(s3_ll + Mux(s3_prod_neg, 1 - (1 << 30), 1 << 30)),
                s4_mid.eq(s3_lh + s3_hl),
                s4_hh.eq(s3_hh),
            ]

        # Stage 5: low + mid * 2**16 (bits 0..15 are the low sum's own).
        s5_valid = Signal()
        s5_tag = Signal(tag_bits)
        s5_lowmid = Signal(signed(51))
        s5_hh = Signal(signed(31))
        with m.If(advance):
            m.d.sync += [
                s5_valid.eq(s4_valid),
                s5_tag.eq(s4_tag),
                s5_lowmid.eq(Cat(s4_low[:16], (s4_low >> 16) + s4_mid)),
                s5_hh.eq(s4_hh),
            ]

        # Stage 6: + hh * 2**32 (bits 0..31 are the partial sum's own): ab_64 + nudge.
        s6_valid = Signal()
        s6_tag = Signal(tag_bits)
        s6_nudged = Signal(signed(64))
        with m.If(advance):
            m.d.sync += [
                s6_valid.eq(s5_valid),
                s6_tag.eq(s5_tag),
                s6_nudged.eq(Cat(s5_lowmid[:32], (s5_lowmid >> 32) + s5_hh)),
            ]

        # Stage 7: (ab_64 + nudge) / 2**31 rounding toward zero (C division); fits int32 as m0 < 2**31.
        s7_valid = Signal()
        s7_tag = Signal(tag_bits)
        s7_high = Signal(signed(32))
        truncate_up = Signal()
        m.d.comb += truncate_up.eq((s6_nudged < 0) & (s6_nudged[:31] != 0))
        with m.If(advance):
            m.d.sync += [
                s7_valid.eq(s6_valid),
                s7_tag.eq(s6_tag),
                s7_high.eq((s6_nudged >> 31) + truncate_up),
            ]

        # Stage 8: RoundingDivideByPOT(high, max(shift, 0)), its shift and its rounding decision side by side.
        s8_valid = Signal()
        s8_tag = Signal(tag_bits)
        s8_shifted = Signal(signed(32))
        s8_round_up = Signal()
        round_rem = Signal(32)
        m.d.comb += round_rem.eq(s7_high.as_unsigned() & round_mask)
        with m.If(advance):
            m.d.sync += [
                s8_valid.eq(s7_valid),
                s8_tag.eq(s7_tag),
                s8_shifted.eq(s7_high >> right_shift),
                s8_round_up.eq(round_rem > Mux(s7_high < 0, round_half_neg, round_half)),
            ]

        # Stage 9: the rounding added to the shifted value narrowed to 10 bits: beyond -512..511 the result
        # only has to stay beyond the int8 clamp bounds after adding an int8 zero point, so +-512 will do.
        s9_valid = Signal()
        s9_tag = Signal(tag_bits)
        s9_y = Signal(signed(11))
        upper = s8_shifted[9:]
        narrow = Signal(signed(10))
        m.d.comb += narrow.eq(Mux(upper.all() | ~upper.any(), s8_shifted[:10],
                                  Mux(s8_shifted < 0, -512, 511)))
        with m.If(advance):
            m.d.sync += [
                s9_valid.eq(s8_valid),
                s9_tag.eq(s8_tag),
                s9_y.eq(narrow + s8_round_up),
            ]

        # Stage 10: zero point and clamp, into the output register. The clamp compares ``y`` with per-layer
        # thresholds (``zp + y < act_min`` is ``y < act_min - zp``), registered like the shift amounts, so
        # both compares and the zero point's add run side by side instead of one behind the other.
        below_th = Signal(signed(10))           # act_min - zero_point
        above_th = Signal(signed(10))           # act_max - zero_point
        min_over_max = Signal()                 # act_min > act_max: a value clamped up is clamped down again
        m.d.sync += [below_th.eq(self.act_min - self.zero_point), above_th.eq(self.act_max - self.zero_point),
                     min_over_max.eq(self.act_min > self.act_max)]
        below = Signal()
        capped = Signal()
        m.d.comb += [below.eq(s9_y < below_th), capped.eq(Mux(below, min_over_max, s9_y > above_th))]
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(s9_valid),
                self.o.payload.tag.eq(s9_tag),
                # unclamped, zp + y lies in act_min..act_max, so its low 8 bits are the value
                self.o.payload.value.eq(Mux(capped, self.act_max,
                                            Mux(below, self.act_min, (s9_y + self.zero_point)[:8]))),
            ]
        return m


class SerialRequantiser(_RequantiserPorts):
    """The :class:`Requantiser`'s function (same ports, same bit-exact result) without a multiplier.

    For each element, bit-exact with ``golden.quant.requantize`` as documented for :class:`Requantiser`
    (including its two out-of-domain cases). One element at a time, iteratively:

    1. on acceptance, ``s = sat32(acc + bias)``;
    2. ``max(-shift, 0)`` cycles of a saturating left shift by one (once saturated, it stays saturated);
    3. 16 cycles of a radix-4 shift-and-add multiply ``x * m0`` (two gated adds per cycle, the low bits
       shifted out into a sticky bit), started from gemmlowp's nudge so the register ends at
       ``floor((x * m0 + nudge) / 2**31)``;
    4. one cycle: ``+1`` when that is negative with a non-zero remainder (C division truncates);
    5. for ``r = max(shift, 0)``: ``r // 4 + r % 4`` cycles of an arithmetic right shift by four or one,
       remembering the last bit shifted out and whether any bit before it was set, then one cycle adding
       the rounding (RoundingDivideByPOT: ties away from zero);
    6. one cycle: ``+ zero_point`` and the clamp, into the output register.

    No DSP block and no ``*`` cell: a few hundred LUTs instead of the pipelined unit's four 16-bit
    multipliers and 64-bit adders, for a design that drains one output per group of rows.

    Latency: :meth:`latency` = ``21 + max(-shift, 0) + r // 4 + r % 4`` cycles (``r = max(shift, 0)``) from the
    input handshake to the output becoming valid. Throughput: one element per latency (``i.ready`` is high only
    while the unit is idle). A result moves into the output register as soon as that register is free, and the unit
    is idle again from then: it takes the next element while the last result waits to be read, and holds the next
    result until the output register frees. The per-layer inputs must be held stable while an element is in the
    unit.

    Parameters
    ----------
    acc_bits : int
        Width of the signed accumulator input, 16..40.
    tag_bits : int
        Width of the pass-through tag, 1..32.
    """

    BASE_LATENCY = 21

    @staticmethod
    def latency(shift: int) -> int:
        """Cycles from the input handshake to a valid output for a layer's ``shift``."""
        right = max(shift, 0)
        return SerialRequantiser.BASE_LATENCY + max(-shift, 0) + right // 4 + right % 4

    def elaborate(self, platform):
        m = Module()
        acc_w = 36                                # the multiply's partial sums, shifted right as they grow
        x = Signal(signed(32))                    # the saturated, left-shifted sum
        acc = Signal(signed(acc_w))
        tag = Signal(self._tag_bits)
        count = Signal(6)
        sticky = Signal()                         # bits shifted out of the product (below 2**31)
        last = Signal()                           # RoundingDivideByPOT: the last bit shifted out ...
        lower = Signal()                          # ... and any bit before it

        left = Signal(range(33))
        right = Signal(range(32))
        m.d.comb += [left.eq(Mux(self.shift < 0, -self.shift, 0)), right.eq(Mux(self.shift > 0, self.shift, 0))]

        out_free = Signal()
        m.d.comb += out_free.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        sum_full = Signal(signed(max(self._acc_bits, 32) + 1))
        m.d.comb += sum_full.eq(self.i.payload.acc + self.i.payload.bias)
        # m0 bits 2k and 2k + 1 of multiply cycle k (bit 31 does not exist)
        k = count[:4]
        bit0 = Signal()
        bit1 = Signal()
        m.d.comb += [bit0.eq(self.m0.bit_select(k << 1, 1)),
                     bit1.eq(Mux(k == 15, 0, self.m0.bit_select((k << 1) + 1, 1)))]

        total = Signal(signed(acc_w))
        m.d.comb += total.eq(acc + Mux(bit0, x, 0) + Mux(bit1, x << 1, 0))
        # y fits 32 bits; clamp it to 10 bits first (the clamp bounds are int8), then add the zero point
        y = acc[:32].as_signed()
        small = Signal(signed(10))
        with_zp = Signal(signed(11))
        above_min = Signal(signed(11))
        fits = (y[9:].all() | ~y[9:].any())
        m.d.comb += [small.eq(Mux(fits, y[:10], Mux(y[31], -512, 511))),
                     with_zp.eq(small + self.zero_point),
                     above_min.eq(Mux(with_zp < self.act_min, self.act_min, with_zp))]

        # Combinational outputs of the state machine are formed from ``fsm.ongoing`` outside it, as continuous
        # assignments: a ``comb`` statement inside a state becomes a Verilog ``always @*`` block that Icarus
        # may never evaluate when the state register does not change after time 0.
        with m.FSM(name="requant") as fsm:
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    m.d.sync += [x.eq(_saturate_int32(sum_full)), tag.eq(self.i.payload.tag), count.eq(left)]
                    m.next = "LEFT"
            with m.State("LEFT"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                    with m.If(x[31] != x[30]):
                        m.d.sync += x.eq(Mux(x[31], INT32_MIN, INT32_MAX))
                    with m.Else():
                        m.d.sync += x.eq(x << 1)
                with m.Else():
                    # nudge = 2**30 if x * m0 >= 0 else 1 - 2**30
                    m.d.sync += [acc.eq(Mux((x < 0) & (self.m0 != 0), 1 - (1 << 30), 1 << 30)), sticky.eq(0)]
                    m.next = "MUL"
            with m.State("MUL"):
                # cycle k adds m0 bits 2k and 2k + 1 at the register's bits 0 and 1, then shifts right by 2;
                # the last cycle (k = 15) adds bit 30 only and shifts by 1: the register then holds bits 31+
                with m.If(k == 15):
                    m.d.sync += [acc.eq(total >> 1), sticky.eq(sticky | total[0]), count.eq(0)]
                    m.next = "TRUNC"
                with m.Else():
                    m.d.sync += [acc.eq(total >> 2), sticky.eq(sticky | total[:2].any()), count.eq(count + 1)]
            with m.State("TRUNC"):
                m.d.sync += [count.eq(right), last.eq(0), lower.eq(0)]
                m.next = "RIGHT"
            with m.State("RIGHT"):
                with m.If(count >= 4):
                    m.d.sync += [acc.eq(acc >> 4), last.eq(acc[3]), lower.eq(lower | last | acc[:3].any()),
                                 count.eq(count - 4)]
                with m.Elif(count != 0):
                    m.d.sync += [acc.eq(acc >> 1), last.eq(acc[0]), lower.eq(lower | last), count.eq(count - 1)]
                with m.Else():
                    m.next = "OUT"
            with m.State("OUT"):
                with m.If(out_free):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.tag.eq(tag),
                                 self.o.payload.value.eq(Mux(above_min > self.act_max, self.act_max, above_min))]
                    m.next = "IDLE"
        # the one incrementer: truncation toward zero after the multiply, then the rounding of the shift
        inc = Signal()
        m.d.comb += [
            self.i.ready.eq(fsm.ongoing("IDLE")),
            inc.eq((fsm.ongoing("TRUNC") & acc[-1] & sticky)
                   | (fsm.ongoing("RIGHT") & (count == 0) & last & (~acc[-1] | lower))),
        ]
        with m.If(inc):
            m.d.sync += acc.eq(acc + 1)
        return m


TABLE_DEPTH = 256          # thresholds per layer (outputs are int8: at most 255 steps)


class ThresholdSearch(wiring.Component):
    """Table requantiser unit: ``base + #{i < n_thresh : s > table[i]}`` by binary search, for sums ``s`` (an
    accumulator plus its bias).

    The compiler (``rtl_gen.image.thresholds``) lists, for a layer's requantisation ``f`` (gemmlowp's, with
    its zero point and clamp), every step of ``f`` over the int32 accumulators as ``T - 1`` in increasing
    order, ``T`` the smallest sum with the next output value; ``f`` is monotone, so counting the thresholds
    below a sum gives ``f`` exactly, with one comparator and no multiplier. The table holds a layer's
    thresholds (written through ``w_*`` between layers); entries at or past ``n_thresh`` count as never below.

    Two searches share the table and the comparator, a cycle apart: a search presents its next table index
    (from its registered comparison) in one cycle and compares the entry in the next, while the other search
    does the same the other way round. No path runs from the table's output through the comparator back to its
    address in one cycle.

    Latency: :attr:`LATENCY` cycles from the input handshake to a valid output. Throughput: two elements per
    16 cycles (an element is taken in the cycle the search it replaces finishes, when the output is free).
    ``base`` and ``n_thresh`` are held stable from the cycle before an element enters the unit until it leaves.
    """

    LATENCY = 17
    SLOTS = 2

    def __init__(self, *, sum_bits: int = 33, tag_bits: int = 16):
        _check_int("sum_bits", sum_bits, 17, 41)
        _check_int("tag_bits", tag_bits, 1, 32)
        self._sum_bits, self._tag_bits = sum_bits, tag_bits
        in_layout = data.StructLayout({"s": signed(sum_bits), "tag": unsigned(tag_bits)})
        out_layout = data.StructLayout({"value": signed(8), "tag": unsigned(tag_bits)})
        super().__init__({
            "base": In(signed(8)),
            "n_thresh": In(unsigned(9)),
            "w_en": In(1), "w_addr": In(unsigned(8)), "w_data": In(signed(32)),
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        # written only between layers, while no search reads it: no collision bypass needed
        m.submodules.table = table = Memory(shape=signed(32), depth=TABLE_DEPTH, init=[], attrs={"no_rw_check": 1})
        wr = table.write_port()
        rd = table.read_port()
        m.d.comb += [wr.en.eq(self.w_en), wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), rd.en.eq(1)]

        # n_thresh comes from the layer registers across the die; the candidates' comparisons read a copy here
        n_thresh = Signal.like(self.n_thresh)
        m.d.sync += n_thresh.eq(self.n_thresh)
        phase = Signal()                    # the search whose turn it is to present an index
        m.d.sync += phase.eq(~phase)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        out_free = Signal()
        m.d.comb += out_free.eq(~self.o.valid | self.o.ready)

        accepted = 0
        indices = []
        for k in range(self.SLOTS):
            s = Signal(signed(self._sum_bits), name=f"s{k}")
            tag = Signal(self._tag_bits, name=f"tag{k}")
            idx = Signal(8, name=f"idx{k}")             # thresholds found below s so far
            # the bit whose candidate was presented last, one-hot (``mask``), and the bits below the next one
            # (``below``): every index and count bit is then one LUT from registers, no decoder of a bit number
            mask = Signal(8, name=f"mask{k}")
            below = Signal(8, name=f"below{k}")
            busy = Signal(name=f"busy{k}")
            waiting = Signal(name=f"waiting{k}")        # the table entry of its index arrives this cycle
            cand_ok = Signal(name=f"cand_ok{k}")        # that entry exists (its index < n_thresh)
            above = Signal(name=f"above{k}")            # ... and s is above it
            turn = phase == k
            # the comparison, in the cycle after the index, as two halves in registers whose combination is left
            # to the next turn: the table's slow output then meets 17-bit comparators, not a 33-bit one. The high
            # halves' equality is ``>=`` without ``>`` (two carry chains, no XOR tree behind the table)
            entry = rd.data.as_signed()
            gt_high, ge_high, gt_low = (Signal(name=f"{n}{k}") for n in ("gt_high", "ge_high", "gt_low"))
            with m.If(waiting):
                m.d.sync += [gt_high.eq(s[16:].as_signed() > entry[16:].as_signed()),
                             ge_high.eq(s[16:].as_signed() >= entry[16:].as_signed()),
                             gt_low.eq(s[:16] > entry[:16])]
            m.d.comb += above.eq(cand_ok & (gt_high | (ge_high & gt_low)))
            m.d.sync += waiting.eq(0)
            found = Signal(8, name=f"found{k}")         # idx with the last comparison's bit
            m.d.comb += found.eq(idx | (mask & above.replicate(8)))
            index = Signal(8, name=f"index{k}")
            finish = Signal(name=f"finish{k}")
            m.d.comb += finish.eq(turn & busy & mask[0] & out_free)
            take = Signal(name=f"take{k}")              # a new element enters this search
            m.d.comb += take.eq(turn & (~busy | finish) & self.i.valid & ~accepted)
            accepted = accepted | take
            with m.If(finish):
                # at the last bit (0) the count is idx with `above` as its bit 0: no decoding of `bit` before the
                # adder
                m.d.sync += [busy.eq(0), self.o.valid.eq(1), self.o.payload.value.eq(self.base + Cat(above, idx[1:])),
                             self.o.payload.tag.eq(tag)]
            with m.If(take):
                m.d.comb += index.eq(127)
                m.d.sync += [s.eq(self.i.payload.s), tag.eq(self.i.payload.tag), idx.eq(0), mask.eq(1 << 7),
                             below.eq((1 << 6) - 1), busy.eq(1), waiting.eq(1),
                             cand_ok.eq(compare.above(n_thresh, 127))]
            with m.Elif(turn & busy & ~mask[0]):
                # the next candidate, found + 2**(bit - 1), less one: found has no bit below `bit`. Whether it
                # exists is compared for both values of the last comparison's bit and then chosen by it, so no
                # comparator sits behind the comparison
                m.d.comb += index.eq(found | below)
                m.d.sync += [idx.eq(found), mask.eq(mask >> 1), below.eq(below >> 1), waiting.eq(1),
                             cand_ok.eq(Mux(above, (idx | mask | below) < n_thresh,
                                            (idx | below) < n_thresh))]
            indices.append(index)
        m.d.comb += [self.i.ready.eq(accepted), rd.addr.eq(Mux(phase, indices[1], indices[0]))]
        return m


class ThresholdRequantiser(wiring.Component):
    """The table requantiser: ``units`` :class:`ThresholdSearch` units behind one stream, for iCE40 builds
    whose DSPs all go to MAC products. Bit-exact with ``golden.quant.requantize(acc + bias, ...)`` for a
    layer whose thresholds (``rtl_gen.image.thresholds``) are in the table, for every int32 ``acc + bias``.

    ``acc + bias`` is formed once, in an input register; the sum goes to the lowest unit that takes it;
    finished elements leave through a priority arbiter, so the output order may differ from the input order
    (each carries its tag, the output address).

    Latency: :attr:`ThresholdSearch.LATENCY` + 2 cycles or more (a unit takes an element in its searches'
    turns). Throughput: ``units`` elements per 8 cycles.
    ``base`` (the output of the smallest accumulator) and ``n_thresh`` are per layer; table writes
    (``w_*``) go to every unit and happen only while no element is in flight.
    """

    def __init__(self, *, acc_bits: int = 32, tag_bits: int = 16, units: int = 2):
        _check_int("acc_bits", acc_bits, 16, 40)
        _check_int("tag_bits", tag_bits, 1, 32)
        _check_int("units", units, 1, 8)
        self.units = units
        self._acc_bits, self._tag_bits = acc_bits, tag_bits
        in_layout = data.StructLayout({"acc": signed(acc_bits), "bias": signed(32), "tag": unsigned(tag_bits)})
        out_layout = data.StructLayout({"value": signed(8), "tag": unsigned(tag_bits)})
        super().__init__({
            "base": In(signed(8)),
            "n_thresh": In(unsigned(9)),
            "w_en": In(1), "w_addr": In(unsigned(8)), "w_data": In(signed(32)),
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        sum_bits = max(self._acc_bits, 32) + 1
        searches = []
        for k in range(self.units):
            unit = ThresholdSearch(sum_bits=sum_bits, tag_bits=self._tag_bits)
            m.submodules[f"search{k}"] = unit
            searches.append(unit)
            m.d.comb += [unit.base.eq(self.base), unit.n_thresh.eq(self.n_thresh), unit.w_en.eq(self.w_en),
                         unit.w_addr.eq(self.w_addr), unit.w_data.eq(self.w_data)]
        # the input register: the sum, then to the lowest ready unit
        s_valid = Signal()
        s = Signal(signed(sum_bits))
        s_tag = Signal(self._tag_bits)
        taken = Const(0)
        for unit in searches:
            m.d.comb += [unit.i.valid.eq(s_valid & ~taken), unit.i.payload.s.eq(s), unit.i.payload.tag.eq(s_tag)]
            taken = taken | unit.i.ready
        # ready from the input register alone (one element per two cycles at most, far above the units'
        # rate): the drain's shift enable, which fans out to every shadow bit, starts at flip-flops
        m.d.comb += self.i.ready.eq(~s_valid)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [s_valid.eq(1), s.eq(self.i.payload.acc + self.i.payload.bias), s_tag.eq(self.i.payload.tag)]
        with m.Elif(taken):
            m.d.sync += s_valid.eq(0)
        # collect: the output register takes the lowest finished unit
        out_free = Signal()
        m.d.comb += out_free.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        chosen = Const(0)
        for unit in searches:
            pick = Signal()
            m.d.comb += [pick.eq(unit.o.valid & ~chosen & out_free), unit.o.ready.eq(pick)]
            with m.If(pick):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(unit.o.payload)]
            chosen = chosen | unit.o.valid
        return m
