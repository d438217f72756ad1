"""Deliberately broken variants of the blocks: each wraps the real Component and changes one output in one
rare case, so a proof that passes on the block must fail on its variant (the proofs can fail)."""
from __future__ import annotations

from collections.abc import Callable

from amaranth import Module, Signal
from amaranth.lib import wiring

from sdhw.rebuild import RebuildUnit
from sdhw.requant import Requantiser


class Mutant(wiring.Component):
    """``inner`` behind the same ports, with the outputs named in ``changes`` replaced: ``changes[path](m, inner)``
    gives the new value of output ``path`` (a tuple such as ``("o", "valid")``)."""

    def __init__(self, inner: wiring.Component, changes: dict[tuple[str, ...], Callable]):
        self.inner, self.changes = inner, changes
        super().__init__(inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        for (path, member, outer), (_, _, inner) in zip(self.signature.flatten(self),
                                                        self.inner.signature.flatten(self.inner)):
            if member.flow == wiring.In:
                m.d.comb += inner.eq(outer)
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


def requant_flip_bit(**kwargs) -> Mutant:
    """A requantiser whose output 7 comes out as 6."""
    def payload(m, inner):
        return inner.o.payload.as_value() ^ (inner.o.payload.value == 7)
    return Mutant(Requantiser(**kwargs), {("o", "payload"): payload})


def requant_duplicate(**kwargs) -> Mutant:
    """A requantiser that emits an element twice when its output is -100 (valid held a cycle past the
    handshake)."""
    def valid(m, inner):
        again = Signal()
        m.d.sync += again.eq(inner.o.valid & inner.o.ready & (inner.o.payload.value == -100) & ~again)
        return inner.o.valid | again
    return Mutant(Requantiser(**kwargs), {("o", "valid"): valid})


MUTANTS: dict[str, Callable[..., Mutant]] = {
    "rebuild_flip_bit": rebuild_flip_bit,
    "rebuild_drop_valid": rebuild_drop_valid,
    "requant_flip_bit": requant_flip_bit,
    "requant_duplicate": requant_duplicate,
}
