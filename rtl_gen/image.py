"""Program images: a golden program laid out for one generated accelerator (``sdhw compile --for``).

An image is the list of host-bus writes that loads the program: layer descriptors, the code stream (per
layer: the requantiser's thresholds when the build has the table requantiser, then per channel group and
live row a row header and the row's codes or dense weights), bases and biases, each at its place in the
accelerator's memory map. The compiler does the work the hardware is spared: it drops zero rows (the row
headers list the live ones), works out every address step, offset and loop bound, and checks every range. The file
(``.sdimg``) also carries the metadata the host needs (where inputs go and outputs come from).

File layout (little-endian): ``b"SDIM"``, u16 version, u16 section count, u32 total size, u32 CRC-32 of
everything after the first 16 bytes, u32 metadata length, the metadata (UTF-8 JSON) padded to 4 bytes,
then per section: u16 region, u16 reserved, u32 word offset, u32 word count, the words (u32 each).
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from golden import SdhwError
from golden.program import Program, QLayer
from golden.quant import ACT_MAX, ACT_MIN, INT32_MAX, INT32_MIN, requantize
from golden.sd import exact_sd, rows_shape, to_rows
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import HEADER_FIELDS, KIND_END, KIND_K1, KIND_K3, encode, encode_header

#: entries of the weight buffer a replayed group must leave free (sdhw.fill: room for two rows is checked)
REPLAY_MARGIN = 6
IMAGE_MAGIC = b"SDIM"
IMAGE_VERSION = 3                  # 3: row headers in the code stream, no bitmap, descriptor checksums
_SECTION = struct.Struct("<HHII")


@dataclass
class ProgramImage:
    """Memory contents of a program for one accelerator configuration."""

    sections: list[tuple[int, int, list[int]]]           # (region, word offset, words)
    meta: dict = field(default_factory=dict)

    @property
    def input_region(self) -> int:
        return hb.REGION_ACT0

    @property
    def output_region(self) -> int:
        return self.meta["output_region"]

    @property
    def batch(self) -> int:
        """Inputs a run takes (and outputs it gives), one after the other in the activation buffers."""
        return self.meta.get("batch", OPTIONAL_META["batch"])

    @property
    def run_inputs(self) -> int:
        """Input values of one run: the batch's."""
        return self.batch * math.prod(self.meta["input_shape"])

    @property
    def run_outputs(self) -> int:
        """Output values of one run: the batch's."""
        return self.batch * math.prod(self.meta["output_shape"])

    def writes(self):
        """Every ``(bus address, word)`` the host writes to load the program."""
        for region, offset, words in self.sections:
            for k, word in enumerate(words):
                yield (region << 16) | (offset + k), word


def _chunks(width: int) -> tuple[int, int]:
    chunks = (width + 31) // 32
    return chunks, (max(1, math.ceil(math.log2(chunks))) if chunks > 1 else 0)


def _wide_words(entries: list[int], width: int) -> list[tuple[int, int]]:
    """(offset, word) host writes of wide entries: chunk k of entry e at (e << cb) | k."""
    chunks, cb = _chunks(width)
    out = []
    for e, value in enumerate(entries):
        for k in range(chunks):
            out.append(((e << cb) | k, (value >> (32 * k)) & 0xFFFFFFFF))
    return out


def layer_kind(layer: QLayer, index: int) -> int:
    if layer.kind == "fc" or (layer.kind == "conv" and layer.kernel == 1 and layer.groups == 1):
        return KIND_K1
    if layer.kind == "conv" and layer.kernel == 3 and layer.groups == 1:
        return KIND_K3
    raise SdhwError(f"layer {index} ({layer.describe()}) cannot run on the accelerator; "
                    "supported: fc, conv 1x1, conv 3x3")


@dataclass(frozen=True)
class LayerPlan:
    """How one layer maps onto the accelerator: geometry, the live rows of every channel group, stream mode."""

    kind: int
    h: int
    w: int
    c: int
    ho: int
    wo: int
    m: int
    stride: int
    n_rows: int                                  # rows per filter (golden's row view)
    groups: tuple[tuple[int, ...], ...]          # live rows of each channel group, in order
    kills: tuple[int, ...]                       # per row: taps past the input (K1), bit j
    stream: bool
    batch: int = 1                               # images run one after the other in the layer's pixel loop

    @property
    def n_pix(self) -> int:
        """Output pixels of the layer's pixel loop: every image's of the batch."""
        return self.batch * self.ho * self.wo

    def taps(self, row: int) -> int:
        return 3 - bin(self.kills[row]).count("1")

    def entries(self, g: int) -> int:
        """Rebuilt-weight buffer entries of group ``g`` (an empty group has one placeholder entry)."""
        return sum(self.taps(i) for i in self.groups[g]) if self.groups[g] else 1


def check_batch(batch) -> int:
    """``batch`` as an int, or a clear error."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise SdhwError(f"batch must be a positive integer, not {batch!r}")
    return int(batch)


def hardware_layer(layer: QLayer, cfg: AcceleratorConfig) -> QLayer:
    """``layer`` as ``cfg``'s accelerator runs it: a dense int8 layer on an SD build becomes its exact SD
    encoding (:func:`golden.sd.exact_sd`: the same MAC weights, so the same outputs; its all-zero rows are
    skipped); every other layer as it is. The layout, the counters' and the cycle model all see this layer."""
    if layer.is_sd or cfg.dense:
        return layer
    return replace(layer, weights=exact_sd(np.asarray(layer.weights), exp_bits=1))


def plan_layer(layer: QLayer, cfg: AcceleratorConfig, index: int = 0, batch: int = 1) -> LayerPlan:
    """``layer`` on ``cfg``; with ``batch`` > 1 the layer runs ``batch`` images, laid out one after the other in
    the activation buffers, in one pixel loop (each channel group's weights are rebuilt once for all of them)."""
    layer = hardware_layer(layer, cfg)
    kind = layer_kind(layer, index)
    if layer.kind == "fc":
        h, w, c = 1, 1, int(np.prod(layer.in_shape))
        ho, wo = 1, 1
    else:
        h, w, c = layer.in_shape
        ho, wo, _ = layer.out_shape
    m, n_rows, _ = rows_shape(layer.weight_shape)
    if layer.is_sd:
        nonzero = np.any(layer.weights.codes != 0, axis=2)                    # (M, R)
    else:
        nonzero = np.ones((m, n_rows), dtype=bool)
    q = cfg.pes
    groups = tuple(tuple(int(i) for i in np.flatnonzero(nonzero[g:g + q].any(axis=0))) for g in range(0, m, q))
    kills = tuple(sum(1 << j for j in range(3) if 3 * i + j >= c) if kind == KIND_K1 else 0 for i in range(n_rows))
    plan = LayerPlan(kind, h, w, c, ho, wo, m, layer.stride, n_rows, groups, kills, False, check_batch(batch))
    if plan.batch > 1 and h != ho * layer.stride:
        # the pixel loop steps from an image's last pixel to the next image's first by the row step (row_wrap):
        # the next image starts H rows on, where the next output row would read from ho * stride rows on
        raise SdhwError(f"layer {index} ({layer.describe()}) cannot run a batch: its input height {h} is not "
                        f"{ho} output rows x stride {layer.stride}; valid: batch 1, or a model whose stride-2 "
                        "layers take even input heights")
    big = max(plan.entries(g) for g in range(len(groups)))
    # a replayed group stays in the buffer while its passes run; the fill takes a row only with room for two
    return replace(plan, stream=plan.n_pix > 1 and big > cfg.weight_depth - REPLAY_MARGIN)


def _code_values(codes: np.ndarray, e_hw: int) -> np.ndarray:
    """Lane code slots: three fields ``(sign << E) | magnitude`` of ``1 + E`` bits, field k at ``k (1 + E)``."""
    c = np.asarray(codes, dtype=np.int64)
    fields = ((c < 0).astype(np.int64) << e_hw) | np.abs(c)
    return fields[..., 0] | (fields[..., 1] << (1 + e_hw)) | (fields[..., 2] << (2 * (1 + e_hw)))


def thresholds(layer: QLayer) -> tuple[int, list[int]]:
    """The table requantiser's view of ``layer``'s requantisation ``f(s)`` of ``s = sum + bias``: its output at
    the smallest int32 ``s`` (``base``) and, in increasing order, ``T - 1`` for every output value ``v`` above
    ``base`` that some int32 reaches, ``T`` being the smallest ``s`` with ``f(s) >= v``. ``f`` is monotone
    (gemmlowp's steps each are), so ``f(s) = base + #{t : s > t}``: the hardware only compares."""
    def f(s):
        return requantize(s, layer.m0, layer.shift, layer.out_q.zero_point, layer.act_min, layer.act_max)

    base, top = int(f(np.int64(INT32_MIN))), int(f(np.int64(INT32_MAX)))
    values = np.arange(base + 1, top + 1, dtype=np.int64)
    lo = np.full(values.shape, INT32_MIN, dtype=np.int64)          # f(lo) < v
    hi = np.full(values.shape, INT32_MAX, dtype=np.int64)          # f(hi) >= v
    while values.size and np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        up = f(mid) >= values
        hi = np.where(up, mid, hi)
        lo = np.where(up, lo, mid)
    return base, [int(t) - 1 for t in hi]


def largest_batch(program: Program, cfg: AcceleratorConfig) -> int:
    """The most inputs whose activations (every layer's input and output) fit ``cfg``'s buffers at once."""
    largest = 1
    for index, layer in enumerate(program.layers):
        plan = plan_layer(layer, cfg, index)
        largest = max(largest, plan.h * plan.w * plan.c, plan.n_pix * plan.m)
    return cfg.act_depth // largest


def build_image(program: Program, cfg: AcceleratorConfig, batch: int = 1) -> ProgramImage:
    """Lay ``program`` out for ``cfg``, running ``batch`` inputs at a time (inputs and outputs one after the
    other in the activation buffers); raise :class:`SdhwError` naming what does not fit."""
    batch = check_batch(batch)
    q_n, r_n = cfg.pes, cfg.rebuild_lanes
    e_hw = cfg.exp_bits
    cw = cfg.code_word_bits
    n_layers = len(program.layers)
    if n_layers + 1 > cfg.desc_layers:
        raise SdhwError(f"program has {n_layers} layers; the accelerator's descriptor memory holds "
                        f"{cfg.desc_layers - 1} (desc_layers = {cfg.desc_layers}, one slot for the end marker)")
    desc_words: list[int] = []
    codes: list[int] = []
    bases: list[int] = []
    biases: list[int] = []
    prev_range = (ACT_MIN, ACT_MAX)
    for index, layer in enumerate(program.layers):
        where = f"layer {index} ({layer.describe()})"
        if layer.is_sd and cfg.dense:
            raise SdhwError(f"{where} is SD but the accelerator is the dense baseline; compile with --dense or "
                            "generate without --dense")
        kept_dense = not layer.is_sd and not cfg.dense
        layer = hardware_layer(layer, cfg)
        plan = plan_layer(layer, cfg, index, batch)
        if layer.is_sd and layer.weights.exp_bits > e_hw:
            raise SdhwError(f"{where} uses {layer.weights.exp_bits} exponent bits; the accelerator decodes at "
                            f"most {e_hw} (generate with --config exp_bits = {layer.weights.exp_bits})")
        in_size, out_size = batch * plan.h * plan.w * plan.c, plan.n_pix * plan.m
        for what, size in (("input", in_size), ("output", out_size)):
            if size > cfg.act_depth:
                of_batch = f" for a batch of {batch}" if batch > 1 else ""
                raise SdhwError(f"{where} {what} needs {size} bytes of activations{of_batch}; the accelerator's "
                                f"buffers hold {cfg.act_depth} (act_depth)"
                                + (f"; valid: batch <= {largest_batch(program, cfg)}" if batch > 1 else ""))
        if max(plan.h, plan.w) > cfg.max_side:
            raise SdhwError(f"{where} input is {plan.h} x {plan.w} pixels; the accelerator takes image sides up to "
                            f"{cfg.max_side} (side_bits = {cfg.side_bits}; generate with a larger side_bits)")
        _check_accumulator(layer, where, cfg, prev_range)
        prev_range = (layer.act_min, layer.act_max)
        pad = 1 if plan.kind == KIND_K3 else 0
        s, w, c = plan.stride, plan.w, plan.c
        n_groups = len(plan.groups)
        fields = {
            "kind": plan.kind, "sd": int(layer.is_sd), "stride": s, "pad": pad, "stream": int(plan.stream),
            "n_groups": n_groups, "last_lanes": plan.m - (n_groups - 1) * q_n, "n_pix": plan.n_pix,
            "out_w": plan.wo, "in_h": plan.h, "in_w": w, "step_x": s * c, "row_wrap": s * c * (w - plan.wo + 1),
            "base0": -pad * (w + 1) * c, "out_c": plan.m, "tap_step": c if plan.kind == KIND_K3 else 1,
            "code_base": len(codes), "bias_base": len(biases), "n_rows": plan.n_rows, "m0": layer.m0,
            "shift": layer.shift, "zp_in": layer.in_q.zero_point, "zp_out": layer.out_q.zero_point,
            "act_min": layer.act_min, "wshift": layer.weights.wshift if layer.is_sd else 0,
            "in_size": in_size, "out_size": out_size, "basis_base": len(bases),
        }
        if cfg.requant == "table":
            base, table = thresholds(layer)
            fields.update(act_min=base, n_thresh=len(table))
            codes += [t & 0xFFFFFFFF for t in table]
        if layer.is_sd:
            sdw = layer.weights
            nb = -(-plan.n_rows // sdw.block_rows)
            chunks = q_n // r_n
            lanes = _code_values(sdw.codes, e_hw)                              # (M, R)
            for g in range(n_groups):
                filters = [g * q_n + q for q in range(q_n)]
                for b in range(nb):
                    for k in range(chunks):
                        for j in range(3):
                            value = 0
                            for t, f in enumerate(filters[k * r_n:(k + 1) * r_n]):
                                if f < plan.m:
                                    col = np.asarray(sdw.bases[f // sdw.basis_group, b][:, j], dtype=np.int64)
                                    value |= sum((int(col[kk]) & 0xFF) << (24 * t + 8 * kk) for kk in range(3))
                            bases.append(value)
                if len(bases) > cfg.basis_rows:
                    holds = cfg.basis_rows // 3 * r_n
                    if kept_dense:
                        raise SdhwError(f"{where} is kept dense: an SD accelerator holds its int8 weights in the "
                                        f"basis memory (a lane basis per three rows of each filter), and the "
                                        f"program needs more than the {holds} lane bases it has (basis_depth); "
                                        "keep fewer or smaller layers dense, generate a larger basis_depth, or "
                                        "use a dense build")
                    raise SdhwError(f"program needs more than {holds} lane bases; the accelerator holds {holds} "
                                    "(basis_depth); generate a larger configuration")
                rows = plan.groups[g] or (None,)
                for n, i in enumerate(rows):
                    row_basis = g * nb + (i // sdw.block_rows if i is not None else 0)
                    if row_basis >= 1 << HEADER_FIELDS["basis"][1]:
                        raise SdhwError(f"{where} has {n_groups * nb} (channel group, row block) pairs; a row "
                                        f"header holds {1 << HEADER_FIELDS['basis'][1]}: use larger blocks "
                                        "(--block-rows) or a build with more channel lanes")
                    codes.append(_header(plan, i, last=n == len(rows) - 1, basis=row_basis, cfg=cfg))
                    slots = [int(lanes[f, i]) if i is not None and f < plan.m else 0 for f in filters]
                    for k in range(chunks):
                        codes += _pack(slots[k * r_n:(k + 1) * r_n], cfg.code_slot_bits, cw)
        else:
            weights = to_rows(np.asarray(layer.weights, dtype=np.int64))      # (M, R, 3), FC padded with 0
            d = cfg.fill_lanes
            for g in range(n_groups):
                filters = [g * q_n + q for q in range(q_n)]
                rows = plan.groups[g]
                for n, i in enumerate(rows):
                    codes.append(_header(plan, i, last=n == len(rows) - 1, basis=0, cfg=cfg))
                    for j in range(3):
                        if not plan.kills[i] >> j & 1:
                            taps = [int(weights[f, i, j]) & 0xFF if f < plan.m else 0 for f in filters]
                            for k in range(0, q_n, d):
                                codes += _pack(taps[k:k + d], 8, cw)
        biases += [int(b) & 0xFFFFFFFF for b in layer.bias]
        try:
            desc_words += encode(fields, DESC_WORDS)
        except ValueError as exc:
            raise SdhwError(f"{where} does not fit the descriptor format: {exc}") from None
    desc_words += encode({"kind": KIND_END}, DESC_WORDS)                 # the end marker
    q_bases = len(bases) // 3 * r_n                                      # lane bases (basis_depth counts those)
    for name, used, depth, unit in (("code", len(codes), cfg.code_depth, "words"),
                                    ("basis", q_bases, cfg.basis_rows // 3 * r_n, "lane bases"),
                                    ("bias", len(biases), cfg.bias_depth, "entries")):
        if used > depth:
            raise SdhwError(f"program needs {used} {name} memory {unit}; the accelerator holds {depth} "
                            f"({name}_depth); generate a larger configuration or prune more")
    sections = [(hb.REGION_DESC, 0, desc_words), (hb.REGION_BIAS, 0, biases)]
    if not cfg.dense:
        sections += _contiguous(hb.REGION_BASES, _wide_words(bases, cfg.basis_width))
    sections += _contiguous(hb.REGION_CODES, _wide_words(codes, cw))
    meta = {
        "layers": n_layers, "input_shape": list(program.input_shape), "output_shape": list(program.output_shape),
        "input_zero_point": program.input_q.zero_point, "input_scale": program.input_q.scale,
        "output_zero_point": program.output_q.zero_point, "output_scale": program.output_q.scale,
        "output_region": hb.REGION_ACT0 if n_layers % 2 == 0 else hb.REGION_ACT1, "batch": batch,
        "usage": {"code": len(codes), "basis": q_bases, "bias": len(biases), "descriptors": n_layers + 1},
        "config": cfg.as_dict(),
    }
    return ProgramImage(sections, meta)


def _header(plan: LayerPlan, row: int | None, *, last: bool, basis: int, cfg: AcceleratorConfig) -> int:
    """The row header word of live row ``row`` (``None``: the placeholder row of an empty group)."""
    if row is None:
        return encode_header(kill=0b110, last=1, count=0, basis=basis)
    if plan.kind == KIND_K3:
        ch, r = divmod(row, 3)
        # a kernel row below a short input is always padding: its offset only has to fit the field
        off0, dy = (r * plan.w * plan.c + ch) & 0xFFFF, r
    else:
        off0, dy = 3 * row, 0
    return encode_header(off0=off0, dy=dy, kill=plan.kills[row], last=int(last), count=1, basis=basis)


def _pack(values: list[int], bits: int, word_bits: int) -> list[int]:
    """``values`` of ``bits`` bits side by side, in as many ``word_bits``-bit words as they take."""
    value = sum(v << (bits * k) for k, v in enumerate(values))
    return [(value >> (word_bits * k)) & ((1 << word_bits) - 1) for k in range(-(-bits * len(values) // word_bits))]


def _check_accumulator(layer: QLayer, where: str, cfg: AcceleratorConfig, in_range: tuple[int, int]) -> None:
    """The MAC accumulators wrap at ``acc_bits``: refuse a layer whose sum of products can leave that range
    for some input (the previous layer's outputs lie in ``in_range``; padding reads the zero point)."""
    w = to_rows(layer.mac_weights().astype(np.int64))                 # (M, R, 3)
    lo, hi = min(in_range[0], layer.in_q.zero_point), max(in_range[1], layer.in_q.zero_point)
    worst = np.maximum(np.abs(w) * max(abs(lo), abs(hi)), 0).reshape(w.shape[0], -1).sum(axis=1)
    limit = (1 << (cfg.acc_bits - 1)) - 1
    if worst.size and int(worst.max()) > limit:
        raise SdhwError(f"{where}: a sum of products can reach {int(worst.max())}, beyond the accelerator's "
                        f"{cfg.acc_bits}-bit accumulators; generate with a larger acc_bits")


def expected_counts(program: Program, cfg: AcceleratorConfig, batch: int = 1) -> dict[str, int]:
    """MACs issued and zero rows skipped that the accelerator's counters must show for one run (of ``batch``
    inputs).

    A MAC is issued per output channel of the group x tap of every live row x output pixel, except the taps
    beyond the input of FC / conv 1x1 layers (zero padding of the last triplet), which are not in the stream.
    The zero rows of a group (SD) are counted each time the group is rebuilt: once, or once per output pixel
    for a layer whose groups do not fit the weight buffer (``stream``).
    """
    macs = skipped = 0
    for index, layer in enumerate(program.layers):
        layer = hardware_layer(layer, cfg)
        plan = plan_layer(layer, cfg, index, batch)
        for g, rows in enumerate(plan.groups):
            lanes = min(cfg.pes, plan.m - g * cfg.pes)
            macs += sum(plan.taps(i) for i in rows) * lanes * plan.n_pix
            if layer.is_sd:
                skipped += (plan.n_rows - len(rows)) * (plan.n_pix if plan.stream else 1)
    return {"macs": macs, "rows_skipped": skipped}


def _contiguous(region: int, writes: list[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """Group ``(offset, word)`` writes into runs of consecutive offsets."""
    runs: list[tuple[int, int, list[int]]] = []
    for offset, word in writes:
        if runs and runs[-1][1] + len(runs[-1][2]) == offset:
            runs[-1][2].append(word)
        else:
            runs.append((region, offset, [word]))
    return runs


# ------------------------------------------------------------------------------------------- files
def pack_image(image: ProgramImage) -> bytes:
    meta = json.dumps(image.meta, sort_keys=True).encode()
    meta += b" " * ((-len(meta)) % 4)
    body = struct.pack("<I", len(meta)) + meta
    for region, offset, words in image.sections:
        body += _SECTION.pack(region, 0, offset, len(words)) + np.asarray(words, dtype="<u4").tobytes()
    total = 16 + len(body)
    crc = zlib.crc32(body)
    return struct.pack("<4sHHII", IMAGE_MAGIC, IMAGE_VERSION, len(image.sections), total, crc) + body


#: regions an image may write, and the config depth that bounds each (in entries; see _region_words)
LOADABLE_REGIONS = {hb.REGION_DESC: "descriptors", hb.REGION_CODES: "codes", hb.REGION_BASES: "bases",
                    hb.REGION_BIAS: "bias"}
META_KEYS = ("config", "input_scale", "input_shape", "input_zero_point", "layers", "output_region",
             "output_scale", "output_shape", "output_zero_point", "usage")
USAGE_KEYS = ("basis", "bias", "code", "descriptors")
#: keys an image may leave out, with the value that means
OPTIONAL_META = {"batch": 1}


def _region_words(cfg: AcceleratorConfig, region: int) -> int:
    """Host-bus words a region of ``cfg``'s accelerator decodes (wide entries take a power of two each)."""
    if region == hb.REGION_DESC:
        return cfg.desc_layers * DESC_WORDS
    if region == hb.REGION_BIAS:
        return cfg.bias_depth
    if region == hb.REGION_CODES:
        return cfg.code_depth << _chunks(cfg.code_word_bits)[1]
    return 0 if cfg.dense else cfg.basis_rows << _chunks(cfg.basis_width)[1]


def _shown(value) -> str:
    """A metadata value in an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta(meta) -> AcceleratorConfig:
    """The metadata an image carries, checked key by key; returns the accelerator config it was laid out for."""
    if not isinstance(meta, dict):
        raise SdhwError(f"program image metadata is a JSON {type(meta).__name__}; valid: an object")
    missing, unknown = sorted(set(META_KEYS) - set(meta)), sorted(set(meta) - set(META_KEYS) - set(OPTIONAL_META))
    if missing or unknown:
        raise SdhwError(f"program image metadata has missing key(s) {missing} and unknown key(s) {unknown}; "
                        f"valid: {', '.join(META_KEYS)} (and optionally {', '.join(OPTIONAL_META)})")
    if not isinstance(meta["config"], dict):
        raise SdhwError("program image metadata 'config' is not an object of accelerator parameters")
    try:
        cfg = AcceleratorConfig.from_dict(meta["config"])
    except SdhwError as exc:
        raise SdhwError(f"program image config: {exc}") from None
    layers = meta["layers"]
    if not (_is_int(layers) and 1 <= layers < cfg.desc_layers):
        raise SdhwError(f"program image metadata 'layers' is {_shown(layers)}; valid: 1..{cfg.desc_layers - 1} "
                        f"(desc_layers {cfg.desc_layers} less the end marker)")
    for key in ("input_shape", "output_shape"):
        shape = meta[key]
        if not (isinstance(shape, list) and len(shape) in (1, 3) and all(_is_int(d) and d >= 1 for d in shape)):
            raise SdhwError(f"program image metadata {key!r} is {_shown(shape)}; valid: [K] or [H, W, C] of positive "
                            "integers")
    for key in ("input_zero_point", "output_zero_point"):
        if not (_is_int(meta[key]) and ACT_MIN <= meta[key] <= ACT_MAX):
            raise SdhwError(f"program image metadata {key!r} is {_shown(meta[key])}; valid: an integer in "
                            f"{ACT_MIN}..{ACT_MAX}")
    for key in ("input_scale", "output_scale"):
        value = meta[key]
        if not ((_is_int(value) or isinstance(value, float)) and math.isfinite(value) and value > 0):
            raise SdhwError(f"program image metadata {key!r} is {_shown(value)}; valid: a positive finite number")
    batch = meta.get("batch", OPTIONAL_META["batch"])
    largest = max(math.prod(meta["input_shape"]), math.prod(meta["output_shape"]))
    if not (_is_int(batch) and 1 <= batch and batch * largest <= cfg.act_depth):
        raise SdhwError(f"program image metadata 'batch' is {_shown(batch)}; valid: an integer in "
                        f"1..{max(1, cfg.act_depth // largest)} (inputs and outputs of a batch fit the "
                        f"{cfg.act_depth}-byte activation buffers)")
    region = hb.REGION_ACT0 if layers % 2 == 0 else hb.REGION_ACT1
    if meta["output_region"] != region or not _is_int(meta["output_region"]):
        raise SdhwError(f"program image metadata 'output_region' is {_shown(meta['output_region'])}; a program of "
                        f"{layers} layers ends in region {region}")
    usage = meta["usage"]
    if not (isinstance(usage, dict) and sorted(usage) == list(USAGE_KEYS)
            and all(_is_int(v) and v >= 0 for v in usage.values())):
        raise SdhwError(f"program image metadata 'usage' is {_shown(usage)}; valid: non-negative integers "
                        f"{', '.join(USAGE_KEYS)}")
    return cfg


def unpack_image(data: bytes) -> ProgramImage:
    """Parse an ``.sdimg`` file; raise :class:`SdhwError` naming the first problem."""
    data = bytes(data)
    if len(data) < 20 or data[:4] != IMAGE_MAGIC:
        if data[:4] == IMAGE_MAGIC:
            raise SdhwError(f"program image is truncated: {len(data)} bytes, the header alone is 20")
        raise SdhwError(f"not a program image: bad magic {data[:4]!r} (expected {IMAGE_MAGIC!r})")
    _, version, n_sections, total = struct.unpack_from("<4sHHI", data)
    if version != IMAGE_VERSION:
        raise SdhwError(f"unsupported program image version {version} (this tool reads {IMAGE_VERSION})")
    if total != len(data):
        raise SdhwError(f"program image is truncated or has trailing bytes: {len(data)} bytes, header says {total}")
    (crc,) = struct.unpack_from("<I", data, 12)
    if zlib.crc32(data[16:]) != crc:
        raise SdhwError("program image checksum mismatch: the file is corrupt")
    (meta_len,) = struct.unpack_from("<I", data, 16)
    pos = 20 + meta_len
    if pos > len(data) or meta_len % 4:
        raise SdhwError(f"program image metadata length {meta_len} is not a multiple of 4 within the file's "
                        f"{len(data) - 20} bytes after the header")
    try:
        meta = json.loads(data[20:pos].decode())
    except (ValueError, RecursionError) as exc:                 # UnicodeDecodeError is a ValueError
        raise SdhwError(f"program image metadata is not valid JSON: {' '.join(str(exc).split())}") from None
    cfg = _check_meta(meta)
    sections = []
    for k in range(n_sections):
        if pos + _SECTION.size > len(data):
            raise SdhwError(f"program image is truncated inside the header of section {k} of {n_sections}")
        region, _, offset, count = _SECTION.unpack_from(data, pos)
        pos += _SECTION.size
        if region not in LOADABLE_REGIONS:
            raise SdhwError(f"program image section {k} writes region {region}; valid: "
                            + ", ".join(f"{r} ({name})" for r, name in LOADABLE_REGIONS.items()))
        words = _region_words(cfg, region)
        if offset + count > words:
            raise SdhwError(f"program image section {k} writes words {offset}..{offset + count - 1} of region "
                            f"{region} ({LOADABLE_REGIONS[region]}); the accelerator it was laid out for has "
                            f"{words}")
        if pos + 4 * count > len(data):
            raise SdhwError(f"program image section {k} declares {count} words; the file ends after "
                            f"{(len(data) - pos) // 4}")
        words = np.frombuffer(data, dtype="<u4", count=count, offset=pos).astype(np.int64).tolist()
        pos += 4 * count
        sections.append((region, offset, words))
    if pos != len(data):
        raise SdhwError(f"program image sections end at byte {pos}; the file has {len(data)}")
    spans = sorted((region, offset, offset + len(words)) for region, offset, words in sections if words)
    for (region, _, end), (next_region, start, _) in zip(spans, spans[1:]):
        if region == next_region and start < end:
            raise SdhwError(f"program image sections overlap in region {region} ({LOADABLE_REGIONS[region]}) at "
                            f"word {start}; valid: each word written once")
    return ProgramImage(sections, meta)


def load_image(path) -> ProgramImage:
    path = Path(path)
    if not path.is_file():
        raise SdhwError(f"program image {str(path)!r} does not exist")
    return unpack_image(path.read_bytes())
