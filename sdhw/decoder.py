"""Coefficient row decoder ("index selector"): a row bitmap in memory in, a stream of non-zero row indices out.

Zero rows of a SmartDeal layer store no codes and must cost the accelerator no MAC cycle (see ``docs/FORMAT.md``,
"Row bitmap"). :class:`RowDecoder` scans the bitmap of one channel group and hands the MAC sequencer only the
indices of the rows whose bit is set.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WORD_BITS", "RowDecoder"]

WORD_BITS = 32
"""Width of a bitmap memory word; row ``h`` of a group is bit ``h % 32`` of word ``base + h // 32``."""

_WORD_MASK = (1 << WORD_BITS) - 1


def _more_than_one_set(bits: Value) -> Value:
    """Whether ``bits`` has two or more set bits, as a balanced tree of (any, several) pairs: no carry chain,
    unlike ``bits & (bits - 1) != 0``, so a control decision taken on it stays a few LUT levels deep."""
    level = [(bits[i], Const(0)) for i in range(len(bits))]
    while len(level) > 1:
        pairs = []
        for k in range(0, len(level) - 1, 2):
            (any_a, many_a), (any_b, many_b) = level[k], level[k + 1]
            pairs.append((any_a | any_b, many_a | many_b | (any_a & any_b)))
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    return level[0][1]


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")


class RowDecoder(wiring.Component):
    """Turn the row bitmap of one group into the increasing indices of its non-zero rows.

    A group has ``n_rows`` rows ``h = 0 .. n_rows-1``; its bitmap occupies ``ceil(n_rows / 32)`` consecutive 32-bit
    words from word address ``base``, LSB-first (row ``h`` is bit ``h % 32`` of word ``base + h // 32``). Bits of
    the last word at or above ``n_rows`` are ignored (treated as zero) whatever their value.

    Parameters
    ----------
    addr_bits : int
        Width of the bitmap memory word address, 1..32. Addresses wrap modulo ``2 ** addr_bits``.
    row_bits : int
        Width of ``n_rows`` and of the emitted row index, 1..32.
    dense : bool
        Dense mode: no bitmap and no memory; every row ``0 .. n_rows-1`` is emitted (without the rows
        ``h % 4 == 3`` when ``skip_slot3`` was set at ``start``: conv 3x3 rows are ``h = 4c + r``, ``r < 3``).
    register_data : bool
        Register ``mem_data`` inside the decoder before any logic uses it (for block RAMs whose clock-to-out
        takes most of a cycle): a word is used one cycle later, so every sparse-mode latency below grows by
        one cycle and an all-zero word costs up to two; the words read and the entries emitted are the same.

    Ports
    -----
    start : In(1)
        One-cycle strobe: begin a scan of the group given by ``base``, ``n_rows`` and ``skip_slot3`` in the same
        cycle. A ``start`` while busy restarts: the old scan is abandoned at once (its in-flight memory read is
        dropped and the rest of its entries are never emitted), except that an entry already offered on ``o``
        stays offered until accepted, as the stream contract requires; the new group's entries follow it.
    base : In(unsigned(addr_bits))
        Word address of the group's first bitmap word (sparse mode).
    n_rows : In(unsigned(row_bits))
        Number of rows of the group (0 is allowed: a single ``empty`` entry).
    skip_slot3 : In(1)
        Rows ``h % 4 == 3`` do not exist: dense mode does not emit them (in sparse mode the bitmap says it);
        both modes number ``index`` without them.
    mem_addr, mem_en : Out(unsigned(addr_bits)), Out(1)
        Read port of the bitmap memory, synchronous with one cycle of latency. ``mem_en`` is combinational from
        ``start`` (the first word is requested in the ``start`` cycle); otherwise it comes from registers only.
        Each word of the group is read exactly once, in increasing address order. Unused (0) in dense mode.
    mem_data : In(32)
        The word addressed with ``mem_en`` in the previous cycle. Not sampled in any other cycle, so a RAM that
        does not hold its output is fine.
    o : Out(stream.Signature(StructLayout({"row": unsigned(row_bits), "index": unsigned(row_bits), "last": 1,
    "empty": 1})))
        One entry per non-zero row, in increasing ``row`` order, ``last`` set on the final one. ``index`` is the
        row's index among real rows: ``row - row // 4`` when ``skip_slot3`` was set at ``start`` (conv 3x3 slots
        ``4c + 3`` do not exist), else ``row``; it comes from a register, like the rest of the entry. A group
        without any non-zero row gives one entry with ``empty = 1, last = 1`` (``row = 0``), so the consumer always
        sees the end of a group. Valid/ready: an offered entry stays valid and unchanged until it is accepted.
    busy : Out(1)
        Registered; high from the cycle after ``start`` until the ``last`` entry has been accepted.
    skipped_count : Out(unsigned(row_bits + 1))
        Zero rows (rows ``< n_rows`` whose bit is 0) passed over so far in the current (or last) scan (counted one
        cycle behind the scan with ``register_data``); cleared by ``start``, non-decreasing during a scan, equal to
        ``n_rows - (number of non-zero rows)`` from the cycle the ``last`` entry is offered on. Always 0 in dense
        mode.

    Latency
    -------
    Counting the ``start`` cycle as cycle 0, with a ready consumer. Sparse mode: an entry is offered one cycle
    after the next non-zero row (or the end of the group) has been found, because its ``last`` bit must be known;
    the first entry is offered in cycle 4 when the first word holds two or more non-zero rows (cycle 4 also for a
    one-word group), and in cycle ``3 + ceil(n_rows / 32)`` for a group with no non-zero row (cycle 2 when
    ``n_rows == 0``). Dense mode: the first entry is offered in cycle 2.

    Throughput
    ----------
    Sparse mode, consumer ready: one non-zero row per cycle; a word costs ``max(1, k)`` cycles where ``k`` is its
    number of non-zero rows (runs of zero rows inside a word cost nothing: find-first-set, clear, repeat; an all-zero
    word costs one cycle). Words are prefetched into a two-word queue behind the word being scanned, so a fully
    dense bitmap streams at exactly one row per cycle with no bubble at word boundaries. The end of a group costs
    one cycle (emitting the held ``last`` entry). Dense mode: one row per cycle. Backpressure on ``o`` stalls the
    scan without loss.
    """

    def __init__(self, *, addr_bits: int = 12, row_bits: int = 16, dense: bool = False,
                 register_data: bool = False):
        _check_int("addr_bits", addr_bits, 1, 32)
        _check_int("row_bits", row_bits, 1, 32)
        if not isinstance(dense, bool):
            raise ValueError(f"dense must be a bool, not {dense!r}")
        if not isinstance(register_data, bool):
            raise ValueError(f"register_data must be a bool, not {register_data!r}")
        self._addr_bits, self._row_bits, self._dense = addr_bits, row_bits, dense
        self._register_data = register_data
        self.entry_layout = data.StructLayout({"row": unsigned(row_bits), "index": unsigned(row_bits), "last": 1,
                                               "empty": 1})
        super().__init__({
            "start": In(1),
            "base": In(unsigned(addr_bits)),
            "n_rows": In(unsigned(row_bits)),
            "skip_slot3": In(1),
            "mem_addr": Out(unsigned(addr_bits)),
            "mem_en": Out(1),
            "mem_data": In(WORD_BITS),
            "o": Out(stream.Signature(self.entry_layout)),
            "busy": Out(1),
            "skipped_count": Out(unsigned(row_bits + 1)),
        })

    @property
    def addr_bits(self) -> int:
        return self._addr_bits

    @property
    def row_bits(self) -> int:
        return self._row_bits

    @property
    def dense(self) -> bool:
        return self._dense

    def elaborate(self, platform):
        m = Module()
        o = self.o
        running = Signal()  # a scan is in progress (its last entry not yet placed on `o`)
        out_free = Signal()  # the output register may take a new entry this cycle
        m.d.comb += [
            out_free.eq(~o.valid | o.ready),
            self.busy.eq(running | o.valid),
        ]
        # Must precede every other assignment to o.valid: later statements win.
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)
        if self._dense:
            self._elaborate_dense(m, running, out_free)
        else:
            self._elaborate_sparse(m, running, out_free)
        return m

    def _elaborate_dense(self, m: Module, running: Signal, out_free: Signal) -> None:
        rb, o = self._row_bits, self.o
        h = Signal(rb)
        n_rows = Signal(rb)
        skip = Signal()
        nxt = Signal(rb + 2)
        is_last = Signal()
        m.d.comb += [
            nxt.eq(Mux(skip & (h % 4 == 2), h + 2, h + 1)),
            is_last.eq((n_rows == 0) | (nxt >= n_rows)),
        ]
        with m.If(self.start):
            m.d.sync += [h.eq(0), n_rows.eq(self.n_rows), skip.eq(self.skip_slot3), running.eq(1)]
        with m.Elif(running & out_free):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.row.eq(h),
                o.payload.index.eq(h - Mux(skip, h >> 2, 0)),
                o.payload.last.eq(is_last),
                o.payload.empty.eq(n_rows == 0),
                h.eq(nxt),
            ]
            with m.If(is_last):
                m.d.sync += running.eq(0)

    def _elaborate_sparse(self, m: Module, running: Signal, out_free: Signal) -> None:
        ab, rb, o = self._addr_bits, self._row_bits, self.o
        max_words = -(-((1 << rb) - 1) // WORD_BITS)

        # Latched at start.
        n_rows = Signal(rb)
        tail = Signal(5)  # n_rows % 32: valid bits of the last word (0 means all 32)

        # Fetch side: next word to request, words left to request, the read in flight.
        fetch_addr = Signal(ab)
        fetch_left = Signal(range(max_words + 1))
        rd_pending = Signal()  # mem_data holds a word of this scan in this cycle
        rd_last = Signal()  # ... and it is the group's last word

        # The word being scanned (its already emitted bits cleared) and the two-word prefetch queue behind it.
        cur_bits, cur_valid, cur_last = Signal(WORD_BITS), Signal(), Signal()
        cur_widx = Signal(max(rb - 5, 1))  # word index of cur within the group
        q0_bits, q0_valid, q0_last = Signal(WORD_BITS), Signal(), Signal()
        q1_bits, q1_valid, q1_last = Signal(WORD_BITS), Signal(), Signal()

        # The most recent non-zero row, held back until we know whether it is the last one.
        pend_row, pend_valid = Signal(rb), Signal()
        skip = Signal()  # latched at start: number ``index`` without the slots 4c + 3
        pend_index = Signal(rb)
        m.d.comb += pend_index.eq(pend_row - Mux(skip, pend_row >> 2, 0))
        scan_done = Signal()  # every word scanned: only the final entry remains to be emitted

        passed = Signal(rb)  # rows scanned so far
        found = Signal(rb)  # non-zero rows found so far
        m.d.comb += self.skipped_count.eq(passed - found)

        # The arriving word (registered first with ``register_data``), the rows >= n_rows of the last word
        # cleared.
        if self._register_data:
            word, word_pending, word_last = Signal(WORD_BITS), Signal(), Signal()
            m.d.sync += [word.eq(self.mem_data), word_pending.eq(rd_pending & ~self.start), word_last.eq(rd_last)]
        else:
            word, word_pending, word_last = self.mem_data, rd_pending, rd_last
        in_mask = Signal(WORD_BITS)
        in_bits = Signal(WORD_BITS)
        m.d.comb += [
            in_mask.eq(Mux(word_last & (tail != 0), ~(Const(_WORD_MASK, WORD_BITS) << tail), _WORD_MASK)),
            in_bits.eq(word & in_mask),
        ]

        # Find-first-set over the remaining bits of cur.
        lowest = Signal(WORD_BITS)
        rest = Signal(WORD_BITS)
        pos = Signal(5)
        row = Signal(rb)
        m.d.comb += [
            lowest.eq(cur_bits & (~cur_bits + 1)[:WORD_BITS]),
            rest.eq(cur_bits & (cur_bits - 1)[:WORD_BITS]),
            row.eq(Cat(pos, cur_widx)[:rb]),
        ]
        for k in range(5):
            sel = sum(1 << i for i in range(WORD_BITS) if (i >> k) & 1)
            m.d.comb += pos[k].eq((lowest & sel).any())

        start = self.start
        take = Signal()  # emit the lowest set bit of cur into pend this cycle
        zero_word = Signal()  # cur has no set bit left: drop it this cycle
        word_done = Signal()  # cur is finished this cycle
        load = Signal()  # cur is (or becomes) empty: refill it from the queue or from memory
        issue = Signal()  # request the next word of the group this cycle
        ending = Signal()  # place the final entry this cycle
        occupancy = Signal(range(5))
        # cur has bits left after the lowest (rest != 0). With ``register_data`` (ECP5) it is decided without
        # rest's carry chain: the decision steers cur's refill, and the subtract in front of it was the ECP5
        # critical path (N = 16 and 64 SD). iCE40 builds keep the subtract, expressed as before: any change to
        # this netlist moved UP5K N = 1 SD (99 % full) from 22.7 / 23.2 MHz on two seeds to 19.9-22.2.
        if self._register_data:
            more = Signal()
            m.d.comb += more.eq(_more_than_one_set(cur_bits))
            last_bit, more_bits = ~more, more
        else:
            last_bit, more_bits = rest == 0, rest != 0
        m.d.comb += [
            take.eq(~start & cur_valid & (cur_bits != 0) & (~pend_valid | out_free)),
            zero_word.eq(~start & cur_valid & (cur_bits == 0)),
            word_done.eq(zero_word | (take & last_bit)),
            load.eq(~start & (~cur_valid | word_done)),
            occupancy.eq(cur_valid + q0_valid + q1_valid + rd_pending + (word_pending if self._register_data else 0)),
            # Three words of storage (cur, q0, q1): a read may be issued while at most two are held or in flight.
            issue.eq(~start & (fetch_left != 0) & (occupancy <= 2)),
            ending.eq(~start & running & scan_done & out_free),
            self.mem_en.eq(Mux(start, self.n_rows != 0, issue)),
            self.mem_addr.eq(Mux(start, self.base, fetch_addr)),
        ]

        with m.If(start):
            n_words = (self.n_rows + (WORD_BITS - 1)) >> 5
            m.d.sync += [
                n_rows.eq(self.n_rows),
                skip.eq(self.skip_slot3),
                tail.eq(self.n_rows[:5]),
                fetch_addr.eq(self.base + 1),
                fetch_left.eq(Mux(self.n_rows != 0, n_words - 1, 0)),
                rd_pending.eq(self.n_rows != 0),
                rd_last.eq(n_words == 1),
                cur_valid.eq(0),
                cur_widx.eq(-1),
                q0_valid.eq(0),
                q1_valid.eq(0),
                pend_valid.eq(0),
                scan_done.eq(self.n_rows == 0),
                running.eq(1),
                passed.eq(0),
                found.eq(0),
            ]
        with m.Else():
            m.d.sync += rd_pending.eq(issue)
            with m.If(issue):
                m.d.sync += [
                    fetch_addr.eq(fetch_addr + 1),
                    fetch_left.eq(fetch_left - 1),
                    rd_last.eq(fetch_left == 1),
                ]

        with m.If(take):
            m.d.sync += [pend_row.eq(row), pend_valid.eq(1)]
            with m.If(pend_valid):
                m.d.sync += [
                    o.valid.eq(1),
                    o.payload.row.eq(pend_row),
                    o.payload.index.eq(pend_index),
                    o.payload.last.eq(0),
                    o.payload.empty.eq(0),
                ]
            with m.If(more_bits):
                m.d.sync += cur_bits.eq(rest)
        with m.If(word_done):
            m.d.sync += cur_valid.eq(0)
            with m.If(cur_last):
                m.d.sync += scan_done.eq(1)

        # skipped_count: with ``register_data`` (fast block RAM clocks) it follows the scan one cycle behind,
        # from registers, since the row counter's adder would otherwise sit behind the find-first-set
        if self._register_data:
            bk_take, bk_more, bk_row = Signal(), Signal(), Signal(rb)
            bk_word_done, bk_last, bk_widx = Signal(), Signal(), Signal.like(cur_widx)
            m.d.sync += [bk_take.eq(take), bk_more.eq(take & more_bits), bk_row.eq(row),
                         bk_word_done.eq(word_done), bk_last.eq(cur_last), bk_widx.eq(cur_widx)]
        else:
            bk_take, bk_more, bk_row = take, take & more_bits, row
            bk_word_done, bk_last, bk_widx = word_done, cur_last, cur_widx
        with m.If(~start):
            with m.If(bk_take):
                m.d.sync += found.eq(found + 1)
            with m.If(bk_more):
                m.d.sync += passed.eq(bk_row + 1)
            with m.If(bk_word_done):
                m.d.sync += passed.eq(Mux(bk_last, n_rows, Cat(Const(0, 5), bk_widx + 1)))

        # Refill cur from the oldest available word; queue the arriving word if cur does not take it.
        with m.If(load & q0_valid):
            m.d.sync += [cur_bits.eq(q0_bits), cur_last.eq(q0_last), cur_valid.eq(1), cur_widx.eq(cur_widx + 1)]
            with m.If(q1_valid):
                m.d.sync += [q0_bits.eq(q1_bits), q0_last.eq(q1_last)]
                m.d.sync += [q1_bits.eq(in_bits), q1_last.eq(word_last), q1_valid.eq(word_pending)]
            with m.Else():
                m.d.sync += [q0_bits.eq(in_bits), q0_last.eq(word_last), q0_valid.eq(word_pending)]
        with m.Elif(load & word_pending):
            m.d.sync += [cur_bits.eq(in_bits), cur_last.eq(word_last), cur_valid.eq(1), cur_widx.eq(cur_widx + 1)]
        with m.Elif(~start & word_pending):
            # No overflow: occupancy <= 3 always, and a full queue implies an empty cur (load above).
            with m.If(~q0_valid):
                m.d.sync += [q0_bits.eq(in_bits), q0_last.eq(word_last), q0_valid.eq(1)]
            with m.Else():
                m.d.sync += [q1_bits.eq(in_bits), q1_last.eq(word_last), q1_valid.eq(1)]

        with m.If(ending):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.row.eq(Mux(pend_valid, pend_row, 0)),
                o.payload.index.eq(Mux(pend_valid, pend_index, 0)),
                o.payload.last.eq(1),
                o.payload.empty.eq(~pend_valid),
                pend_valid.eq(0),
                scan_done.eq(0),
                running.eq(0),
            ]
