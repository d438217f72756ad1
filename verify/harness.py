"""Building blocks of proof harnesses: free stream producers and consumers that keep (or check) the stream
rules, and a scoreboard that follows one arbitrary element through a block."""
from __future__ import annotations

from amaranth import Module, ResetSignal, Signal
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume


def no_reset(m: Module) -> None:
    """The run starts from the registers' initial values and is never reset again."""
    m.d.comb += Assume(~ResetSignal())


def last_cycle(m: Module, value, name: str) -> Signal:
    """A register holding ``value`` as it was in the cycle before (its initial value in the first cycle)."""
    value = value.as_value() if hasattr(value, "as_value") else value
    reg = Signal(len(value), name=name)
    m.d.sync += reg.eq(value)
    return reg


def free_source(m: Module, port, name: str):
    """Drive the block's input stream ``port`` with any valid/payload a producer may present: once valid, it
    stays valid with the same payload until the block is ready (assumed, a producer's obligation)."""
    payload = port.payload.as_value() if hasattr(port.payload, "as_value") else port.payload
    m.d.comb += [port.valid.eq(AnySeq(1)), payload.eq(AnySeq(len(payload)))]
    was_valid = last_cycle(m, port.valid, f"{name}_was_valid")
    was_ready = last_cycle(m, port.ready, f"{name}_was_ready")
    was_payload = last_cycle(m, payload, f"{name}_was_payload")
    with m.If(was_valid & ~was_ready):
        m.d.comb += Assume(port.valid & (payload == was_payload))


def checked_sink(m: Module, port, name: str, *, ready=None):
    """Consume the block's output stream ``port`` (``ready`` any sequence unless given) and assert the block's
    side of the stream rules: once valid, it stays valid with the same payload until taken."""
    payload = port.payload.as_value() if hasattr(port.payload, "as_value") else port.payload
    m.d.comb += port.ready.eq(AnySeq(1) if ready is None else ready)
    was_valid = last_cycle(m, port.valid, f"{name}_was_valid")
    was_ready = last_cycle(m, port.ready, f"{name}_was_ready")
    was_payload = last_cycle(m, payload, f"{name}_was_payload")
    with m.If(was_valid & ~was_ready):
        m.d.comb += Assert(port.valid, f"{name}: valid dropped before ready")
        m.d.comb += Assert(payload == was_payload, f"{name}: payload changed before ready")


class Scoreboard:
    """Follow the element with an arbitrary (solver-chosen) index through a block that keeps the order: the
    ``index``-th element out must be the ``index``-th in, with the value the reference gives for it; no element
    comes out that did not go in; and it comes out within ``max_ready_cycles`` cycles with the consumer ready
    after it went in (so none is lost or held).

    ``accepted``/``emitted``: the input and output handshakes; ``expected``: the reference's output for the
    element being accepted (an Amaranth expression of the block's input); ``got``: the block's output.
    ``taken`` is high in the cycle the followed element comes out, ``expected_q`` its expected value.

    A block that may reorder its elements (each carries a tag) is followed by tag instead: ``out_tag`` is the
    output's tag, the harness gives every element its sequence number (:attr:`count_in`) as its tag, and the
    followed element must come out exactly once, in any order (``count_bits`` no wider than the tag, so the
    tags of a run are distinct).
    """

    def __init__(self, m: Module, *, accepted, emitted, expected, got, ready, max_ready_cycles: int,
                 index_bits: int = 2, count_bits: int = 6, out_tag=None, name: str = "board"):
        self.index = AnyConst(index_bits)
        count_in = Signal(count_bits, name=f"{name}_count_in")
        count_out = Signal(count_bits, name=f"{name}_count_out")
        self.count_in, self.count_out = count_in, count_out
        self.captured = captured = Signal(name=f"{name}_captured")
        self.done = done = Signal(name=f"{name}_done")
        self.expected_q = expected_q = Signal(len(expected), name=f"{name}_expected")
        self.taken = taken = Signal(name=f"{name}_taken")
        waiting = Signal(range(max_ready_cycles + 2), name=f"{name}_waiting")
        m.d.comb += Assume(count_in != (1 << count_bits) - 1)       # the counters never wrap in a run
        with m.If(accepted):
            m.d.sync += count_in.eq(count_in + 1)
            with m.If(count_in == self.index):
                m.d.sync += [captured.eq(1), expected_q.eq(expected)]
        with m.If(emitted):
            m.d.sync += count_out.eq(count_out + 1)
            m.d.comb += Assert(count_out < count_in, f"{name}: an element came out that never went in")
        if out_tag is None:
            m.d.comb += taken.eq(emitted & captured & ~done & (count_out == self.index))
        else:
            mine = emitted & (out_tag == self.index)
            m.d.comb += taken.eq(mine & captured & ~done)
            m.d.comb += Assert(~(mine & ~taken), f"{name}: an element came out twice, or before it went in")
        with m.If(taken):
            m.d.sync += done.eq(1)
            m.d.comb += Assert(got == expected_q, f"{name}: output differs from the reference")
        with m.If(captured & ~done & ready & ~taken):
            m.d.sync += waiting.eq(waiting + 1)
        m.d.comb += Assert(waiting <= max_ready_cycles,
                           f"{name}: element not out after {max_ready_cycles} ready cycles")
