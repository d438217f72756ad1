"""Rebuild unit: a row of SmartDeal codes times the block's 3x3 basis -> three MAC weights (shift-based)."""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RebuildUnit"]


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


class RebuildUnit(wiring.Component):
    """Rebuild one row of MAC weights from three code fields and a stationary 3x3 int8 basis.

    Bit-exact with ``golden.sd.round_saturate(golden.sd.rebuild_exact(codes, B), wshift, weight_bits)``::

        exact_j = sum_k sign(c_k) * (B[k][j] << (|c_k| - 1))        (0 when |c_k| = 0)
        w_j     = clamp((exact_j + (1 << (wshift - 1))) >> wshift, -(2**(wb-1) - 1), 2**(wb-1) - 1)

    with ``>>`` arithmetic and no rounding when ``wshift = 0``. A code field is
    ``(sign << exp_bits) | magnitude`` (``docs/FORMAT.md``); magnitude 0 is zero whatever the sign bit.
    No multiplier: each of the nine terms is a shifter (mux tree) and a conditional negation.
    The rounding uses ``(x + 2**(s-1)) >> s == ((x >> (s-1)) + 1) >> 1`` for ``s >= 1``.

    Basis and shift: ``basis`` is latched into an internal register file at the clock edge of every cycle in
    which ``basis_load`` is high. A row uses the basis in effect in the cycle it is accepted (``i.valid &
    i.ready``), *including* a load in that same cycle (the loaded value is forwarded). Rows already
    accepted keep their basis (its contribution is computed on acceptance), so a basis can be loaded
    between two rows of a stream without draining. ``wshift`` is likewise sampled on acceptance and
    carried along with the row.

    Pipeline (one register stage each): 1. the nine shifted and signed terms; 2. the three column sums
    (``exact``); 3. rounding and saturation, into the output register.

    Latency: :attr:`LATENCY` = 3 cycles from the input handshake to the output handshake when the output is
    never stalled. Throughput: one row per cycle (valid/ready streams; the whole pipeline advances when
    the output register is empty or being read).

    Parameters
    ----------
    exp_bits : int
        Magnitude bits ``E`` per code, 1..4 (shifts of 0..2**E - 2).
    weight_bits : int
        Width ``wb`` of the signed MAC weights, 2..16 (saturated to ``+-(2**(wb-1) - 1)``).

    Attributes
    ----------
    basis : In(ArrayLayout(signed(8), 9))
        The basis to load, ``B[k][j]`` at index ``3*k + j``.
    basis_load : In(1)
        Load ``basis`` at this cycle's clock edge.
    wshift : In(unsigned(5))
        Rebuild rounding shift.
    i : In(stream.Signature(ArrayLayout(unsigned(1 + exp_bits), 3)))
        Rows of three code fields (taps ``k = 0, 1, 2``).
    o : Out(stream.Signature(ArrayLayout(signed(weight_bits), 3)))
        The rows' MAC weights ``w_j``, ``j = 0, 1, 2``.
    """

    LATENCY = 3

    def __init__(self, *, exp_bits: int = 2, weight_bits: int = 8):
        _check_int("exp_bits", exp_bits, 1, 4)
        _check_int("weight_bits", weight_bits, 2, 16)
        self._exp_bits = exp_bits
        self._weight_bits = weight_bits
        super().__init__({
            "basis": In(data.ArrayLayout(signed(8), 9)),
            "basis_load": In(1),
            "wshift": In(unsigned(5)),
            "i": In(stream.Signature(data.ArrayLayout(unsigned(1 + exp_bits), 3))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(weight_bits), 3))),
        })

    @property
    def exp_bits(self) -> int:
        return self._exp_bits

    @property
    def weight_bits(self) -> int:
        return self._weight_bits

    def elaborate(self, platform):
        m = Module()
        e = self._exp_bits
        # A term lies in [-127 * 2**s, 128 * 2**s] with s = 2**E - 2 (the largest shift), a column sum within
        # +-3 * 2**(7 + s) < 2**(9 + s).
        term_bits = (1 << e) + 7
        exact_bits = term_bits + 1
        qmax = (1 << (self._weight_bits - 1)) - 1

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        # The basis register file, with the value being loaded forwarded to a row accepted in the same cycle.
        basis_regs = Signal(data.ArrayLayout(signed(8), 9))
        basis_now = Signal(data.ArrayLayout(signed(8), 9))
        with m.If(self.basis_load):
            m.d.sync += basis_regs.eq(self.basis)
            m.d.comb += basis_now.eq(self.basis)
        with m.Else():
            m.d.comb += basis_now.eq(basis_regs)

        # Stage 1: term[k][j] = sign(c_k) * (B[k][j] << (|c_k| - 1)), or 0.
        s1_valid = Signal()
        s1_wshift = Signal(5)
        s1_terms = [[Signal(signed(term_bits), name=f"s1_term_{k}{j}") for j in range(3)] for k in range(3)]
        with m.If(advance):
            m.d.sync += [
                s1_valid.eq(self.i.valid),
                s1_wshift.eq(self.wshift),
            ]
        for k in range(3):
            field = self.i.payload[k]
            magnitude = Signal(e, name=f"code_mag_{k}")
            negative = Signal(name=f"code_neg_{k}")
            amount = Signal(e, name=f"code_shift_{k}")
            m.d.comb += [
                magnitude.eq(field[:e]),
                negative.eq(field[e]),
                amount.eq(magnitude - 1),          # wraps for magnitude 0, which is masked below
            ]
            for j in range(3):
                shifted = Signal(signed(term_bits), name=f"shifted_{k}{j}")
                m.d.comb += shifted.eq(basis_now[3 * k + j] << amount)
                with m.If(advance):
                    m.d.sync += s1_terms[k][j].eq(Mux(magnitude == 0, 0, Mux(negative, -shifted, shifted)))

        # Stage 2: exact_j = sum over k.
        s2_valid = Signal()
        s2_wshift = Signal(5)
        s2_exact = [Signal(signed(exact_bits), name=f"s2_exact_{j}") for j in range(3)]
        with m.If(advance):
            m.d.sync += [
                s2_valid.eq(s1_valid),
                s2_wshift.eq(s1_wshift),
            ]
            m.d.sync += [s2_exact[j].eq(s1_terms[0][j] + s1_terms[1][j] + s1_terms[2][j]) for j in range(3)]

        # Stage 3: round half up by wshift (arithmetic), saturate symmetrically.
        pre_shift = Signal(5)
        m.d.comb += pre_shift.eq(s2_wshift - 1)
        with m.If(advance):
            m.d.sync += self.o.valid.eq(s2_valid)
        for j in range(3):
            halved = Signal(signed(exact_bits), name=f"halved_{j}")      # exact >> (wshift - 1)
            rounded = Signal(signed(exact_bits), name=f"rounded_{j}")
            m.d.comb += [
                halved.eq(s2_exact[j] >> pre_shift),
                rounded.eq(Mux(s2_wshift == 0, s2_exact[j], (halved + 1) >> 1)),
            ]
            with m.If(advance):
                m.d.sync += self.o.payload[j].eq(Mux(rounded > qmax, qmax, Mux(rounded < -qmax, -qmax, rounded)))
        return m
