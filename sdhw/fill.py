"""The fill: a layer's code stream in, rebuilt weights into the weight buffer.

The code stream (``rtl_gen.image``) holds, per layer, the requantiser's thresholds (table builds) and then,
for every channel group, its live rows: a row header (``sdhw.descriptor.HEADER_FIELDS``) and the row's codes
in chunks of R lanes (SD), or its int8 weights per tap in chunks of F lanes (dense). Each tap of a row becomes
one weight-buffer entry: the N lanes' weights for that tap and its tap info (activation offset, kernel row and
column, last-of-group, counted). :class:`SdFill` rebuilds the weights with R :class:`~sdhw.rebuild.RebuildUnit`
s, :class:`DenseFill` copies them; both write a row's entries only into room the issuer has freed and commit
them (``wp``) once every chunk is written.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .compare import above
from .config import TAP_INFO_BITS
from .descriptor import HEADER_FIELDS
from .fsm import OneHotFSM
from .rebuild import RebuildUnit

HEADER_LAYOUT = data.StructLayout({name: width for name, (_, width) in HEADER_FIELDS.items()})
TAP_INFO = data.StructLayout({"off": 16, "dy": 2, "dx": 2, "last": 1, "count": 1})
assert TAP_INFO.size == TAP_INFO_BITS


def fill_params(*, group_bits: int, pix_bits: int, code_bits: int, basis_bits: int) -> data.StructLayout:
    """The layer fields the fill uses."""
    return data.StructLayout({
        "code_base": code_bits, "n_groups": group_bits, "n_pix": pix_bits, "stream": 1, "n_rows": 16,
        "tap_step": 16, "k3": 1, "basis_base": basis_bits, "n_thresh": 9, "wshift": 5,
    })


class _FillPorts(wiring.Component):
    """Ports shared by :class:`SdFill` and :class:`DenseFill`.

    ``start``: begin a layer (``params`` stable from then until ``done``); ``done``: every entry of the layer
    committed; the write pointer runs on from layer to layer (the issuer starts each layer at it, so the
    reader's limit only ever moves forward). A row's header is taken only while six entries are free (two
    rows': the decision is registered), so a layer whose groups are replayed must keep each group within
    ``depth - 6`` entries.
    ``words``: the code stream from a :class:`~sdhw.reader.SequentialReader`, positioned with
    ``seek``/``seek_addr``; ``word_addr`` the code address of the word it offers (the reader's ``consumed``). Weight
    buffer: ``w_addr``, ``w_en`` (one bit per chunk of F lanes), ``w_data`` (a chunk's weights, repeated for every
    chunk position), ``info_en``/``info_addr``/``info_data``; ``wp`` the committed entries (one more bit than the
    buffer's address), ``free`` the issuer's oldest entry still needed.
    ``t_en``/``t_addr``/``t_data``: threshold table writes. ``skipped``: zero rows of a finished group (SD, one
    cycle). ``overrun``: a group's stream has more rows than the layer's rows (a corrupt program).
    ``starved``: the issuer has no committed entry left to take; ``stuck``: for ``STUCK_CYCLES`` cycles the fill
    has waited for room with every allocated entry committed while the issuer was starved. Neither side can move
    again: a replayed group larger than the buffer (a corrupt ``stream`` flag), reported instead of a hang.
    """

    STUCK_CYCLES = 8

    def __init__(self, *, lanes: int, fill_lanes: int, depth: int, word_bits: int, code_bits: int,
                 group_bits: int, pix_bits: int, basis_bits: int, basis_width: int = 0):
        self.lanes, self.fill_lanes, self.depth = lanes, fill_lanes, depth
        self.chunks = lanes // fill_lanes
        self.entry_bits = ceil_log2(depth)
        self.word_bits = word_bits
        params = fill_params(group_bits=group_bits, pix_bits=pix_bits, code_bits=code_bits, basis_bits=basis_bits)
        word = data.StructLayout({"data": word_bits})
        ports = {
            "params": In(params), "start": In(1), "done": Out(1),
            "words": In(stream.Signature(word)), "word_addr": In(code_bits),
            "seek": Out(1), "seek_addr": Out(code_bits),
            "w_addr": Out(self.entry_bits), "w_en": Out(self.chunks), "w_data": Out(8 * fill_lanes * self.chunks),
            "info_en": Out(1), "info_addr": Out(self.entry_bits), "info_data": Out(TAP_INFO),
            "wp": Out(self.entry_bits + 1), "free": In(self.entry_bits + 1),
            "t_en": Out(1), "t_addr": Out(8), "t_data": Out(32),
            "skipped": Out(16), "overrun": Out(1), "starved": In(1), "stuck": Out(1),
        }
        if basis_width:
            ports.update({"basis_addr": Out(basis_bits), "basis_data": In(basis_width)})
        super().__init__(ports)


class _RowWalker:
    """The loop nest over a layer's code stream both fills share: thresholds, then per group (and per pixel
    when the layer streams) its rows; room in the buffer for a row before its header is taken; commits.

    ``elaborate`` calls :meth:`build` with ``on_header`` (what a fill does as a row's header is taken; the
    row's states then start at ``"ROW"``) and ``row_states`` (the state-machine body of the row's words, which
    ends a row with :meth:`after_row`)."""

    def __init__(self, fill: _FillPorts, m: Module):
        self.fill, self.m = fill, m
        p = fill.params
        self.hdr = Signal(HEADER_LAYOUT)
        self.taps = Signal(range(4))                   # live taps of the row (a prefix: the kill mask's zeros)
        self.row_entry = Signal(fill.entry_bits + 1)   # entry of the row's tap 0
        self.head = Signal(fill.entry_bits + 1)        # entries allocated (rows whose header was taken)
        self.group_left = Signal.like(p.n_groups)
        self.rep_left = Signal.like(p.n_pix)           # streaming layers: passes of this group still to fill
        self.group_addr = Signal(len(fill.seek_addr))  # code address of the group's first row
        self.rows_left = Signal(16)                    # the layer's rows less this group's so far
        self.rows_gone = Signal()                      # rows_left == 0, in a register of its own
        self.first_row = Signal()                      # the next header is the group's first
        self.table_idx = Signal(9)
        self.table_left = Signal(9)                    # thresholds still to load (their end without a carry chain)
        # decisions taken from registers: the stream's ready (and so the code memory's read enable) is a few
        # LUTs from flip-flops
        self.table_more = Signal()                     # thresholds left to load
        self.rep_more = Signal()                       # rep_left > 1
        self.groups_more = Signal()                    # group_left > 1
        self.next_row = Signal()                       # the row's last word is used this cycle
        # one-hot: the stream's ready and every state's decisions start at the state's own flip-flop (a binary
        # state takes LUTs to decode in front of each)
        self.fsm = OneHotFSM(m, ("IDLE", "TABLE", "HEADER", "ROW", "TAPS", "GROUP_END", "FLUSH"), init="IDLE",
                             prefix="walk")
        self.in_state = self.fsm.flags
        self.state = self.fsm.state

    def goto(self, state: str):
        """Go to ``state`` next cycle (inside a state's body)."""
        self.fsm.goto(state)

    def takes_words(self, *terms):
        """Drive the stream's ready: thresholds to load, a header with room, a row's first codes, and the
        fill's own ``terms`` (flip-flops)."""
        self.m.d.comb += self.fill.words.ready.eq(self.table_more | (self.in_state["HEADER"] & self.room)
                                                  | self.in_state["ROW"] | Cat(*terms).any())

    def info(self, j):
        """Tap info of tap ``j`` of the current row."""
        p, hdr = self.fill.params, self.hdr
        off = Signal(16)
        self.m.d.comb += off.eq(hdr.off0 + Mux(j == 0, 0, Mux(j == 1, p.tap_step, p.tap_step << 1)))
        info = Signal(TAP_INFO)
        self.m.d.comb += [info.off.eq(off), info.dy.eq(hdr.dy), info.dx.eq(Mux(p.k3, j, 0)),
                          info.last.eq(hdr.last & (j == self.taps - 1)), info.count.eq(hdr.count)]
        return info

    def build(self, on_header, row_states):
        m, fill, p = self.m, self.fill, self.fill.params
        words = fill.words
        # room for two rows (six entries), registered from the allocation and the issuer's free pointer before
        # this cycle's header: so a header may be taken in a cycle right after another (three entries each at
        # most) and its acceptance starts at a flip-flop, not behind the code memory's output and a subtractor
        # (the free pointer moved on by depth - 6 in a register of its own, so room is one subtraction's sign:
        # limit - head wraps past the buffer's size exactly when fewer than six entries are free)
        room = self.room = Signal()
        limit = Signal(fill.entry_bits + 1)
        m.d.sync += [limit.eq(fill.free + (fill.depth - 6)),
                     room.eq(~(limit - self.head)[fill.entry_bits])]
        self.group_end = Signal()                      # the group's last row ends: GROUP_END next cycle
        m.d.comb += self.group_end.eq(self.next_row & self.hdr.last)
        # every allocated entry written, registered (the allocation stops two cycles before the flush)
        committed = Signal()
        m.d.sync += committed.eq(fill.wp == self.head)
        header = Signal(HEADER_LAYOUT)
        m.d.comb += header.eq(words.payload.data[:HEADER_LAYOUT.size])
        kill = header.kill
        m.d.sync += fill.skipped.eq(0)
        with self.fsm.states():
            with self.state("IDLE"):
                with m.If(fill.start):
                    m.d.sync += [self.group_left.eq(p.n_groups), self.rep_left.eq(p.n_pix), self.table_idx.eq(0),
                                 self.table_left.eq(p.n_thresh), self.rows_left.eq(p.n_rows), self.first_row.eq(1),
                                 self.rows_gone.eq(p.n_rows == 0), fill.done.eq(0),
                                 self.table_more.eq(p.n_thresh != 0),
                                 self.groups_more.eq(above(p.n_groups, 1)), self.rep_more.eq(above(p.n_pix, 1))]
                    self.goto("TABLE")
            with self.state("TABLE"):
                with m.If(~self.table_more):
                    self.goto("HEADER")
                with m.Else():
                    with m.If(words.valid):
                        m.d.comb += [fill.t_en.eq(1), fill.t_addr.eq(self.table_idx),
                                     fill.t_data.eq(words.payload.data)]
                        m.d.sync += [self.table_idx.eq(self.table_idx + 1), self.table_left.eq(self.table_left - 1),
                                     self.table_more.eq(self.table_left != 1)]
            with self.state("HEADER"):
                # a row takes up to three entries: its header is taken only when they are free
                with m.If(words.valid & room):
                    # the kill mask is a suffix of the row's taps (000, 100, 110, 111: 3, 2, 1 live; none live still
                    # takes one entry): each bit of the count is one LUT of two mask bits, so the code memory's
                    # output meets the head's adder a LUT later
                    taps = Cat(~kill[2] | kill[1], ~kill[1])
                    m.d.sync += [self.hdr.eq(header), self.taps.eq(taps),
                                 self.row_entry.eq(self.head), self.head.eq(self.head + taps),
                                 self.rows_left.eq(self.rows_left - 1), self.rows_gone.eq(self.rows_left == 1),
                                 self.first_row.eq(0)]
                    with m.If(self.first_row):
                        m.d.sync += self.group_addr.eq(fill.word_addr)
                    with m.If(self.rows_gone):
                        m.d.sync += fill.overrun.eq(1)
                    on_header(header)
                    self.goto("ROW")
            row_states(m)
            with self.state("GROUP_END"):
                # every row of a group counts but the placeholder of an empty one, which is its only row
                m.d.sync += [fill.skipped.eq(self.rows_left + ~self.hdr.count), self.rows_left.eq(p.n_rows),
                             self.rows_gone.eq(p.n_rows == 0), self.first_row.eq(1)]
                with m.If(p.stream & self.rep_more):
                    # the next pixel of a group that does not fit the buffer: the same rows again
                    m.d.sync += [self.rep_left.eq(self.rep_left - 1),
                                 self.rep_more.eq(above(self.rep_left, 2))]
                    self.goto("HEADER")
                with m.Elif(self.groups_more):
                    m.d.sync += [self.group_left.eq(self.group_left - 1),
                                 self.groups_more.eq(above(self.group_left, 2)),
                                 self.rep_left.eq(p.n_pix), self.rep_more.eq(above(p.n_pix, 1))]
                    self.goto("HEADER")
                with m.Else():
                    self.goto("FLUSH")
            with self.state("FLUSH"):
                with m.If(committed):
                    m.d.sync += fill.done.eq(1)
                    self.goto("IDLE")
        # the code reader's seeks (a layer's start, a streamed group's next pixel) from flip-flops and one LUT,
        # not from the state's decoding: the reader's skid registers are behind them. A replay's seek is decided
        # as the group's last row ends, for the GROUP_END cycle that follows
        replay = Signal()
        m.d.sync += replay.eq(self.group_end & p.stream & self.rep_more)
        m.d.comb += [fill.seek.eq(replay | (self.in_state["IDLE"] & fill.start)),
                     fill.seek_addr.eq(Mux(replay, self.group_addr, p.code_base))]
        with m.If(fill.start):
            m.d.sync += fill.overrun.eq(0)
        # both sides waiting on each other; a few cycles' grace covers the registered room and the issuer's
        # replay seek, after which either the issuer has an entry again or nothing will change
        waiting = Signal(range(fill.STUCK_CYCLES + 1))
        with m.If(self.in_state["HEADER"] & words.valid & ~room & committed & fill.starved):
            with m.If(waiting != fill.STUCK_CYCLES):
                m.d.sync += waiting.eq(waiting + 1)
        with m.Else():
            m.d.sync += waiting.eq(0)
        m.d.comb += fill.stuck.eq(waiting == fill.STUCK_CYCLES)

    def after_row(self, m):
        """The FSM transition after a row's last word (call inside the row's state)."""
        with m.If(self.hdr.last):
            self.goto("GROUP_END")
        with m.Else():
            self.goto("HEADER")


class SdFill(_FillPorts):
    """Fill the weight buffer with weights rebuilt from SD codes by R rebuild units.

    Per row: the header (one cycle), then per chunk of R lanes its codes (one code word; the first chunk's in
    a cycle of its own, the others' while the chunk before issues its last tap) and one tap per cycle: the
    tap's basis column for the chunk's lanes is read from the basis memory (row ``basis_base + 3 (N / R)
    header.basis + 3 chunk + tap``), and R rebuild units turn the codes and column into R weights, written to
    the tap's entry ``LATENCY + basis_latency - 1`` cycles later (the basis memory is read a cycle ahead of
    the tap). The units never stall (room was reserved with the header), so no enable fans out to their
    registers. ``register_basis_addr`` puts the basis memory's read address in a register (the tap jobs wait a
    cycle more for their column): the address adders then end at a flip-flop, not across the die at the
    memory.

    Throughput: R weights per cycle, plus two cycles per row (header and first codes). Latency from a tap to
    its write: ``basis_latency - 1 + register_basis_addr + RebuildUnit.LATENCY`` cycles.
    """

    def __init__(self, *, lanes: int, rebuild_lanes: int, exp_bits: int, depth: int, word_bits: int, code_bits: int,
                 group_bits: int, pix_bits: int, basis_bits: int, basis_latency: int = 1,
                 register_basis_addr: bool = False):
        self.exp_bits, self.basis_latency = exp_bits, basis_latency
        self.register_basis_addr = register_basis_addr
        super().__init__(lanes=lanes, fill_lanes=rebuild_lanes, depth=depth, word_bits=word_bits,
                         code_bits=code_bits, group_bits=group_bits, pix_bits=pix_bits, basis_bits=basis_bits,
                         basis_width=24 * rebuild_lanes)

    def elaborate(self, platform):
        m = Module()
        r_n, e = self.fill_lanes, self.exp_bits
        walk = _RowWalker(self, m)
        p = self.params
        words = self.words
        slot_bits = 3 * (1 + e)
        codes = Signal(slot_bits * r_n)
        chunk = Signal(range(max(2, self.chunks)))
        tap = Signal(2)
        tap_last = Signal()                              # tap == taps - 1, registered
        chunk_last = Signal()                            # chunk == chunks - 1, registered
        # in TAPS at a chunk's last tap with more chunks to come: the next chunk's codes are taken now. Kept in a
        # register of its own, set beside tap_last, so the code stream's ready (and the reader's pointers behind
        # it) starts at this flip-flop, not at an AND of the state's flag, tap_last and chunk_last
        chunk_turn = Signal()
        chunk_basis = Signal(len(self.basis_addr))      # the chunk's column 0: row's first + 3 chunk
        job_basis = Signal(len(self.basis_addr))        # the basis row of the job now or next in this chunk
        emit = Signal()                                  # a tap job this cycle
        following = Signal(len(self.basis_addr))        # the basis row of the job after an emitted one
        # the row's first basis row, basis_base + 3 (N / R) basis, from the registered header in the row's first
        # ROW cycle (``row_first``), not from the code memory's output in the header's cycle
        row_first = Signal()
        block = walk.hdr.basis << ceil_log2(self.chunks)
        first = Signal(len(self.basis_addr))
        m.d.comb += first.eq(p.basis_base + block + (block << 1))     # adders, where "* 3" would take a DSP

        def on_header(header):
            m.d.sync += [row_first.eq(1), chunk.eq(0), chunk_last.eq(self.chunks == 1)]

        def row_states(m):
            with walk.state("ROW"):
                with m.If(row_first):
                    m.d.sync += [chunk_basis.eq(first), job_basis.eq(first)]
                with m.If(words.valid):
                    m.d.sync += row_first.eq(0)
                    m.d.sync += [codes.eq(words.payload.data[:len(codes)]), tap.eq(0), tap_last.eq(walk.taps == 1),
                                 chunk_turn.eq((walk.taps == 1) & ~chunk_last)]
                    walk.goto("TAPS")
            with walk.state("TAPS"):
                with m.If(tap_last):
                    with m.If(chunk_last):
                        m.d.comb += walk.next_row.eq(1)
                        walk.after_row(m)
                    with m.Else():
                        m.d.sync += [chunk.eq(chunk + 1), chunk_last.eq(chunk + 2 == self.chunks),
                                     chunk_basis.eq(chunk_basis + 3), job_basis.eq(chunk_basis + 3), tap.eq(0),
                                     tap_last.eq(walk.taps == 1)]
                        # the next chunk's codes, taken as this one issues its last tap
                        with m.If(words.valid):
                            m.d.sync += [codes.eq(words.payload.data[:len(codes)]),
                                         chunk_turn.eq((walk.taps == 1) & (chunk + 2 != self.chunks))]
                        with m.Else():
                            walk.goto("ROW")
                with m.Else():
                    m.d.sync += [tap.eq(tap + 1), tap_last.eq(tap + 2 == walk.taps), job_basis.eq(job_basis + 1),
                                 chunk_turn.eq((tap + 2 == walk.taps) & ~chunk_last)]

        m.d.sync += chunk_turn.eq(0)                     # out of TAPS, and in it unless set above
        walk.build(on_header, row_states)
        walk.takes_words(chunk_turn)
        # the basis memory is read a cycle ahead: the row of the job emitted next cycle
        # (a tap job is emitted exactly while the walk is in TAPS: from the state's flip-flop, not from inside the
        # state's case, which would decode the other states' flags in front of it)
        m.d.comb += [emit.eq(walk.in_state["TAPS"]), following.eq(Mux(tap_last, chunk_basis + 3, job_basis + 1))]
        basis_next = Mux(emit, following, Mux(row_first, first, job_basis))
        if self.register_basis_addr:
            basis_addr = Signal.like(self.basis_addr)
            m.d.sync += basis_addr.eq(basis_next)
            m.d.comb += self.basis_addr.eq(basis_addr)
        else:
            m.d.comb += self.basis_addr.eq(basis_next)
        with m.If(emit & (chunk == 0)):
            m.d.comb += [self.info_en.eq(1), self.info_addr.eq(walk.row_entry + tap), self.info_data.eq(walk.info(tap))]

        # the tap job meets its basis column (read a cycle ahead) at the rebuild units; a registered basis
        # memory needs one stage more
        job = data.StructLayout({"entry": self.entry_bits + 1, "chunk": max(1, ceil_log2(self.chunks)),
                                 "commit": 1, "taps": 2})
        stage = Signal(job)
        stage_codes = codes
        stage_valid = emit
        m.d.comb += [stage.entry.eq(walk.row_entry + tap), stage.chunk.eq(chunk), stage.taps.eq(walk.taps),
                     stage.commit.eq(chunk_last & tap_last)]
        for _ in range(self.basis_latency - 1 + int(self.register_basis_addr)):
            later, later_codes, later_valid = Signal(job), Signal.like(codes), Signal()
            m.d.sync += [later.eq(stage), later_codes.eq(stage_codes), later_valid.eq(stage_valid)]
            stage, stage_codes, stage_valid = later, later_codes, later_valid

        weights = []
        for t in range(r_n):
            unit = RebuildUnit(exp_bits=e, weight_bits=8, tag_bits=job.size if t == 0 else 0)
            m.submodules[f"rebuild{t}"] = unit
            slot = stage_codes[slot_bits * t:slot_bits * (t + 1)]
            m.d.comb += [unit.wshift.eq(p.wshift), unit.i.valid.eq(stage_valid), unit.o.ready.eq(1),
                         unit.i.payload.codes.as_value().eq(slot),
                         unit.i.payload.column.as_value().eq(self.basis_data[24 * t:24 * t + 24])]
            weights.append(unit.o.payload.weight)
        unit0 = m.submodules.rebuild0
        m.d.comb += unit0.i.payload.tag.eq(stage)
        done = Signal(job)
        m.d.comb += done.eq(unit0.o.payload.tag)
        _write(m, self, unit0.o.valid, done, Cat(*weights))
        return m


class DenseFill(_FillPorts):
    """Fill the weight buffer with int8 weights copied from the code stream: per row the header, then for
    each live tap its weights in chunks of F lanes (one code word each, F = the word's bytes).

    Throughput: F weights per cycle, plus one cycle per row (the header). Latency from a word to its write:
    1 cycle."""

    def elaborate(self, platform):
        m = Module()
        walk = _RowWalker(self, m)
        words = self.words
        chunk = Signal(range(max(2, self.chunks)))
        tap = Signal(2)
        emit = Signal()

        def on_header(header):
            m.d.sync += [chunk.eq(0), tap.eq(0)]

        def row_states(m):
            with walk.state("ROW"):
                with m.If(words.valid):
                    m.d.comb += emit.eq(1)
                    with m.If(chunk == self.chunks - 1):
                        m.d.sync += [chunk.eq(0), tap.eq(tap + 1)]
                        with m.If(tap == walk.taps - 1):
                            m.d.comb += walk.next_row.eq(1)
                            walk.after_row(m)
                    with m.Else():
                        m.d.sync += chunk.eq(chunk + 1)

        walk.build(on_header, row_states)
        walk.takes_words()
        with m.If(emit & (chunk == 0)):
            m.d.comb += [self.info_en.eq(1), self.info_addr.eq(walk.row_entry + tap), self.info_data.eq(walk.info(tap))]
        job = data.StructLayout({"entry": self.entry_bits + 1, "chunk": max(1, ceil_log2(self.chunks)),
                                 "commit": 1, "taps": 2})
        stage = Signal(job)
        stage_valid = Signal()
        stage_data = Signal(8 * self.fill_lanes)
        m.d.sync += [stage_valid.eq(emit), stage_data.eq(words.payload.data[:len(stage_data)]),
                     stage.entry.eq(walk.row_entry + tap), stage.chunk.eq(chunk), stage.taps.eq(walk.taps),
                     stage.commit.eq((chunk == self.chunks - 1) & (tap == walk.taps - 1))]
        _write(m, self, stage_valid, stage, stage_data)
        return m


def _write(m, fill, valid, job, chunk_data):
    """Write a chunk of weights into its entry; the job that ends a row commits the row's entries."""
    m.d.comb += [fill.w_addr.eq(job.entry), fill.w_data.eq(chunk_data.replicate(fill.chunks)),
                 fill.w_en.eq(Mux(valid, 1 << job.chunk, 0))]
    with m.If(valid & job.commit):
        m.d.sync += fill.wp.eq(fill.wp + job.taps)

