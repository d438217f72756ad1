# amaranth: UnusedElaboratable=no
"""sdhw.hostport.HostPort: random bus traffic (writes to every region, CONTROL, reads of CSRs, descriptors,
activations and unreadable regions, idle cycles) against the memory map of docs/ARCHITECTURE.md, every output
checked every cycle; and sdhw.hostport.Counters against a model (Amaranth simulator, fixed seeds)."""
from __future__ import annotations

import random
from collections import Counter

import pytest
from amaranth.sim import Simulator
from packed_inputs import PackedInputs

from sdhw import hostbus as hb
from sdhw.config import VERSION, AcceleratorConfig
from sdhw.hostport import COUNTERS, Counters, HostPort

ENABLES = {hb.REGION_DESC: "desc_en", hb.REGION_CODES: "code_en", hb.REGION_BASES: "basis_en",
           hb.REGION_BIAS: "bias_en", hb.REGION_ACT0: ("act_en", 0), hb.REGION_ACT1: ("act_en", 1)}
COUNTER_CSRS = dict(zip(COUNTERS, (hb.CSR_CYCLES, hb.CSR_MACS, hb.CSR_SKIPPED, hb.CSR_STALLS)))


def word(region: int, offset: int) -> int:
    """A memory's word at ``offset``, the same every time it is asked for (no write changes it: the model only
    checks where the host port reads from and when)."""
    return random.Random(region << 16 | offset).getrandbits(32)


def expected_csr(cfg: AcceleratorConfig, offset: int, status: dict) -> int:
    """The CSR at ``offset`` for the status and counter inputs ``status``, from the memory map's CSR table."""
    depths = {"desc_layers": cfg.desc_layers, "act_depth": cfg.act_depth, "code_depth": cfg.code_depth,
              "weight_depth": cfg.weight_depth, "basis_depth": 0 if cfg.dense else cfg.basis_depth,
              "bias_depth": cfg.bias_depth, "rebuild_lanes": cfg.rebuild_lanes}
    if offset == hb.CSR_ID:
        return 0x53444857
    if offset == hb.CSR_VERSION:
        return VERSION | int(cfg.dense) << 8 | cfg.exp_bits << 12
    if offset == hb.CSR_LANES:
        return cfg.pes | 1 << 16
    if offset == hb.CSR_STATUS:
        return (status["busy"] | status["done"] << 1 | status["error"] << 2 | status["err_code"] << 8
                | status["layer_index"] << 16)
    for name, base in COUNTER_CSRS.items():
        if offset == base:
            return status[name] & 0xFFFFFFFF
        if offset == base + 1:
            return status[name] >> 32              # 0 when counter_bits <= 32
    if hb.CSR_DEPTHS <= offset < hb.CSR_DEPTHS + len(hb.DEPTH_CSRS):
        return depths[hb.DEPTH_CSRS[offset - hb.CSR_DEPTHS]]
    return 0                                        # CONTROL (write-only), unused and aliased offsets


def harness(cfg: AcceleratorConfig, mem_latency: int) -> PackedInputs:
    dut = HostPort(cfg, mem_latency=mem_latency)
    names = ("busy", "done", "error", "err_code", "layer_index", *COUNTERS, "desc_data", "act_data")
    return PackedInputs(dut, {**{name: getattr(dut.bus, name) for name in ("addr", "w_data", "w_en", "r_en")},
                              **{name: getattr(dut, name) for name in names}})


def random_access(rng: random.Random, csr_deck: list[int]):
    """``(kind, region, offset, data)``: an idle cycle, a write or a read anywhere in the map, mostly where the
    host port decodes something. CSR reads take their offsets from ``csr_deck`` (every offset below 32, in a
    shuffled order, then again) or an offset past the CSRs' 32 (which reads 0)."""
    r = rng.random()
    if r < 0.25:
        return "idle", 0, 0, 0
    kind = "write" if r < 0.6 else "read"
    region = rng.choice([hb.REGION_CSR] * (6 if kind == "write" else 12) + [hb.REGION_DESC] * 2
                        + [hb.REGION_ACT0, hb.REGION_ACT1] * 2
                        + [hb.REGION_CODES, hb.REGION_BASES, hb.REGION_BIAS, 2, rng.randint(8, 15)])
    if region == hb.REGION_CSR and kind == "write":
        offset = rng.choice([hb.CSR_CONTROL] * 4 + [rng.randrange(32), 32 + hb.CSR_CONTROL])
    elif region == hb.REGION_CSR:
        if rng.random() < 0.2:
            offset = rng.choice([32 + hb.CSR_ID, rng.randrange(32, 1 << 16)])
        else:
            if not csr_deck:
                csr_deck.extend(rng.sample(range(32), 32))
            offset = csr_deck.pop()
    else:
        offset = rng.choice([rng.randrange(64), rng.randrange(1 << 16)])
    return kind, region, offset, rng.getrandbits(32)


def run_hostport(cfg: AcceleratorConfig, mem_latency: int, *, seed: int, cycles: int):
    """Random traffic for ``cycles`` cycles with random status and counter inputs; ``desc_data`` and
    ``act_data`` come from a model of the memories reading the port's ``w_addr`` with ``mem_latency``.
    Returns the coverage tallies."""
    rng = random.Random(seed)
    h = harness(cfg, mem_latency)
    dut = h.dut
    where0 = f"seed {seed} ({cfg.device}, pes={cfg.pes}, dense={cfg.dense}, counter_bits={cfg.counter_bits}, " \
             f"mem_latency={mem_latency})"
    seen: Counter = Counter()

    def desc(offset):
        return word(hb.REGION_DESC, offset)

    def act(offset, buffer):
        return word(hb.REGION_ACT0 + buffer, offset) & 0xFF

    async def bench(ctx):
        hist = []                                   # per cycle: the access, the status, w_addr
        busy = 0
        csr_deck: list[int] = []
        for t in range(cycles):
            where = f"{where0}, cycle {t}"
            kind, region, offset, data = random_access(rng, csr_deck)
            busy ^= rng.random() < 0.15
            status = {"busy": busy, "done": rng.getrandbits(1), "error": rng.getrandbits(1),
                      "err_code": rng.getrandbits(8), "layer_index": rng.getrandbits(16),
                      **{name: rng.getrandbits(cfg.counter_bits) for name in COUNTERS}}
            # the memories: read at the port's w_addr, their data mem_latency cycles later
            if t >= mem_latency:
                addr = hist[t - mem_latency]["w_addr"]
                memories = {"desc_data": desc(addr), "act_data": act(addr, 0) | act(addr, 1) << 8}
            else:
                memories = {"desc_data": rng.getrandbits(32), "act_data": rng.getrandbits(16)}
            ctx.set(h.inputs, {"addr": region << 16 | offset, "w_data": data, "w_en": kind == "write",
                               "r_en": kind == "read", **status, **memories})
            hist.append({"kind": kind, "region": region, "offset": offset, "data": data, "status": status,
                         "w_addr": ctx.get(dut.w_addr)})

            # writes: the region's enable (and no other), offset and data, a cycle after the bus
            prev = hist[t - 1] if t else {"kind": "idle", "region": 0}
            write = prev["kind"] == "write"
            for reg, port in ENABLES.items():
                got = ctx.get(dut.act_en) >> port[1] & 1 if isinstance(port, tuple) else ctx.get(getattr(dut, port))
                assert got == (write and prev["region"] == reg), (
                    f"{where}: {port}={got} after {prev['kind']} to region {prev['region']}")
            if write:
                w_addr, w_data = ctx.get(dut.w_addr), ctx.get(dut.w_data)
                assert (w_addr, w_data) == (prev["offset"], prev["data"]), (
                    f"{where}: write to {prev['region']}:{prev['offset']:#x} of {prev['data']:#x} shows as "
                    f"{w_addr:#x}, {w_data:#x}")
                seen[f"write {prev['region']}"] += 1

            # CONTROL: start (unless busy a cycle after the write) and clear, two cycles after the write
            back2 = hist[t - 2] if t >= 2 else {"kind": "idle"}
            control = (back2["kind"] == "write" and back2["region"] == hb.REGION_CSR
                       and back2["offset"] == hb.CSR_CONTROL)
            want_start = control and back2["data"] & hb.CONTROL_START and not hist[t - 1]["status"]["busy"]
            want_clear = control and bool(back2["data"] & hb.CONTROL_CLEAR)
            start, clear = ctx.get(dut.start), ctx.get(dut.clear)
            assert (start, clear) == (want_start, want_clear), (
                f"{where}: start={start}, clear={clear}, want {int(want_start)}, {int(want_clear)}")
            if control and back2["data"] & hb.CONTROL_START:
                seen["start" if want_start else "start while busy"] += 1
            seen["clear"] += want_clear

            # reads: r_valid and r_data exactly READ_LATENCY cycles after r_en
            back = hist[t - hb.READ_LATENCY] if t >= hb.READ_LATENCY else {"kind": "idle"}
            valid = ctx.get(dut.bus.r_valid)
            assert valid == (back["kind"] == "read"), f"{where}: r_valid={valid} after a {back['kind']}"
            if valid:
                region, offset = back["region"], back["offset"]
                if region == hb.REGION_CSR:
                    # the CSR multiplexer's register samples the inputs two cycles after r_en
                    want = expected_csr(cfg, offset, hist[t - hb.READ_LATENCY + 2]["status"])
                    seen[f"csr {offset}" if offset < 32 else "csr past 31"] += 1
                elif region == hb.REGION_DESC:
                    want = desc(offset)
                elif region in (hb.REGION_ACT0, hb.REGION_ACT1):
                    byte = act(offset, region - hb.REGION_ACT0)
                    want = (byte - 256 if byte & 0x80 else byte) & 0xFFFFFFFF     # sign-extended
                    seen[f"act negative {region}"] += bool(byte & 0x80)
                else:
                    want = 0
                got = ctx.get(dut.bus.r_data)
                assert got == want, (f"{where}: read of {region}:{offset:#x} issued in cycle {t - hb.READ_LATENCY}"
                                     f" returned {got:#x}, want {want:#x}")
                seen[f"read {region}"] += 1
            await ctx.tick()

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.parametrize("cfg, mem_latency, seed", [
    (AcceleratorConfig(device="up5k", pes=16, counter_bits=24), 1, 1),
    (AcceleratorConfig(device="ecp5-25f", pes=16, counter_bits=48), 2, 2),
    (AcceleratorConfig(device="hx8k", pes=4, dense=True, exp_bits=3, counter_bits=33), 1, 3),
    (AcceleratorConfig(device="ecp5-45f", pes=64, exp_bits=4, counter_bits=64), 1, 4),
], ids=["up5k-24", "ecp5-48", "hx8k-dense-33", "ecp5-64"])
def test_random_bus_traffic(cfg, mem_latency, seed):
    seen = run_hostport(cfg, mem_latency, seed=seed, cycles=400)
    # the stimulus reached every case the checks distinguish
    want = {f"write {r}" for r in ENABLES} | {f"read {r}" for r in (hb.REGION_CSR, hb.REGION_DESC, hb.REGION_ACT0,
                                                                      hb.REGION_ACT1, hb.REGION_CODES)}
    want |= {"start", "start while busy", "clear", "csr past 31", f"act negative {hb.REGION_ACT0}",
             f"act negative {hb.REGION_ACT1}"}
    want |= {f"csr {o}" for o in range(32)}
    missing = want - {case for case, count in seen.items() if count}
    assert not missing, f"seed {seed}: never seen: {sorted(missing)}"


# ------------------------------------------------------------------------------------------ Counters
@pytest.mark.parametrize("bits, lanes, seed", [(16, 1, 11), (24, 16, 12), (48, 64, 13), (64, 1024, 14)])
def test_counters_count_wrap_and_clear(bits, lanes, seed):
    """Random increments and clears; every counter equals the model every cycle. The counters are preloaded
    near ``2**bits`` now and then (a testbench may set a register), so each of them wraps within the run."""
    rng = random.Random(seed)
    dut = Counters(bits=bits, lanes=lanes)
    mask = (1 << bits) - 1
    wraps: Counter = Counter()

    async def bench(ctx):
        model = dict.fromkeys(COUNTERS, 0)
        for t in range(400):
            if t % 60 == 5:
                for name in COUNTERS:
                    model[name] = mask - rng.randrange(8)
                    ctx.set(getattr(dut, name), model[name])
            incs = {"cycles": rng.random() < 0.8, "macs": rng.randint(0, lanes),
                    "skipped": rng.choice([0, 0, 1, rng.randrange(1 << 16)]), "stalls": rng.random() < 0.5}
            clear = rng.random() < 0.02
            for port, name in (("busy", "cycles"), ("macs_inc", "macs"), ("skipped_inc", "skipped"),
                               ("stall", "stalls")):
                ctx.set(getattr(dut, port), incs[name])
            ctx.set(dut.clear, clear)
            for name in COUNTERS:
                got = ctx.get(getattr(dut, name))
                assert got == model[name], f"seed {seed}, cycle {t}: {name} {got}, want {model[name]}"
            await ctx.tick()
            for name in COUNTERS:
                total = model[name] + incs[name]
                wraps[name] += total > mask and not clear
                model[name] = 0 if clear else total & mask

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    missing = set(COUNTERS) - {name for name, count in wraps.items() if count}
    assert not missing, f"seed {seed}: never wrapped: {sorted(missing)}"
