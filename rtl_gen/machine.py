"""The accelerator's loops executed in Python on a program image: what the hardware does with each word.

:func:`run_image` reads the descriptors, the code stream, the bases and biases exactly as the RTL does (row
headers, lane chunks, tap offsets, padding, basis rows, thresholds) and returns the output buffer and the
counters. It checks the compiler (``rtl_gen.image``) against golden without a simulator, and the RTL is
checked against both by the regression.
"""
from __future__ import annotations

import numpy as np

from golden.quant import requantize
from golden.sd import round_saturate
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import KIND_END, KIND_K3, checksum, decode, decode_header

from .image import REPLAY_MARGIN, ProgramImage


class MachineError(Exception):
    """The image makes the accelerator stop with an error code."""

    def __init__(self, code: int, layer: int):
        super().__init__(f"error {code} ({hb.ERROR_NAMES.get(code, '?')}) at layer {layer}")
        self.code, self.layer = code, layer


def _memories(image: ProgramImage, cfg: AcceleratorConfig) -> dict[int, dict[int, int]]:
    mems: dict[int, dict[int, int]] = {}
    for region, offset, words in image.sections:
        mem = mems.setdefault(region, {})
        for k, word in enumerate(words):
            mem[offset + k] = word
    return mems


def _wide(mem: dict[int, int], width: int) -> dict[int, int]:
    chunks = (width + 31) // 32
    cb = (chunks - 1).bit_length() if chunks > 1 else 0
    out: dict[int, int] = {}
    for addr, word in mem.items():
        entry, chunk = addr >> cb, addr & ((1 << cb) - 1)
        out[entry] = out.get(entry, 0) | (word << (32 * chunk))
    return out


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def run_image(image: ProgramImage, cfg: AcceleratorConfig, x: np.ndarray) -> dict:
    """Run ``image`` on input ``x`` (raw int8, any shape): ``{"output", "macs", "rows_skipped"}``."""
    mems = _memories(image, cfg)
    desc = mems.get(hb.REGION_DESC, {})
    codes = _wide(mems.get(hb.REGION_CODES, {}), cfg.code_word_bits)
    bases = _wide(mems.get(hb.REGION_BASES, {}), cfg.basis_width)
    bias = mems.get(hb.REGION_BIAS, {})
    bufs = [np.zeros(cfg.act_depth, dtype=np.int64), np.zeros(cfg.act_depth, dtype=np.int64)]
    flat = np.asarray(x, dtype=np.int64).reshape(-1)
    bufs[0][:flat.size] = flat
    q_n, r_n, e = cfg.pes, cfg.rebuild_lanes, cfg.exp_bits
    macs = skipped = 0
    for layer in range(cfg.desc_layers):
        words = [desc.get(layer * DESC_WORDS + k, 0) for k in range(DESC_WORDS)]
        f = decode(words)
        if checksum(words) != f["checksum"]:
            raise MachineError(hb.ERR_CHECKSUM, layer)
        if f["kind"] == KIND_END:
            return {"output": bufs[layer % 2][:image.run_outputs].copy(), "macs": macs, "rows_skipped": skipped}
        src, dst = bufs[layer % 2], bufs[(layer + 1) % 2]
        k3 = f["kind"] == KIND_K3
        ptr = f["code_base"]
        if cfg.requant == "table":
            table = [_signed(codes.get(ptr + i, 0), 32) for i in range(f["n_thresh"])]
            ptr += f["n_thresh"]
        for g in range(f["n_groups"]):
            lanes = f["last_lanes"] if g == f["n_groups"] - 1 else q_n
            entries, live = [], 0
            while True:                                       # the group's rows: (offset, dy, dx, count, weights)
                hdr = decode_header(codes.get(ptr, 0))
                ptr += 1
                live += hdr["count"]
                if cfg.dense:
                    for j in range(3):
                        if not hdr["kill"] >> j & 1:
                            w = []
                            for _ in range(0, q_n, cfg.fill_lanes):
                                word = codes.get(ptr, 0)
                                ptr += 1
                                w += [_signed(word >> (8 * t), 8) for t in range(cfg.fill_lanes)]
                            entries.append((hdr["off0"] + j * f["tap_step"], hdr["dy"], j if k3 else 0,
                                            hdr["count"], w[:q_n]))
                else:
                    slots = []
                    chunk_words = -(-cfg.code_slot_bits * r_n // cfg.code_word_bits)
                    for _ in range(q_n // r_n):
                        value = 0
                        for k in range(chunk_words):
                            value |= codes.get(ptr, 0) << (cfg.code_word_bits * k)
                            ptr += 1
                        bits = cfg.code_slot_bits
                        slots += [(value >> (bits * t)) & ((1 << bits) - 1) for t in range(r_n)]
                    for j in range(3):
                        if not hdr["kill"] >> j & 1:
                            w = []
                            for q in range(q_n):
                                row = f["basis_base"] + 3 * (q_n // r_n) * hdr["basis"] + 3 * (q // r_n) + j
                                col = [_signed(bases.get(row, 0) >> (24 * (q % r_n) + 8 * kk), 8) for kk in range(3)]
                                exact = 0
                                for kk in range(3):
                                    field = (slots[q] >> (kk * (1 + e))) & ((1 << (1 + e)) - 1)
                                    mag, neg = field & ((1 << e) - 1), field >> e
                                    if mag:
                                        exact += (-1 if neg else 1) * (col[kk] << (mag - 1))
                                w.append(int(round_saturate(np.int64(exact), f["wshift"])))
                            entries.append((hdr["off0"] + j * f["tap_step"], hdr["dy"], j if k3 else 0,
                                            hdr["count"], w))
                if hdr["last"]:
                    break
            if not f["stream"] and f["n_pix"] > 1 and len(entries) > cfg.weight_depth - REPLAY_MARGIN:
                raise MachineError(hb.ERR_BUFFER, layer)        # past the fill's contract for replayed groups
            if not cfg.dense:
                skipped += (f["n_rows"] - live) * (f["n_pix"] if f["stream"] else 1)
            base, ix0, iy0 = f["base0"], -f["pad"], -f["pad"]
            for o in range(f["n_pix"]):
                acc = np.zeros(q_n, dtype=np.int64)
                for off, dy, dx, count, w in entries:
                    padded = not (0 <= iy0 + dy < f["in_h"] and 0 <= ix0 + dx < f["in_w"])
                    addr = base + off
                    if count and not padded and not 0 <= addr < f["in_size"]:
                        raise MachineError(hb.ERR_ACT_ADDR, layer)
                    a = f["zp_in"] if padded else int(src[addr])
                    acc += np.asarray(w, dtype=np.int64) * a
                    macs += lanes * count
                for q in range(lanes):
                    s = int(acc[q]) + _signed(bias.get(f["bias_base"] + g * q_n + q, 0), 32)
                    if cfg.requant == "table":
                        y = f["act_min"] + sum(1 for t in table if s > t)
                    else:
                        y = int(requantize(np.int64(s), f["m0"], f["shift"], f["zp_out"], f["act_min"], 127))
                    dst[(o * f["out_c"] + g * q_n + q) % cfg.act_depth] = y
                if (o + 1) % f["out_w"]:
                    base, ix0 = base + f["step_x"], ix0 + f["stride"]
                else:
                    # after an image's last output row (the hardware's rows_left test), the next image's first
                    last_row = iy0 + f["stride"] + f["pad"] >= f["in_h"]
                    base, ix0, iy0 = base + f["row_wrap"], -f["pad"], -f["pad"] if last_row else iy0 + f["stride"]
    raise MachineError(hb.ERR_NO_END, cfg.desc_layers)
