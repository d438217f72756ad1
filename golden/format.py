"""The packed SD program format (``.sdp``), version 1: ``pack`` / ``unpack`` round-trip exactly.

The bit-level layout is documented in ``docs/FORMAT.md``; this module is its reference implementation.
Everything is little-endian; bit streams are packed LSB-first (stream bit ``n`` is bit ``n % 8`` of
byte ``n // 8``) and every section is padded with zero bits to a whole byte, every layer record to a
multiple of 4 bytes.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SdhwError
from .program import Program, QLayer
from .quant import QParams
from .sd import SDWeights, n_blocks, rows_shape

MAGIC = b"SDPG"
VERSION = 1
# magic, version, header size, total size, crc32 of bytes [16:], n_layers, input rank, reserved,
# input shape (3 x u16), input zero point (i8), 1 pad byte, input scale (f64), 4 pad bytes
FILE_HEADER = struct.Struct("<4sHHII HBB 3H bx d 4x")
# kind, mode, flags, stride, kernel, exp_bits, wshift, weight_bits, groups, basis_group, block_rows,
# bias_bits, in_rank, in_shape (3 x u16), out_channels, m0, shift, out zero point, 2 pad bytes,
# out scale (f64), weight scale (f64), payload size (u32), 4 pad bytes
LAYER_HEADER = struct.Struct("<8B 3H BB 3H H I bb2x d d I4x")
KIND_CODES = {"fc": 0, "conv": 1}
MODE_DENSE, MODE_SD = 0, 1
FLAG_RELU = 1


# ------------------------------------------------------------------------------------------- bit streams
def pack_fields(values: np.ndarray, width: int) -> bytes:
    """Pack unsigned ``values`` of ``width`` bits LSB-first into bytes (zero-padded to a byte)."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if v.size == 0:
        return b""
    bits = ((v[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_fields(data: bytes, count: int, width: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[:count * width]
    return (bits.reshape(count, width).astype(np.int64) << np.arange(width)).sum(axis=1)


def _nbytes(bits: int) -> int:
    return (bits + 7) // 8


def signed_width(values: np.ndarray) -> int:
    """Smallest two's-complement width (>= 1) that holds every value."""
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return 1
    lo, hi = int(v.min()), int(v.max())
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi < (1 << (width - 1))):
        width += 1
    return width


def _to_unsigned(values: np.ndarray, width: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) & ((1 << width) - 1)


def _to_signed(values: np.ndarray, width: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64)
    return np.where(v >= 1 << (width - 1), v - (1 << width), v)


# ------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class LayerSizes:
    """Byte sizes of a layer record's sections (see docs/FORMAT.md)."""

    header: int
    bias: int
    weights: int           # dense int8 weights, or SD bases + row bitmap + codes
    bases: int = 0
    bitmap: int = 0
    codes: int = 0

    @property
    def payload(self) -> int:
        return self.bias + self.weights

    @property
    def padding(self) -> int:
        return (-(self.header + self.payload)) % 4

    @property
    def total(self) -> int:
        return self.header + self.payload + self.padding


def _code_width(exp_bits: int) -> int:
    return 1 + exp_bits


def layer_sizes(layer: QLayer) -> LayerSizes:
    bias = _nbytes(layer.out_channels * signed_width(layer.bias))
    if not layer.is_sd:
        return LayerSizes(LAYER_HEADER.size, bias, layer.n_weights)
    sdw = layer.weights
    m, r, _ = sdw.codes.shape
    ng, nb = n_blocks(m, r, sdw.basis_group, sdw.block_rows)
    bases = ng * nb * 9
    bitmap = _nbytes(m * r)
    codes = _nbytes(int(sdw.nonzero_rows.sum()) * 3 * _code_width(sdw.exp_bits))
    return LayerSizes(LAYER_HEADER.size, bias, bases + bitmap + codes, bases, bitmap, codes)


def _encode_codes(codes: np.ndarray, exp_bits: int) -> np.ndarray:
    """Signed codes -> ``(sign << E) | magnitude`` fields."""
    c = np.asarray(codes, dtype=np.int64)
    return ((c < 0).astype(np.int64) << exp_bits) | np.abs(c)


def _decode_codes(fields: np.ndarray, exp_bits: int, where: str) -> np.ndarray:
    sign = fields >> exp_bits
    mag = fields & ((1 << exp_bits) - 1)
    if np.any((sign == 1) & (mag == 0)):
        raise SdhwError(f"{where}: corrupt coefficient code (negative zero)")
    return np.where(sign == 1, -mag, mag)


def _pack_layer(index: int, layer: QLayer) -> bytes:
    sizes = layer_sizes(layer)
    bias_bits = signed_width(layer.bias)
    in_shape = tuple(layer.in_shape)
    in3 = in_shape if len(in_shape) == 3 else (1, 1, in_shape[0])
    flags = FLAG_RELU if layer.relu else 0
    if layer.is_sd:
        sdw = layer.weights
        mode, exp_bits, wshift, wbits = MODE_SD, sdw.exp_bits, sdw.wshift, sdw.weight_bits
        basis_group, block_rows = sdw.basis_group, sdw.block_rows
    else:
        mode, exp_bits, wshift, wbits, basis_group, block_rows = MODE_DENSE, 0, 0, 8, 0, 0
    try:
        header = LAYER_HEADER.pack(KIND_CODES[layer.kind], mode, flags, layer.stride, layer.kernel, exp_bits,
                                   wshift, wbits, layer.groups, basis_group, block_rows, bias_bits, len(in_shape),
                                   *in3, layer.out_channels, layer.m0, layer.shift, layer.out_q.zero_point,
                                   layer.out_q.scale, layer.w_scale, sizes.payload)
    except struct.error as exc:
        raise SdhwError(f"layer {index} does not fit the program format (16-bit shapes, 32-bit sizes): {exc}") \
            from None
    parts = [header, pack_fields(_to_unsigned(layer.bias, bias_bits), bias_bits)]
    if layer.is_sd:
        sdw = layer.weights
        nonzero = sdw.nonzero_rows
        parts += [np.asarray(sdw.bases, dtype=np.int8).tobytes(),
                  pack_fields(nonzero.reshape(-1).astype(np.int64), 1),
                  pack_fields(_encode_codes(sdw.codes[nonzero], sdw.exp_bits), _code_width(sdw.exp_bits))]
    else:
        parts.append(np.asarray(layer.weights, dtype=np.int8).tobytes())
    body = b"".join(parts)
    return body + bytes(sizes.total - len(body))


def pack(program: Program) -> bytes:
    """Serialise a program to the version-1 container."""
    records = b"".join(_pack_layer(i, layer) for i, layer in enumerate(program.layers))
    shape = tuple(program.input_shape)
    in3 = shape if len(shape) == 3 else (1, 1, shape[0])
    total = FILE_HEADER.size + len(records)
    try:
        header = FILE_HEADER.pack(MAGIC, VERSION, FILE_HEADER.size, total, 0, len(program.layers), len(shape), 0,
                                  *in3, program.input_q.zero_point, program.input_q.scale)
    except struct.error as exc:
        raise SdhwError(f"program does not fit the format (16-bit shapes, 32-bit sizes): {exc}") from None
    crc = zlib.crc32(header[16:] + records)
    return header[:12] + struct.pack("<I", crc) + header[16:] + records


def _take(data: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(data):
        raise SdhwError(f"program is truncated inside {what}")
    return data[offset:offset + size]


def unpack(data: bytes) -> Program:
    """Parse a version-1 container; raise :class:`SdhwError` on any corruption."""
    data = bytes(data)
    if len(data) < FILE_HEADER.size:
        if data[:4] != MAGIC[:len(data)]:
            raise SdhwError(f"not an SD program: bad magic {data[:4]!r} (expected {MAGIC!r})")
        raise SdhwError(f"program is truncated: {len(data)} bytes, the header alone is {FILE_HEADER.size}")
    (magic, version, header_size, total, crc, n_layers, rank, _, h, w, c, in_zp,
     in_scale) = FILE_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SdhwError(f"not an SD program: bad magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise SdhwError(f"unsupported program version {version} (this tool reads version {VERSION})")
    if header_size != FILE_HEADER.size:
        raise SdhwError(f"corrupt program header: header size {header_size}, expected {FILE_HEADER.size}")
    if total > len(data):
        raise SdhwError(f"program is truncated: {len(data)} bytes of {total}")
    if total < len(data):
        raise SdhwError(f"program has {len(data) - total} trailing bytes after its declared size {total}")
    if zlib.crc32(data[16:]) != crc:
        raise SdhwError("program checksum mismatch: the file is corrupt")
    if rank not in (1, 3):
        raise SdhwError(f"corrupt program header: input rank {rank}")
    input_shape = (c,) if rank == 1 else (h, w, c)
    in_q = QParams(in_scale, in_zp)
    layers = []
    offset = FILE_HEADER.size
    for i in range(n_layers):
        layer, offset = _unpack_layer(data, offset, in_q, f"layer {i}")
        layers.append(layer)
        in_q = layer.out_q
    if offset != total:
        raise SdhwError(f"program size mismatch: layers end at byte {offset}, the header says {total}")
    return Program(input_shape, QParams(in_scale, in_zp), layers)


def _unpack_layer(data: bytes, offset: int, in_q: QParams, where: str) -> tuple[QLayer, int]:
    hdr = _take(data, offset, LAYER_HEADER.size, f"{where} header")
    (kind, mode, flags, stride, kernel, exp_bits, wshift, wbits, groups, basis_group, block_rows, bias_bits,
     rank, h, w, c, m, m0, shift, out_zp, out_scale, w_scale, payload) = LAYER_HEADER.unpack(hdr)
    kinds = {v: k for k, v in KIND_CODES.items()}
    if kind not in kinds or mode not in (MODE_DENSE, MODE_SD) or rank not in (1, 3) or not 1 <= bias_bits <= 32:
        raise SdhwError(f"{where}: corrupt layer header")
    if m < 1 or min(h, w, c) < 1 or stride < 1 or groups < 1:
        raise SdhwError(f"{where}: corrupt layer header (empty shape)")
    kind_name = kinds[kind]
    in_shape = (c,) if rank == 1 else (h, w, c)
    k_in = h * w * c
    wshape = (m, k_in) if kind_name == "fc" else (m, c // groups, kernel, kernel)
    pos = offset + LAYER_HEADER.size
    body = _take(data, pos, payload, f"{where} payload")
    bias_len = _nbytes(m * bias_bits)
    bias = _to_signed(unpack_fields(_take(body, 0, bias_len, f"{where} bias"), m, bias_bits), bias_bits)
    cur = bias_len
    if mode == MODE_DENSE:
        n = int(np.prod(wshape))
        weights = np.frombuffer(_take(body, cur, n, f"{where} weights"), dtype=np.int8).reshape(wshape).copy()
        cur += n
    else:
        if not (1 <= exp_bits <= 8 and basis_group >= 1 and block_rows >= 1):
            raise SdhwError(f"{where}: corrupt SD parameters in the layer header")
        rm, rr, _ = rows_shape(wshape)
        ng, nb = n_blocks(rm, rr, basis_group, block_rows)
        bases = np.frombuffer(_take(body, cur, ng * nb * 9, f"{where} bases"), dtype=np.int8)
        bases = bases.reshape(ng, nb, 3, 3).copy()
        cur += ng * nb * 9
        bitmap_len = _nbytes(rm * rr)
        nonzero = unpack_fields(_take(body, cur, bitmap_len, f"{where} row bitmap"), rm * rr, 1).astype(bool)
        cur += bitmap_len
        cw = _code_width(exp_bits)
        n_codes = int(nonzero.sum()) * 3
        codes_len = _nbytes(n_codes * cw)
        fields = unpack_fields(_take(body, cur, codes_len, f"{where} codes"), n_codes, cw)
        cur += codes_len
        codes = np.zeros((rm * rr, 3), dtype=np.int8)
        codes[nonzero] = _decode_codes(fields, exp_bits, where).reshape(-1, 3)
        weights = SDWeights(wshape, codes.reshape(rm, rr, 3), bases, exp_bits, basis_group, block_rows, wshift,
                            wbits)
    if cur != payload:
        raise SdhwError(f"{where}: payload size {payload} does not match its sections ({cur} bytes)")
    layer = QLayer(kind_name, in_shape, weights, bias, in_q, QParams(out_scale, out_zp), m0, shift,
                   bool(flags & FLAG_RELU), stride, groups, w_scale)
    end = pos + payload
    end += (-(end - offset)) % 4
    _take(data, offset, end - offset, f"{where} padding")
    return layer, end


# ------------------------------------------------------------------------------------------- files
def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()      # read once at import: os.umask is process-wide and not thread-safe to probe


def _stage(directory: Path, name: str, data: bytes) -> str:
    """A temporary file beside the target holding ``data``, with the permissions a plain ``open`` would give
    (``mkstemp`` makes it private, 0600)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a failure leaves no partial output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _stage(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_files_atomic(out_dir, files: dict[str, bytes]) -> None:
    """Write several files into ``out_dir``: all are staged first, then renamed, so an error while writing
    leaves none of them half-written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SdhwError(f"output {str(out_dir)!r} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, content in files.items():
            staged.append((_stage(out_dir, name, content), out_dir / name))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def save(program: Program, path) -> int:
    """Pack and write atomically; returns the size in bytes."""
    data = pack(program)
    write_atomic(path, data)
    return len(data)


def load(path) -> Program:
    path = Path(path)
    if not path.is_file():
        raise SdhwError(f"program file {str(path)!r} does not exist")
    return unpack(path.read_bytes())
