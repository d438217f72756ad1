"""Deliberately broken variants of the blocks: each wraps the real Component and changes one output in one
rare case (or what the block sees on one input), or, for a change out of a wrapper's reach, elaborates the block
with one of its constants changed, so a proof that passes on the block must fail on its variant (the proofs can
fail)."""
from __future__ import annotations

import types
from collections.abc import Callable

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring

from fpga import bridge
from fpga.bridge import UartBridge
from sdhw import hostbus as hb
from sdhw.drain import Drain
from sdhw.reader import SequentialReader
from sdhw.rebuild import RebuildUnit
from sdhw.requant import Requantiser, ThresholdRequantiser
from sdhw.sequencer import Sequencer
from sdhw.writeback import Writeback


class Mutant(wiring.Component):
    """``inner`` behind the same ports, with the ports named in ``changes`` replaced: ``changes[path](m, inner)``
    gives the new value of output ``path`` (a tuple such as ``("o", "valid")``), ``changes[path](m, outer)``
    what the inner block sees on input ``path`` (``outer``: this wrapper, whose ports the harness drives)."""

    def __init__(self, inner: wiring.Component, changes: dict[tuple[str, ...], Callable]):
        self.inner, self.changes = inner, changes
        super().__init__(inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        for (path, member, outer), (_, _, inner) in zip(self.signature.flatten(self),
                                                        self.inner.signature.flatten(self.inner)):
            if member.flow == wiring.In:
                m.d.comb += inner.eq(self.changes[path](m, self) if path in self.changes else outer)
            elif path in self.changes:
                m.d.comb += outer.eq(self.changes[path](m, self.inner))
            else:
                m.d.comb += outer.eq(inner)
        return m


def rebuild_flip_bit(**kwargs) -> Mutant:
    """A rebuild unit whose weight 5 comes out as 4."""
    def payload(m, inner):
        value = inner.o.payload.as_value()
        return value ^ (inner.o.payload.weight == 5)
    return Mutant(RebuildUnit(**kwargs), {("o", "payload"): payload})


def rebuild_drop_valid(**kwargs) -> Mutant:
    """A rebuild unit that withdraws an offered weight -3 while the consumer stalls it (after offering it for a
    cycle): it comes back once the consumer is ready, but a consumer may not see an offer withdrawn."""
    def valid(m, inner):
        stalled = Signal()
        m.d.sync += stalled.eq(inner.o.valid & ~inner.o.ready)
        return inner.o.valid & ~(stalled & ~inner.o.ready & (inner.o.payload.weight == -3))
    return Mutant(RebuildUnit(**kwargs), {("o", "valid"): valid})


def _flip_low_bit(block, value: int) -> Mutant:
    """``block`` with its output ``value`` coming out with the lowest bit flipped."""
    def payload(m, inner):
        return inner.o.payload.as_value() ^ (inner.o.payload.value == value)
    return Mutant(block, {("o", "payload"): payload})


def requant_flip_bit(**kwargs) -> Mutant:
    """A requantiser whose output 7 comes out as 6."""
    return _flip_low_bit(Requantiser(**kwargs), 7)


def requant_duplicate(**kwargs) -> Mutant:
    """A requantiser that emits an element twice when its output is -100 (valid held a cycle past the
    handshake)."""
    def valid(m, inner):
        again = Signal()
        m.d.sync += again.eq(inner.o.valid & inner.o.ready & (inner.o.payload.value == -100) & ~again)
        return inner.o.valid | again
    return Mutant(Requantiser(**kwargs), {("o", "valid"): valid})


def threshold_flip_bit(**kwargs) -> Mutant:
    """A table requantiser whose output 123 comes out as 122."""
    return _flip_low_bit(ThresholdRequantiser(**kwargs), 123)


def threshold_ignore_count(**kwargs) -> Mutant:
    """A table requantiser that searches the whole table, not only the layer's ``n_thresh`` entries (whatever an
    earlier layer left past them counts)."""
    def n_thresh(m, outer):
        return 256
    return Mutant(ThresholdRequantiser(**kwargs), {("n_thresh",): n_thresh})


def sequencer_miss_done(**kwargs) -> Mutant:
    """A sequencer that never sees the data path's done for a layer in its second slot (the program hangs)."""
    def layer_done(m, outer):
        return outer.layer_done & (outer.layer_index != 1)
    return Mutant(Sequencer(**kwargs), {("layer_done",): layer_done})


def sequencer_start_bad_checksum(**kwargs) -> Mutant:
    """A sequencer that, when it stops a run on a slot's bad checksum, starts that slot's layer all the same."""
    def layer_start(m, inner):
        was_error = Signal()
        m.d.sync += was_error.eq(inner.error)
        return inner.layer_start | (inner.error & ~was_error & (inner.err_code == hb.ERR_CHECKSUM))
    return Mutant(Sequencer(**kwargs), {("layer_start",): layer_start})


def bridge_write_rejected(**kwargs) -> Mutant:
    """A UART bridge that, once it has answered a frame with an error status (a bad checksum or header, a
    truncated frame, a framing error), writes its buffer's first word to the frame's address all the same."""
    def w_en(m, inner):
        was_rejected = Signal(8)
        m.d.sync += was_rejected.eq(inner.rejected)
        return inner.bus.w_en | (inner.rejected != was_rejected)
    return Mutant(UartBridge(**kwargs), {("bus", "w_en"): w_en})


def bridge_drop_second_write(**kwargs) -> Mutant:
    """A UART bridge that writes only the first word of a request to the bus (the second of a two-word write is
    dropped) and answers OK."""
    def w_en(m, inner):
        writes = Signal(2)                          # bus writes since the last response
        with m.If(inner.tx.valid):
            m.d.sync += writes.eq(0)
        with m.Elif(inner.bus.w_en & (writes != 3)):
            m.d.sync += writes.eq(writes + 1)
        return inner.bus.w_en & (writes != 1)
    return Mutant(UartBridge(**kwargs), {("bus", "w_en"): w_en})


def bridge_read_wrong_address(**kwargs) -> Mutant:
    """A UART bridge whose reads of an odd address go to the even address below it."""
    def addr(m, inner):
        return Cat(inner.bus.addr[0] & ~inner.bus.r_en, inner.bus.addr[1:])
    return Mutant(UartBridge(**kwargs), {("bus", "addr"): addr})


class _ArcCrcBridge(UartBridge):
    """:class:`~fpga.bridge.UartBridge` whose CRCs start from 0 (CRC-16/ARC's initial value), not 0xFFFF."""

    def elaborate(self, platform):
        # the initial value is a constant read inside the bridge's elaborate, out of reach of a wrapper: run a
        # copy of that function that sees another constant (the module itself is left alone)
        elaborate = types.FunctionType(UartBridge.elaborate.__code__, {**vars(bridge), "CRC_INIT": 0x0000})
        return elaborate(self, platform)


def bridge_crc_init_zero(**kwargs) -> UartBridge:
    """A UART bridge that checks requests and protects responses with CRC-16/ARC (initial value 0) where the
    protocol says CRC-16/MODBUS (0xFFFF): a request whose ARC checksum is right is executed, a correct one
    rejected."""
    return _ArcCrcBridge(**kwargs)


def reader_keep_after_seek(**kwargs) -> Mutant:
    """A memory reader that, when a ``seek`` comes while a word is offered and not taken, keeps offering that word
    for one more cycle (a word read before the seek comes out after it)."""
    stale, old = Signal(), Signal(kwargs["width"])

    def valid(m, inner):
        m.d.sync += [stale.eq(inner.seek & inner.o.valid & ~inner.o.ready), old.eq(inner.o.payload.as_value())]
        return inner.o.valid | stale

    def payload(m, inner):
        return Mux(stale, old, inner.o.payload.as_value())
    return Mutant(SequentialReader(**kwargs), {("o", "valid"): valid, ("o", "payload"): payload})


def reader_past_limit(**kwargs) -> Mutant:
    """A limited memory reader that sees ``limit`` one word further on than it is (it reads the word the producer
    has not published yet)."""
    def limit(m, outer):
        return outer.limit + 1
    return Mutant(SequentialReader(**kwargs), {("limit",): limit})


def drain_extra_after_stall(**kwargs) -> Mutant:
    """A drain that offers one element more in the cycle after the last of its shadow is taken, when the consumer
    had stalled that one (a count out one above the count in)."""
    def valid(m, inner):
        stalled, again = Signal(), Signal()
        m.d.sync += [stalled.eq(inner.o.valid & ~inner.o.ready),
                     again.eq(inner.o.valid & inner.o.ready & stalled & ~inner.busy_next)]
        return inner.o.valid | again
    return Mutant(Drain(**kwargs), {("o", "valid"): valid})


def writeback_write_twice(**kwargs) -> Mutant:
    """A writeback that writes an element whose tag is all ones a second time, at the same tag, in the cycle
    after (an element duplicated)."""
    again, addr = Signal(), Signal(kwargs["tag_bits"])

    def w_en(m, inner):
        m.d.sync += [again.eq(inner.w_en & inner.w_addr.all() & ~again), addr.eq(inner.w_addr)]
        return inner.w_en | again

    def w_addr(m, inner):
        return Mux(again, addr, inner.w_addr)
    return Mutant(Writeback(**kwargs), {("w_en",): w_en, ("w_addr",): w_addr})


MUTANTS: dict[str, Callable[..., wiring.Component]] = {
    "rebuild_flip_bit": rebuild_flip_bit,
    "rebuild_drop_valid": rebuild_drop_valid,
    "requant_flip_bit": requant_flip_bit,
    "requant_duplicate": requant_duplicate,
    "threshold_flip_bit": threshold_flip_bit,
    "threshold_ignore_count": threshold_ignore_count,
    "sequencer_miss_done": sequencer_miss_done,
    "sequencer_start_bad_checksum": sequencer_start_bad_checksum,
    "bridge_write_rejected": bridge_write_rejected,
    "bridge_drop_second_write": bridge_drop_second_write,
    "bridge_read_wrong_address": bridge_read_wrong_address,
    "bridge_crc_init_zero": bridge_crc_init_zero,
    "reader_keep_after_seek": reader_keep_after_seek,
    "reader_past_limit": reader_past_limit,
    "drain_extra_after_stall": drain_extra_after_stall,
    "writeback_write_twice": writeback_write_twice,
}
