# amaranth: UnusedElaboratable=no
"""RowDecoder (sdhw/decoder.py): bitmap words in memory -> stream of non-zero row indices.

Every simulation records one trace, sampled at each clock edge (start, memory port, stream, busy, skipped_count),
and all checks are made on that trace afterwards: rows, last/empty, stream rules, memory reads, busy, skipped_count
and cycle counts.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from sdhw.decoder import WORD_BITS, RowDecoder


@dataclass
class Job:
    """One group to scan: start it, then wait for busy to fall (or restart after `abort_after` cycles)."""

    base: int
    n_rows: int
    words: list[int]  # bitmap words (sparse mode); bits >= n_rows may hold junk
    skip_slot3: bool = False
    abort_after: int | None = None  # start the next job this many cycles after this job's start
    gap: int = 0  # idle cycles after busy falls before the next start

    def rows(self, dense: bool) -> list[int]:
        if dense:
            return [h for h in range(self.n_rows) if not (self.skip_slot3 and h % 4 == 3)]
        return [h for h in range(self.n_rows) if self.words[h // WORD_BITS] >> (h % WORD_BITS) & 1]

    def entries(self, dense: bool) -> list[tuple[int | None, int, int]]:
        rows = self.rows(dense)
        if not rows:
            return [(None, 1, 1)]  # row undefined
        return [(r, int(i == len(rows) - 1), 0) for i, r in enumerate(rows)]


@dataclass
class Edge:
    start: int
    mem_en: int
    mem_addr: int
    valid: int
    ready: int
    row: int
    last: int
    empty: int
    busy: int
    skipped: int


def n_words(n_rows: int) -> int:
    return -(-n_rows // WORD_BITS)


def bitmap(rng: random.Random, n_rows: int, density: float, junk_tail: bool) -> list[int]:
    words = [0] * n_words(n_rows)
    for h in range(n_rows):
        if rng.random() < density:
            words[h // WORD_BITS] |= 1 << (h % WORD_BITS)
    if junk_tail and n_rows % WORD_BITS:
        words[-1] |= rng.getrandbits(WORD_BITS) & ~((1 << (n_rows % WORD_BITS)) - 1)
    return words


def simulate(dut: RowDecoder, jobs: list[Job], *, seed: int, ready_prob: float = 1.0) -> list[Edge]:
    """Run `jobs` back to back; the memory holds every job's words at its base (junk elsewhere)."""
    rng = random.Random(seed)
    mem_rng = random.Random(seed + 1)
    size = 1 << dut.addr_bits
    mem: dict[int, int] = {}
    for job in jobs:
        for i, w in enumerate(job.words):
            addr = (job.base + i) % size
            assert mem.get(addr, w) == w, f"seed {seed}: test bug, overlapping groups at {addr}"
            mem[addr] = w
    trace: list[Edge] = []

    async def memory(ctx):
        # Synchronous read, 1 cycle of latency; junk in cycles that follow no read (no output hold).
        async for _clk, _rst, en, addr in ctx.tick().sample(dut.mem_en, dut.mem_addr):
            word = mem.get(addr, mem_rng.getrandbits(WORD_BITS)) if en else mem_rng.getrandbits(WORD_BITS)
            ctx.set(dut.mem_data, word)

    async def monitor(ctx):
        sampled = (dut.start, dut.mem_en, dut.mem_addr, dut.o.valid, dut.o.ready, dut.o.payload, dut.busy,
                   dut.skipped_count)
        while True:
            ctx.set(dut.o.ready, rng.random() < ready_prob)
            _clk, _rst, start, en, addr, valid, ready, payload, busy, skipped = await ctx.tick().sample(*sampled)
            trace.append(Edge(start, en, addr, valid, ready, payload.row, payload.last, payload.empty, busy,
                              skipped))

    async def driver(ctx):
        await ctx.tick().repeat(2)
        for job in jobs:
            ctx.set(dut.base, job.base)
            ctx.set(dut.n_rows, job.n_rows)
            ctx.set(dut.skip_slot3, job.skip_slot3)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            if job.abort_after is not None:
                if job.abort_after:
                    await ctx.tick().repeat(job.abort_after)
                continue
            n = 0
            while ctx.get(dut.busy):
                await ctx.tick()
                n += 1
                assert n < 50 * (job.n_rows + 10), f"seed {seed}: hung on {job}"
            if job.gap:
                await ctx.tick().repeat(job.gap)
        await ctx.tick().repeat(3)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(memory)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(driver)
    sim.run()
    return trace


@dataclass
class Accepted:
    offered: int  # edge at which the entry was first seen valid
    accepted: int  # edge at which valid & ready
    entry: tuple[int, int, int]


def check(dut: RowDecoder, jobs: list[Job], trace: list[Edge], *, seed: int) -> list[list[Accepted]]:
    """Check the trace against the jobs; return the accepted entries of each job."""
    size = 1 << dut.addr_bits
    starts = [e for e, t in enumerate(trace) if t.start]
    assert len(starts) == len(jobs), f"seed {seed}"
    bounds = [*starts, len(trace)]

    # Stream rule: an offered entry stays valid and unchanged until accepted.
    accepted: list[Accepted] = []
    offered = None
    for e, t in enumerate(trace):
        prev = trace[e - 1] if e else None
        if prev is not None and prev.valid and not prev.ready:
            assert t.valid and (t.row, t.last, t.empty) == (prev.row, prev.last, prev.empty), \
                f"seed {seed}: entry withdrawn or changed at edge {e}"
        elif t.valid:
            offered = e
        if t.valid and t.ready:
            accepted.append(Accepted(offered, e, (t.row, t.last, t.empty)))

    per_job: list[list[Accepted]] = []
    for j, job in enumerate(jobs):
        s, nxt = bounds[j], bounds[j + 1]
        # An entry already offered at the next start edge belongs to this job.
        got = [a for a in accepted if s < a.offered <= nxt]
        per_job.append(got)
        want = job.entries(dut.dense)
        got_entries = [(None if empty else row, last, empty) for row, last, empty in (a.entry for a in got)]
        reads = [trace[e].mem_addr for e in range(s, nxt) if trace[e].mem_en]
        want_reads = [] if dut.dense else [(job.base + i) % size for i in range(n_words(job.n_rows))]
        what = f"seed {seed}, job {j} (base {job.base}, n_rows {job.n_rows}, skip {job.skip_slot3})"
        if job.abort_after is None:
            assert got_entries == want, f"{what}: entries {got_entries}, want {want}"
            assert reads == want_reads, f"{what}: reads {reads}, want {want_reads}"
            end = got[-1].accepted
            assert all(trace[e].busy for e in range(s + 1, end + 1)), f"{what}: busy low before the last entry"
            assert not any(trace[e].busy for e in range(end + 1, nxt)), f"{what}: busy high after the last entry"
            zeros = 0 if dut.dense else job.n_rows - len(job.rows(False))
            final = trace[got[-1].offered].skipped      # final from the cycle the last entry is offered on
            assert final == zeros, f"{what}: skipped_count {final} when the last entry is offered, want {zeros}"
        else:
            assert got_entries == want[:len(got_entries)], f"{what}: entries {got_entries} not a prefix of {want}"
            assert reads == want_reads[:len(reads)], f"{what}: reads {reads} not a prefix of {want_reads}"
        skipped = [trace[e].skipped for e in range(s + 1, nxt)]
        assert not skipped or skipped[0] == 0, f"{what}: skipped_count not cleared by start"
        assert skipped == sorted(skipped), f"{what}: skipped_count decreased: {skipped}"
    return per_job


def random_jobs(rng: random.Random, count: int, *, addr_bits: int = 12, max_rows: int = 300,
                gaps: bool = True) -> list[Job]:
    specials = [1, 31, 32, 33, 64, 96, 100, 255, 256, 288, 300]
    jobs = []
    addr = rng.randrange(1 << addr_bits)  # allocations wrap around the address space
    for i in range(count):
        n_rows = rng.choice([r for r in specials if r <= max_rows]) if i % 3 == 0 else rng.randint(1, max_rows)
        density = rng.choice([0.0, 1.0, 0.03, 0.2, rng.random(), 0.9])
        words = bitmap(rng, n_rows, density, junk_tail=rng.random() < 0.5)
        addr = (addr + rng.randint(0, 3)) % (1 << addr_bits)
        jobs.append(Job(addr, n_rows, words, gap=rng.choice([0, 0, 1, 2]) if gaps else 0))
        addr += len(words)
    return jobs


@pytest.mark.parametrize("register_data", [False, True])
@pytest.mark.parametrize("seed, ready_prob", [(1, 1.0), (2, 0.75), (3, 0.35), (4, 0.9)])
def test_random_bitmaps_back_to_back(seed, ready_prob, register_data):
    rng = random.Random(seed)
    jobs = random_jobs(rng, 24)
    dut = RowDecoder(register_data=register_data)
    check(dut, jobs, simulate(dut, jobs, seed=seed, ready_prob=ready_prob), seed=seed)


@pytest.mark.parametrize("addr_bits, row_bits, seed", [(3, 7, 11), (1, 5, 12), (32, 32, 13), (4, 1, 14)])
def test_narrow_and_wide_ports(addr_bits, row_bits, seed):
    # Narrow addresses wrap around; two groups at most per simulation so that they fit the tiny memory.
    rng = random.Random(seed)
    dut_kw = {"addr_bits": addr_bits, "row_bits": row_bits}
    max_rows = min((1 << row_bits) - 1, 300, WORD_BITS * ((1 << addr_bits) // 2 or 1))
    for k in range(4):
        jobs = random_jobs(rng, 2, addr_bits=addr_bits, max_rows=max_rows)
        jobs[1].base = (jobs[0].base + len(jobs[0].words)) % (1 << addr_bits)
        if n_words(jobs[0].n_rows) + n_words(jobs[1].n_rows) > 1 << addr_bits:
            jobs = jobs[:1]
        dut = RowDecoder(**dut_kw)
        check(dut, jobs, simulate(dut, jobs, seed=seed * 10 + k, ready_prob=0.7), seed=seed * 10 + k)


def test_empty_and_zero_row_groups():
    rng = random.Random(5)
    jobs = [Job(7, 0, []), Job(7, 40, [0, 0]), Job(9, 1, [1]), Job(10, 1, [0]), Job(11, 0, []),
            Job(12, 33, [0, 0xFFFF_FFFE]),  # only junk above n_rows: empty
            Job(14, 64, [1 << 31, 0])]
    for job in jobs:
        job.gap = rng.randint(0, 1)
    dut = RowDecoder()
    per_job = check(dut, jobs, simulate(dut, jobs, seed=5, ready_prob=0.6), seed=5)
    assert [len(g) for g in per_job] == [1, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("register_data", [False, True])
def test_restart_while_busy(register_data):
    # start while busy abandons the old scan; only an entry already offered on `o` survives it (and is checked to
    # belong to the old group by `check`).
    restarts = held = 0
    for seed in range(20, 26):
        rng = random.Random(seed)
        jobs = random_jobs(rng, 12, gaps=False)
        for job in jobs[:-1]:
            if rng.random() < 0.6:
                job.abort_after = rng.randint(0, 12)
        dut = RowDecoder(register_data=register_data)
        trace = simulate(dut, jobs, seed=seed, ready_prob=rng.choice([1.0, 0.5]))
        check(dut, jobs, trace, seed=seed)
        restarts += sum(t.start and t.busy for t in trace)
        held += sum(t.start and t.valid and not t.ready for t in trace)
    assert restarts > 10 and held > 0, (restarts, held)


@pytest.mark.parametrize("register_data", [False, True])
def test_dense_bitmap_streams_one_row_per_cycle(register_data):
    jobs = [Job(100, 96, [0xFFFF_FFFF] * 3)]
    dut = RowDecoder(register_data=register_data)
    trace = simulate(dut, jobs, seed=6)
    (got,) = check(dut, jobs, trace, seed=6)
    start = next(e for e, t in enumerate(trace) if t.start)
    cycles = [a.accepted for a in got]
    assert cycles == list(range(cycles[0], cycles[0] + 96)), f"bubbles: {cycles}"
    latency = 4 + register_data
    assert cycles[0] - start == latency, f"latency {cycles[0] - start}, documented {latency}"


def test_sparse_words_cost_one_cycle_each():
    # One set bit per word, then all-zero words: every word costs exactly one cycle, runs of zeros inside a word
    # none; the whole group ends 3 cycles after its last word enters the scanner.
    words = [1 << (i % 32) for i in range(6)] + [0] * 4 + [0x8000_0001] * 3
    n_rows = 32 * len(words)
    jobs = [Job(0, n_rows, words)]
    dut = RowDecoder()
    trace = simulate(dut, jobs, seed=7)
    (got,) = check(dut, jobs, trace, seed=7)
    start = next(e for e, t in enumerate(trace) if t.start)
    # word w is scanned in cycle 2 + w (one row per cycle); an entry leaves when the next row is found.
    assert [a.accepted - start for a in got] == [4, 5, 6, 7, 8, 13, 14, 15, 16, 17, 18, 19], \
        [a.accepted - start for a in got]
    assert trace[got[-1].accepted].skipped == n_rows - 12


@pytest.mark.parametrize("n_rows, words, latency", [
    (0, [], 2),
    (5, [0], 3 + 1),
    (200, [0] * 7, 3 + 7),
    (64, [0b11, 0], 4),
    (64, [0b1, 0b1], 4),
    (96, [0b1, 0, 0], 3 + 3),
])
def test_first_entry_latency(n_rows, words, latency):
    jobs = [Job(3, n_rows, words)]
    dut = RowDecoder()
    trace = simulate(dut, jobs, seed=8)
    (got,) = check(dut, jobs, trace, seed=8)
    start = next(e for e, t in enumerate(trace) if t.start)
    assert got[0].offered - start == latency


@pytest.mark.parametrize("skip_slot3", [False, True])
def test_dense_mode(skip_slot3):
    rng = random.Random(9 + skip_slot3)
    sizes = [0, 1, 2, 3, 4, 5, 7, 8, 12, 96, 300] + [rng.randint(1, 300) for _ in range(6)]
    jobs = [Job(rng.randrange(4096), n, [], skip_slot3=skip_slot3, gap=rng.randint(0, 1)) for n in sizes]
    dut = RowDecoder(dense=True)
    trace = simulate(dut, jobs, seed=9, ready_prob=0.6)
    check(dut, jobs, trace, seed=9)
    assert not any(t.mem_en for t in trace)
    # Consumer always ready: one row per cycle, first entry in cycle 2.
    jobs = [Job(0, 97, [], skip_slot3=skip_slot3)]
    trace = simulate(dut, jobs, seed=10)
    (got,) = check(dut, jobs, trace, seed=10)
    start = next(e for e, t in enumerate(trace) if t.start)
    cycles = [a.accepted - start for a in got]
    assert cycles == list(range(2, 2 + len(jobs[0].rows(True))))


@pytest.mark.parametrize("kwargs, bad", [
    ({"addr_bits": 0}, "0"), ({"addr_bits": 33}, "33"), ({"addr_bits": 12.0}, "12.0"), ({"addr_bits": True}, "True"),
    ({"row_bits": 0}, "0"), ({"row_bits": 40}, "40"), ({"row_bits": "16"}, "'16'"),
    ({"dense": 1}, "1"), ({"dense": None}, "None"),
])
def test_constructor_validation(kwargs, bad):
    with pytest.raises(ValueError, match=rf"{next(iter(kwargs))} .*{bad}"):
        RowDecoder(**kwargs)


def test_constructor_is_keyword_only_and_exposes_ports():
    with pytest.raises(TypeError):
        RowDecoder(12)  # type: ignore[misc]
    dut = RowDecoder(addr_bits=10, row_bits=9)
    assert (dut.addr_bits, dut.row_bits, dut.dense) == (10, 9, False)
    assert len(dut.mem_addr) == 10 and len(dut.n_rows) == 9 and len(dut.skipped_count) == 10
    assert len(dut.mem_data) == 32 and len(dut.o.payload.row) == 9


@pytest.mark.parametrize("dense", [False, True])
def test_converts_to_verilog(dense):
    text = verilog.convert(RowDecoder(dense=dense), name="row_decoder")
    assert "module row_decoder" in text and "o__payload" in text


def test_more_than_one_set_matches_a_popcount():
    """The carry-free tree the scan steers its refill with: two or more set bits, for every 10-bit word and
    random 32-bit words (seed 77), the edge cases among them."""
    from amaranth import Module, Signal

    from sdhw.decoder import _more_than_one_set

    rng = random.Random(77)
    for width, words in ((10, range(1 << 10)),
                         (WORD_BITS, [0, 1, 1 << 31, 3, (1 << 31) | 1, (1 << WORD_BITS) - 1]
                          + [rng.getrandbits(WORD_BITS) for _ in range(300)]
                          + [1 << rng.randrange(WORD_BITS) for _ in range(50)])):
        bits, many = Signal(width), Signal()
        m = Module()
        m.d.comb += many.eq(_more_than_one_set(bits))
        sim = Simulator(m)

        async def bench(ctx, bits=bits, many=many, words=words, width=width):
            for word in words:
                ctx.set(bits, word)
                assert ctx.get(many) == (bin(word).count("1") >= 2), f"width {width}, word {word:#x}"

        sim.add_testbench(bench)
        sim.run()
