"""A sequential memory reader: words from a start address on, as a stream, one per cycle."""
from __future__ import annotations

from amaranth import Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out


class SequentialReader(wiring.Component):
    """Read a memory from ``seek_addr`` on, one word per cycle, as a stream.

    ``seek`` restarts at ``seek_addr`` (words read before it are dropped, also those still in flight). With a
    ``limit`` the reader stops before the address equal to ``limit`` (a producer's write pointer; addresses
    and ``limit`` have one more bit than the memory, for the wrap-around of a ring buffer), comparing them in
    a register: a word the limit has just passed is read a cycle later. ``consumed`` is the address of the
    oldest word not yet taken from ``o``: while ``o.valid``, the address of the word offered.

    The memory's read enable and address come from the reader's own flip-flops (at most a LUT between): no
    path runs from the consumer's ready into the memory, which on the UP5K sits at the die's edge; with
    latency 1, ``o.valid`` is a flip-flop of its own too.

    Parameters
    ----------
    addr_bits : int
        Address bits of the memory (``consumed``, ``seek_addr`` and ``limit`` have one more when ``limited``).
    width : int
        Word width.
    latency : int
        The memory's read latency: 1 (its output register holds a word until the next read: a word the
        consumer does not take as the next one arrives moves to a skid register, and no read is issued
        while both hold one) or 2 (a registered output; a queue of 4 words behind it, enough for a word per
        cycle: a read is 3 cycles from its issue to the queue's output).
    limited : bool
        Stop at ``limit``.

    Throughput: one word per cycle. Latency: the first word after a ``seek`` in cycle ``c`` is valid in cycle
    ``c + 2`` (``latency`` 1) or ``c + 4`` (``latency`` 2: the read, the memory's register, the queue).
    """

    def __init__(self, *, addr_bits: int, width: int, latency: int = 1, limited: bool = False):
        if latency not in (1, 2):
            raise ValueError(f"latency must be 1 or 2, not {latency!r}")
        self.addr_bits, self.width, self.latency, self.limited = addr_bits, width, latency, limited
        ptr = addr_bits + (1 if limited else 0)
        self.ptr_bits = ptr
        super().__init__({
            "seek": In(1), "seek_addr": In(ptr),
            "limit": In(ptr),
            "consumed": Out(ptr),
            "rd_addr": Out(addr_bits), "rd_en": Out(1), "rd_data": In(width),
            "o": Out(stream.Signature(data.StructLayout({"data": width}))),
        })

    def elaborate(self, platform):
        m = Module()
        addr = Signal(self.ptr_bits)                     # the next address to read
        more = Signal()
        read = Signal()
        m.d.comb += self.rd_addr.eq(addr)
        with m.If(self.seek):
            m.d.sync += addr.eq(self.seek_addr)
        with m.Elif(read):
            m.d.sync += addr.eq(addr + 1)
        if self.limited:
            # registered, and its comparisons made beside the read decision rather than after it: the decision
            # only picks one (a limit that has just moved is seen a cycle later); the address after this one
            # is kept in a register too, so no comparison waits on a carry chain
            following = Signal(self.ptr_bits, init=1)     # addr + 1
            with m.If(self.seek):
                m.d.sync += following.eq(self.seek_addr + 1)
            with m.Elif(read):
                m.d.sync += following.eq(following + 1)
            m.d.sync += more.eq(Mux(self.seek, self.seek_addr != self.limit,
                                    Mux(read, following != self.limit, addr != self.limit)))
        else:
            m.d.comb += more.eq(1)
        take = self.o.valid & self.o.ready
        if self.latency == 1:
            self._skid(m, addr, read, more, take)
        else:
            self._queue(m, read, more, take)
        return m

    def _skid(self, m, addr, read, more, take):
        # the memory's output register holds the newer word, the skid register the older; a read is issued
        # while one of them is free (also in a seek's cycle, whose word is dropped)
        held = Signal()                                  # the memory's output holds a word not yet taken
        skid = Signal(self.width)
        skid_valid = Signal()
        # both flags' next values, and their OR kept in a register of its own: the consumer's decisions (across
        # the die from the memory) start at one flip-flop
        held_next, skid_valid_next, valid = Signal(), Signal(), Signal()
        m.d.comb += [read.eq(more & ~(held & skid_valid)), self.rd_en.eq(read), self.o.valid.eq(valid),
                     self.o.payload.data.eq(Mux(skid_valid, skid, self.rd_data))]
        # the skid register copies the memory's output whenever it holds nothing still needed (its contents
        # count only while skid_valid): its enable is one LUT after the consumer's handshake
        with m.If(held & (~skid_valid | take)):
            m.d.sync += skid.eq(self.rd_data)
        m.d.comb += [held_next.eq(held), skid_valid_next.eq(skid_valid)]
        with m.If(self.seek):
            m.d.comb += [held_next.eq(0), skid_valid_next.eq(0)]
        with m.Elif(read):
            # the new word lands in the memory's output; an older one there not taken now moves aside
            m.d.comb += held_next.eq(1)
            with m.If(held & ~take):
                m.d.comb += skid_valid_next.eq(1)
            with m.Elif(skid_valid & take):
                m.d.comb += skid_valid_next.eq(0)
        with m.Elif(take):
            with m.If(held & skid_valid):
                m.d.comb += held_next.eq(0)
            with m.Elif(skid_valid):
                m.d.comb += skid_valid_next.eq(0)
            with m.Else():
                m.d.comb += held_next.eq(0)
        m.d.sync += [held.eq(held_next), skid_valid.eq(skid_valid_next), valid.eq(held_next | skid_valid_next)]
        # every word read since the last seek is taken or held here, so the oldest one not taken is addr less
        # the words held: from flip-flops, where a register of its own would take its enable from the
        # consumer's ready (five LUTs from the fill's state on the iCEBreaker build)
        m.d.comb += self.consumed.eq(addr - held - skid_valid)

    def _queue(self, m, read, more, take):
        # registered memory output: reads in flight land in a queue; a read is issued only when the queue has
        # room for it and every read still in flight
        queue = SyncFIFO(width=self.width, depth=4)
        m.submodules.queue = ResetInserter(self.seek)(queue)
        flight = Signal(2)                               # reads issued 1 and 2 cycles ago
        m.d.comb += [read.eq(more & ~self.seek & (queue.level + flight[0] + flight[1] < 4)), self.rd_en.eq(read)]
        with m.If(self.seek):
            m.d.sync += flight.eq(0)
        with m.Else():
            m.d.sync += flight.eq(flight << 1 | read)
        with m.If(self.seek):
            m.d.sync += self.consumed.eq(self.seek_addr)
        with m.Elif(take):
            m.d.sync += self.consumed.eq(self.consumed + 1)
        m.d.comb += [queue.w_data.eq(self.rd_data), queue.w_en.eq(flight[1] & ~self.seek),
                     self.o.valid.eq(queue.r_rdy), self.o.payload.data.eq(queue.r_data), queue.r_en.eq(self.o.ready)]
