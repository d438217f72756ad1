"""golden.format: the packed program container (version 1) -- round trip, bit counts, corruption."""
from __future__ import annotations

import dataclasses
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden import SdhwError
from golden import format as fmt
from golden.compiler import CompileOptions, compile_model
from golden.datasets import DIGITS_CNN, DIGITS_MLP, load_digits_split
from golden.model import load_model
from golden.program import Program, QLayer, run_program
from golden.quant import QParams
from golden.sd import SDWeights

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ------------------------------------------------------------------------------ independent references
def ref_signed_width(values) -> int:
    """Smallest two's-complement width holding every value, from Python ints."""
    return max([1] + [int(v).bit_length() + 1 if v >= 0 else (~int(v)).bit_length() + 1
                      for v in np.asarray(values).reshape(-1)])


def ref_rows(ws: tuple[int, ...]) -> tuple[int, int]:
    """``(M, R)`` of the row view (docs/FORMAT.md): conv 3x3 has 3C rows, the rest ceil(K / 3)."""
    if len(ws) == 4 and ws[2:] == (3, 3):
        return ws[0], 3 * ws[1]
    return ws[0], -(-math.prod(ws[1:]) // 3)


def nbytes(bits: int) -> int:
    return -(-bits // 8)


def assert_same(a, b, where: str) -> None:
    """Deep, exact equality of programs / layers / SD weights / arrays / scalars."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        assert np.array_equal(a, b), f"{where}: arrays differ"
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def check_round_trip(program: Program, where: str) -> bytes:
    data = fmt.pack(program)
    back = fmt.unpack(data)
    assert_same(program, back, where)
    assert fmt.pack(back) == data, f"{where}: pack(unpack(pack(p))) != pack(p)"
    return data


def check_sizes(program: Program, data: bytes, where: str) -> None:
    """layer_sizes against an independent count, and against the bytes actually written."""
    assert len(data) == fmt.FILE_HEADER.size + sum(fmt.layer_sizes(la).total for la in program.layers), where
    off = fmt.FILE_HEADER.size
    for i, layer in enumerate(program.layers):
        w = f"{where} layer {i}"
        s = fmt.layer_sizes(layer)
        m = layer.out_channels
        assert s.header == fmt.LAYER_HEADER.size == 56, w
        assert s.bias == nbytes(m * ref_signed_width(layer.bias)), w
        if layer.is_sd:
            sdw = layer.weights
            mm, r = ref_rows(layer.weight_shape)
            assert sdw.codes.shape == (mm, r, 3), w
            nonzero_rows = int(np.count_nonzero(np.any(sdw.codes != 0, axis=2)))
            assert s.bases == -(-m // sdw.basis_group) * -(-r // sdw.block_rows) * 9, w
            assert s.bitmap == nbytes(m * r), w
            assert s.codes == nbytes(nonzero_rows * 3 * (1 + sdw.exp_bits)), w
            assert s.weights == s.bases + s.bitmap + s.codes, w
        else:
            assert s.weights == math.prod(layer.weight_shape), w
            assert (s.bases, s.bitmap, s.codes) == (0, 0, 0), w
        assert s.payload == s.bias + s.weights, w
        assert s.total == s.header + s.payload + s.padding and 0 <= s.padding < 4, w
        assert s.total % 4 == 0, f"{w}: record of {s.total} bytes is not a multiple of 4"
        # payload_size is the u32 at offset 48 of the layer header (docs/FORMAT.md)
        assert struct.unpack_from("<I", data, off + 48)[0] == s.payload, w
        assert data[off + fmt.LAYER_HEADER.size + s.payload:off + s.total] == bytes(s.padding), w
        off += s.total
    assert off == len(data), where


# ------------------------------------------------------------------------------ compiled bundled models
@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module", params=[("mlp", "sd"), ("mlp", "dense"), ("cnn", "sd"), ("cnn", "dense")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def compiled(request, digits):
    name, mode = request.param
    model = load_model(DIGITS_MLP if name == "mlp" else DIGITS_CNN)
    x_train, _, x_test, _ = digits
    result = compile_model(model, x_train.reshape((-1, *model.input_shape)),
                           CompileOptions(epochs=2, dense=mode == "dense"))
    return f"{name}-{mode}", result.program, x_test.reshape((-1, *model.input_shape))


def test_compiled_round_trip(compiled):
    where, program, x_test = compiled
    data = check_round_trip(program, where)
    back = fmt.unpack(data)
    x_q = program.input_q.quantize(x_test)
    np.testing.assert_array_equal(run_program(back, x_q), run_program(program, x_q), err_msg=where)


def test_compiled_sizes(compiled):
    where, program, _ = compiled
    data = fmt.pack(program)
    check_sizes(program, data, where)
    modes = {layer.is_sd for layer in program.layers}
    assert modes == ({False} if where.endswith("dense") else {True}), where


def test_compiled_save_load(compiled, tmp_path):
    where, program, _ = compiled
    path = tmp_path / "sub" / "p.sdp"
    n = fmt.save(program, path)
    assert n == path.stat().st_size == len(fmt.pack(program)), where
    assert_same(program, fmt.load(path), where)
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.sdp"], "temporary file left behind"


# ------------------------------------------------------------------------------ random programs
scales = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
zero_points = st.integers(-128, 127)


@st.composite
def programs(draw):
    """A random valid program built directly (not via the compiler); returns ``(program, numpy seed)``."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_conv = draw(st.integers(0, 2))
    n_fc = draw(st.integers(0 if n_conv else 1, 2))
    if n_conv:
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 5)))
    else:
        shape = (draw(st.integers(1, 40)),)
    q = QParams(draw(scales), draw(zero_points))
    input_shape, input_q = shape, q
    layers = []
    for i in range(n_conv + n_fc):
        if i < n_conv:
            kind, c = "conv", shape[2]
            variant = draw(st.sampled_from(["3x3", "3x3", "1x1", "dw", "5x5"]))
            stride = draw(st.sampled_from([1, 2]))
            k = {"3x3": 3, "1x1": 1, "5x5": 5, "dw": 3}[variant]
            groups = c if variant == "dw" and c > 1 else 1
            m = c if groups > 1 else draw(st.integers(1, 6))
            ws = (m, c // groups, k, k)
            sd_ok = groups == 1 and k in (1, 3)
        else:
            kind, stride, groups = "fc", 1, 1
            m = draw(st.integers(1, 12))
            ws = (m, math.prod(shape))
            sd_ok = True
        if sd_ok and draw(st.booleans()):
            exp_bits = draw(st.integers(1, 4))
            lim = (1 << exp_bits) - 1
            mm, r = ref_rows(ws)
            codes = rng.integers(-lim, lim + 1, (mm, r, 3)).astype(np.int8)
            codes[rng.random((mm, r)) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))] = 0     # all-zero rows
            basis_group = draw(st.integers(1, m + 2))
            block_rows = draw(st.integers(1, r + 2))
            bases = rng.integers(-128, 128, (-(-m // basis_group), -(-r // block_rows), 3, 3)).astype(np.int8)
            weights = SDWeights(ws, codes, bases, exp_bits, basis_group, block_rows, draw(st.integers(0, 31)),
                                draw(st.integers(2, 16)))
        else:
            weights = rng.integers(-127, 128, ws).astype(np.int8)
        bias_style = draw(st.sampled_from(["small", "int32", "extreme"]))
        if bias_style == "small":
            bias = rng.integers(-300, 300, m)
        elif bias_style == "int32":
            bias = rng.integers(INT32_MIN, INT32_MAX, m, endpoint=True)
        else:
            bias = rng.choice(np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]), m)
        out_q = QParams(draw(scales), draw(zero_points))
        layer = QLayer(kind, shape, weights, bias.astype(np.int64), q, out_q, draw(st.integers(0, INT32_MAX)),
                       draw(st.integers(-31, 31)), draw(st.booleans()), stride, groups, draw(scales))
        layers.append(layer)
        shape, q = layer.out_shape, out_q
    return Program(input_shape, input_q, layers), seed


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_program_round_trip(case):
    program, seed = case
    where = f"random program (numpy seed {seed})"
    data = check_round_trip(program, where)
    check_sizes(program, data, where)
    back = fmt.unpack(data)
    x = np.random.default_rng(seed).integers(-128, 128, (2, *program.input_shape))
    try:
        expect = run_program(program, x)
    except SdhwError as exc:           # e.g. an extreme bias overflows the accumulator: same on both
        with pytest.raises(SdhwError, match="overflow"):
            run_program(back, x)
        assert "overflow" in str(exc), where
    else:
        np.testing.assert_array_equal(run_program(back, x), expect, err_msg=where)


# ------------------------------------------------------------------------------ a small hand-made program
WORKED_CODES = (2, 0, -3)      # docs/FORMAT.md worked example: E = 2 -> fields 0b010, 0b000, 0b111


def small_program() -> Program:
    """SD conv3x3 (E = 2, first row = the worked example, some zero rows) -> dense fc."""
    rng = np.random.default_rng(7)
    q0, q1, q2 = QParams(0.05, -3), QParams(0.1, -128), QParams(0.2, 5)
    codes = rng.integers(-3, 4, (3, 6, 3)).astype(np.int8)
    codes[:, 1] = 0
    codes[0, 0] = WORKED_CODES
    sdw = SDWeights((3, 2, 3, 3), codes, rng.integers(-20, 21, (2, 1, 3, 3)).astype(np.int8), 2, 2, 6, 3)
    conv = QLayer("conv", (4, 4, 2), sdw, np.array([-70000, 5, 3]), q0, q1, 1 << 30, 5, True)
    fc = QLayer("fc", (4, 4, 3), rng.integers(-127, 128, (5, 48)).astype(np.int8),
                rng.integers(-1000, 1000, 5), q1, q2, 1_500_000_000, -2)
    return Program((4, 4, 2), q0, [conv, fc])


@pytest.fixture(scope="module")
def small():
    program = small_program()
    return program, fmt.pack(program)


def codes_offset(program: Program) -> int:
    """Byte offset of layer 0's code stream (layer 0 must be SD)."""
    s = fmt.layer_sizes(program.layers[0])
    return fmt.FILE_HEADER.size + s.header + s.bias + s.bases + s.bitmap


def with_crc(data: bytes | bytearray) -> bytes:
    data = bytearray(data)
    data[12:16] = struct.pack("<I", zlib.crc32(bytes(data[16:])))
    return bytes(data)


def test_small_round_trip_and_sizes(small):
    program, data = small
    check_round_trip(program, "small program")
    check_sizes(program, data, "small program")


def test_header_fields_at_documented_offsets(small):
    """The file and layer headers byte by byte, as docs/FORMAT.md lays them out."""
    program, data = small
    assert fmt.FILE_HEADER.size == 40
    assert data[0:4] == b"SDPG"
    assert struct.unpack_from("<HHII", data, 4) == (1, 40, len(data), zlib.crc32(data[16:]))
    assert struct.unpack_from("<HBB3Hbx", data, 16) == (2, 3, 0, 4, 4, 2, -3)
    assert struct.unpack_from("<d", data, 28) == (0.05,)
    assert data[36:40] == bytes(4)
    off = 40
    for layer in program.layers:
        assert struct.unpack_from("<8B", data, off) == (
            int(layer.kind == "conv"), int(layer.is_sd), int(layer.relu), layer.stride, layer.kernel,
            layer.weights.exp_bits if layer.is_sd else 0, layer.weights.wshift if layer.is_sd else 0,
            layer.weights.weight_bits if layer.is_sd else 8)
        assert struct.unpack_from("<3H", data, off + 8) == (
            layer.groups, layer.weights.basis_group if layer.is_sd else 0,
            layer.weights.block_rows if layer.is_sd else 0)
        assert struct.unpack_from("<BB3HH", data, off + 14) == (
            ref_signed_width(layer.bias), len(layer.in_shape), *layer.in_shape, layer.out_channels)
        assert struct.unpack_from("<Ibb", data, off + 24) == (layer.m0, layer.shift, layer.out_q.zero_point)
        assert struct.unpack_from("<dd", data, off + 32) == (layer.out_q.scale, layer.w_scale)
        off += fmt.layer_sizes(layer).total
    assert off == len(data)


def test_worked_example_code_stream(small):
    program, data = small
    pos = codes_offset(program)
    assert data[pos] == 0xC2, f"first code byte {data[pos]:#04x}, expected 0xc2 (docs/FORMAT.md)"
    assert data[pos + 1] & 1 == 1
    sizes = fmt.layer_sizes(program.layers[0])
    bitmap = data[pos - sizes.bitmap:pos]
    expect = np.any(program.layers[0].weights.codes != 0, axis=2).reshape(-1)
    np.testing.assert_array_equal(fmt.unpack_fields(bitmap, expect.size, 1), expect.astype(np.int64))


# ------------------------------------------------------------------------------ corruption
def test_bad_magic(small):
    _, data = small
    for bad in (b"XXXX" + data[4:], b"PK\x03\x04" + bytes(60), b"SDPX", b"\x00"):
        with pytest.raises(SdhwError, match="magic"):
            fmt.unpack(bad)


def test_unsupported_version(small):
    _, data = small
    for version in (0, 2, 0xFFFF):
        bad = data[:4] + struct.pack("<H", version) + data[6:]
        with pytest.raises(SdhwError, match=f"version {version}"):
            fmt.unpack(bad)


def test_wrong_header_size(small):
    _, data = small
    for size in (0, 38, 39, 41, 56):
        bad = data[:6] + struct.pack("<H", size) + data[8:]
        with pytest.raises(SdhwError, match="header size"):
            fmt.unpack(bad)


def test_checksum_mismatch_every_byte(small):
    """Flipping any single byte after the CRC field (every position) is caught by the checksum."""
    _, data = small
    for pos in range(16, len(data)):
        for flip in (0x01, 0x80):
            bad = bytearray(data)
            bad[pos] ^= flip
            with pytest.raises(SdhwError, match="checksum"):
                fmt.unpack(bytes(bad))
    for pos in range(12, 16):      # the CRC field itself
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(SdhwError, match="checksum"):
            fmt.unpack(bytes(bad))


def test_checksum_mismatch_compiled(digits):
    model = load_model(DIGITS_MLP)
    program = compile_model(model, digits[0], CompileOptions(dense=True, epochs=0)).program
    data = fmt.pack(program)
    rng = np.random.default_rng(11)
    for pos in rng.integers(16, len(data), 50):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(SdhwError, match="checksum"):
            fmt.unpack(bytes(bad))


def test_truncated_every_prefix(small):
    _, data = small
    for n in range(len(data)):
        with pytest.raises(SdhwError, match="truncated"):
            fmt.unpack(data[:n])


def test_total_size_field(small):
    _, data = small
    bigger = data[:8] + struct.pack("<I", len(data) + 4) + data[12:]
    with pytest.raises(SdhwError, match="truncated"):
        fmt.unpack(bigger)
    smaller = data[:8] + struct.pack("<I", len(data) - 4) + data[12:]
    with pytest.raises(SdhwError, match="trailing"):
        fmt.unpack(smaller)


def test_trailing_bytes(small):
    _, data = small
    for extra in (b"\x00", bytes(4), data):
        with pytest.raises(SdhwError, match=f"{len(extra)} trailing"):
            fmt.unpack(data + extra)


def test_negative_zero_code(small):
    program, data = small
    pos = codes_offset(program)
    exp_bits = program.layers[0].weights.exp_bits
    bad = bytearray(data)
    mask = (1 << (exp_bits + 1)) - 1
    bad[pos] = (bad[pos] & ~mask & 0xFF) | (1 << exp_bits)     # first field: sign 1, magnitude 0
    with pytest.raises(SdhwError, match="checksum"):           # the CRC guards it first ...
        fmt.unpack(bytes(bad))
    with pytest.raises(SdhwError, match="negative zero"):      # ... and with a fixed CRC the code check does
        fmt.unpack(with_crc(bad))
    bad[pos] = (bad[pos] & ~mask & 0xFF) | 0b001               # a valid code instead: accepted, code changed
    back = fmt.unpack(with_crc(bad))
    assert tuple(back.layers[0].weights.codes[0, 0]) == (1, 0, -3)


def set_layer_field(data: bytes, layer_offset: int, index: int, value) -> bytes:
    fields = list(fmt.LAYER_HEADER.unpack_from(data, layer_offset))
    fields[index] = value
    out = bytearray(data)
    out[layer_offset:layer_offset + fmt.LAYER_HEADER.size] = fmt.LAYER_HEADER.pack(*fields)
    return with_crc(out)


# indices into LAYER_HEADER's fields
F_KIND, F_MODE, F_EXP_BITS, F_WSHIFT, F_WBITS = 0, 1, 5, 6, 7
F_RANK, F_H, F_W, F_C, F_PAYLOAD = 12, 13, 14, 15, 22


@pytest.mark.parametrize(("index", "value", "match"), [
    (F_KIND, 7, "corrupt layer header"),
    (F_MODE, 2, "corrupt layer header"),
    (F_RANK, 2, "corrupt layer header"),
    (F_PAYLOAD, 0, "truncated|payload"),
    (F_EXP_BITS, 0, "SD parameters"),
    (F_EXP_BITS, 9, "SD parameters"),
    (F_WSHIFT, 200, "SD parameters"),           # would overflow the rebuild rounding
    (F_WBITS, 0, "SD parameters"),              # would make a negative shift in the saturation
    (F_C, 3, "does not match|truncated|payload"),
])
def test_corrupt_layer_header_with_valid_crc(small, index, value, match):
    _, data = small
    with pytest.raises(SdhwError, match=match):
        fmt.unpack(set_layer_field(data, fmt.FILE_HEADER.size, index, value))


def zero_code_program() -> Program:
    """One SD fc layer whose codes are all zero: its code stream is empty whatever ``exp_bits`` says."""
    sdw = SDWeights((2, 5), np.zeros((2, 2, 3), np.int8), np.ones((1, 1, 3, 3), np.int8), 2, 2, 2, 0)
    layer = QLayer("fc", (5,), sdw, np.zeros(2, np.int64), QParams(1.0, 0), QParams(1.0, 0), 1 << 30, 0)
    return Program((5,), QParams(1.0, 0), [layer])


@pytest.mark.parametrize("exp_bits", [1, 4, 5, 7, 8])
def test_exp_bits_beyond_compiler_range_rejected(exp_bits):
    """Codes are int8 and the rebuild overflows int64 past E = 5: the reader takes the compiler's 1..4."""
    data = set_layer_field(fmt.pack(zero_code_program()), fmt.FILE_HEADER.size, F_EXP_BITS, exp_bits)
    if exp_bits <= 4:
        assert fmt.unpack(data).layers[0].weights.exp_bits == exp_bits
    else:
        with pytest.raises(SdhwError, match="SD parameters"):
            fmt.unpack(data)


@pytest.mark.parametrize(("field", "value"), [
    ("exp_bits", 0), ("exp_bits", 5), ("wshift", -1), ("wshift", 32), ("weight_bits", 1), ("weight_bits", 17),
    ("basis_group", 0), ("block_rows", 0),
])
def test_program_rejects_bad_sd_parameters(field, value):
    """pack would otherwise write what unpack refuses (or what inference cannot compute)."""
    good = zero_code_program().layers[0]
    bad = dataclasses.replace(good, weights=dataclasses.replace(good.weights, **{field: value}))
    with pytest.raises(SdhwError, match="SD parameters"):
        Program((5,), good.in_q, [bad])


def test_huge_declared_shape_fails_fast(small):
    """An SD layer header claiming a 60000^3 fc input must fail cleanly, without allocating it."""
    _, data = small
    off = fmt.FILE_HEADER.size
    fields = list(fmt.LAYER_HEADER.unpack_from(data, off))
    fields[F_KIND] = 0
    fields[F_H] = fields[F_W] = fields[F_C] = 60000
    out = bytearray(data)
    out[off:off + fmt.LAYER_HEADER.size] = fmt.LAYER_HEADER.pack(*fields)
    with pytest.raises(SdhwError, match="truncated"):
        fmt.unpack(with_crc(out))


def test_layer_header_fuzz_with_valid_crc(small):
    """Random field values in a layer header (CRC fixed up): a clean SdhwError, or a runnable program."""
    _, small_data = small
    sdw = SDWeights((4, 7), np.ones((4, 3, 3), np.int8), np.ones((2, 2, 3, 3), np.int8), 1, 2, 2, 1)
    fc = QLayer("fc", (7,), sdw, np.arange(4), QParams(0.5, 0), QParams(1.0, 3), 1 << 30, 1)
    programs_ = [small_data, fmt.pack(Program((7,), QParams(0.5, 0), [fc]))]
    seed = 2024
    rng = np.random.default_rng(seed)
    values = [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 127, 255]
    accepted = 0
    for it in range(300):
        data = programs_[it % 2]
        offsets, off = [], fmt.FILE_HEADER.size
        while off < len(data):
            offsets.append(off)
            off += fmt.LAYER_HEADER.size + fmt.LAYER_HEADER.unpack_from(data, off)[F_PAYLOAD]
            off += (-(off - offsets[-1])) % 4
        off = offsets[rng.integers(len(offsets))]
        fields = list(fmt.LAYER_HEADER.unpack_from(data, off))
        k = int(rng.integers(len(fields)))
        if isinstance(fields[k], float):
            fields[k] = float(rng.choice([0.0, -1.0, 1e300, 3.5]))
        else:
            fields[k] = int(rng.choice(values + [int(rng.integers(256))]))
        try:
            header = fmt.LAYER_HEADER.pack(*fields)
        except struct.error:
            continue
        bad = bytearray(data)
        bad[off:off + len(header)] = header
        where = f"seed {seed} iteration {it}: field {k} = {fields[k]!r}"
        try:
            program = fmt.unpack(with_crc(bad))
        except SdhwError:
            continue
        except Exception as exc:       # noqa: BLE001 - the point of the test
            pytest.fail(f"{where}: {type(exc).__name__}: {exc}")
        accepted += 1
        x = rng.integers(-128, 128, (2, *program.input_shape))
        try:
            run_program(program, x)
        except SdhwError:
            pass
        except Exception as exc:       # noqa: BLE001
            pytest.fail(f"{where}: accepted, but inference raised {type(exc).__name__}: {exc}")
    assert accepted > 0


def test_no_layers_rejected(small):
    _, data = small
    bad = bytearray(data[:fmt.FILE_HEADER.size])
    bad[8:12] = struct.pack("<I", fmt.FILE_HEADER.size)
    bad[16:18] = struct.pack("<H", 0)
    with pytest.raises(SdhwError, match="no layers"):
        fmt.unpack(with_crc(bad))


# ------------------------------------------------------------------------------ files
def test_load_missing_file(tmp_path):
    with pytest.raises(SdhwError, match="does not exist"):
        fmt.load(tmp_path / "nope.sdp")


def test_atomic_writes_get_ordinary_permissions(tmp_path, monkeypatch):
    """Outputs are as readable as a plain open() would make them (umask applied), not private like mkstemp's."""
    monkeypatch.setattr(fmt, "_UMASK", 0o027)
    fmt.write_atomic(tmp_path / "a.bin", b"x")
    fmt.write_files_atomic(tmp_path / "d", {"b.json": b"{}", "c.v": b""})
    for path in (tmp_path / "a.bin", tmp_path / "d" / "b.json", tmp_path / "d" / "c.v"):
        assert path.stat().st_mode & 0o777 == 0o640, path


def test_write_atomic_failure_leaves_nothing(tmp_path, monkeypatch, small):
    program, data = small
    target = tmp_path / "p.sdp"
    target.write_bytes(b"old")

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        fmt.save(program, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["p.sdp"], "temporary file left behind"


# ------------------------------------------------------------------------------ bit-field helpers
@pytest.mark.parametrize(("values", "width"), [
    ([], 1), ([0], 1), ([-1], 1), ([1], 2), ([-2], 2), ([-1, 1], 2), ([127], 8), ([-128], 8), ([128], 9),
    ([-129], 9), ([INT32_MAX], 32), ([INT32_MIN], 32), ([INT32_MIN, INT32_MAX], 32), ([-70000, 5, 3], 18),
])
def test_signed_width(values, width):
    assert fmt.signed_width(np.array(values, dtype=np.int64)) == width
    assert ref_signed_width(values) == width


@pytest.mark.parametrize(("values", "width", "packed"), [
    ([], 5, b""),
    ([1, 0, 1, 1], 1, b"\x0d"),
    ([3, 1], 2, b"\x07"),
    ([2, 0, 7], 3, b"\xc2\x01"),            # docs/FORMAT.md worked example
    ([0xABC], 12, b"\xbc\x0a"),
    ([0xF, 0x0, 0xA], 4, b"\x0f\x0a"),
    ([0xFFFFFFFF], 32, b"\xff\xff\xff\xff"),
    ([0x12345678, 1], 32, b"\x78\x56\x34\x12\x01\x00\x00\x00"),
    ([1] * 9, 1, b"\xff\x01"),
])
def test_pack_unpack_fields_exact(values, width, packed):
    assert fmt.pack_fields(np.array(values, dtype=np.int64), width) == packed
    got = fmt.unpack_fields(packed, len(values), width)
    np.testing.assert_array_equal(got, np.array(values, dtype=np.int64))


def test_pack_unpack_fields_random():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        width = int(rng.integers(1, 33))
        count = int(rng.integers(0, 50))
        values = rng.integers(0, 1 << width, count, dtype=np.int64)
        data = fmt.pack_fields(values, width)
        assert len(data) == nbytes(count * width), f"seed {seed}"
        if count * width % 8:
            assert data[-1] >> (count * width % 8) == 0, f"seed {seed}: padding bits not zero"
        np.testing.assert_array_equal(fmt.unpack_fields(data, count, width), values, err_msg=f"seed {seed}")


def test_pack_rejects_shapes_beyond_the_format_fields():
    from golden.model import Layer, Model

    k = 70000                                    # input width beyond the 16-bit shape field
    model = Model((k,), [Layer("fc", np.full((2, k), 0.01), np.zeros(2))])
    result = compile_model(model, np.random.default_rng(0).random((4, k)), CompileOptions(dense=True))
    with pytest.raises(SdhwError, match="does not fit the program format"):
        fmt.pack(result.program)
