# amaranth: UnusedElaboratable=no
"""sdhw.memories: HostMemory, ActivationBuffers and WeightBuffer against models of their contents, through
idle (host) and busy (data path) phases with random accesses, block RAM and single-port RAM variants, read
latency 1 and 2 (Amaranth simulator, fixed seeds). Whether Yosys maps the single-port variant to the UP5K's
SB_SPRAM256KA is a synthesis question: here, its precondition (one address, never a read and a write in one
cycle) is checked on the memory's ports every cycle."""
from __future__ import annotations

import random
from unittest import mock

import pytest
from amaranth.sim import Simulator
from packed_inputs import PackedInputs

from sdhw import memories
from sdhw.memories import ActivationBuffers, HostMemory, WeightBuffer, address_bits, chunk_layout


def simulate(dut, ports: dict, bench):
    """Simulate ``dut`` with ``ports`` packed (:class:`PackedInputs`); ``bench(ctx, h, mems)`` gets the harness
    and the memories ``sdhw.memories.ram`` made for ``dut`` (their ports, to check what a synthesis tool sees)."""
    made = []
    ram = memories.ram

    def recording_ram(**kwargs):
        made.append(ram(**kwargs))
        return made[-1]

    h = PackedInputs(dut, ports)
    with mock.patch.object(memories, "ram", recording_ram):
        sim = Simulator(h)                                  # elaborates the design
    assert made, "no memory made through sdhw.memories.ram"

    async def testbench(ctx):
        await bench(ctx, h, made)

    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return made


def single_port_check(ctx, mems, where: str):
    """A single-port RAM's precondition: its read and write ports share an address and never a cycle."""
    for mem in mems:
        (rd,), (wr,) = mem.read_ports, mem.write_ports
        assert ctx.get(rd.addr) == ctx.get(wr.addr), f"{where}: read and write addresses differ"
        assert not (ctx.get(rd.en) and ctx.get(wr.en)), f"{where}: a read and a write in one cycle"


def phases(rng: random.Random, cycles: int):
    """Per cycle, busy or not: runs of 20..60 cycles, idle first (the host loads the memories)."""
    busy, out = False, []
    while len(out) < cycles:
        out += [busy] * rng.randint(20, 60)
        busy = not busy
    return out[:cycles]


# ---------------------------------------------------------------------------------------------- HostMemory
def run_host_memory(*, width: int, depth: int, spram: bool, register_output: bool, seed: int, cycles: int = 300):
    """Idle: random host writes (chunk ``k`` of entry ``e`` at offset ``e << chunk_bits | k``) and, in the other
    cycles, a read of the host's entry; busy: host writes (to be ignored) beside random data path reads. Every
    read (idle without a write, or busy with ``r_en``) is checked ``latency`` cycles later. Returns the number of
    reads checked per phase."""
    rng = random.Random(seed)
    dut = HostMemory(width=width, depth=depth, spram=spram, register_output=register_output)
    chunks, chunk_bits = chunk_layout(width)
    latency = dut.latency
    model = [0] * depth
    busy_of = phases(rng, cycles)
    checked = {"idle": 0, "busy": 0}
    where0 = f"seed {seed} (width={width}, depth={depth}, spram={spram}, register_output={register_output})"

    async def bench(ctx, h, mems):
        pending = {}                                       # cycle the data is due -> (what, expected)
        for t, busy in enumerate(busy_of):
            where = f"{where0}, cycle {t}"
            entry, chunk = rng.randrange(depth), rng.randrange(chunks)
            host_en = rng.random() < 0.4
            r_addr, r_en = rng.randrange(depth), rng.random() < 0.7
            data = rng.getrandbits(32)
            ctx.set(h.inputs, {"host_addr": entry << chunk_bits | chunk, "host_data": data, "host_en": host_en,
                               "busy": busy, "r_addr": r_addr, "r_en": r_en})
            if spram:
                single_port_check(ctx, mems, where)
            if t in pending:
                what, want = pending.pop(t)
                got = ctx.get(dut.r_data)
                assert got == want, f"{where}: {what}: got {got:#x}, want {want:#x}"
            if busy and r_en:
                pending[t + latency] = (f"data path read of {r_addr} in cycle {t}", model[r_addr])
                checked["busy"] += 1
            elif not busy and not host_en:
                pending[t + latency] = (f"host read of {entry} in cycle {t}", model[entry])
                checked["idle"] += 1
            if host_en and not busy:
                mask = ((1 << 32) - 1) << 32 * chunk
                model[entry] = (model[entry] & ~mask | data << 32 * chunk) & ((1 << width) - 1)
            await ctx.tick()

    mems = simulate(dut, {name: getattr(dut, name) for name in ("host_addr", "host_data", "host_en", "busy",
                                                                   "r_addr", "r_en")}, bench)
    for mem in mems:
        assert mem.attrs.get("no_rw_check") == 1 and (mem.attrs.get("ram_style") == "huge") == spram, mem.attrs
    return checked


@pytest.mark.parametrize("width, depth, spram, register_output, seed", [
    (32, 16, False, False, 1), (32, 16, False, True, 2), (24, 20, False, True, 3), (16, 12, True, False, 4),
    (32, 16, True, True, 5), (48, 8, False, False, 6), (72, 8, False, True, 7), (96, 5, False, False, 8),
])
def test_host_memory(width, depth, spram, register_output, seed):
    checked = run_host_memory(width=width, depth=depth, spram=spram, register_output=register_output, seed=seed)
    assert min(checked.values()) > 50, f"seed {seed}: reads checked {checked}"


def test_host_memory_wide_spram_is_single_port():
    run_host_memory(width=48, depth=8, spram=True, register_output=False, seed=9)


# ---------------------------------------------------------------------------------------- ActivationBuffers
def run_activation_buffers(*, depth: int, spram: bool, register_output: bool, seed: int, cycles: int = 300):
    """Idle: random host writes to buffer 0, 1 or both (a byte at a byte address) while the data path's write
    and read ports wiggle (to be ignored), and ``host_data_out`` checked for every buffer not written in the
    read's cycle. Busy (``in_sel`` random per phase): reads of buffer ``in_sel`` and writes to the other beside
    host writes (to be ignored). Returns the number of reads checked per kind."""
    rng = random.Random(seed)
    dut = ActivationBuffers(depth=depth, spram=spram, register_output=register_output)
    latency = dut.latency
    bufs = [[0] * depth for _ in range(2)]
    busy_of = phases(rng, cycles)
    checked = {"host": 0, "data path": 0, "data path writes": 0}
    where0 = f"seed {seed} (depth={depth}, spram={spram}, register_output={register_output})"

    async def bench(ctx, h, mems):
        pending = {}                                        # cycle due -> [(what, port, byte, expected)]
        in_sel = 0
        for t, busy in enumerate(busy_of):
            where = f"{where0}, cycle {t}"
            if busy and (t == 0 or not busy_of[t - 1]):
                in_sel = rng.getrandbits(1)                 # a layer's input buffer, fixed while it runs
            host_addr, host_data, host_en = rng.randrange(depth), rng.getrandbits(8), rng.choice([0, 0, 1, 2, 3])
            r_addr, r_en = rng.randrange(depth), rng.random() < 0.7
            w_addr, w_data, w_en = rng.randrange(depth), rng.getrandbits(8), rng.random() < 0.6
            ctx.set(h.inputs, {"host_addr": host_addr, "host_data": host_data, "host_en": host_en,
                               "busy": 3 if busy else 0, "in_sel": in_sel, "r_addr": r_addr, "r_en": r_en,
                               "w_addr": w_addr, "w_data": w_data, "w_en": w_en})
            if spram:
                single_port_check(ctx, mems, where)
            for what, port, byte, want in pending.pop(t, []):
                got = ctx.get(port) >> 8 * byte & 0xFF
                assert got == want, f"{where}: {what}: got {got:#x}, want {want:#x}"
            due = pending.setdefault(t + latency, [])
            if busy:
                if r_en:
                    due.append((f"read of buffer {in_sel} at {r_addr} in cycle {t}", dut.r_data, 0,
                                bufs[in_sel][r_addr]))
                    checked["data path"] += 1
                if w_en:
                    bufs[1 - in_sel][w_addr] = w_data
                    checked["data path writes"] += 1
            else:
                for b in range(2):
                    if not host_en >> b & 1:
                        due.append((f"host read of buffer {b} at {host_addr} in cycle {t}", dut.host_data_out, b,
                                    bufs[b][host_addr]))
                        checked["host"] += 1
                for b in range(2):
                    if host_en >> b & 1:
                        bufs[b][host_addr] = host_data
            await ctx.tick()

    ports = ("host_addr", "host_data", "host_en", "busy", "in_sel", "r_addr", "r_en", "w_addr", "w_data", "w_en")
    mems = simulate(dut, {name: getattr(dut, name) for name in ports}, bench)
    assert len(mems) == 2, mems
    for mem in mems:
        assert mem.attrs.get("no_rw_check") == 1 and (mem.attrs.get("ram_style") == "huge") == spram, mem.attrs
        assert mem.shape == (16 if spram else 8) and mem.depth == (-(-depth // 2) if spram else depth)
    return checked


@pytest.mark.parametrize("depth, spram, register_output, seed", [
    (32, False, False, 11), (24, False, True, 12), (32, True, False, 13), (26, True, True, 14), (17, True, False, 15),
])
def test_activation_buffers(depth, spram, register_output, seed):
    checked = run_activation_buffers(depth=depth, spram=spram, register_output=register_output, seed=seed)
    assert min(checked.values()) > 50, f"seed {seed}: {checked}"


# ---------------------------------------------------------------------------------------------- WeightBuffer
@pytest.mark.parametrize("lanes, fill_lanes, depth, register_output, seed", [
    (4, 4, 16, False, 21), (16, 4, 8, True, 22), (8, 1, 16, False, 23), (16, 8, 12, True, 24),
])
def test_weight_buffer(lanes, fill_lanes, depth, register_output, seed):
    """Random chunked weight writes (a bit of ``w_en`` per ``fill_lanes`` lanes), tap info writes and reads of
    both, each read checked ``latency`` cycles later against a model. A read at an entry written in the same
    cycle is not checked (the fill never writes an entry the issuer is reading)."""
    rng = random.Random(seed)
    info_bits = 13
    dut = WeightBuffer(lanes=lanes, fill_lanes=fill_lanes, depth=depth, info_bits=info_bits,
                       register_output=register_output)
    chunks, chunk_w = lanes // fill_lanes, 8 * fill_lanes
    latency = dut.latency
    weights, info = [0] * depth, [0] * depth
    checked = {"weights": 0, "info": 0, "partial writes": 0}
    where0 = f"seed {seed} (lanes={lanes}, fill_lanes={fill_lanes}, depth={depth}, register_output={register_output})"

    async def bench(ctx, h, mems):
        pending = {}
        for t in range(250):
            where = f"{where0}, cycle {t}"
            w_addr, w_en = rng.randrange(depth), rng.choice([0, rng.getrandbits(chunks)])
            w_data = rng.getrandbits(8 * lanes)
            info_addr, info_en, info_data = rng.randrange(depth), rng.random() < 0.3, rng.getrandbits(info_bits)
            w_r_addr, w_r_en = rng.randrange(depth), rng.random() < 0.7
            info_r_addr, info_r_en = rng.randrange(depth), rng.random() < 0.7
            ctx.set(h.inputs, {"w_addr": w_addr, "w_en": w_en, "w_data": w_data, "info_addr": info_addr,
                               "info_en": info_en, "info_data": info_data, "w_r_addr": w_r_addr, "w_r_en": w_r_en,
                               "info_r_addr": info_r_addr, "info_r_en": info_r_en})
            for what, port, want in pending.pop(t, []):
                got = ctx.get(port)
                assert got == want, f"{where}: {what}: got {got:#x}, want {want:#x}"
            due = pending.setdefault(t + latency, [])
            if w_r_en and not (w_en and w_r_addr == w_addr):
                due.append((f"weights at {w_r_addr} read in cycle {t}", dut.w_r_data, weights[w_r_addr]))
                checked["weights"] += 1
            if info_r_en and not (info_en and info_r_addr == info_addr):
                due.append((f"info at {info_r_addr} read in cycle {t}", dut.info_r_data, info[info_r_addr]))
                checked["info"] += 1
            for k in range(chunks):
                if w_en >> k & 1:
                    mask = ((1 << chunk_w) - 1) << chunk_w * k
                    weights[w_addr] = weights[w_addr] & ~mask | w_data & mask
            checked["partial writes"] += 0 < w_en < (1 << chunks) - 1
            if info_en:
                info[info_addr] = info_data
            await ctx.tick()

    ports = ("w_addr", "w_en", "w_data", "info_addr", "info_en", "info_data", "w_r_addr", "w_r_en", "info_r_addr",
             "info_r_en")
    mems = simulate(dut, {name: getattr(dut, name) for name in ports}, bench)
    assert all(mem.attrs.get("no_rw_check") == 1 for mem in mems) and len(mems) == 2
    assert min(checked["weights"], checked["info"]) > 100, f"seed {seed}: {checked}"
    if chunks > 1:
        assert checked["partial writes"] > 20, f"seed {seed}: {checked}"


# ------------------------------------------------------------------------------------------------- helpers
def test_chunk_layout_and_address_bits():
    """``(chunks, chunk address bits)`` of an entry written as 32-bit words; address bits of a depth."""
    assert [chunk_layout(w) for w in (8, 24, 32, 33, 48, 64, 72, 96, 128, 129)] == [
        (1, 0), (1, 0), (1, 0), (2, 1), (2, 1), (2, 1), (3, 2), (3, 2), (4, 2), (5, 3)]
    assert [address_bits(d) for d in (1, 2, 3, 4, 5, 16, 17, 1 << 14)] == [1, 1, 2, 2, 3, 4, 5, 14]
