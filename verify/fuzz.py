# amaranth: UnusedElaboratable=no
"""Fuzzed loaders: any byte string given to a loader ends in a valid result or one clean :class:`SdhwError` line.

Every loader a user feeds a file to has a :class:`Target` here: the program (``.sdp``), the program image
(``.sdimg``), models (``.npz``, joblib scikit-learn MLPs, ONNX) and the accelerator config (TOML / JSON). A
target's inputs come from three families of hypothesis strategies:

- ``random``: arbitrary bytes (with the file's magic in front half of the time, to get past the first check);
- ``mutated``: valid files with bit flips, truncation, inserted / deleted / repeated bytes and integer fields
  overwritten by boundary values (0, 1, 255, 65535, 2**31 - 1, 2**32 - 1, ...); for the two checksummed
  formats the checksum (and the size field) is then made to match, so the mutation reaches the parser behind it;
- ``structured``: files built from valid content with one part replaced: header fields and section counts,
  arrays of other dtypes or shapes, missing or extra keys, scikit-learn models with odd attributes, ONNX graphs
  whose attributes, initializers, shapes and ops are changed with ``onnx.helper``, configs with values of
  every TOML / JSON type.

:func:`attempt` runs one input and classifies it: ``accepted`` (the loader returned a result, which is then
checked: it re-serialises or re-validates), ``clean error`` (a one-line :class:`SdhwError`), ``crash`` (any
other exception, a warning, a message over several lines, or a file left behind) or ``timeout``.

``python -m verify.fuzz --out bench [--examples N] [--seed S] [--loaders sdp,npz]`` runs every target's
fuzzer N times and writes ``fuzz.json`` and ``fuzz.md``; ``tests/verify/test_fuzz_loaders.py`` runs the same
targets under pytest.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import platform
import resource
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from golden import SdhwError

OUTCOMES = ("accepted", "clean error", "crash", "timeout")
TIME_LIMIT_S = 10.0                    # one input taking longer than this counts as a hang
MEMORY_LIMIT_BYTES = 8 << 30           # address space while fuzzing: a giant allocation fails instead of swapping
BOUNDARY_INTS = (0, 1, 2, 3, 7, 8, 9, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF,
                 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
SHORT_BOUNDARY_INTS = tuple(v for v in BOUNDARY_INTS if v <= 0xFFFF)        # for u16 fields


# ------------------------------------------------------------------------------------------------ outcomes
@dataclass
class Outcome:
    kind: str                          # one of OUTCOMES
    detail: str = ""                   # the message, or the exception and where it was raised
    seconds: float = 0.0


class _Timeout(BaseException):
    """Raised by the interval timer; a BaseException so that no loader's ``except Exception`` swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the body after ``seconds`` (main thread only; elsewhere only the elapsed time is checked)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def memory_limit(limit: int = MEMORY_LIMIT_BYTES):
    """Cap the address space while fuzzing (restored afterwards), so a giant length field fails fast."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    new = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def attempt(target: Target, data: bytes, workdir: Path, *, limit_s: float = TIME_LIMIT_S) -> Outcome:
    """Write ``data`` as ``target``'s file in the empty directory ``workdir``, load it, classify what happens."""
    path = workdir / f"input{target.suffix}"
    path.write_bytes(data)
    pickles_before = PICKLES_RUN[0]
    start = time.perf_counter()
    try:
        with time_limit(limit_s), warnings.catch_warnings():
            warnings.simplefilter("error")
            result = target.load(path)
            target.check(result)
        outcome = Outcome("accepted")
    except _Timeout:
        outcome = Outcome("timeout", f"still running after {limit_s:g} s")
    except SdhwError as exc:
        message = str(exc)
        one_line = message and "\n" not in message and "\r" not in message
        outcome = Outcome("clean error" if one_line else "crash",
                          message if one_line else f"SdhwError over several lines: {message!r}")
    except Exception as exc:                                    # noqa: BLE001 - any other exception is the finding
        outcome = Outcome("crash", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}{_where(exc)}")
    outcome.seconds = time.perf_counter() - start
    if outcome.kind != "timeout" and outcome.seconds > limit_s:
        outcome = Outcome("timeout", f"took {outcome.seconds:.1f} s", outcome.seconds)
    left = sorted(p.name for p in workdir.iterdir() if p != path)
    path.unlink()
    for name in left:
        (workdir / name).unlink()
    if left and outcome.kind != "crash":
        outcome = Outcome("crash", f"left file(s) {', '.join(left)} behind", outcome.seconds)
    if target.forbids_pickle and PICKLES_RUN[0] != pickles_before:
        outcome = Outcome("crash", f"a pickle in the input ran ({outcome.kind}: {outcome.detail})", outcome.seconds)
    return outcome


# ------------------------------------------------------------------------------------- byte-level mutations
def put_int(data: bytearray, offset: int, value: int, size: int) -> None:
    if 0 <= offset and offset + size <= len(data):
        data[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


@st.composite
def mutate_bytes(draw, seed: bytes, fields: tuple[tuple[int, int], ...] = ()) -> bytes:
    """1-4 random edits of ``seed``; ``fields`` are (offset, size) integer fields to prefer for overwrites."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "truncate", "set_int", "set_field", "insert", "delete", "repeat")))
        n = len(data)
        if op == "flip" and n:
            pos = draw(st.integers(0, n - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[draw(st.integers(0, n)):]
        elif op in ("set_int", "set_field"):
            if op == "set_field" and fields:
                offset, size = draw(st.sampled_from(fields))
            else:
                offset, size = draw(st.integers(0, max(n - 1, 0))), draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.one_of(st.sampled_from(BOUNDARY_INTS + (n, n + 1, max(n - 1, 0))),
                                   st.integers(0, (1 << (8 * size)) - 1)))
            put_int(data, offset, value, size)
        elif op == "insert":
            pos = draw(st.integers(0, n))
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete" and n:
            pos = draw(st.integers(0, n - 1))
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "repeat" and n:
            pos = draw(st.integers(0, n - 1))
            chunk = data[pos:pos + draw(st.integers(1, 256))]
            data[pos:pos] = chunk * draw(st.integers(1, 8))
    return bytes(data)


def random_bytes(magic: bytes = b"", max_size: int = 4096) -> st.SearchStrategy[bytes]:
    plain = st.binary(max_size=max_size)
    if not magic:
        return plain
    return st.one_of(plain, plain.map(lambda b: magic + b))


# ----------------------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """One loader under test: how to load a file, how to check an accepted result, what inputs to draw."""

    name: str
    suffix: str
    description: str
    load: Callable[[Path], object]
    check: Callable[[object], None]
    families: dict[str, Callable[[], st.SearchStrategy]] = field(default_factory=dict)
    prepare: Callable[[], object] = lambda: None     # builds the valid seed files (outside the timed run)
    chooses_suffix: bool = False                     # inputs are (suffix, bytes): the loader takes several types
    forbids_pickle: bool = False                     # unpickling a planted PickleCanary is a finding
    requires: tuple[str, ...] = ()                   # optional modules the target needs (skipped without them)

    def available(self) -> bool:
        import importlib.util
        return all(importlib.util.find_spec(name) is not None for name in self.requires)

    def strategy(self) -> st.SearchStrategy[tuple[str, object]]:
        """``(family, input)`` from every family, equally likely."""
        return st.one_of(*[fam().map(lambda item, name=name: (name, item)) for name, fam in self.families.items()])


# ---- .sdp programs
@cache
def sdp_seeds() -> tuple[bytes, ...]:
    """Packed programs of the bundled digits models: SD MLP, dense MLP, SD CNN."""
    from golden import format as fmt
    from golden.compiler import CompileOptions, compile_model
    from golden.datasets import DIGITS_CNN, DIGITS_MLP, load_digits_split
    from golden.model import load_model

    x = load_digits_split()[0][:64]
    mlp, cnn = load_model(DIGITS_MLP), load_model(DIGITS_CNN)
    programs = [compile_model(mlp, x, CompileOptions(method="paper")).program,
                compile_model(mlp, x, CompileOptions(dense=True)).program,
                compile_model(cnn, x.reshape(-1, *cnn.input_shape), CompileOptions(method="paper", exp_bits=3)).program]
    return tuple(fmt.pack(p) for p in programs)


def sdp_fields(data: bytes) -> tuple[tuple[int, int], ...]:
    """(offset, size) of every integer field of the file header and of each layer header of a valid program."""
    from golden import format as fmt

    def struct_fields(fmt_struct: struct.Struct, base: int) -> list[tuple[int, int]]:
        out, offset = [], base
        for code in _struct_codes(fmt_struct.format):
            size = struct.calcsize("<" + code)
            if code[-1] not in "xs":
                out.append((offset, size))
            offset += size
        return out

    fields = struct_fields(fmt.FILE_HEADER, 0)
    offset = fmt.FILE_HEADER.size
    n_layers = struct.unpack_from("<H", data, 16)[0]
    for _ in range(n_layers):
        fields += struct_fields(fmt.LAYER_HEADER, offset)
        payload = struct.unpack_from("<I", data, offset + fmt.LAYER_HEADER.size - 8)[0]
        end = offset + fmt.LAYER_HEADER.size + payload
        offset = end + (-(end - offset)) % 4
    return tuple(fields)


def _struct_codes(fmt_text: str) -> list[str]:
    """``"<4sHHII 3H"`` -> ``["4s", "H", "H", "I", "I", "H", "H", "H"]`` (repeat counts expanded, ``Ns`` kept)."""
    codes, count = [], ""
    for ch in fmt_text.lstrip("<>=!@"):
        if ch.isdigit():
            count += ch
        elif ch != " ":
            codes += [f"{count}{ch}"] if ch == "s" else [ch] * int(count or 1)
            count = ""
    return codes


def fix_header(data: bytes, fix_size: bool = True) -> bytes:
    """Make the checksum (and with ``fix_size`` the size field) of a mutated program or program image match its
    bytes: both keep the file size at byte 8 and the CRC-32 of everything after byte 16 at byte 12."""
    out = bytearray(data)
    if len(out) >= 16:
        if fix_size:
            put_int(out, 8, len(out), 4)
        put_int(out, 12, zlib.crc32(bytes(out[16:])), 4)
    return bytes(out)


@st.composite
def mutated_with_header(draw, seeds, fields) -> bytes:
    """A mutation of one of ``seeds()`` (integer fields from ``fields(seed)``), its size and CRC fixed up in
    three of four inputs so the mutation reaches the parser behind them (:func:`fix_header`)."""
    seed = draw(st.sampled_from(seeds()))
    data = draw(mutate_bytes(seed, fields(seed)))
    return fix_header(data, draw(st.booleans())) if draw(st.integers(0, 3)) else data


def sdp_mutated() -> st.SearchStrategy:
    return mutated_with_header(sdp_seeds, sdp_fields)


@st.composite
def sdp_structured(draw) -> bytes:
    """A valid program with one to three header fields set to boundary values, checksum and size fixed."""
    seed = draw(st.sampled_from(sdp_seeds()))
    fields = sdp_fields(seed)
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 3))):
        offset, size = draw(st.sampled_from(fields))
        value = draw(st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(0, (1 << (8 * size)) - 1)))
        put_int(data, offset, value, size)
    if draw(st.booleans()):                       # and a cut or extension that the size field agrees with
        cut = draw(st.integers(16, len(data)))
        data = data[:cut] + bytes(draw(st.integers(0, 64)))
    return fix_header(bytes(data), True)


def _load_sdp(path: Path):
    from golden import format as fmt
    return fmt.load(path)


def _check_sdp(program) -> None:
    from golden import format as fmt
    from golden.program import validate_program
    validate_program(program)
    fmt.unpack(fmt.pack(program))


# ---- .sdimg program images
@cache
def sdimg_seeds() -> tuple[bytes, ...]:
    """Images of the SD and the dense digits MLP for 16-PE ECP5-25F builds, and of the SD digits CNN for a 4-PE
    UP5K build (table requantiser, 3 exponent bits)."""
    from golden import format as fmt
    from rtl_gen.image import build_image, pack_image
    from sdhw.config import AcceleratorConfig

    sd, dense, cnn = (fmt.unpack(d) for d in sdp_seeds())
    out = [pack_image(build_image(sd, AcceleratorConfig(pes=16))),
           pack_image(build_image(dense, AcceleratorConfig(pes=16, dense=True))),
           pack_image(build_image(cnn, AcceleratorConfig(pes=4, device="up5k", exp_bits=3)))]
    return tuple(out)


def sdimg_fields(data: bytes) -> tuple[tuple[int, int], ...]:
    fields = [(4, 2), (6, 2), (8, 4), (12, 4), (16, 4)]
    n_sections = struct.unpack_from("<H", data, 6)[0]
    pos = 20 + struct.unpack_from("<I", data, 16)[0]
    for _ in range(n_sections):
        fields += [(pos, 2), (pos + 2, 2), (pos + 4, 4), (pos + 8, 4)]
        pos += 12 + 4 * struct.unpack_from("<I", data, pos + 8)[0]
    return tuple(fields)


def sdimg_mutated() -> st.SearchStrategy:
    return mutated_with_header(sdimg_seeds, sdimg_fields)


def json_values(max_leaves: int = 6) -> st.SearchStrategy:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.sampled_from(BOUNDARY_INTS),
                        st.floats(allow_nan=True), st.text(max_size=12))
    return st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                        max_leaves=max_leaves)


@st.composite
def sdimg_structured(draw) -> bytes:
    """A valid image re-packed with its metadata or sections changed (so the checksum is right)."""
    from rtl_gen.image import pack_image, unpack_image

    image = unpack_image(draw(st.sampled_from(sdimg_seeds())))
    meta = json.loads(json.dumps(image.meta))
    sections = [list(s) for s in image.sections]
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(("meta key", "meta drop", "meta whole", "config key", "section", "sections")))
        if what == "meta key" and isinstance(meta, dict) and meta:
            meta[draw(st.sampled_from(sorted(meta)))] = draw(json_values())
        elif what == "meta drop" and isinstance(meta, dict) and meta:
            meta.pop(draw(st.sampled_from(sorted(meta))))
        elif what == "meta whole":
            meta = draw(json_values())
        elif what == "config key" and isinstance(meta, dict) and isinstance(meta.get("config"), dict):
            cfg = meta["config"]
            cfg[draw(st.sampled_from(sorted(cfg) + ["unknown"]))] = draw(json_values())
        elif what == "section" and sections:
            s = draw(st.sampled_from(sections))
            k = draw(st.integers(0, 1))
            s[k] = draw(st.one_of(st.sampled_from(SHORT_BOUNDARY_INTS), st.integers(0, 15)))
        elif what == "sections":
            sections = draw(st.lists(st.tuples(st.integers(0, 15), st.sampled_from(SHORT_BOUNDARY_INTS),
                                               st.lists(st.integers(0, 0xFFFFFFFF), max_size=8)), max_size=4))
            sections = [list(s) for s in sections]
    try:
        return pack_image(_RawImage(sections, meta))
    except (TypeError, ValueError, OverflowError, struct.error):    # unpackable by construction: use the seed
        return draw(st.sampled_from(sdimg_seeds()))


@dataclass
class _RawImage:
    """The two fields ``pack_image`` reads, without ProgramImage's meaning (fuzzed values of any type)."""

    sections: list
    meta: object


def _load_sdimg(path: Path):
    from rtl_gen.image import load_image
    return load_image(path)


def _check_sdimg(image) -> None:
    from rtl_gen.image import pack_image, unpack_image
    from sdhw import hostbus as hb
    again = unpack_image(pack_image(image))
    if again.meta != image.meta or again.sections != image.sections:
        raise AssertionError("the image does not re-pack to itself")
    addresses = [address for address, _ in image.writes()]
    if len(set(addresses)) != len(addresses) or image.output_region not in (hb.REGION_ACT0, hb.REGION_ACT1):
        raise AssertionError("the image writes an address twice or reads its output from a wrong region")


# ---- .npz models
@cache
def npz_seeds() -> tuple[bytes, ...]:
    from golden.datasets import DIGITS_CNN, DIGITS_MLP
    return tuple(Path(p).read_bytes() for p in (DIGITS_MLP, DIGITS_CNN))


@cache
def npz_arrays() -> tuple[dict[str, np.ndarray], ...]:
    """Array dictionaries of valid small models: an MLP, a CNN with pooling, a residual net."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    mlp = {"input_shape": np.array([12]), "layer0.kind": np.array("fc"), "layer0.weight": w(6, 12),
           "layer0.bias": w(6), "layer0.relu": np.array(1), "layer1.kind": np.array("fc"),
           "layer1.weight": w(3, 6), "layer1.bias": w(3), "layer1.relu": np.array(0)}
    cnn = {"input_shape": np.array([6, 6, 2]), "layer0.kind": np.array("conv"), "layer0.weight": w(4, 2, 3, 3),
           "layer0.bias": w(4), "layer0.relu": np.array(1), "layer0.stride": np.array(1),
           "layer0.groups": np.array(1), "layer1.kind": np.array("maxpool"), "layer1.relu": np.array(0),
           "layer2.kind": np.array("fc"), "layer2.weight": w(5, 36), "layer2.bias": w(5),
           "layer2.relu": np.array(0)}
    res = {"input_shape": np.array([4, 4, 3]), "layer0.kind": np.array("conv"), "layer0.weight": w(3, 3, 1, 1),
           "layer0.bias": w(3), "layer0.relu": np.array(1), "layer1.kind": np.array("add"),
           "layer1.source": np.array(0), "layer1.relu": np.array(0), "layer2.kind": np.array("gap"),
           "layer2.relu": np.array(0)}
    return mlp, cnn, res


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def odd_arrays() -> st.SearchStrategy[np.ndarray]:
    """Arrays of every dtype family and of odd shapes and values (no object arrays: those need pickle)."""
    shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
    numeric = st.sampled_from(("i1", "u1", "i8", "u8", "f2", "f4", "f8", "c8", "c16", "?"))
    values = st.sampled_from((0, 1, -1, 2, 3, 64, 65535, 2**31, -2**63, 2**64 - 1, 0.5, math.nan, math.inf, -math.inf))

    def build(dtype, shape, value):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                return np.full(shape, value).astype(dtype)
            except (OverflowError, ValueError):
                return np.zeros(shape, dtype=dtype)

    return st.one_of(
        st.builds(build, numeric, shapes, values),
        st.text(max_size=8).map(np.array),
        st.binary(max_size=8).map(np.array),
        st.lists(st.integers(-3, 300), max_size=5).map(lambda v: np.array(v, dtype=np.int64)),
        st.sampled_from(("fc", "conv", "maxpool", "avgpool", "gap", "add", "bogus")).map(np.array),
        st.builds(lambda d: np.zeros(3, dtype=[("a", "i4"), ("b", "f4")]), st.none()),
        st.builds(lambda: np.datetime64("2024-01-01")).map(np.array),
    )


@st.composite
def npz_structured(draw) -> bytes:
    """A valid model's arrays with keys replaced by odd arrays, dropped, added or renamed, saved as .npz."""
    arrays = dict(draw(st.sampled_from(npz_arrays())))
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(arrays)
        what = draw(st.sampled_from(("replace", "replace", "drop", "add", "rename")))
        if what == "replace" and keys:
            arrays[draw(st.sampled_from(keys))] = draw(odd_arrays())
        elif what == "drop" and keys:
            arrays.pop(draw(st.sampled_from(keys)))
        elif what == "add":
            key = draw(st.one_of(st.sampled_from(("layer9.kind", "layer3.kind", "layer0.source", "layer1.stride",
                                                  "layer0.groups", "extra")), st.text(min_size=1, max_size=10)))
            arrays[key] = draw(odd_arrays())
        elif what == "rename" and keys:
            old = draw(st.sampled_from(keys))
            arrays[draw(st.text(min_size=1, max_size=10))] = arrays.pop(old)
    try:
        return _npz_bytes(arrays, draw(st.booleans()))
    except (ValueError, OSError):
        return _npz_bytes(draw(st.sampled_from(npz_arrays())), False)


def npy_member(header: str, payload: bytes) -> bytes:
    """A version-1 ``.npy`` file with ``header`` as its header dictionary text, then ``payload``."""
    text = header.encode("latin1")
    text += b" " * ((-(10 + len(text) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


@st.composite
def npz_header_edits(draw, seeds: Callable[[], tuple[dict[str, np.ndarray], ...]] | None = None) -> bytes:
    """A valid .npz (a model's, or one of ``seeds()``) with one member's .npy header declaring another shape, dtype
    or order (giant counts included); the zip itself is intact, so the header reaches the loader."""
    import zipfile
    arrays = draw(st.sampled_from((seeds or npz_arrays)()))
    edited = draw(st.sampled_from(sorted(arrays)))
    header = draw(st.sampled_from((
        "{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }",
        "{'descr': '|O', 'fortran_order': False, 'shape': (%d,), }",
        "{'descr': '<U%d', 'fortran_order': True, 'shape': (1,), }",
        "{'descr': '<i8', 'fortran_order': False, 'shape': (%d, -1), }",
        "{'descr': 'bogus', 'fortran_order': False, 'shape': (%d,), }",
        "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (%d,), }",
        "{'descr': '<f8', 'shape': (%d,), }",
        "[%d]",
    )))
    count = header.count("%d")
    values = draw(st.lists(st.sampled_from((0, 1, 2, 3, 12, 2**31, 2**40, 2**62, 2**63 - 1)),
                           min_size=count, max_size=count))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in arrays.items():
            if key == edited:
                zf.writestr(f"{key}.npy", npy_member(header % tuple(values), np.ascontiguousarray(value).tobytes()))
            else:
                member = io.BytesIO()
                np.save(member, value)
                zf.writestr(f"{key}.npy", member.getvalue())
    return buf.getvalue()


def _load_npz(path: Path):
    from golden.model import load_npz
    return load_npz(path)


def _check_model(model) -> None:
    from golden.model import Model, validate_model
    if not isinstance(model, Model):
        raise AssertionError(f"the loader returned a {type(model).__name__}, not a Model")
    validate_model(model)
    model.shapes()


# ---- joblib / pickle scikit-learn models
def sklearn_mlp(coefs, intercepts, activation="relu"):
    from sklearn.neural_network import MLPClassifier
    mlp = MLPClassifier(hidden_layer_sizes=(8,), activation=activation if isinstance(activation, str) else "relu")
    mlp.coefs_, mlp.intercepts_ = coefs, intercepts
    mlp.activation = activation
    return mlp


def _joblib_bytes(obj) -> bytes:
    import joblib
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


@cache
def joblib_seeds() -> tuple[bytes, ...]:
    rng = np.random.default_rng(1)
    good = sklearn_mlp([rng.standard_normal((12, 8)), rng.standard_normal((8, 3))],
                [rng.standard_normal(8), rng.standard_normal(3)])
    return (_joblib_bytes(good), _joblib_bytes({"model": good}))


@st.composite
def joblib_structured(draw) -> bytes:
    """Pickled MLPs with coefs_ / intercepts_ / activation of other types, lengths and shapes, and non-MLPs."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
    arrays = st.one_of(st.builds(lambda s: rng.standard_normal(s), shapes), odd_arrays())
    things = st.one_of(st.lists(arrays, max_size=3), arrays, json_values(3),
                       st.builds(lambda a: tuple(a), st.lists(arrays, max_size=3)))
    choice = draw(st.sampled_from(("coefs", "intercepts", "activation", "other object", "shapes")))
    coefs = [rng.standard_normal((12, 8)), rng.standard_normal((8, 3))]
    intercepts = [rng.standard_normal(8), rng.standard_normal(3)]
    activation = "relu"
    if choice == "coefs":
        coefs = draw(things)
    elif choice == "intercepts":
        intercepts = draw(things)
    elif choice == "activation":
        activation = draw(st.one_of(st.sampled_from(("tanh", "logistic", "identity", "")), json_values(3)))
    elif choice == "shapes":
        coefs = [rng.standard_normal(draw(st.tuples(st.integers(0, 4), st.integers(0, 4))))
                 for _ in range(draw(st.integers(0, 3)))]
        intercepts = [rng.standard_normal(draw(st.integers(0, 4))) for _ in range(draw(st.integers(0, 3)))]
    else:
        return _joblib_bytes(draw(st.one_of(json_values(), arrays)))
    return _joblib_bytes(sklearn_mlp(coefs, intercepts, activation))


def _load_joblib(path: Path):
    from golden.model import load_model
    return load_model(path)


# ---- ONNX models
def onnx_base_models():
    """Two valid graphs: an image CNN (Conv, BatchNorm, Relu, MaxPool, Flatten, Gemm) and an MLP (MatMul + Add)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    cnn = helper.make_graph(
        [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                          strides=[1, 1], name="conv"),
         helper.make_node("BatchNormalization", ["c0", "s", "t", "mu", "var"], ["n0"], epsilon=1e-5, name="bn"),
         helper.make_node("Relu", ["n0"], ["r0"], name="relu"),
         helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
         helper.make_node("Flatten", ["p0"], ["f0"], axis=1, name="flatten"),
         helper.make_node("Gemm", ["f0", "w1", "b1"], ["y"], transB=1, alpha=1.0, beta=1.0, name="fc")],
        "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [init("w0", 4, 2, 3, 3), init("b0", 4), init("s", 4), init("t", 4), init("mu", 4),
         numpy_helper.from_array(np.abs(rng.standard_normal(4)).astype(np.float32) + 0.5, "var"),
         init("w1", 5, 36), init("b1", 5)])
    mlp = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["m0"], name="mm"),
         helper.make_node("Add", ["m0", "b0"], ["a0"], name="bias"),
         helper.make_node("Clip", ["a0", "zero"], ["r0"], name="clip"),
         helper.make_node("Dropout", ["r0"], ["d0"], name="drop"),
         helper.make_node("Gemm", ["d0", "w1"], ["y"], name="fc")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [init("w0", 12, 8), init("b0", 8), numpy_helper.from_array(np.zeros((), np.float32), "zero"),
         init("w1", 8, 3)])
    return [helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]) for g in (cnn, mlp)], onnx


@cache
def onnx_seeds() -> tuple[bytes, ...]:
    models, _ = onnx_base_models()
    return tuple(m.SerializeToString() for m in models)


def _attribute_values():
    """Attribute values of every kind ``onnx.helper.make_attribute`` builds: ints, floats, strings, lists, tensors."""
    from onnx import numpy_helper
    ints = st.sampled_from((0, 1, 2, 3, -1, 5, 2**31, 2**62))
    return st.one_of(
        ints, st.floats(allow_nan=True, width=32), st.text(max_size=8).map(str.encode),
        st.sampled_from(("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER", "bogus")),
        st.lists(ints, max_size=5), st.lists(st.floats(width=32, allow_nan=True), min_size=1, max_size=4),
        st.builds(lambda a: numpy_helper.from_array(a), st.sampled_from(
            (np.zeros(3, np.float32), np.array(1.5, np.float64), np.zeros((2, 2), np.int64), np.array(["a"]),
             np.ones(0, np.float32), np.array([True])))),
    )


def _odd_tensor(name: str):
    from onnx import numpy_helper

    def build(a):
        return numpy_helper.from_array(a, name)

    arrays = st.one_of(
        st.sampled_from((np.zeros((4, 2, 3, 3), np.float16), np.zeros((4, 2, 2, 2), np.float32),
                         np.ones((5, 36), np.float64), np.zeros((0,), np.float32), np.full(4, np.nan, np.float32),
                         np.full(4, -1.0, np.float32), np.arange(4, dtype=np.int64), np.array(["s"] * 4),
                         np.zeros((4, 2, 3, 3), np.complex64), np.ones(4, bool), np.zeros((2, 2, 2, 2, 2), np.float32),
                         np.array(3.0, np.float32), np.ones((36, 5), np.float32), np.ones((1, 4, 1, 1), np.float32),
                         np.array([-1, 36], np.int64), np.array([0, -1], np.int64), np.array([2, 18], np.int64))),
    )
    return arrays.map(build)


@st.composite
def onnx_structured(draw) -> bytes:
    """A valid graph with attributes, initializers, the input shape, an op type or a node's inputs changed."""
    from onnx import TensorProto, helper

    models, _ = onnx_base_models()
    model = models[draw(st.integers(0, len(models) - 1))]
    graph = model.graph
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(("attribute", "attribute", "drop attribute", "initializer", "drop initializer",
                                     "input shape", "op type", "node inputs", "drop node", "outputs", "domain")))
        node = graph.node[draw(st.integers(0, len(graph.node) - 1))] if len(graph.node) else None
        if what == "attribute" and node is not None:
            name = draw(st.sampled_from(("kernel_shape", "pads", "strides", "dilations", "group", "auto_pad", "axis",
                                         "alpha", "beta", "transA", "transB", "epsilon", "training_mode", "min",
                                         "max", "ceil_mode", "shape", "allowzero", "value", "value_ints",
                                         "value_float", "spatial", "unknown")))
            value = draw(_attribute_values())
            kept = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            node.attribute.extend(kept)
            try:
                node.attribute.append(helper.make_attribute(name, value))
            except (TypeError, ValueError):
                pass
        elif what == "drop attribute" and node is not None and len(node.attribute):
            del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        elif what == "initializer" and len(graph.initializer):
            k = draw(st.integers(0, len(graph.initializer) - 1))
            graph.initializer[k].CopyFrom(draw(_odd_tensor(graph.initializer[k].name)))
        elif what == "drop initializer" and len(graph.initializer):
            del graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        elif what == "input shape":
            dims = draw(st.lists(st.one_of(st.integers(-1, 9), st.sampled_from((2**31, 2**62)), st.just("N")),
                                 max_size=5))
            graph.input[0].CopyFrom(helper.make_tensor_value_info(graph.input[0].name, TensorProto.FLOAT, dims))
        elif what == "op type" and node is not None:
            node.op_type = draw(st.sampled_from(("Add", "AveragePool", "BatchNormalization", "Clip", "Constant", "Conv",
                                                 "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "Identity",
                                                 "MatMul", "MaxPool", "Relu", "Reshape", "Softmax")))
        elif what == "node inputs" and node is not None:
            names = [n for n in ["x", "y", ""] + [i.name for i in graph.initializer] + [o for nd in graph.node
                                                                                    for o in nd.output]]
            inputs = draw(st.lists(st.sampled_from(names), max_size=5))
            del node.input[:]
            node.input.extend(inputs)
        elif what == "drop node" and len(graph.node):
            del graph.node[draw(st.integers(0, len(graph.node) - 1))]
        elif what == "outputs":
            extra = draw(st.lists(st.sampled_from(("y", "c0", "r0", "x", "zz")), max_size=2))
            for name in extra:
                graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            if not extra:
                del graph.output[:]
        elif what == "domain" and node is not None:
            node.domain = draw(st.sampled_from(("", "ai.onnx", "com.microsoft", "ai.onnx.ml")))
    return model.SerializeToString()


def _load_onnx(path: Path):
    from golden.model import load_model
    return load_model(path)


# ---- accelerator config (TOML / JSON)
CONFIG_SEEDS = (
    b'pes = 16\ndevice = "ecp5-25f"\nexp_bits = 3\n',
    b'device = "up5k"\npes = 8\nrequant = "table"\nrequant_units = 2\nact_depth = 16384\n',
    b'pes = 32\ndevice = "generic"\nexp_bits = 3\nrebuild_lanes = 4\nweight_depth = 1024\ncode_depth = 8192\n'
    b'dense = false\ncounter_bits = 32\nacc_bits = 30\ndsp_budget = 8\n',
)


def _toml_value(value) -> str:
    """A TOML literal for a JSON-like value (strings through JSON escapes, which TOML basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return '"null"'


@st.composite
def config_structured(draw) -> tuple[str, bytes]:
    """A table of known (and a few unknown) parameters with values of any TOML / JSON type."""
    from sdhw.config import PARAMETERS
    keys = st.one_of(st.sampled_from(PARAMETERS), st.sampled_from(("extra", "pes ", "PES", "")))
    values = st.one_of(json_values(4), st.sampled_from(("up5k", "ecp5-25f", "generic", "table", "serial")),
                       st.sampled_from((1, 2, 3, 4, 8, 16, 64, 1024, 2048, 65536, 65537, True, 0, -1, 2.0, 16.0)))
    table = draw(st.dictionaries(keys, values, max_size=8))
    if draw(st.booleans()):
        return ".json", json.dumps(table).encode()
    lines = [f"{json.dumps(k) if not k.isidentifier() else k} = {_toml_value(v)}"
             for k, v in table.items() if v is not None]
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(("[section]\npes = 4", "when = 2024-01-01T00:00:00", "pes = 0x10",
                                           "exp_bits = 1_0", 'device = """ecp5-25f"""', "pes = [[[[1]]]]"))))
    return ".toml", "\n".join(lines).encode()


def deep_nesting() -> st.SearchStrategy[tuple[str, bytes]]:
    depth = st.sampled_from((100, 1000, 100_000))
    return st.one_of(depth.map(lambda d: (".json", b"[" * d + b"]" * d)),
                     depth.map(lambda d: (".json", b'{"pes": ' + b"[" * d + b"]" * d + b"}")),
                     depth.map(lambda d: (".toml", b"pes = " + b"[" * d + b"]" * d)),
                     depth.map(lambda d: (".toml", b"pes = " + b"{a = " * d + b"1" + b"}" * d)))


def load_config(path: Path):
    """What ``sdhw generate --config`` does before elaborating: parse, build the config, check that it fits."""
    from rtl_gen.generate import load_config_file, make_config
    from sdhw.config import check_fits
    cfg = make_config(load_config_file(path))
    check_fits(cfg)
    return cfg


def _check_config(cfg) -> None:
    from sdhw.config import AcceleratorConfig
    if AcceleratorConfig.from_dict(cfg.as_dict()) != cfg:
        raise AssertionError("the config does not rebuild from its own values")
    cfg.memories()


def _config_families():
    toml_seeds = st.sampled_from(CONFIG_SEEDS)
    return {
        "random": lambda: st.tuples(st.sampled_from((".toml", ".json")), st.binary(max_size=512)),
        "mutated": lambda: st.tuples(st.just(".toml"), toml_seeds.flatmap(mutate_bytes)),
        "structured": lambda: st.one_of(config_structured(), config_structured(), deep_nesting()),
    }


# ---- pickles that must never run
PICKLES_RUN = [0]                       # how many PickleCanary objects have been unpickled in this process


def pickle_ran() -> None:
    PICKLES_RUN[0] += 1


class PickleCanary:
    """Planted in inputs of loaders that must never unpickle: unpickling it calls :func:`pickle_ran`, which
    :func:`attempt` notices (a harmless stand-in for a payload that runs code)."""

    def __reduce__(self):
        return (pickle_ran, ())


def canary_pickle() -> bytes:
    import pickle
    return pickle.dumps(PickleCanary())


def object_npy(shape: tuple[int, ...] = (1,)) -> bytes:
    """A ``.npy`` of dtype object whose payload is the canary pickle."""
    return npy_member(f"{{'descr': '|O', 'fortran_order': False, 'shape': {shape!r}, }}", canary_pickle())


# ---- arrays of the command line: --calib / --eval-data (.npz), sdhw run --input (.npy)
@cache
def digits_models():
    """The bundled digits MLP (64 inputs) and CNN (8 x 8 x 1 image), which the array loaders check shapes against."""
    from golden.datasets import DIGITS_CNN, DIGITS_MLP
    from golden.model import load_model
    return load_model(DIGITS_MLP), load_model(DIGITS_CNN)


@cache
def calib_arrays() -> tuple[dict[str, np.ndarray], ...]:
    """Valid ``--calib`` files for the CNN: flat, channel-last and channel-first (NCHW) batches, float and uint8."""
    from golden.datasets import load_digits_split
    x = load_digits_split()[0][:12]
    return ({"x": x}, {"x": x.reshape(-1, 8, 8, 1).astype(np.float32)},
            {"x": (x.reshape(-1, 1, 8, 8) * 255).astype(np.uint8)})


@cache
def eval_arrays() -> tuple[dict[str, np.ndarray], ...]:
    """Valid ``--eval-data`` files for the MLP: float64 / uint8 inputs, int64 / uint8 labels."""
    from golden.datasets import load_digits_split
    _, _, x, y = load_digits_split()
    x, y = x[:12], y[:12]
    return ({"x": x, "y": y.astype(np.int64)}, {"x": (x * 255).astype(np.uint8), "y": y.astype(np.uint8)})


@cache
def input_arrays() -> tuple[np.ndarray, ...]:
    """Valid ``sdhw run --input`` arrays for a 64-input image: int8 values, one or a batch; floats to quantise."""
    rng = np.random.default_rng(4)
    return (rng.integers(-128, 128, 64).astype(np.int8), rng.integers(-128, 128, (3, 64)).astype(np.int16),
            rng.random((2, 8, 8)).astype(np.float32), rng.random(64))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def zip_members(members: dict[str, bytes], compressed: bool = False) -> bytes:
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            if name.split("\0")[0]:                       # zipfile cuts names at NUL and fails on empty ones
                zf.writestr(name, data)
    return buf.getvalue()


@st.composite
def odd_values_of(draw, array: np.ndarray) -> np.ndarray:
    """``array`` with NaN, inf or extreme values written in, cast to another dtype, emptied or reshaped."""
    out = np.array(array)
    what = draw(st.sampled_from(("values", "dtype", "empty", "reshape", "scalar", "huge")))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if what == "values" and out.size and out.dtype.kind in "biufc":
            out = out.astype(draw(st.sampled_from((out.dtype, np.float64, np.float16, np.int64, np.uint64))))
            value = draw(st.sampled_from((math.nan, math.inf, -math.inf, 1e308, -1e308, 2**63 - 1, -2**63, 2**64 - 1,
                                          255, 256, -129, 128, -1, 10, 9)))
            flat = out.reshape(-1)
            for k in draw(st.lists(st.integers(0, out.size - 1), min_size=1, max_size=4)):
                try:
                    flat[k] = value
                except (OverflowError, ValueError):
                    pass
        elif what == "dtype":
            dtype = draw(st.sampled_from(("i1", "u1", ">i4", "u8", "f2", ">f8", "c8", "c16", "?", "U3", "S2", "V4",
                                          "M8[D]", "m8[s]")))
            try:                                  # numpy itself can crash casting odd dtypes: numbers only
                out = out.astype(dtype) if out.dtype.kind in "biuf" and dtype != "V4" else np.zeros(out.shape, dtype)
            except (TypeError, ValueError):
                out = np.zeros(out.shape, dtype=dtype)
        elif what == "empty":
            out = out.reshape(-1)[:0].reshape((0, *out.shape[1:])) if out.ndim else out.reshape(-1)[:0]
        elif what == "reshape" and out.size:
            shapes = [(out.size,), (1, out.size), (out.size, 1), out.shape[::-1], (*out.shape, 1), (1, *out.shape)]
            out = out.reshape(draw(st.sampled_from(shapes)))
            if draw(st.booleans()):
                out = out.reshape(-1)[:max(out.size - draw(st.integers(1, 9)), 0)]
        elif what == "scalar":
            out = np.array(draw(st.sampled_from((0, 1.5, math.nan, "x", b"x", True))))
        elif what == "huge" and out.ndim:          # 65536 real rows (32 MB of float64); compressed, 30 kB
            out = np.zeros((1 << 16, *out.shape[1:]), dtype=out.dtype)
    return out


@st.composite
def npz_arrays_structured(draw, seeds: Callable[[], tuple[dict[str, np.ndarray], ...]]) -> bytes:
    """A valid array file's keys given odd values, dropped, added or renamed; an object array holding a pickle; a
    bare ``.npy`` or a member that is not an array. Saved as a plain or a compressed ``.npz``."""
    arrays = dict(draw(st.sampled_from(seeds())))
    raw: dict[str, bytes] = {}
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(arrays)
        what = draw(st.sampled_from(("values", "values", "replace", "drop", "add", "rename", "object", "foreign")))
        if what == "values" and keys:
            key = draw(st.sampled_from(keys))
            arrays[key] = draw(odd_values_of(arrays[key]))
        elif what == "replace" and keys:
            arrays[draw(st.sampled_from(keys))] = draw(odd_arrays())
        elif what == "drop" and keys:
            arrays.pop(draw(st.sampled_from(keys)))
        elif what == "add":
            arrays[draw(st.one_of(st.sampled_from(("x", "y", "X", "x.npy", "labels")), st.text(min_size=1, max_size=8)))
                   ] = draw(odd_arrays())
        elif what == "rename" and keys:
            arrays[draw(st.sampled_from(("X", "inputs", "y", "x", "x ")))] = arrays.pop(draw(st.sampled_from(keys)))
        elif what == "object":
            key = draw(st.sampled_from(keys or ["x"]))
            arrays.pop(key, None)
            raw[f"{key}.npy"] = object_npy(draw(st.sampled_from(((1,), (12,), (12, 64)))))
        elif what == "foreign":
            raw[draw(st.sampled_from(("x", "notes.txt", "y.pkl", "x.npy/", "../x.npy")))] = draw(
                st.one_of(st.binary(max_size=32), st.just(canary_pickle())))
    if draw(st.integers(0, 9)) == 0 and len(arrays) == 1 and not raw:
        return npy_bytes(next(iter(arrays.values())))                      # a bare .npy where a .npz belongs
    members = {}
    for key, value in arrays.items():
        try:
            members[f"{key}.npy"] = npy_bytes(value)
        except ValueError:
            continue
    members.update(raw)
    return zip_members(members, draw(st.booleans()))


def _npz_array_families(seeds: Callable[[], tuple[dict[str, np.ndarray], ...]]) -> dict[str, Callable]:
    return {
        "random": lambda: st.one_of(random_bytes(b"PK\x03\x04"), random_bytes(b"\x93NUMPY\x01\x00")),
        "mutated": lambda: st.sampled_from(seeds()).flatmap(
            lambda a: st.booleans().map(lambda c: _npz_bytes(a, c))).flatmap(mutate_bytes),
        "structured": lambda: st.one_of(npz_arrays_structured(seeds), npz_arrays_structured(seeds),
                                        npz_header_edits(seeds)),
    }


def load_calibration(path: Path) -> np.ndarray:
    """What ``sdhw compile CNN --calib X.npz`` reads (an ONNX / PyTorch CNN: NCHW batches accepted)."""
    from golden.model import load_calibration_data
    return load_calibration_data(path, digits_models()[1], channels_first=True)


def _check_calibration(x) -> None:
    shape = digits_models()[1].input_shape
    if not (isinstance(x, np.ndarray) and x.dtype == np.float64 and x.ndim == 4 and x.shape[1:] == shape
            and len(x) >= 1 and np.all(np.isfinite(x))):
        raise AssertionError(f"calibration inputs of {type(x).__name__} {getattr(x, 'dtype', '')} "
                             f"{getattr(x, 'shape', '')}, not (N >= 1, *{shape}) finite float64")


def load_evaluation(path: Path):
    """What ``sdhw compile MLP --eval-data X.npz`` reads."""
    from golden.model import load_eval_data
    return load_eval_data(path, digits_models()[0])


def _check_evaluation(result) -> None:
    x, y = result
    classes = math.prod(digits_models()[0].shapes()[-1])
    if not (x.dtype == np.float64 and x.shape[1:] == (64,) and len(x) >= 1 and np.all(np.isfinite(x))
            and y.dtype == np.int64 and y.shape == (len(x),) and y.min() >= 0 and y.max() < classes):
        raise AssertionError(f"evaluation data x {x.dtype} {x.shape}, y {y.dtype} {y.shape} is not ready for the model")


@cache
def input_image():
    """The program image ``sdhw run`` reads inputs for: the SD digits MLP (64 inputs, with its input scale)."""
    from rtl_gen.image import unpack_image
    return unpack_image(sdimg_seeds()[0])


def load_board_input(path: Path) -> np.ndarray:
    """What ``sdhw run --program P.sdimg --input X.npy`` reads before opening the port."""
    from fpga.host import load_input
    return load_input(input_image(), path)


def _check_board_input(x) -> None:
    n_in = math.prod(input_image().meta["input_shape"])
    if not (x.ndim == 2 and x.shape[1] == n_in and len(x) >= 1 and x.min() >= -128 and x.max() <= 127):
        raise AssertionError(f"inputs of shape {x.shape}, {x.min()}..{x.max()}: not (batch, {n_in}) int8 values")


@st.composite
def npy_structured(draw) -> bytes:
    """A valid input with odd values, dtypes or shapes; other arrays; a ``.npz`` or an object array instead."""
    seed = draw(st.sampled_from(input_arrays()))
    what = draw(st.sampled_from(("values", "values", "other", "npz", "object", "header")))
    if what == "values":
        return npy_bytes(draw(odd_values_of(seed)))
    if what == "other":
        return npy_bytes(draw(odd_arrays()))
    if what == "npz":
        return _npz_bytes({"x": seed}, draw(st.booleans()))
    if what == "object":
        return object_npy(draw(st.sampled_from(((1,), (64,)))))
    header = draw(st.sampled_from((
        "{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }",
        "{'descr': '<i1', 'fortran_order': True, 'shape': (%d, 64), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, -1), }",
        "{'descr': 'bogus', 'fortran_order': False, 'shape': (%d,), }",
        "{'descr': '<i8', 'shape': (%d,), }",
        "{'descr': (",
        "[%d]",
    )))
    count = header.count("%d")
    values = draw(st.lists(st.sampled_from((0, 1, 64, 2**31, 2**40, 2**62)), min_size=count, max_size=count))
    return npy_member(header % tuple(values), np.ascontiguousarray(seed).tobytes())


def _npy_families() -> dict[str, Callable]:
    seeds = st.sampled_from(input_arrays()).map(npy_bytes)
    return {
        "random": lambda: random_bytes(b"\x93NUMPY\x01\x00"),
        "mutated": lambda: seeds.flatmap(lambda s: mutate_bytes(s, ((8, 2),))),
        "structured": npy_structured,
    }


# ---- manifest.json of an accelerator directory
@cache
def manifest_seeds() -> tuple[bytes, ...]:
    """Manifests as ``sdhw generate`` writes them (without the Verilog), for three configurations."""
    from rtl_gen.generate import build_manifest
    from sdhw.accelerator import Accelerator
    from sdhw.config import AcceleratorConfig, check_fits
    out = []
    for cfg in (AcceleratorConfig(pes=16), AcceleratorConfig(pes=4, device="up5k", exp_bits=3),
                AcceleratorConfig(pes=8, dense=True, device="generic")):
        manifest = build_manifest(cfg, Accelerator(cfg, vendor_primitives=True), check_fits(cfg))
        out.append((json.dumps(manifest, indent=2) + "\n").encode())
    return tuple(out)


def config_values() -> st.SearchStrategy:
    return st.one_of(json_values(4), st.sampled_from(("up5k", "ecp5-25f", "generic", "table", "serial", "")),
                     st.sampled_from((1, 2, 3, 4, 5, 8, 16, 64, 1024, 2048, 65536, 65537, True, False, 0, -1, -16,
                                      2.0, 16.5, 1e300, 2**63, 2**64, -2**63)))


@st.composite
def manifest_structured(draw) -> bytes:
    """A valid manifest with config values out of range or of another type, keys dropped or added, the version
    changed, or the whole document (or its config) replaced by JSON of another shape."""
    from sdhw.config import PARAMETERS
    manifest = json.loads(draw(st.sampled_from(manifest_seeds())))
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(("config value", "config value", "config value", "config drop", "config extra",
                                     "config whole", "version", "drop", "whole")))
        cfg = manifest.get("config") if isinstance(manifest, dict) else None
        if what == "config value" and isinstance(cfg, dict):
            cfg[draw(st.sampled_from(PARAMETERS))] = draw(config_values())
        elif what == "config drop" and isinstance(cfg, dict) and cfg:
            cfg.pop(draw(st.sampled_from(sorted(cfg))))
        elif what == "config extra" and isinstance(cfg, dict):
            cfg[draw(st.sampled_from(("extra", "PES", "pes ", "")))] = draw(config_values())
        elif what == "config whole" and isinstance(manifest, dict):
            manifest["config"] = draw(json_values())
        elif what == "version" and isinstance(manifest, dict):
            manifest["manifest_version"] = draw(st.one_of(st.sampled_from((0, 2, "1", 1.0, True, None)),
                                                          json_values(2)))
        elif what == "drop" and isinstance(manifest, dict) and manifest:
            manifest.pop(draw(st.sampled_from(sorted(manifest))))
        elif what == "whole":
            manifest = draw(json_values())
    text = json.dumps(manifest, indent=draw(st.sampled_from((None, 2))))
    return text.encode(draw(st.sampled_from(("utf-8", "utf-8", "utf-16", "latin-1"))), "replace")


def _manifest_families() -> dict[str, Callable]:
    depth = st.sampled_from((100, 1000, 100_000))
    return {
        "random": lambda: random_bytes(b'{"manifest_version": 1, "config": ', 1024),
        "mutated": lambda: st.sampled_from(manifest_seeds()).flatmap(mutate_bytes),
        "structured": lambda: st.one_of(manifest_structured(), manifest_structured(),
                                        depth.map(lambda d: b'{"manifest_version": 1, "config": ' + b"[" * d
                                                  + b"]" * d + b"}")),
    }


def load_manifest_file(path: Path):
    from rtl_gen.generate import load_manifest
    return load_manifest(path)


def _check_manifest(result) -> None:
    manifest, cfg = result
    if not isinstance(manifest, dict):
        raise AssertionError(f"the manifest is a {type(manifest).__name__}, not a dict")
    _check_config(cfg)


# ---- torch.export archives (.pt2); torch is optional and imported only when this target runs
TORCH_MODULES = ("torch", "onnxscript", "onnx")


@cache
def torch_seeds() -> tuple[bytes, ...]:
    """``torch.export.save`` archives of a small MLP and a small CNN (Conv, ReLU, MaxPool, Flatten, Linear)."""
    import torch
    torch.manual_seed(5)
    nn = torch.nn
    mlp = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(36, 5)).eval()
    out = []
    for module, example in ((mlp, torch.zeros(1, 12)), (cnn, torch.zeros(1, 2, 6, 6))):
        buf = io.BytesIO()
        torch.export.save(torch.export.export(module, (example,)), buf)
        out.append(buf.getvalue())
    return tuple(out)


def _json_paths(value, prefix=()) -> list[tuple]:
    """Paths (tuples of keys / indices) to every value nested in a JSON document."""
    paths = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        paths += _json_paths(child, (*prefix, key))
    return paths


def _json_set(document, path: tuple, new):
    if not path:
        return new
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return document


@st.composite
def torch_structured(draw) -> bytes:
    """A valid archive rebuilt (so the zip and its CRCs are sound) with members dropped, renamed, duplicated,
    cut, mutated or replaced; JSON members with one nested value replaced; or pickles planted where torch reads
    them (sample inputs, a weight marked ``use_pickle``, an opaque constant, a legacy weights file)."""
    import zipfile
    seed = draw(st.sampled_from(torch_seeds()))
    with zipfile.ZipFile(io.BytesIO(seed)) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    root = members[0][0].split("/")[0]
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.integers(0, len(members) - 1))
        name, data = members[k]
        what = draw(st.sampled_from(("json", "json", "json", "drop", "rename", "duplicate", "cut", "mutate",
                                     "replace", "pickle")))
        if what == "json":
            jsons = [i for i, (n, _) in enumerate(members) if n.endswith(".json")]
            k = draw(st.sampled_from(jsons))
            name, data = members[k]
            try:
                document = json.loads(data)
            except ValueError:                                 # already replaced by an earlier edit
                continue
            path = draw(st.sampled_from(_json_paths(document)))
            members[k] = (name, json.dumps(_json_set(document, path, draw(json_values(3)))).encode())
        elif what == "drop":
            del members[k]
        elif what == "rename":
            members[k] = (draw(st.sampled_from((name + "x", name.upper(), name.split("/", 1)[-1], "../" + name))), data)
        elif what == "duplicate":
            members.insert(draw(st.integers(0, len(members))), (name, draw(mutate_bytes(data))))
        elif what == "cut":
            members[k] = (name, data[:draw(st.integers(0, max(len(data) - 1, 0)))])
        elif what == "mutate":
            members[k] = (name, draw(mutate_bytes(data)))
        elif what == "replace":
            members[k] = (name, draw(st.one_of(st.binary(max_size=64), st.just(canary_pickle()))))
        else:
            place = draw(st.sampled_from(("sample inputs", "weight", "constant", "legacy weights", "legacy constants")))
            members = plant_pickle(members, root, place)
    if not members:
        return b""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if draw(st.booleans()) else zipfile.ZIP_STORED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def plant_pickle(members: list[tuple[str, bytes]], root: str, place: str) -> list[tuple[str, bytes]]:
    """``members`` with the canary pickle where ``torch.export.load`` would unpickle it."""
    files = dict(members)
    canary = canary_pickle()
    for name, data in members:
        try:
            config = json.loads(data) if name.endswith("_config.json") else None
        except ValueError:                                     # already replaced by an earlier edit
            continue
        if config is not None and not (isinstance(config, dict) and isinstance(config.get("config"), dict)):
            continue
        if place == "sample inputs" and "/sample_inputs/" in name:
            files[name] = canary
        elif place == "weight" and name.endswith("weights_config.json"):
            fqn = next(iter(config["config"]), None)
            if isinstance(config["config"].get(fqn), dict) and isinstance(config["config"][fqn].get("path_name"), str):
                config["config"][fqn]["use_pickle"] = True
                files[f"{root}/data/weights/{config['config'][fqn]['path_name']}"] = canary
                files[name] = json.dumps(config).encode()
        elif place == "constant" and name.endswith("constants_config.json"):
            config["config"]["planted"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                           "tensor_meta": None}
            files[f"{root}/data/constants/opaque_obj_0"] = canary
            files[name] = json.dumps(config).encode()
    if place in ("legacy weights", "legacy constants"):
        files[f"{root}/data/{place.split()[1]}/model.pt"] = canary
    return list(files.items())


def load_torch_file(path: Path):
    from golden.model import load_model
    return load_model(path)

def targets() -> dict[str, Target]:
    """Every fuzzed loader by name."""
    from golden.format import MAGIC
    from rtl_gen.image import IMAGE_MAGIC
    return {
        "sdp": Target("sdp", ".sdp", "program (.sdp): golden.format.load", _load_sdp, _check_sdp, {
            "random": lambda: random_bytes(MAGIC),
            "mutated": sdp_mutated,
            "structured": sdp_structured,
        }, prepare=sdp_seeds),
        "sdimg": Target("sdimg", ".sdimg", "program image (.sdimg): rtl_gen.image.load_image", _load_sdimg,
                        _check_sdimg, {
                            "random": lambda: random_bytes(IMAGE_MAGIC),
                            "mutated": sdimg_mutated,
                            "structured": sdimg_structured,
                        }, prepare=sdimg_seeds),
        "npz": Target("npz", ".npz", "model (.npz): golden.model.load_npz", _load_npz, _check_model, {
            "random": lambda: random_bytes(b"PK\x03\x04"),
            "mutated": lambda: st.one_of(st.sampled_from(npz_seeds()),
                                         st.sampled_from(npz_arrays()).map(lambda a: _npz_bytes(a, False))
                                         ).flatmap(mutate_bytes),
            "structured": lambda: st.one_of(npz_structured(), npz_header_edits()),
        }, prepare=npz_seeds, forbids_pickle=True),
        "joblib": Target("joblib", ".joblib", "scikit-learn model (.joblib): golden.model.load_model", _load_joblib,
                         _check_model, {
                             "random": lambda: random_bytes(b"\x80\x04"),
                             "mutated": lambda: st.sampled_from(joblib_seeds()).flatmap(mutate_bytes),
                             "structured": joblib_structured,
                         }, prepare=joblib_seeds),
        "onnx": Target("onnx", ".onnx", "ONNX model (.onnx): golden.onnx_import.from_onnx", _load_onnx, _check_model, {
            "random": lambda: random_bytes(),
            "mutated": lambda: st.sampled_from(onnx_seeds()).flatmap(mutate_bytes),
            "structured": onnx_structured,
        }, prepare=onnx_seeds),
        "config": Target("config", ".toml", "accelerator config (TOML / JSON): rtl_gen.generate.load_config_file "
                         "+ sdhw.config", load_config, _check_config, _config_families(), chooses_suffix=True),
        "calib": Target("calib", ".npz", "calibration inputs (--calib .npz): golden.model.load_calibration_data",
                        load_calibration, _check_calibration, _npz_array_families(calib_arrays),
                        prepare=calib_arrays, forbids_pickle=True),
        "eval": Target("eval", ".npz", "evaluation data (--eval-data .npz): golden.model.load_eval_data",
                       load_evaluation, _check_evaluation, _npz_array_families(eval_arrays), prepare=eval_arrays,
                       forbids_pickle=True),
        "input": Target("input", ".npy", "board inputs (sdhw run --input .npy): fpga.host.load_input",
                        load_board_input, _check_board_input, _npy_families(), prepare=input_image,
                        forbids_pickle=True),
        "manifest": Target("manifest", ".json", "accelerator manifest (manifest.json): rtl_gen.generate.load_manifest",
                           load_manifest_file, _check_manifest, _manifest_families(), prepare=manifest_seeds),
        "torch": Target("torch", ".pt2", "PyTorch program (.pt2): golden.torch_import.load_torch", load_torch_file,
                        _check_model, {
                            "random": lambda: random_bytes(b"PK\x03\x04"),
                            "mutated": lambda: st.sampled_from(torch_seeds()).flatmap(mutate_bytes),
                            "structured": torch_structured,
                        }, prepare=torch_seeds, forbids_pickle=True, requires=TORCH_MODULES),
    }


def input_of(target: Target, item) -> tuple[Target, bytes]:
    """The target (with the suffix the input asks for) and the bytes of one drawn input."""
    if target.chooses_suffix:
        suffix, data = item
        return dataclasses.replace(target, suffix=suffix, chooses_suffix=False), data
    return target, item


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class Tally:
    inputs: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    families: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    slowest_s: float = 0.0
    wall_s: float = 0.0
    findings: list[dict] = field(default_factory=list)      # first few crashes / timeouts, with their input

    def add(self, family: str, data: bytes, outcome: Outcome, keep: int = 10) -> None:
        self.inputs += 1
        self.outcomes[outcome.kind] += 1
        fam = self.families.setdefault(family, dict.fromkeys(OUTCOMES, 0))
        fam[outcome.kind] += 1
        self.seconds += outcome.seconds
        self.slowest_s = max(self.slowest_s, outcome.seconds)
        seen = {f["detail"].split(":")[0] + f["detail"].rpartition(" at ")[2] for f in self.findings}
        key = outcome.detail.split(":")[0] + outcome.detail.rpartition(" at ")[2]
        if outcome.kind in ("crash", "timeout") and len(self.findings) < keep and key not in seen:
            self.findings.append({"family": family, "outcome": outcome.kind, "detail": outcome.detail,
                                  "input_bytes": len(data), "input_head_hex": data[:64].hex()})


def fuzz_target(target: Target, examples: int, rng_seed: int, workdir: Path) -> Tally:
    """Draw ``examples`` inputs for ``target`` (hypothesis, generation only, fixed seed) and tally the outcomes."""
    tally = Tally()

    @seed(rng_seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @given(target.strategy())
    def run(drawn):
        family, item = drawn
        tgt, data = input_of(target, item)
        tally.add(family, data, attempt(tgt, data, workdir))

    start = time.perf_counter()
    run()
    tally.wall_s = time.perf_counter() - start
    return tally


def write_reports(report: dict, out: Path) -> tuple[Path, Path]:
    from golden.format import write_atomic
    json_path, md_path = out / "fuzz.json", out / "fuzz.md"
    write_atomic(json_path, (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(md_path, format_markdown(report).encode())
    return json_path, md_path


def format_markdown(report: dict) -> str:
    lines = ["# Fuzzed loaders", "",
             f"`{report['command']}`: hypothesis {report['hypothesis']}, seed {report['seed']}, "
             f"{report['examples']} inputs per loader, each limited to {report['time_limit_s']:g} s and "
             f"{report['memory_limit_gib']:g} GiB of address space. Inputs: random bytes, mutations of valid files "
             "(bit flips, truncation, boundary values in integer fields, checksums fixed up), and structured "
             "edits of valid content (header fields, array dtypes and shapes, model attributes, ONNX graphs, "
             "config values). A clean error is one `SdhwError` line; a crash is any other exception, a "
             "warning, a message over several lines or a file left behind.", "",
             "| loader | inputs | accepted | clean error | crash | timeout | time (s) | slowest input (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["loaders"].values():
        o = r["outcomes"]
        lines.append(f"| {r['description']} | {r['inputs']} | {o['accepted']} | {o['clean error']} | {o['crash']} | "
                     f"{o['timeout']} | {r['seconds']:.1f} | {r['slowest_s']:.2f} |")
    lines += ["", "Per input family (accepted / clean error / crash / timeout):", "",
              "| loader | random | mutated | structured |", "|---|---|---|---|"]
    for name, r in report["loaders"].items():
        cells = []
        for fam in ("random", "mutated", "structured"):
            f = r["families"].get(fam)
            cells.append(" / ".join(str(f[k]) for k in OUTCOMES) if f else "-")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    findings = [(name, f) for name, r in report["loaders"].items() for f in r["findings"]]
    if report.get("skipped"):
        lines += ["", "Not run here: " + "; ".join(f"{n} ({why})" for n, why in report["skipped"].items()) + "."]
    lines += ["", "Findings (crashes and timeouts): " + ("none." if not findings else "")]
    for name, f in findings:
        lines.append(f"- {name} ({f['family']}): {f['outcome']}: {f['detail']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for fuzz.json and fuzz.md")
    parser.add_argument("--examples", type=int, default=200, help="inputs per loader (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--loaders", help="comma-separated subset of: " + ", ".join(targets()))
    args = parser.parse_args(argv)
    all_targets = targets()
    names = [n.strip() for n in args.loaders.split(",")] if args.loaders else list(all_targets)
    unknown = [n for n in names if n not in all_targets]
    if unknown or args.examples < 1:
        parser.error(f"unknown loader(s) {', '.join(unknown)}; valid: {', '.join(all_targets)}" if unknown
                     else f"--examples must be at least 1, not {args.examples}")
    report = {"command": "python -m verify.fuzz " + " ".join(argv if argv is not None else sys.argv[1:]),
              "examples": args.examples, "seed": args.seed, "time_limit_s": TIME_LIMIT_S,
              "memory_limit_gib": MEMORY_LIMIT_BYTES / (1 << 30), "python": platform.python_version(),
              "hypothesis": __import__("hypothesis").__version__, "loaders": {}, "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="sdhw-fuzz-") as tmp, memory_limit():
        for name in names:
            target = all_targets[name]
            if not target.available():
                report["skipped"][name] = f"needs {', '.join(target.requires)}"
                print(f"{name}: skipped, needs {', '.join(target.requires)}", flush=True)
                continue
            target.prepare()
            tally = fuzz_target(target, args.examples, args.seed, Path(tmp))
            report["loaders"][name] = {"description": target.description, "inputs": tally.inputs,
                                       "outcomes": tally.outcomes, "families": tally.families,
                                       "seconds": round(tally.wall_s, 2), "slowest_s": round(tally.slowest_s, 3),
                                       "findings": tally.findings}
            o = tally.outcomes
            print(f"{name}: {tally.inputs} inputs, {o['accepted']} accepted, {o['clean error']} clean errors, "
                  f"{o['crash']} crashes, {o['timeout']} timeouts, {tally.wall_s:.1f} s", flush=True)
    json_path, md_path = write_reports(report, Path(args.out))
    print(f"report: {json_path}, {md_path}")
    bad = sum(r["outcomes"]["crash"] + r["outcomes"]["timeout"] for r in report["loaders"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
