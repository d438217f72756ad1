# amaranth: UnusedElaboratable=no
"""sdhw.reader.SequentialReader on an Amaranth memory (read latency 1: the read port's data; 2: one register
more), under random consumer stalls, seeks and moving limits (Amaranth simulator, fixed seeds)."""
from __future__ import annotations

import random

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from sdhw.reader import SequentialReader


class Harness(Elaboratable):
    """The reader on a ``2**addr_bits``-word memory; ``w_en``/``w_addr``/``w_data`` write it (a producer)."""

    def __init__(self, *, addr_bits: int, width: int, latency: int, limited: bool, init: list[int]):
        self.reader = SequentialReader(addr_bits=addr_bits, width=width, latency=latency, limited=limited)
        self.depth, self.width, self.latency = 1 << addr_bits, width, latency
        self.init = list(init)
        self.w_en, self.w_addr, self.w_data = Signal(), Signal(addr_bits), Signal(width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = r = self.reader
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=self.init)
        wr = mem.write_port()
        rd = mem.read_port()
        m.d.comb += [wr.en.eq(self.w_en), wr.addr.eq(self.w_addr), wr.data.eq(self.w_data),
                     rd.addr.eq(r.rd_addr), rd.en.eq(r.rd_en)]
        if self.latency == 1:
            m.d.comb += r.rd_data.eq(rd.data)
        else:
            q = Signal(self.width)
            m.d.sync += q.eq(rd.data)
            m.d.comb += r.rd_data.eq(q)
        return m


def make(seed: int, *, addr_bits: int = 4, width: int = 16, latency: int, limited: bool = False) -> Harness:
    rng = random.Random(seed)
    depth = 1 << addr_bits
    init = rng.sample(range(1 << width), depth)            # distinct words: a duplicate or stale word shows
    return Harness(addr_bits=addr_bits, width=width, latency=latency, limited=limited, init=init)


def simulate(h: Harness, bench) -> None:
    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


class Checker:
    """Follows the stream a cycle at a time: every word taken must be the next address of the current run
    (from the last seek), with the memory's word; ``consumed`` must be that next address in every cycle."""

    def __init__(self, h: Harness, seed: int, memory: dict[int, int] | None = None):
        self.h, self.r, self.seed = h, h.reader, seed
        self.mask = (1 << h.reader.ptr_bits) - 1
        self.next = 0                                      # after reset the reader starts at address 0
        self.memory = memory                               # logical entry -> word (ring buffer), else init
        self.taken: list[tuple[int, int, int]] = []        # (cycle, addr, data)
        self.cycle = 0

    def word(self, addr: int) -> int:
        if self.memory is not None:
            return self.memory.get(addr)
        return self.h.init[addr % self.h.depth]

    def step(self, ctx, *, seek: int | None) -> bool:
        """Check this cycle (inputs already set); returns whether a word was taken."""
        r, where = self.r, f"seed {self.seed}, cycle {self.cycle}"
        consumed = ctx.get(r.consumed)
        assert consumed == self.next, f"{where}: consumed {consumed}, oldest word not taken is {self.next}"
        took = bool(ctx.get(r.o.valid) and ctx.get(r.o.ready))
        if ctx.get(r.o.valid):
            # the word offered is that of address `consumed` (checked above): not lost, doubled or stale
            data = ctx.get(r.o.payload.data)
            want = self.word(self.next)
            assert data == want, f"{where}: address {self.next} holds {want}, got {data}"
        if took:
            self.taken.append((self.cycle, self.next, data))
            self.next = (self.next + 1) & self.mask
        if seek is not None:
            self.next = seek
        self.cycle += 1
        return took


@pytest.mark.parametrize("latency", [1, 2])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_stalls_lose_nothing(latency, seed):
    """A long unlimited run around the memory several times, the consumer ready with probability 0.6."""
    h = make(seed, latency=latency)
    rng = random.Random(seed)
    chk = Checker(h, seed)
    r = h.reader

    async def bench(ctx):
        for cycle in range(400):
            seek = 11 if cycle == 3 else None
            ctx.set(r.seek, seek is not None)
            ctx.set(r.seek_addr, seek or 0)
            ctx.set(r.o.ready, rng.random() < 0.6)
            chk.step(ctx, seek=seek)
            await ctx.tick()

    simulate(h, bench)
    addrs = [a for _, a, _ in chk.taken]
    # the three words before the seek (if taken) came from address 0 on, then 11, 12, ... wrapping at 16
    after = [a for c, a, _ in chk.taken if c > 3]
    assert after[:20] == [(11 + k) % 16 for k in range(20)], f"seed {seed}: {after[:20]}"
    assert len(addrs) > 150, f"seed {seed}: only {len(addrs)} words in 400 cycles at 60 % ready"


@pytest.mark.parametrize("latency, first", [(1, 2), (2, 4)])
def test_one_word_per_cycle_when_always_ready(latency, first):
    """After a seek the first word is valid ``first`` cycles later (seek in cycle c, word in c + first), then
    one word every cycle, across the memory's wrap-around."""
    seed = 7
    h = make(seed, latency=latency)
    chk = Checker(h, seed)
    r = h.reader

    async def bench(ctx):
        ctx.set(r.o.ready, 1)
        for cycle in range(60):
            seek = 13 if cycle == 10 else None
            ctx.set(r.seek, seek is not None)
            ctx.set(r.seek_addr, seek or 0)
            chk.step(ctx, seek=seek)
            await ctx.tick()

    simulate(h, bench)
    cycles = [c for c, _, _ in chk.taken if c > 10]
    assert cycles[0] == 10 + first, f"seed {seed}: first word after the seek in cycle {cycles[0]}"
    assert cycles == list(range(cycles[0], 60)), f"seed {seed}: bubbles at always-ready: {cycles}"
    # before the seek, the reader also streamed from reset (address 0) at full rate
    before = [c for c, _, _ in chk.taken if c <= 10]
    assert before and before == list(range(before[0], 11)), f"seed {seed}: {before}"


@pytest.mark.parametrize("latency", [1, 2])
@pytest.mark.parametrize("limited", [False, True])
@pytest.mark.parametrize("seed", [3, 4])
def test_seek_mid_stream_restarts_cleanly(latency, limited, seed):
    """Seeks at random moments (back to back, while stalled, while words are in flight); after each the words
    run from the new address, none read before the seek shows up."""
    h = make(seed, latency=latency, limited=limited)
    rng = random.Random(seed)
    chk = Checker(h, seed)
    r = h.reader
    mask = chk.mask
    seeks = []
    busy = [0]

    async def bench(ctx):
        ctx.set(r.limit, 0)
        gap = 0
        for _ in range(700):
            seek = None
            if gap == 0 or rng.random() < 0.05:
                seek = rng.randrange(mask + 1)
                gap = rng.choice([1, 2, 3, 5, 8, 13, 30])
            gap -= 1
            if limited:                              # far enough ahead not to stop the run
                ctx.set(r.limit, ((chk.next if seek is None else seek) + h.depth) & mask)
            ctx.set(r.seek, seek is not None)
            ctx.set(r.seek_addr, seek or 0)
            ctx.set(r.o.ready, rng.random() < 0.7)
            if seek is not None:
                seeks.append(chk.cycle)
                busy[0] += bool(ctx.get(r.o.valid))        # a word on the output when the seek comes
            chk.step(ctx, seek=seek)
            await ctx.tick()

    simulate(h, bench)
    # the stimulus really seeks over words already on the output, and still moves many words
    assert len(seeks) > 60 and busy[0] > 20, f"seed {seed}: {len(seeks)} seeks, {busy[0]} over a valid word"
    assert len(chk.taken) > 200, f"seed {seed}: {len(chk.taken)} words"


@pytest.mark.parametrize("latency", [1, 2])
def test_limit_with_wrap_bit(latency):
    """Pointers have one bit more than the memory: a limit a whole memory ahead (equal modulo the depth) is a
    full buffer, not an empty one. The reader stops before the limit, waits, and resumes when it moves."""
    seed = 5
    h = make(seed, latency=latency, limited=True)
    chk = Checker(h, seed)
    r = h.reader
    depth, mask = h.depth, chk.mask
    start = 2 * depth - 3                                  # near the end of the pointer space: it wraps
    plan = [(0, start), (40, (start + depth) & mask), (90, (start + depth + 5) & mask),
            (130, (start + depth + 5) & mask)]             # (cycle, limit)
    counts = {}

    async def bench(ctx):
        ctx.set(r.o.ready, 1)
        limit = 0
        for cycle in range(170):
            for when, value in plan:
                if cycle == when:
                    limit = value
            seek = start if cycle == 0 else None
            ctx.set(r.limit, limit)
            ctx.set(r.seek, seek is not None)
            ctx.set(r.seek_addr, seek or 0)
            chk.step(ctx, seek=seek)
            await ctx.tick()
            counts[cycle] = len([1 for c, _, _ in chk.taken if c > 0])

    simulate(h, bench)
    # limit == seek address: nothing; a memory's worth ahead: exactly depth words; then 5 more
    assert counts[39] == 0, f"seed {seed}: {counts[39]} words with limit = seek address"
    assert counts[89] == depth, f"seed {seed}: {counts[89]} words for a full buffer of {depth}"
    assert counts[169] == depth + 5, f"seed {seed}: {counts[169]} words, want {depth + 5}"
    addrs = [a for c, a, _ in chk.taken if c > 0]
    assert addrs == [(start + k) & mask for k in range(depth + 5)], f"seed {seed}: {addrs}"


@pytest.mark.parametrize("latency", [1, 2])
def test_a_limit_at_the_pointer_wrap_stops_the_reader(latency):
    """The limit 0 with the reader just below the top of the pointer space: the words up to the top, no more
    (the address after the top is 0, not a carry out)."""
    seed = 8
    h = make(seed, latency=latency, limited=True)
    chk = Checker(h, seed)
    r = h.reader
    start = chk.mask - 2

    async def bench(ctx):
        ctx.set(r.o.ready, 1)
        ctx.set(r.limit, 0)
        for cycle in range(40):
            ctx.set(r.seek, cycle == 0)
            ctx.set(r.seek_addr, start)
            chk.step(ctx, seek=start if cycle == 0 else None)
            await ctx.tick()

    simulate(h, bench)
    addrs = [a for c, a, _ in chk.taken if c > 0]
    assert addrs == [start, start + 1, start + 2], f"seed {seed}: {addrs}"


@pytest.mark.parametrize("latency", [1, 2])
@pytest.mark.parametrize("seed", [6, 7])
def test_ring_buffer_producer_and_consumer(latency, seed):
    """A producer writes fresh words into the memory as a ring (entry ``e`` at ``e mod depth``), moving
    ``limit`` to its write pointer and writing only where ``consumed`` says the reader is done. A word read
    before it was written (past the limit) or after it was overwritten shows as a wrong word."""
    h = make(seed, latency=latency, limited=True)
    rng = random.Random(seed)
    written: dict[int, int] = {}
    mask = (1 << h.reader.ptr_bits) - 1
    chk = Checker(h, seed, memory=written)
    r = h.reader
    wp = [0]

    async def bench(ctx):
        burst = 0
        for _ in range(900):
            ctx.set(r.limit, wp[0])
            consumed = ctx.get(r.consumed)
            if burst <= 0:
                burst = rng.choice([-6, -1, 1, 3, 20])     # pauses and bursts of writes
            room = ((wp[0] - consumed) & mask) < h.depth
            write = room and burst > 0
            burst += -1 if burst > 0 else 1
            ctx.set(h.w_en, write)
            if write:
                word = rng.randrange(1 << h.width)
                written[wp[0]] = word
                ctx.set(h.w_addr, wp[0] % h.depth)
                ctx.set(h.w_data, word)
            ctx.set(r.o.ready, rng.random() < 0.6)
            chk.step(ctx, seek=None)
            await ctx.tick()
            if write:
                wp[0] = (wp[0] + 1) & mask

    simulate(h, bench)
    assert len(chk.taken) > 250, f"seed {seed}: {len(chk.taken)} words"
    assert len(written) == 2 * h.depth, f"seed {seed}: the pointers did not wrap ({len(written)} entries)"


@pytest.mark.parametrize("latency", [1, 2])
def test_the_memory_read_does_not_wait_on_the_consumer(latency):
    """The read enable and address are the same whatever the consumer's ready in that cycle (so no path runs
    from the consumer's decision into the memory)."""
    seed = 9
    rng = random.Random(seed)
    h = make(seed, latency=latency, limited=True)
    r = h.reader

    async def bench(ctx):
        ctx.set(r.limit, 11)
        for cycle in range(200):
            ctx.set(r.seek, cycle % 50 == 0)
            ctx.set(r.seek_addr, rng.randrange(16))
            seen = set()
            for ready in (0, 1):
                ctx.set(r.o.ready, ready)
                seen.add((ctx.get(r.rd_en), ctx.get(r.rd_addr)))
            assert len(seen) == 1, f"seed {seed}, cycle {cycle}: read (enable, address) {seen} follows ready"
            ctx.set(r.o.ready, rng.random() < 0.5)
            await ctx.tick()

    simulate(h, bench)


def test_rejects_bad_latency():
    with pytest.raises(ValueError, match="latency must be 1 or 2, not 3"):
        SequentialReader(addr_bits=4, width=8, latency=3)
