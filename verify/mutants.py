"""Deliberately broken variants of the blocks: each wraps the real Component and changes one output in one
rare case (or what the block sees on one input), so a proof that passes on the block must fail on its variant
(the proofs can fail)."""
from __future__ import annotations

from collections.abc import Callable

from amaranth import Module, Signal
from amaranth.lib import wiring

from sdhw import hostbus as hb
from sdhw.rebuild import RebuildUnit
from sdhw.requant import Requantiser, ThresholdRequantiser
from sdhw.sequencer import Sequencer


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


MUTANTS: dict[str, Callable[..., Mutant]] = {
    "rebuild_flip_bit": rebuild_flip_bit,
    "rebuild_drop_valid": rebuild_drop_valid,
    "requant_flip_bit": requant_flip_bit,
    "requant_duplicate": requant_duplicate,
    "threshold_flip_bit": threshold_flip_bit,
    "threshold_ignore_count": threshold_ignore_count,
    "sequencer_miss_done": sequencer_miss_done,
    "sequencer_start_bad_checksum": sequencer_start_bad_checksum,
}
