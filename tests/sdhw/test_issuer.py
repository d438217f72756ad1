# amaranth: UnusedElaboratable=no
"""sdhw.issuer.Issuer alone: random small layers (3x3 with padding at stride 1 and 2, 1x1, fc; batches of one or
two images; replayed and streamed groups) run back to back against a Python model of the op sequence, the Issuer
fed by models of the fill, the weight-buffer reader, the activation and weight memories, the MAC array and the
drain, with random stalls on every side (Amaranth simulator)."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.sim import Simulator
from amaranth.utils import ceil_log2

from golden import SdhwError
from golden.program import Program, QLayer
from golden.quant import QParams
from rtl_gen.image import build_image
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import decode
from sdhw.fill import TAP_INFO
from sdhw.issuer import Issuer
from sdhw.memories import address_bits

# the descriptor fields the accelerator copies into the issuer's params
FIELDS = ("n_groups", "last_lanes", "n_pix", "out_w", "in_h", "in_w", "stride", "pad", "stream", "step_x",
          "row_wrap", "base0", "out_c", "bias_base", "zp_in", "in_size")
DEPTH = 16                                  # weight-buffer entries: a dense 3x3 group of two channels overflows it
ACT_DEPTH = 512
BIAS_DEPTH = 64


@dataclass(frozen=True)
class Tap:
    """One weight-buffer entry: kernel row and column (0 for 1x1 and fc), input channel, counted; ``delta``
    moves its activation offset away from the layout's (a corrupt program)."""
    dy: int
    dx: int
    ch: int
    count: int = 1
    delta: int = 0


@dataclass(frozen=True)
class Op:
    uid: int            # the weight-buffer write (entry copy) the op must read
    act: int            # the activation the MAC array must get
    last: bool
    macs: int
    error: bool
    addr: int | None    # the activation address (None: padding, whose read is unused)


@dataclass
class Layer:
    name: str
    params: dict
    batch: int
    groups: list[list[Tap]]


def config(lanes: int) -> AcceleratorConfig:
    return AcceleratorConfig(pes=lanes, dense=True, device="ecp5-25f", act_depth=ACT_DEPTH, weight_depth=DEPTH,
                             bias_depth=BIAS_DEPTH)


def compiler_fields(cfg: AcceleratorConfig, kind: str, h: int, w: int, c: int, m: int, stride: int, batch: int,
                    zp: int) -> dict:
    """The layer's descriptor as ``rtl_gen.image.build_image`` writes it (a one-layer dense program)."""
    q_in = QParams(0.1, zp)
    if kind == "fc":
        in_shape, weights = (c,), np.ones((m, c), dtype=np.int64)
    else:
        k = 3 if kind == "k3" else 1
        in_shape, weights = (h, w, c), np.ones((m, c, k, k), dtype=np.int64)
    layer = QLayer("fc" if kind == "fc" else "conv", in_shape, weights, np.zeros(m, dtype=np.int64), q_in,
                   QParams(0.1, 0), m0=1 << 30, shift=0, stride=stride)
    image = build_image(Program(in_shape, q_in, [layer]), cfg, batch=batch)
    words = dict(((a >> 16, a & 0xFFFF), word) for a, word in image.writes())
    return decode([words[hb.REGION_DESC, k] for k in range(DESC_WORDS)])


def group_taps(rng: random.Random, kind: str, c: int, keep: float) -> list[Tap]:
    """A group's live rows in row order (rows of zeros pruned at random, as SD layers skip them), their taps;
    an empty group is one uncounted placeholder entry."""
    taps = []
    if kind == "k3":
        for ch in range(c):
            for r in range(3):
                if rng.random() < keep:
                    taps += [Tap(r, j, ch) for j in range(3)]
    else:
        for i in range(-(-c // 3)):
            if rng.random() < keep:
                taps += [Tap(0, 0, 3 * i + j) for j in range(3) if 3 * i + j < c]
    return taps or [Tap(0, 0, 0, count=0)]


def make_layer(rng: random.Random, lanes: int, kind: str, h: int, w: int, c: int, m: int, stride: int, batch: int,
               keep: float, stream: int | None = None) -> Layer:
    """A layer: its geometry from the compiler, its groups' live rows at random (``keep``), its stream mode at
    random unless given (a group larger than the buffer always streams)."""
    fields = compiler_fields(config(lanes), kind, h, w, c, m, stride, batch, zp=rng.randint(-128, 127))
    groups = [group_taps(rng, kind, c, keep) for _ in range(-(-m // lanes))]
    params = {name: fields[name] for name in FIELDS}
    assert params["n_groups"] == len(groups)
    # a layer's biases start where the earlier layers' end, anywhere in the bias memory
    params["bias_base"] = rng.randrange(BIAS_DEPTH)
    # a group replays only if it fits the buffer; otherwise the fill writes it again for every pixel
    if stream is None:
        stream = int(rng.random() < 0.5 or max(len(g) for g in groups) > DEPTH)
    params["stream"] = stream
    name = f"{kind} {h}x{w}x{c}->{m} s{stride} batch {batch} stream {stream}"
    return Layer(name, params, batch, groups)


def random_layer(rng: random.Random, lanes: int, *, kinds=("k3", "k3", "k1", "fc"), keeps=(1.0, 0.7, 0.3),
                 max_ops: int = 1500) -> Layer:
    while True:
        kind = rng.choice(kinds)
        batch = rng.choice([1, 1, 2])
        stride = 1 if kind == "fc" else rng.choice([1, 2])
        if kind == "fc":
            h = w = 1
            c = rng.randint(1, DEPTH)
        else:
            c = rng.randint(1, 2) if kind == "k3" else rng.randint(1, 9)
            h, w = rng.randint(1, 6), rng.randint(1, 6)
            if batch > 1 and stride == 2:
                h = 2 * rng.randint(1, 2)         # a batch steps to the next image by a row step
        try:
            layer = make_layer(rng, lanes, kind, h, w, c, rng.randint(1, 2 * lanes + 1), stride, batch,
                               rng.choice(keeps))
        except SdhwError:                          # outputs past the activation buffer: draw again
            continue
        if layer.params["n_pix"] * sum(len(g) for g in layer.groups) <= max_ops:
            return layer


def full_replay_layer(rng: random.Random, lanes: int) -> Layer:
    """A 1x1 layer whose groups fill the whole buffer and are replayed (the fill's room down to nothing)."""
    return make_layer(rng, lanes, "k1", 2, 3, DEPTH, 2 * lanes, 1, 1, 1.0, stream=0)


def tap_info(tap: Tap, last: bool, w: int, c: int) -> int:
    # a tap's offset from its pixel's tap (0, 0, 0) in a channel-last input (rtl_gen.image's row headers: off0 =
    # dy W C + ch, tap step C; 1x1 and fc: the channel); derived here from the layout, not from the headers, so
    # that the expected addresses below come from (image, row, column, channel) alone
    off = (tap.dy * w + tap.dx) * c + tap.ch + tap.delta
    values = {"off": off & 0xFFFF, "dy": tap.dy, "dx": tap.dx, "last": int(last), "count": tap.count}
    return sum(v << TAP_INFO[name].offset for name, v in values.items())


def expected(layer: Layer, lanes: int, act_mem: list[int], first_uid: int, addr_bits: int):
    """The fill's writes ``[(uid, tap info)]`` and the ops ``[Op]`` and passes ``[(out, bias, lanes)]`` the
    issuer must produce: per group, per output pixel (raster order, image after image), the group's entries."""
    p = layer.params
    hw = p["in_h"] * p["in_w"]
    c = p["in_size"] // (layer.batch * hw)
    wo = p["out_w"]
    ho = p["n_pix"] // (layer.batch * wo)
    s, pad = p["stride"], p["pad"]
    mask = len(act_mem) - 1
    writes, ops, passes = [], [], []
    for g, taps in enumerate(layer.groups):
        live = p["last_lanes"] if g == p["n_groups"] - 1 else lanes
        infos = [tap_info(t, k == len(taps) - 1, p["in_w"], c) for k, t in enumerate(taps)]
        for o in range(p["n_pix"]):
            if p["stream"] or o == 0:
                first = first_uid + len(writes)
                writes += [(first + k, info) for k, info in enumerate(infos)]
            b, rest = divmod(o, ho * wo)
            oy, ox = divmod(rest, wo)
            for k, t in enumerate(taps):
                iy, ix = oy * s - pad + t.dy, ox * s - pad + t.dx
                padded = not (0 <= iy < p["in_h"] and 0 <= ix < p["in_w"])
                addr = ((b * p["in_h"] + iy) * p["in_w"] + ix) * c + t.ch + t.delta
                assert padded or -(1 << (addr_bits - 1)) <= addr < 1 << (addr_bits - 1), "the test's layer"
                ops.append(Op(uid=first + k, act=p["zp_in"] if padded else act_mem[addr & mask],
                              last=k == len(taps) - 1, macs=live if t.count else 0,
                              error=bool(t.count and not padded and not 0 <= addr < p["in_size"]),
                              addr=None if padded else addr & mask))
            passes.append(((o * p["out_c"] + g * lanes) & mask, (p["bias_base"] + g * lanes) % BIAS_DEPTH, live))
    return writes, ops, passes


def run(layers: list[Layer], *, lanes: int, act_latency: int, register_act: bool, seed: int, p_valid: float,
        p_fill: float, fill_burst: int, mac_delay: tuple[int, int], drain_hold: tuple[int, int],
        tight: bool = False):
    """Run ``layers`` one after the other through one issuer; check every cycle. Returns per layer its ops and
    the cycles they issued in."""
    rng = random.Random(seed)
    cfg = config(lanes)
    entry_bits = ceil_log2(DEPTH)
    act_bits = address_bits(cfg.act_depth)
    dut = Issuer(lanes=lanes, entry_bits=entry_bits, act_bits=act_bits, size_bits=max(1, cfg.act_depth.bit_length()),
                 side_bits=cfg.side_bits, group_bits=cfg.max_groups.bit_length(),
                 bias_bits=address_bits(cfg.bias_depth), act_latency=act_latency, register_act=register_act)
    latency = 1 + act_latency + int(register_act)          # issue to the MAC array's inputs
    ptr_mod = 2 * DEPTH
    act_mem = [rng.randint(-128, 127) for _ in range(1 << act_bits)]
    weights: dict[int, int] = {}                           # uid -> the entry's packed lane weights
    results = []
    where0 = f"seed {seed} (lanes={lanes}, act_latency={act_latency}, register_act={register_act})"

    async def bench(ctx):
        # the weight buffer: per slot the uid of the write it holds, its tap info and its weights
        slot_uid, slot_info = [-1] * DEPTH, [0] * DEPTH
        slot_w = [rng.getrandbits(8 * lanes) for _ in range(DEPTH)]
        wp = rng.randrange(ptr_mod)                        # the fill's write pointer, anywhere on the ring
        cons, rvalid = 0, False                            # the reader
        act_pipe = [rng.randint(-128, 127) for _ in range(act_latency)]
        w_pipe = [rng.getrandbits(8 * lanes) for _ in range(act_latency)]
        done_due: list[int] = []                           # cycles of the MAC array's done pulses
        busy_until = 0                                     # the drain is busy in cycles before it
        expect_macs: dict[int, int] = {}
        expect_err: dict[int, bool] = {}
        expect_addr: dict[int, int] = {}
        t = 0
        prev_issue = prev_running = False
        uid = 0
        for n_layer, layer in enumerate(layers):
            where = f"{where0}, layer {n_layer} ({layer.name})"
            writes, ops, passes = expected(layer, lanes, act_mem, uid, dut.addr_bits)
            assert any(o.error for o in ops) == any(tap.delta for g in layer.groups for tap in g), f"{where}: the test"
            for w_uid, _ in writes:
                weights[w_uid] = rng.getrandbits(8 * lanes)
            uid += len(writes)
            pending = list(writes)                         # the fill's writes still to do
            issued: list[int] = []
            n_mac = passes_issued = passes_done = 0
            last_issue = last_done = None
            ctx.set(dut.params, layer.params)
            start_cycle = t + rng.randint(1, 3)            # params hold from a cycle before start
            while True:
                start = t == start_cycle
                in_layer = t >= start_cycle
                # ---- inputs
                ctx.set(dut.start, start)
                ctx.set(dut.start_ptr, wp)
                ctx.set(dut.consumed, cons)
                ctx.set(dut.entries.valid, rvalid)
                ctx.set(dut.entries.payload.as_value(), slot_info[cons % DEPTH] if rvalid
                        else rng.getrandbits(TAP_INFO.size))
                ctx.set(dut.act_data, act_pipe[0])
                ctx.set(dut.w_data, w_pipe[0])
                mac_done = bool(done_due) and done_due[0] == t
                if mac_done:
                    done_due.pop(0)
                    assert t >= busy_until, f"{where}, cycle {t}: a pass's sums reach a busy drain"
                ctx.set(dut.mac_done, mac_done)
                # the drain is busy only after a load, for a while (a stalling requantiser)
                load_until = t + 1 + rng.randint(*drain_hold) if mac_done else busy_until
                ctx.set(dut.drain_busy_next, t + 1 < load_until)
                # ---- outputs
                ready = ctx.get(dut.entries.ready)
                seek, seek_addr = ctx.get(dut.seek), ctx.get(dut.seek_addr)
                w_addr, act_addr = ctx.get(dut.w_addr), ctx.get(dut.act_addr)
                mac_valid = ctx.get(dut.mac_valid)
                macs, stall, addr_error = ctx.get(dut.macs), ctx.get(dut.stall), ctx.get(dut.addr_error)
                done, busy, free = ctx.get(dut.done), ctx.get(dut.busy), ctx.get(dut.free)
                issue = bool(rvalid and ready)
                running = in_layer and t > start_cycle and not done
                at = f"{where}, cycle {t}"

                if issue:
                    k = len(issued)
                    assert k < len(ops), f"{at}: an op issued after the layer's {len(ops)}"
                    op = ops[k]
                    got = slot_uid[cons % DEPTH]
                    assert got == op.uid, (f"{at}: op {k} issued entry copy {got} at {cons}, want {op.uid} "
                                           f"({'stale' if got < op.uid else 'wrong'})")
                    if k:
                        gap = t - issued[-1]
                        if ops[k - 1].last:
                            assert gap >= 3, f"{at}: op {k} issued {gap} cycles after its pass's last op"
                        if tight:
                            # one op a cycle, two cycles more per pass; a last op as soon as the drain is free
                            # and the cycle after the previous pass's sums left the MAC array
                            want = issued[-1] + (3 if ops[k - 1].last else 1)
                            if op.last:
                                want = max(want, busy_until, -1 if last_done is None else last_done + 1)
                            assert t == want, f"{at}: op {k} issued, want it in cycle {want}"
                    if op.last:
                        assert passes_done == passes_issued, f"{at}: a last op with a pass's sums in flight"
                        assert t >= busy_until, f"{at}: a last op while the drain is busy"
                        passes_issued += 1
                        last_issue = t
                    issued.append(t)
                    expect_macs[t + 1] = op.macs
                    expect_err[t + 2] = op.error
                    if op.addr is not None:
                        expect_addr[t + 1] = op.addr
                want_addr = expect_addr.pop(t, None)
                if want_addr is not None:
                    assert act_addr == want_addr, f"{at}: act_addr {act_addr}, want {want_addr}"
                want_valid = n_mac < len(issued) and issued[n_mac] + latency == t
                assert mac_valid == want_valid, f"{at}: mac_valid {mac_valid}, want {want_valid} (op {n_mac})"
                if mac_valid:
                    op = ops[n_mac]
                    got = (ctx.get(dut.mac_act), ctx.get(dut.mac_weights.as_value()), ctx.get(dut.mac_last))
                    want = (op.act, weights[op.uid], int(op.last))
                    assert got == want, f"{at}: op {n_mac} (act, weights, last) {got}, want {want}"
                    n_mac += 1
                    if op.last:
                        done_due.append(t + rng.randint(*mac_delay))
                assert macs == expect_macs.pop(t, 0), f"{at}: macs {macs}"
                want_err = expect_err.pop(t, False)
                assert addr_error == want_err, f"{at}: addr_error {addr_error}, want {want_err}"
                assert stall == (prev_running and not prev_issue), f"{at}: stall {stall}"
                if done:
                    assert len(issued) == len(ops) or not in_layer or t == start_cycle, (
                        f"{at}: done with {len(issued)} of {len(ops)} ops issued")
                elif last_issue is not None and len(issued) == len(ops):
                    assert t < last_issue + 2, f"{at}: not done two cycles after the last op"
                want_busy = running or passes_issued > passes_done
                assert busy == want_busy, f"{at}: busy {busy}, want {want_busy}"
                if mac_done:
                    got = (ctx.get(dut.pass_out), ctx.get(dut.pass_bias), ctx.get(dut.pass_lanes))
                    assert passes_done < len(passes), f"{at}: a pass done after the layer's {len(passes)}"
                    want = passes[passes_done]
                    assert got == want, f"{at}: pass {passes_done} (out, bias, lanes) {got}, want {want}"
                    passes_done += 1
                    last_done = t
                busy_until = load_until
                finished = in_layer and not start and len(issued) == len(ops) and passes_done == len(passes) \
                    and not busy
                assert done or not finished, f"{at}: not done"

                # ---- the clock edge. The buffer's read ports are not transparent: a read sees the slot before
                # this cycle's write
                act_pipe = act_pipe[1:] + [act_mem[act_addr]]
                w_pipe = w_pipe[1:] + [slot_w[w_addr]]
                # the reader (SequentialReader): a seek drops the entry offered, the one at seek_addr is offered
                # two cycles later at the earliest; an entry once offered stays until taken
                if seek:
                    cons, rvalid = seek_addr, False
                else:
                    if issue:
                        cons = (cons + 1) % ptr_mod
                    if issue or not rvalid:
                        rvalid = cons != wp and rng.random() < p_valid
                # the fill overwrites an entry as soon as free allows, so an entry freed too early is read as a
                # later copy (its uid) and shows above
                if in_layer and rng.random() < p_fill:
                    for _ in range(fill_burst):
                        if not pending or (wp - free) % ptr_mod >= DEPTH:
                            break
                        w_uid, info = pending.pop(0)
                        slot_uid[wp % DEPTH], slot_info[wp % DEPTH], slot_w[wp % DEPTH] = w_uid, info, weights[w_uid]
                        wp = (wp + 1) % ptr_mod
                prev_issue, prev_running = issue, running
                assert t < start_cycle + 20 * (len(ops) + 4 * len(passes)) + 200, (
                    f"{at}: stuck at op {len(issued)}/{len(ops)}, pass {passes_done}/{len(passes)}")
                await ctx.tick()
                t += 1
                if finished:
                    break
            results.append((ops, issued))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(results) == len(layers), f"{where0}: {len(results)} of {len(layers)} layers ran"
    return results


CONFIGS = [  # lanes, act_latency, register_act, seed
    (1, 1, False, 1), (4, 1, False, 2), (4, 2, False, 3), (4, 1, True, 4), (16, 2, True, 5), (16, 1, False, 6),
    (1, 2, True, 7), (16, 2, False, 8), (1, 1, True, 9), (16, 1, True, 10),
]
LAYERS = 8


def random_run(lanes: int, seed: int) -> list[Layer]:
    """The layers of one random run: :data:`LAYERS` random ones and a full replay among them."""
    rng = random.Random(seed)
    layers = [random_layer(rng, lanes) for _ in range(LAYERS)]
    layers.insert(rng.randrange(LAYERS), full_replay_layer(rng, lanes))
    return layers


@pytest.mark.parametrize("lanes, act_latency, register_act, seed", CONFIGS)
def test_random_layers_random_stalls(lanes, act_latency, register_act, seed):
    layers = random_run(lanes, seed)
    results = run(layers, lanes=lanes, act_latency=act_latency, register_act=register_act, seed=seed,
                  p_valid=0.7, p_fill=0.6, fill_burst=2, mac_delay=(1, 5), drain_hold=(0, lanes + 2))
    assert all(len(issued) == len(ops) for ops, issued in results), f"seed {seed}"


def test_random_layers_cover_the_cases():
    """The stimulus of the random test: every kind, stride, batch size and stream mode, replays of groups
    that fill the buffer, streams of groups larger than it, empty groups, padding."""
    seen = set()
    for lanes, *_, seed in CONFIGS:
        for layer in random_run(lanes, seed):
            p = layer.params
            sizes = [len(g) for g in layer.groups]
            seen |= {layer.name.split()[0], f"s{p['stride']}", f"batch {layer.batch}", f"stream {p['stream']}"}
            seen |= {"big stream"} if max(sizes) > DEPTH else set()
            seen |= {"full replay"} if max(sizes) == DEPTH and not p["stream"] and p["n_pix"] > 1 else set()
            seen |= {f"{layer.name.split()[0]} s2 batch 2"} if p["stride"] == 2 and layer.batch == 2 else set()
            seen |= {"empty group"} if any(g[0].count == 0 for g in layer.groups) else set()
            seen |= {"padding"} if p["pad"] and p["n_pix"] > 1 else set()
            seen |= {"several groups"} if len(sizes) > 1 else set()
    want = {"k3", "k1", "fc", "s1", "s2", "batch 1", "batch 2", "stream 0", "stream 1", "big stream", "empty group",
            "padding", "several groups", "full replay", "k3 s2 batch 2", "k1 s2 batch 2"}
    assert want <= seen, f"seeds {[c[-1] for c in CONFIGS]}: missing {want - seen}"


@pytest.mark.parametrize("lanes, act_latency, register_act, seed", [(4, 1, False, 21), (16, 2, True, 22),
                                                                   (1, 2, False, 23)])
def test_one_op_per_cycle_two_more_per_pass(lanes, act_latency, register_act, seed):
    """Entries always offered by a fast fill, the MAC array and the drain at random paces: ops issue back to
    back within a pass, a pass's first op three cycles after the previous pass's last (the documented two
    cycles more per pass), and a last op the first cycle the drain has room (no later: cycle-exact)."""
    rng = random.Random(seed)
    layers = [random_layer(rng, lanes) for _ in range(LAYERS)]
    results = run(layers, lanes=lanes, act_latency=act_latency, register_act=register_act, seed=seed, p_valid=1.0,
                  p_fill=1.0, fill_burst=DEPTH, mac_delay=(1, 6), drain_hold=(0, lanes + 2), tight=True)
    passes = sum(sum(o.last for o in ops) for ops, _ in results)
    assert passes > 40, f"seed {seed}: {passes} passes"


@pytest.mark.parametrize("delta_rows", [2, -2])
def test_addr_error_on_a_tap_outside_the_input(delta_rows):
    """A corrupt program: one tap's offset moved ``delta_rows`` input rows (past the input's end, or before its
    start); ``addr_error`` pulses two cycles after exactly the ops that read outside, and the layer runs on."""
    seed = 31 + delta_rows
    rng = random.Random(seed)
    lanes = 4
    h, w, c = 4, 3, 2
    layer = make_layer(rng, lanes, "k3", h, w, c, 6, 1, 1, 1.0, stream=1)
    taps = layer.groups[1]
    # the top kernel row moved down (the bottom output row reads below the input) or the bottom row up
    k = next(i for i, t in enumerate(taps) if t.dy == (0 if delta_rows > 0 else 2) and t.dx == 1)
    taps[k] = Tap(taps[k].dy, taps[k].dx, taps[k].ch, delta=delta_rows * w * c)
    (ops, issued), = run([layer], lanes=lanes, act_latency=1, register_act=False, seed=seed, p_valid=0.8,
                         p_fill=0.7, fill_burst=2, mac_delay=(1, 3), drain_hold=(0, 3))
    errors = [i for i, o in enumerate(ops) if o.error]
    assert 0 < len(errors) < len(ops) // 20, f"seed {seed}: {len(errors)} corrupt ops of {len(ops)}"
    assert len(issued) == len(ops), f"seed {seed}: {len(issued)} of {len(ops)} ops issued"
