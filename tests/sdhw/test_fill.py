# amaranth: UnusedElaboratable=no
"""sdhw.fill.SdFill and DenseFill alone: a real program image's code stream in (through a SequentialReader
over the code memory, and the basis memory), every weight-buffer and tap-info write out, the issuer's ``free``
following the write pointer or lagging at random. The committed entries are checked against golden's MAC
weights and the layer's geometry (Amaranth simulator, fixed seeds)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator
from amaranth.utils import ceil_log2

from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.sd import to_rows
from rtl_gen.image import build_image, plan_layer, thresholds
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import KIND_K3, decode
from sdhw.fill import DenseFill, SdFill
from sdhw.memories import address_bits
from sdhw.reader import SequentialReader


def wide_memory(image, region: int, width: int) -> dict[int, int]:
    """A region's entries, reassembled from the image's 32-bit host words (chunk k of entry e at e << cb | k)."""
    chunks = (width + 31) // 32
    cb = ceil_log2(chunks) if chunks > 1 else 0
    out: dict[int, int] = {}
    for reg, offset, words in image.sections:
        if reg == region:
            for k, word in enumerate(words):
                addr = offset + k
                entry, chunk = addr >> cb, addr & ((1 << cb) - 1)
                out[entry] = out.get(entry, 0) | (word << (32 * chunk))
    return out


class FillHarness(Elaboratable):
    """The fill of ``cfg`` fed by a reader over the code memory (and, SD, the basis memory), both with read
    latency ``latency`` (2: a register after the read port, as ECP5 builds have)."""

    def __init__(self, cfg: AcceleratorConfig, image, *, latency: int):
        self.cfg, self.latency = cfg, latency
        self.code_bits = address_bits(cfg.code_depth)
        size_bits = max(1, cfg.act_depth.bit_length())
        args = dict(depth=cfg.weight_depth, word_bits=cfg.code_word_bits, code_bits=self.code_bits,
                    group_bits=size_bits, pix_bits=size_bits, basis_bits=address_bits(cfg.basis_rows))
        if cfg.dense:
            self.fill = DenseFill(lanes=cfg.pes, fill_lanes=cfg.fill_lanes, **args)
        else:
            self.fill = SdFill(lanes=cfg.pes, rebuild_lanes=cfg.rebuild_lanes, exp_bits=cfg.exp_bits,
                               basis_latency=latency, **args)
        self.reader = SequentialReader(addr_bits=self.code_bits, width=cfg.code_word_bits, latency=latency)
        codes = wide_memory(image, hb.REGION_CODES, cfg.code_word_bits)
        self.codes = [codes.get(k, 0) for k in range(cfg.code_depth)]
        bases = wide_memory(image, hb.REGION_BASES, cfg.basis_width)
        self.bases = [bases.get(k, 0) for k in range(cfg.basis_rows)]

    def _read(self, m, mem, addr, en, data):
        rd = mem.read_port()
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(en)]
        if self.latency == 1:
            m.d.comb += data.eq(rd.data)
        else:
            q = Signal.like(data)
            m.d.sync += q.eq(rd.data)
            m.d.comb += data.eq(q)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fill = fill = self.fill
        m.submodules.reader = reader = self.reader
        m.submodules.codes = codes = Memory(shape=self.cfg.code_word_bits, depth=self.cfg.code_depth,
                                            init=self.codes)
        self._read(m, codes, reader.rd_addr, reader.rd_en, reader.rd_data)
        wiring.connect(m, reader.o, fill.words)
        m.d.comb += fill.word_addr.eq(reader.consumed)
        m.d.comb += [reader.seek.eq(fill.seek), reader.seek_addr.eq(fill.seek_addr)]
        if not self.cfg.dense:
            m.submodules.bases = bases = Memory(shape=self.cfg.basis_width, depth=self.cfg.basis_rows,
                                                init=self.bases)
            self._read(m, bases, fill.basis_addr, 1, fill.basis_data)
        return m


def expected_entries(layer, cfg: AcceleratorConfig):
    """Every entry the fill writes for ``layer``, in order: ``(weights of the N lanes, tap info)``, the
    weights from golden (``layer.mac_weights()``), the info from the layer's geometry."""
    plan = plan_layer(layer, cfg)
    w = to_rows(np.asarray(layer.mac_weights(), dtype=np.int64))              # (M, R, 3)
    n = cfg.pes
    k3 = plan.kind == KIND_K3
    entries = []
    for g, rows in enumerate(plan.groups):
        group = []
        if not rows:                                  # an empty group: one placeholder entry, not counted
            group.append(([0] * n, {"off": 0, "dy": 0, "dx": 0, "last": 1, "count": 0}))
        for k, i in enumerate(rows):
            taps = [j for j in range(3) if not plan.kills[i] >> j & 1]
            ch, r = divmod(i, 3) if k3 else (0, 0)
            off0 = r * plan.w * plan.c + ch if k3 else 3 * i
            for j in taps:
                lanes = [int(w[g * n + q, i, j]) if g * n + q < plan.m else 0 for q in range(n)]
                info = {"off": (off0 + j * (plan.c if k3 else 1)) & 0xFFFF, "dy": r, "dx": j if k3 else 0,
                        "last": int(k == len(rows) - 1 and j == taps[-1]), "count": 1}
                group.append((lanes, info))
        entries += group * (plan.n_pix if plan.stream else 1)
    skipped = sum(plan.n_rows - len(rows) for rows in plan.groups) * (plan.n_pix if plan.stream else 1)
    return entries, (skipped if layer.is_sd else 0), plan


def run_fill(cfg: AcceleratorConfig, program, *, latency: int, seed: int, p_free: float, changes=None,
             layers=(0,)):
    """Fill ``layers`` of ``program`` one after the other through one fill (descriptor fields updated with
    ``changes``); the issuer's ``free`` jumps to the write pointer (``p_free = 1``) or, each cycle with
    probability ``p_free``, to a random point between itself and the write pointer. Entries are taken from a
    model of the buffer when ``wp`` commits them; freed slots are poisoned. Returns per layer ``out`` (``done``:
    the cycle from ``start`` the fill says it is done), a description for messages and the descriptors."""
    rng = random.Random(seed)
    image = build_image(program, cfg)
    desc_words = next(words for region, _, words in image.sections if region == hb.REGION_DESC)
    descs = [{**decode(desc_words[k * DESC_WORDS:(k + 1) * DESC_WORDS]), **(changes or {})} for k in layers]
    h = FillHarness(cfg, image, latency=latency)
    fill = h.fill
    depth, span = cfg.weight_depth, 2 * cfg.weight_depth
    chunk_lanes = fill.fill_lanes
    where = f"seed {seed} (dense={cfg.dense}, latency={latency}, depth={depth}, p_free={p_free})"
    outs = [{"entries": [], "tables": [], "skipped": 0, "reach": 0, "done": None, "overrun": False} for _ in layers]

    async def bench(ctx):
        for desc, out in zip(descs, outs):
            for name in ("code_base", "n_groups", "n_pix", "stream", "n_rows", "tap_step", "basis_base",
                         "n_thresh", "wshift"):
                ctx.set(getattr(fill.params, name), desc[name])
            ctx.set(fill.params.k3, desc["kind"] == KIND_K3)
            ctx.set(fill.free, 0)
            ctx.set(fill.start, 1)
            await ctx.tick()
            ctx.set(fill.start, 0)
            weights: list[list[int | None]] = [[None] * cfg.pes for _ in range(depth)]
            infos: list[dict | None] = [None] * depth
            free = 0
            for cycle in range(20_000):
                wp = ctx.get(fill.wp)
                w_en = ctx.get(fill.w_en)
                if w_en:
                    addr, data = ctx.get(fill.w_addr), ctx.get(fill.w_data)
                    ahead = ((addr - wp) % depth) + (wp - free) % span     # the entry's distance past free
                    assert ahead < depth, f"{where}, cycle {cycle}: write to slot {addr}, {ahead} entries past free"
                    out["reach"] = max(out["reach"], ahead)
                    for k in range(fill.chunks):
                        if w_en >> k & 1:
                            for t in range(chunk_lanes):
                                byte = data >> (8 * (k * chunk_lanes + t)) & 0xFF
                                weights[addr][k * chunk_lanes + t] = byte - 256 if byte > 127 else byte
                if ctx.get(fill.info_en):
                    addr, info = ctx.get(fill.info_addr), ctx.get(fill.info_data)
                    ahead = ((addr - wp) % depth) + (wp - free) % span
                    assert ahead < depth, f"{where}, cycle {cycle}: info write to slot {addr}, {ahead} past free"
                    infos[addr] = {name: int(getattr(info, name)) for name in ("off", "dy", "dx", "last", "count")}
                if ctx.get(fill.t_en):
                    out["tables"].append((ctx.get(fill.t_addr), ctx.get(fill.t_data)))
                out["skipped"] += ctx.get(fill.skipped)
                out["overrun"] |= bool(ctx.get(fill.overrun))
                if ctx.get(fill.done):
                    out["done"] = cycle
                    break
                await ctx.tick()
                new_wp = ctx.get(fill.wp)
                for k in range((new_wp - wp) % span):                   # committed: take the entries
                    slot = (wp + k) % depth
                    out["entries"].append((list(weights[slot]), infos[slot]))
                if rng.random() < p_free:                               # the issuer frees some or all
                    step = (new_wp - free) % span if p_free == 1 else rng.randint(0, (new_wp - free) % span)
                    for k in range(step):
                        weights[(free + k) % depth] = [None] * cfg.pes
                        infos[(free + k) % depth] = None
                    free = (free + step) % span
                    ctx.set(fill.free, free)
            for _ in range(rng.randint(0, 3)):                          # the issuer finishes the layer
                await ctx.tick()

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return outs, where, descs


def check_layer(layer, cfg: AcceleratorConfig, out: dict, desc: dict, where: str) -> list:
    """The committed entries, skipped rows and threshold writes of one layer against golden."""
    want, skipped, plan = expected_entries(layer, cfg)
    assert out["done"] is not None, f"{where}: no done after {len(out['entries'])}/{len(want)} entries"
    assert not out["overrun"], f"{where}: overrun on a correct program"
    got = out["entries"]
    assert len(got) == len(want), f"{where}: {len(got)} entries committed, want {len(want)}"
    for e, ((g_w, g_i), (w_w, w_i)) in enumerate(zip(got, want)):
        assert g_w == w_w, f"{where}: entry {e} weights {g_w}, want {w_w} (golden MAC weights)"
        assert g_i == w_i, f"{where}: entry {e} tap info {g_i}, want {w_i}"
    assert out["skipped"] == skipped, f"{where}: skipped pulses sum to {out['skipped']}, want {skipped}"
    if cfg.requant == "table":
        base, table = thresholds(layer)
        assert desc["n_thresh"] == len(table) and desc["act_min"] == base
        assert out["tables"] == [(k, t & 0xFFFFFFFF) for k, t in enumerate(table)], f"{where}: threshold writes"
    else:
        assert out["tables"] == [], f"{where}: threshold writes without a table"
    return want


def _program(model: Model, seed: int, *, dense: bool):
    rng = np.random.default_rng(seed)
    x_cal = rng.normal(0.0, 1.0, (64, *model.input_shape))
    return compile_model(model, x_cal, CompileOptions(method="paper", prune=0.4, dense=dense)).program


def _fc(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    return Model((20,), [Layer("fc", rng.normal(0, 0.3, (10, 20)), rng.normal(0, 0.1, 10), relu=True)])


def _conv3x3(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    return Model((5, 4, 2), [Layer("conv", rng.normal(0, 0.4, (6, 2, 3, 3)), rng.normal(0, 0.1, 6), stride=1)])


SMALL = dict(device="generic", act_depth=256, code_depth=1024, basis_depth=64, bias_depth=64, desc_layers=4)

CASES = {
    # name: (model, dense, pes, rebuild_lanes, weight_depth, requant, empty group)
    "sd-fc": (_fc, False, 4, 2, 8, "table", False),
    "sd-conv3x3-stream": (_conv3x3, False, 4, 2, 8, None, True),
    "sd-conv3x3": (_conv3x3, False, 4, 1, 32, None, False),
    "dense-conv3x3-stream": (_conv3x3, True, 8, 2, 16, "table", False),
    "dense-fc": (_fc, True, 4, None, 8, None, False),
}


@pytest.mark.parametrize("latency", [1, 2])
@pytest.mark.parametrize("p_free", [1.0, 0.1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fill_entries_match_golden(case, p_free, latency):
    make, dense, pes, r_n, depth, requant, empty = CASES[case]
    seed = sorted(CASES).index(case) + 10 * latency + (100 if p_free < 1 else 0)
    program = _program(make(seed), seed, dense=dense)
    layer = program.layers[0]
    if empty:                                      # all of group 1 zero: its rows vanish, a placeholder stays
        layer.weights.codes[pes:2 * pes] = 0
    cfg = AcceleratorConfig(pes=pes, dense=dense, rebuild_lanes=r_n, weight_depth=depth, requant=requant, **SMALL)
    (out,), where, (desc,) = run_fill(cfg, program, latency=latency, seed=seed, p_free=p_free)
    want = check_layer(layer, cfg, out, desc, where)
    _, skipped, plan = expected_entries(layer, cfg)
    # the stimulus: the layer shape the case is named for; with a lagging free, a fill up to the room it has
    assert plan.stream == case.endswith("stream") and (skipped > 0) == (not dense), f"{where}: {plan}"
    if p_free < 1 and len(want) > depth:
        # a header is taken while six entries are free: a row of three more reaches depth - 3 at most
        assert out["reach"] >= depth - 6, f"{where}: the fill never came near free + depth ({out['reach']})"
    if p_free == 1 and depth >= 32:                 # (smaller buffers hold too few rows to keep the rate)
        # throughput, loosely: R (SD) or F (dense) weights per cycle plus two cycles (SD) or one (dense) per
        # row, one per threshold; a few cycles per group pass (its end, the re-seek of a streamed group)
        chunks = cfg.pes // cfg.fill_lanes
        passes = len(plan.groups) * (plan.n_pix if plan.stream else 1)
        rows = sum(max(1, len(rows)) for rows in plan.groups) * (plan.n_pix if plan.stream else 1)
        ideal = (1 if dense else 2) * rows + chunks * len(want) + len(out["tables"])
        assert out["done"] <= 1.15 * ideal + 6 * passes + 20, f"{where}: {out['done']} cycles, ideal {ideal}"


def test_fill_flags_a_group_with_more_rows_than_the_layer():
    """``overrun``: a group's stream holds more rows than the descriptor's ``n_rows`` (a corrupt program)."""
    seed = 200
    program = _program(_conv3x3(seed), seed, dense=False)
    cfg = AcceleratorConfig(pes=4, rebuild_lanes=2, weight_depth=16, **SMALL)
    plan = plan_layer(program.layers[0], cfg)
    most = max(len(rows) for rows in plan.groups)
    (out,), where, _ = run_fill(cfg, program, latency=1, seed=seed, p_free=1.0, changes={"n_rows": most})
    assert not out["overrun"], f"{where}: overrun with n_rows = the rows of the largest group ({most})"
    (out,), where, _ = run_fill(cfg, program, latency=1, seed=seed, p_free=1.0, changes={"n_rows": most - 1})
    assert out["overrun"], f"{where}: no overrun with n_rows = {most - 1} < {most} rows in a group"


@pytest.mark.parametrize("dense", [False, True])
def test_two_layers_through_one_fill(dense):
    """conv3x3 then FC through the same fill, started again after its done: the second layer's code, basis
    and threshold bases are not 0, and nothing of the first layer's state may leak into it."""
    seed = 300 + dense
    rng = np.random.default_rng(seed)
    model = Model((5, 4, 2), [Layer("conv", rng.normal(0, 0.4, (6, 2, 3, 3)), rng.normal(0, 0.1, 6), relu=True),
                              Layer("fc", rng.normal(0, 0.2, (7, 5 * 4 * 6)), rng.normal(0, 0.1, 7))])
    program = _program(model, seed, dense=dense)
    cfg = AcceleratorConfig(pes=4, dense=dense, rebuild_lanes=2, weight_depth=16, requant="table", **SMALL)
    outs, where, descs = run_fill(cfg, program, latency=2, seed=seed, p_free=0.2, layers=[0, 1])
    for k, (layer, out, desc) in enumerate(zip(program.layers, outs, descs)):
        check_layer(layer, cfg, out, desc, f"{where}, layer {k}")
    assert descs[1]["code_base"] > 0 and (dense or descs[1]["basis_base"] > 0), f"{where}: {descs[1]}"
