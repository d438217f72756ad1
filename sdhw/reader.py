"""A sequential memory reader: words from a start address on, as a stream, one per cycle."""
from __future__ import annotations

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out


class SequentialReader(wiring.Component):
    """Read a memory from ``seek_addr`` on, one word per cycle, as a stream of ``(data, addr)``.

    ``seek`` restarts at ``seek_addr`` (words read before it are dropped, also those still in flight). With a
    ``limit`` the reader stops before the address equal to ``limit`` (a producer's write pointer; addresses
    and ``limit`` have one more bit than the memory, for the wrap-around of a ring buffer), comparing them in
    a register: a word the limit has just passed is read a cycle later. ``consumed`` is
    the address of the oldest word not yet taken from ``o``.

    Parameters
    ----------
    addr_bits : int
        Address bits of the memory (the stream's ``addr`` has one more when ``limited``).
    width : int
        Word width.
    latency : int
        The memory's read latency: 1 (its output register holds the word, the reader adds none: the stream's
        payload is the memory's output) or 2 (a registered output; a queue of 4 words behind it, enough for a
        word per cycle: a read is 3 cycles from its issue to the queue's output).
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
        layout = data.StructLayout({"data": width, "addr": ptr})
        super().__init__({
            "seek": In(1), "seek_addr": In(ptr),
            "limit": In(ptr),
            "consumed": Out(ptr),
            "rd_addr": Out(addr_bits), "rd_en": Out(1), "rd_data": In(width),
            "o": Out(stream.Signature(layout)),
        })

    def elaborate(self, platform):
        m = Module()
        addr = Signal(self.ptr_bits)                     # the next address to read
        addr_next = Signal(self.ptr_bits)
        more = Signal()
        read = Signal()
        m.d.sync += addr.eq(addr_next)
        m.d.comb += [addr_next.eq(addr), self.rd_addr.eq(addr)]
        if self.limited:
            # registered, and its comparisons made beside the read decision rather than after it: the decision
            # only picks one (a limit that has just moved is seen a cycle later)
            m.d.sync += more.eq(Mux(self.seek, self.seek_addr != self.limit,
                                    Mux(read, (addr + 1)[:len(addr)] != self.limit, addr != self.limit)))
        else:
            m.d.comb += more.eq(1)
        with m.If(self.seek):
            m.d.sync += self.consumed.eq(self.seek_addr)
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += self.consumed.eq(self.consumed + 1)
        if self.latency == 1:
            # the memory's output register is the stream's: read the next word when this one is taken (also in
            # a seek's cycle, whose word is dropped: so the memory's enable waits on the consumer's ready alone)
            word_addr = Signal(self.ptr_bits)
            m.d.comb += [read.eq((~self.o.valid | self.o.ready) & more), self.rd_en.eq(read),
                         self.o.payload.data.eq(self.rd_data), self.o.payload.addr.eq(word_addr)]
            with m.If(self.seek):
                m.d.comb += addr_next.eq(self.seek_addr)
                m.d.sync += self.o.valid.eq(0)
            with m.Elif(read):
                m.d.comb += addr_next.eq(addr + 1)
                m.d.sync += [word_addr.eq(addr), self.o.valid.eq(1)]
            with m.Elif(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            return m
        # registered memory output: reads in flight land in a queue; a read is issued only when the queue has
        # room for it and every read still in flight
        queue = SyncFIFO(width=self.width + self.ptr_bits, depth=4)
        m.submodules.queue = ResetInserter(self.seek)(queue)
        flight = Signal(2)                               # reads issued 1 and 2 cycles ago
        flight_addr = [Signal(self.ptr_bits, name=f"flight_addr{k}") for k in range(2)]
        m.d.comb += [read.eq(more & ~self.seek & (queue.level + flight[0] + flight[1] < 4)), self.rd_en.eq(read)]
        with m.If(self.seek):
            m.d.comb += addr_next.eq(self.seek_addr)
            m.d.sync += flight.eq(0)
        with m.Else():
            m.d.sync += [flight.eq(Cat(read, flight[0])), flight_addr[0].eq(addr), flight_addr[1].eq(flight_addr[0])]
            with m.If(read):
                m.d.comb += addr_next.eq(addr + 1)
        m.d.comb += [queue.w_data.eq(Cat(self.rd_data, flight_addr[1])), queue.w_en.eq(flight[1] & ~self.seek)]
        m.d.comb += [self.o.valid.eq(queue.r_rdy), self.o.payload.data.eq(queue.r_data[:self.width]),
                     self.o.payload.addr.eq(queue.r_data[self.width:]), queue.r_en.eq(self.o.ready)]
        return m
