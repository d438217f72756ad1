"""Rebuild unit: a row of SmartDeal codes times one basis column -> the MAC weight of one tap (shift-add)."""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RebuildUnit"]


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


class RebuildUnit(wiring.Component):
    """Rebuild the MAC weight of one tap ``j`` from a row of three code fields and column ``j`` of its basis.

    Bit-exact with ``golden.sd.round_saturate(golden.sd.rebuild_exact(codes, B), wshift, weight_bits)[j]``
    for ``column = B[:, j]``::

        exact_j = sum_k sign(c_k) * (B[k][j] << (|c_k| - 1))        (0 when |c_k| = 0)
        w_j     = clamp((exact_j + (1 << (wshift - 1))) >> wshift, -(2**(wb-1) - 1), 2**(wb-1) - 1)

    with ``>>`` arithmetic and no rounding when ``wshift = 0``. A code field is
    ``(sign << exp_bits) | magnitude`` (``docs/FORMAT.md``); magnitude 0 is zero whatever the sign bit.
    The tap issuer consumes one tap per cycle, so a row is fed once per tap, each time with the basis column
    of that tap (the accelerator streams it from the basis memory): three terms per weight, no multiplier.
    Each term is an ``exp_bits``-level shifter (``(B[k][j] << |c_k|) >> 1``, the input zeroed for magnitude
    0); its negation is folded into the sum as a ones' complement plus a correction (``-t = ~t + 1``: the
    ``+1``s and the rounding constant ``2**(wshift-1)`` form one small addend); then one arithmetic right
    shift by ``wshift`` (clamped to the sum's width, beyond which the result is 0 anyway) and the symmetric
    saturation.

    ``wshift`` is a per-layer setting: hold it stable while a tap is in the pipeline, and from two cycles
    before the first (its clamped amount, then the rounding constant from it, are registered). ``tag`` passes
    through unchanged.

    Pipeline (one register stage each): 1. the three shifted terms (ones' complement) and the correction
    addend; 2. their sum ``exact_j + 2**(wshift-1)``; 3. the arithmetic shift; 4. the saturation (by the bits
    above the weight's, no comparator), into the output register.

    Latency: :attr:`LATENCY` = 4 cycles from the input handshake to the output handshake when the output is
    never stalled. Throughput: one tap (one weight) per cycle (valid/ready streams; the whole pipeline
    advances when the output register is empty or being read, so units fed in lockstep stay in lockstep).

    Parameters
    ----------
    exp_bits : int
        Magnitude bits ``E`` per code, 1..4 (shifts of 0..2**E - 2).
    weight_bits : int
        Width ``wb`` of the signed MAC weights, 2..16 (saturated to ``+-(2**(wb-1) - 1)``).
    tag_bits : int
        Width of the pass-through tag, 0..64 (0: the payloads have no ``tag`` field).

    Attributes
    ----------
    wshift : In(unsigned(5))
        Rebuild rounding shift (held stable while taps are in flight).
    i : In(stream.Signature(StructLayout({"codes": ..., "column": ..., "tag": tag_bits})))
        Taps: the row's three code fields (``ArrayLayout(unsigned(1 + exp_bits), 3)``) and the tap's basis
        column ``B[k][j]``, ``k = 0, 1, 2`` (``ArrayLayout(signed(8), 3)``).
    o : Out(stream.Signature(StructLayout({"weight": signed(weight_bits), "tag": tag_bits})))
        The taps' MAC weights ``w_j``.
    """

    LATENCY = 4

    def __init__(self, *, exp_bits: int = 2, weight_bits: int = 8, tag_bits: int = 0):
        _check_int("exp_bits", exp_bits, 1, 4)
        _check_int("weight_bits", weight_bits, 2, 16)
        _check_int("tag_bits", tag_bits, 0, 64)
        self._exp_bits = exp_bits
        self._weight_bits = weight_bits
        self._tag_bits = tag_bits
        tag = {"tag": unsigned(tag_bits)} if tag_bits else {}           # no zero-width Verilog wires
        in_layout = data.StructLayout({"codes": data.ArrayLayout(unsigned(1 + exp_bits), 3),
                                       "column": data.ArrayLayout(signed(8), 3), **tag})
        out_layout = data.StructLayout({"weight": signed(weight_bits), **tag})
        super().__init__({
            "wshift": In(unsigned(5)),
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
        })

    @property
    def exp_bits(self) -> int:
        return self._exp_bits

    @property
    def weight_bits(self) -> int:
        return self._weight_bits

    @property
    def tag_bits(self) -> int:
        return self._tag_bits

    def elaborate(self, platform):
        m = Module()
        e = self._exp_bits
        # A term B << (|c| - 1) lies in [-2**(tb-1), 2**(tb-1)) with tb = 8 + 2**E - 2 (its ones' complement
        # too); the exact column sum within +-3 * 2**(tb-1) < 2**(tb+1), so it has eb = tb + 2 signed bits.
        # For wshift >= eb the result is 0, as it is for wshift = eb: the shift is clamped to eb, and the sum
        # plus the rounding constant 2**(eb-1) needs eb + 1 bits.
        term_bits = 8 + (1 << e) - 2
        exact_bits = term_bits + 2
        sum_bits = exact_bits + 1
        qmax = (1 << (self._weight_bits - 1)) - 1

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        # Per-layer shift: clamped amount and rounding constant, each registered (off every tap's path).
        shift = Signal(range(exact_bits + 1), reset_less=True)
        half = Signal(sum_bits, reset_less=True)
        clamped = Mux(self.wshift > exact_bits, exact_bits, self.wshift)
        m.d.sync += [
            shift.eq(clamped),
            half.eq((Const(1, sum_bits + 1) << shift)[1:]),
        ]

        # Stage 1: term_k = (B[k][j] << |c_k|) >> 1 (input zeroed for |c_k| = 0), complemented if negative.
        # Only the valid flags are reset: the data beside them counts only while they are high, and a reset on
        # every data bit would take the block's flush to each of them.
        s1_valid = Signal()
        s1_tag = Signal(max(1, self._tag_bits), reset_less=True)
        in_tag = self.i.payload.tag if self._tag_bits else 0
        s1_terms = [Signal(signed(term_bits), name=f"s1_term{k}", reset_less=True) for k in range(3)]
        s1_corr = Signal(sum_bits, reset_less=True)
        negs = []
        for k in range(3):
            field = self.i.payload.codes[k]
            magnitude = field[:e]
            negative = field[e]
            negs.append(negative)
            shifted = Signal(signed(term_bits + 1), name=f"shifted{k}")
            m.d.comb += shifted.eq(Mux(magnitude == 0, 0, self.i.payload.column[k]) << magnitude)
            with m.If(advance):
                m.d.sync += s1_terms[k].eq(shifted[1:].as_signed() ^ negative.replicate(term_bits).as_signed())
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(self.i.valid),
                s1_tag.eq(in_tag),
                s1_corr.eq(half + Cat(negs[0], 0) + Cat(negs[1], 0) + negs[2]),
            ]

        def stage(name, valid, tag, value):
            """A pipeline register for (valid, tag, value), loaded when the pipeline advances."""
            regs = (Signal(name=f"{name}_valid"), Signal(max(1, self._tag_bits), name=f"{name}_tag", reset_less=True),
                    Signal(signed(sum_bits), name=name, reset_less=True))
            with m.If(advance):
                m.d.sync += [reg.eq(src) for reg, src in zip(regs, (valid, tag, value))]
            return regs

        # Stage 2: exact_j + 2**(wshift-1) (the correction adds the ones' complements' +1s).
        s2_valid, s2_tag, s2_sum = stage("s2_sum", s1_valid, s1_tag,
                                         s1_terms[0] + s1_terms[1] + s1_terms[2] + s1_corr.as_signed())
        # Stage 3: arithmetic shift by the clamped wshift.
        s3_valid, s3_tag, s3_shifted = stage("s3_shifted", s2_valid, s2_tag, s2_sum >> shift)

        # Stage 4: symmetric saturation to +-qmax, by the bits above the weight's (no comparator): in range
        # when they all equal the sign, except the one value -qmax - 1.
        shifted_sum = s3_shifted
        wb = self._weight_bits
        negative = shifted_sum[-1]
        if len(shifted_sum) > wb:
            high = shifted_sum[wb - 1:]
            in_range = Mux(negative, high.all() & shifted_sum[:wb - 1].any(), ~high.any())
        else:                                    # narrow sums always fit the weight
            in_range = 1
        weight = Signal.like(self.o.payload.weight, reset_less=True)
        out_tag = Signal(max(1, self._tag_bits), reset_less=True)
        m.d.comb += self.o.payload.weight.eq(weight)
        if self._tag_bits:
            m.d.comb += self.o.payload.tag.eq(out_tag)
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(s3_valid),
                weight.eq(Mux(in_range, shifted_sum, Mux(negative, -qmax, qmax))),
                out_tag.eq(s3_tag),
            ]
        return m
