"""Program images: a golden program laid out for one generated accelerator (``sdhw compile --for``).

An image is the list of host-bus writes that loads the program: layer descriptors, row bitmaps, codes
(or dense weights), bases and biases, each at its place in the accelerator's memory map. The file
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden import SdhwError
from golden.program import Program, QLayer
from golden.quant import ACT_MIN
from golden.sd import rows_shape, to_rows
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import KIND_K1, KIND_K3, encode

IMAGE_MAGIC = b"SDIM"
IMAGE_VERSION = 2                  # 2: bases stored as columns (24·Q-bit rows), one per tap
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


def _hw_rows(layer: QLayer) -> tuple[int, list[tuple[int, int]]]:
    """Hardware row count and the ``(h, golden row index)`` of every existing row, in order."""
    _, r, _ = rows_shape(layer.weight_shape)
    if layer.kind == "conv" and layer.kernel == 3:
        return 4 * (r // 3), [(4 * (i // 3) + i % 3, i) for i in range(r)]
    return r, [(i, i) for i in range(r)]


def layer_kind(layer: QLayer, index: int) -> int:
    if layer.kind == "fc" or (layer.kind == "conv" and layer.kernel == 1 and layer.groups == 1):
        return KIND_K1
    if layer.kind == "conv" and layer.kernel == 3 and layer.groups == 1:
        return KIND_K3
    raise SdhwError(f"layer {index} ({layer.describe()}) cannot run on the accelerator; "
                    "supported: fc, conv 1x1, conv 3x3")


def build_image(program: Program, cfg: AcceleratorConfig) -> ProgramImage:
    """Lay ``program`` out for ``cfg``; raise :class:`SdhwError` naming what does not fit."""
    q_n, p_n = cfg.channel_lanes, cfg.pixel_lanes
    e_hw = cfg.exp_bits
    n_layers = len(program.layers)
    if n_layers + 1 > cfg.desc_layers:
        raise SdhwError(f"program has {n_layers} layers; the accelerator's descriptor memory holds "
                        f"{cfg.desc_layers - 1} (desc_layers = {cfg.desc_layers}, one slot for the end marker)")
    desc_words: list[int] = []
    bitmap: list[int] = []
    codes: list[int] = []
    bases: list[int] = []
    biases: list[int] = []
    lane_w = 24 if cfg.dense else 3 * (1 + e_hw)
    for index, layer in enumerate(program.layers):
        where = f"layer {index} ({layer.describe()})"
        kind = layer_kind(layer, index)
        if layer.is_sd and cfg.dense:
            raise SdhwError(f"{where} is SD but the accelerator is the dense baseline; compile with --dense or "
                            "generate without --dense")
        if not layer.is_sd and not cfg.dense:
            raise SdhwError(f"{where} is dense but the accelerator is SD-only; generate with --dense")
        if layer.is_sd and layer.weights.exp_bits > e_hw:
            raise SdhwError(f"{where} uses {layer.weights.exp_bits} exponent bits; the accelerator decodes at "
                            f"most {e_hw} (generate with --config exp_bits = {layer.weights.exp_bits})")
        if layer.kind == "fc":
            h, w, c = 1, 1, int(np.prod(layer.in_shape))
            ho, wo = 1, 1
        else:
            h, w, c = layer.in_shape
            ho, wo, _ = layer.out_shape
        mo = layer.out_channels
        s = layer.stride
        in_size, out_size = h * w * c, ho * wo * mo
        for what, size in (("input", in_size), ("output", out_size)):
            if size > cfg.act_depth:
                raise SdhwError(f"{where} {what} needs {size} bytes of activations; the accelerator's buffers "
                                f"hold {cfg.act_depth} (act_depth)")
        n_rows, rows = _hw_rows(layer)
        bm_words = (n_rows + 31) // 32
        n_groups = -(-mo // q_n)
        pad = 1 if kind == KIND_K3 else 0
        q_w, r_w = divmod(p_n, wo)
        step_x, step_y = s * c, s * w * c
        fields = {
            "kind": kind, "relu": int(layer.relu), "stride": s, "sd": int(layer.is_sd),
            "in_h": h, "in_w": w, "in_c": c, "out_c": mo, "n_pix": ho * wo, "out_w": wo, "n_rows": n_rows,
            "bm_words": bm_words if layer.is_sd else 0, "in_size": in_size, "out_size": out_size, "wc": w * c,
            "step_x": step_x, "step_y": step_y, "row_wrap": step_y - wo * step_x,
            "group_step": q_w * step_y + r_w * step_x, "q_w": q_w, "r_w": r_w, "qs": q_w * s, "rs": r_w * s,
            "wo_s": wo * s, "base0": -pad * (w + 1) * c,
            "bitmap_base": len(bitmap), "basis_base": len(bases), "code_base": len(codes),
            "bias_base": len(biases), "m0": layer.m0, "shift": layer.shift, "zp_in": layer.in_q.zero_point,
            "zp_out": layer.out_q.zero_point, "act_min": layer.out_q.zero_point if layer.relu else ACT_MIN,
            "pm_step": p_n * mo,
        }
        if layer.is_sd:
            sdw = layer.weights
            rows_codes = sdw.codes                                    # (M, R, 3)
            nb = -(-rows_codes.shape[1] // sdw.block_rows)
            fields.update(wshift=sdw.wshift, block_rows=sdw.block_rows, n_blocks=nb)
            nonzero = np.any(rows_codes != 0, axis=2)
            for g in range(n_groups):
                filters = range(g * q_n, min((g + 1) * q_n, mo))
                group_rows = [(hh, i) for hh, i in rows if any(nonzero[f, i] for f in filters)]
                words = [0] * bm_words
                for hh, _ in group_rows:
                    words[hh // 32] |= 1 << (hh % 32)
                bitmap += words
                for _, i in group_rows:
                    entry = 0
                    for q, f in enumerate(filters):
                        lane = 0
                        for k in range(3):
                            cval = int(rows_codes[f, i, k])
                            lane |= ((int(cval < 0) << e_hw) | abs(cval)) << (k * (1 + e_hw))
                        entry |= lane << (q * lane_w)
                    codes.append(entry)
                # three rows per block: column j of the Q lanes' bases, lane q at bits 24q, B[k][j] at byte k
                for b in range(nb):
                    block = [np.asarray(sdw.bases[f // sdw.basis_group, b], dtype=np.int64) if f < mo else None
                             for f in range(g * q_n, (g + 1) * q_n)]
                    for j in range(3):
                        value = 0
                        for q, basis in enumerate(block):
                            if basis is not None:
                                for k in range(3):
                                    value |= (int(basis[k, j]) & 0xFF) << (24 * q + 8 * k)
                        bases.append(value)
        else:
            weights = to_rows(np.asarray(layer.weights, dtype=np.int64))      # (M, R, 3), FC padded with 0
            for g in range(n_groups):
                filters = range(g * q_n, min((g + 1) * q_n, mo))
                for _, i in rows:
                    entry = 0
                    for q, f in enumerate(filters):
                        for j in range(3):
                            entry |= (int(weights[f, i, j]) & 0xFF) << (q * lane_w + 8 * j)
                    codes.append(entry)
            fields.update(wshift=0, block_rows=0, n_blocks=0)
        biases += [int(b) & 0xFFFFFFFF for b in layer.bias]
        try:
            desc_words += encode(fields, DESC_WORDS)
        except ValueError as exc:
            raise SdhwError(f"{where} does not fit the descriptor format: {exc}") from None
    desc_words += [0] * DESC_WORDS                                  # end marker (kind 0)
    q_bases = len(bases) // 3 * q_n                                  # lane bases (basis_depth counts those)
    for name, used, depth in (("code", len(codes), cfg.code_depth), ("bitmap", len(bitmap), cfg.bitmap_depth),
                              ("basis", q_bases, cfg.basis_rows // 3 * q_n), ("bias", len(biases), cfg.bias_depth)):
        if used > depth:
            raise SdhwError(f"program needs {used} {name} memory entries; the accelerator holds {depth} "
                            f"({name}_depth); generate a larger configuration or prune more")
    sections = [(hb.REGION_DESC, 0, desc_words), (hb.REGION_BIAS, 0, biases)]
    if not cfg.dense:
        sections.append((hb.REGION_BITMAP, 0, bitmap))
        sections += _contiguous(hb.REGION_BASES, _wide_words(bases, cfg.basis_width))
    sections += _contiguous(hb.REGION_CODES, _wide_words(codes, cfg.code_width))
    meta = {
        "layers": n_layers, "input_shape": list(program.input_shape), "output_shape": list(program.output_shape),
        "input_zero_point": program.input_q.zero_point, "input_scale": program.input_q.scale,
        "output_zero_point": program.output_q.zero_point, "output_scale": program.output_q.scale,
        "output_region": hb.REGION_ACT0 if n_layers % 2 == 0 else hb.REGION_ACT1,
        "usage": {"code": len(codes), "bitmap": len(bitmap), "basis": q_bases, "bias": len(biases),
                  "descriptors": n_layers + 1},
        "config": cfg.as_dict(),
    }
    return ProgramImage(sections, meta)


def expected_counts(program: Program, cfg: AcceleratorConfig) -> dict[str, int]:
    """MACs issued and zero rows skipped that the accelerator's counters must show for one inference.

    A MAC is issued per (channel lane with a real output channel) x (pixel lane with a real output pixel) x
    tap of every non-zero group row, except taps beyond the input of FC / conv 1x1 layers (zero padding of
    the last triplet). Zero rows are counted per channel group and pixel group.
    """
    q_n, p_n = cfg.channel_lanes, cfg.pixel_lanes
    macs = skipped = 0
    for layer in program.layers:
        _, rows = _hw_rows(layer)
        k1 = layer_kind(layer, 0) == KIND_K1
        c = int(np.prod(layer.in_shape)) if layer.kind == "fc" else layer.in_shape[2]
        n_pix = 1 if layer.kind == "fc" else layer.out_shape[0] * layer.out_shape[1]
        mo = layer.out_channels
        nonzero = (np.any(layer.weights.codes != 0, axis=2) if layer.is_sd
                   else np.ones((mo, len(rows)), dtype=bool))
        for g in range(0, mo, q_n):
            qv = min(q_n, mo - g)
            live_rows = [(hh, i) for hh, i in rows if nonzero[g:g + q_n, i].any()]
            taps = sum(min(3, c - 3 * hh) if k1 else 3 for hh, _ in live_rows)
            for pg in range(0, n_pix, p_n):
                pv = min(p_n, n_pix - pg)
                macs += taps * qv * pv
                if layer.is_sd:
                    skipped += len(rows) - len(live_rows)
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


def unpack_image(data: bytes) -> ProgramImage:
    if len(data) < 20 or data[:4] != IMAGE_MAGIC:
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
    meta = json.loads(data[20:pos].decode())
    sections = []
    for _ in range(n_sections):
        region, _, offset, count = _SECTION.unpack_from(data, pos)
        pos += _SECTION.size
        words = np.frombuffer(data, dtype="<u4", count=count, offset=pos).astype(np.int64).tolist()
        pos += 4 * count
        sections.append((region, offset, words))
    if pos != len(data):
        raise SdhwError("program image sections do not add up to its size")
    return ProgramImage(sections, meta)


def load_image(path) -> ProgramImage:
    path = Path(path)
    if not path.is_file():
        raise SdhwError(f"program image {str(path)!r} does not exist")
    return unpack_image(path.read_bytes())
