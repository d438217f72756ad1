"""Host driver for the accelerator behind the UART bridge (``fpga.bridge``, framing in ``docs/UART.md``).

Pure Python and IO-agnostic: :class:`Host` talks to any *transport* with ``write(bytes)`` and
``read(n) -> bytes`` (``read`` returns fewer bytes, or none, when its timeout expires), e.g. a
``serial.Serial`` from pyserial (:func:`open_serial`), the cocotb UART model of the tests, or a fake.
Every problem is a :class:`golden.SdhwError` naming it.
"""
from __future__ import annotations

import struct
import time
from typing import Protocol

import numpy as np

from golden import SdhwError
from golden.model import load_npy_array
from sdhw import hostbus as hb

from .bridge import (
    CMD_PING,
    CMD_READ,
    CMD_WRITE,
    DEFAULT_MAX_WORDS,
    PING_WORDS,
    STATUS_BAD_ADDR,
    STATUS_BAD_CHECK,
    STATUS_BAD_CMD,
    STATUS_BAD_COUNT,
    STATUS_FRAMING,
    STATUS_NAMES,
    STATUS_OK,
    STATUS_TIMEOUT,
    SYNC_REQUEST,
    SYNC_RESPONSE,
    crc16,
)

ADDR_LIMIT = 1 << hb.ADDR_BITS
MAX_STRAY_BYTES = 64            # bytes skipped while looking for a response's sync byte
#: statuses of a request damaged on the line: the bridge rejected it unexecuted, so sending it again is safe. The
#: header errors are among them: the host only sends well-formed headers (its command, an address checked
#: against the bus, a count within the bridge's max_words), so a bad header was damaged on the way
LINE_ERRORS = frozenset({STATUS_BAD_CHECK, STATUS_TIMEOUT, STATUS_FRAMING, STATUS_BAD_CMD, STATUS_BAD_ADDR,
                         STATUS_BAD_COUNT})
DEFAULT_RETRIES = 2


class Transport(Protocol):
    def write(self, data: bytes) -> object: ...

    def read(self, n: int) -> bytes: ...


class BridgeError(SdhwError):
    """The bridge answered with an error status (the request was rejected and not executed)."""

    def __init__(self, status: int, what: str):
        self.status = status
        name = STATUS_NAMES.get(status, f"unknown status {status}")
        super().__init__(f"the board rejected the {what}: {name} (status {status}); nothing was executed")


# ------------------------------------------------------------------------------------------- frames
def encode_request(cmd: int, addr: int = 0, count: int = 0, words=()) -> bytes:
    """``5A CMD ADDR[3] COUNT[2] PAYLOAD CRC[2]`` (little-endian fields, CRC-16/MODBUS after the sync byte)."""
    if not 0 <= addr < ADDR_LIMIT:
        raise SdhwError(f"bus address {addr:#x} is outside the {hb.ADDR_BITS}-bit bus")
    if not 0 <= count <= 0xFFFF:
        raise SdhwError(f"word count {count} does not fit the 16-bit COUNT field")
    body = bytes([cmd]) + addr.to_bytes(3, "little") + count.to_bytes(2, "little")
    body += b"".join((int(w) & 0xFFFFFFFF).to_bytes(4, "little") for w in words)
    return bytes([SYNC_REQUEST]) + body + crc16(body).to_bytes(2, "little")


def encode_write(addr: int, words) -> bytes:
    words = list(words)
    return encode_request(CMD_WRITE, addr, len(words), words)


def encode_read(addr: int, count: int) -> bytes:
    return encode_request(CMD_READ, addr, count)


def encode_ping() -> bytes:
    return encode_request(CMD_PING)


def encode_response(status: int, words=()) -> bytes:
    """What the bridge sends: ``A5 STATUS COUNT[2] DATA CRC[2]`` (for fakes and tests)."""
    words = list(words)
    body = bytes([status]) + len(words).to_bytes(2, "little")
    body += b"".join((int(w) & 0xFFFFFFFF).to_bytes(4, "little") for w in words)
    return bytes([SYNC_RESPONSE]) + body + crc16(body).to_bytes(2, "little")


def decode_request(frame: bytes) -> tuple[int, int, int, list[int]]:
    """``(cmd, addr, count, words)`` of a complete, well-formed request (for fakes and tests)."""
    if len(frame) < 9 or frame[0] != SYNC_REQUEST or crc16(frame[1:]) != 0:
        raise SdhwError(f"malformed request frame {frame.hex()}")
    cmd, count = frame[1], int.from_bytes(frame[5:7], "little")
    payload = frame[7:-2]
    return cmd, int.from_bytes(frame[2:5], "little"), count, list(struct.unpack(f"<{len(payload) // 4}I", payload))


# ------------------------------------------------------------------------------------------- host
class Host:
    """Load, run and read back the accelerator through the UART bridge.

    Parameters
    ----------
    transport : Transport
        ``write(bytes)`` / ``read(n) -> bytes``; ``read`` returns short on timeout.
    max_words : int, optional
        Words per request; :meth:`ping` sets it from the bridge (default 128, the bridge's default).
    poll_timeout : float
        Seconds :meth:`run` waits for the accelerator to finish.
    retries : int
        Times a request is sent again after a line error. A request the bridge rejected as damaged on the line
        (bad checksum, truncated, framing error) was not executed and is always re-sent. A missing or corrupt
        *response* leaves open whether the request ran, so only requests that can run twice without effect
        are re-sent then: reads, pings and memory writes, never a control register write (it starts a run).
        :attr:`retried` counts the re-sent requests.
    """

    def __init__(self, transport: Transport, *, max_words: int = DEFAULT_MAX_WORDS, poll_timeout: float = 10.0,
                 retries: int = DEFAULT_RETRIES):
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise SdhwError(f"retries must be a non-negative integer, not {retries!r}")
        self.transport = transport
        self.max_words = max_words
        self.poll_timeout = poll_timeout
        self.retries = retries
        self.retried = 0

    # ------------------------------------------------------------------ one request, one response
    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.transport.read(n - len(data))
            if not chunk:
                raise SdhwError(f"no response from the board (got {len(data)} of {n} expected bytes before the "
                                "timeout); check the port, the baud rate and that the bitstream is loaded")
            data += chunk
        return data

    def read_response(self, what: str = "request") -> list[int]:
        """Read one response; return its data words or raise (:class:`BridgeError` for an error status)."""
        for _ in range(MAX_STRAY_BYTES + 1):
            first = self._read_exact(1)
            if first[0] == SYNC_RESPONSE:
                break
        else:
            raise SdhwError(f"no response sync byte (0x{SYNC_RESPONSE:02X}) in {MAX_STRAY_BYTES} bytes from the "
                            "board; check the baud rate")
        head = self._read_exact(3)
        status, count = head[0], int.from_bytes(head[1:3], "little")
        rest = self._read_exact(4 * count + 2)
        if crc16(head + rest) != 0:
            raise SdhwError(f"corrupt response from the board to the {what} (checksum mismatch); "
                            "a noisy line or a wrong baud rate")
        if status != STATUS_OK:
            raise BridgeError(status, what)
        return list(struct.unpack(f"<{count}I", rest[:-2]))

    def exchange(self, frame: bytes, what: str = "request", *, repeatable: bool = True) -> list[int]:
        """Send one request frame and return the response's data words, re-sending it after line errors
        (see ``retries``; ``repeatable``: the request may run twice without effect)."""
        reset = getattr(self.transport, "reset_input_buffer", None)
        for attempt in range(self.retries + 1):
            if reset is not None:
                reset()                                 # drop stale bytes (line noise, a late response)
            self.transport.write(frame)
            try:
                return self.read_response(what)
            except BridgeError as exc:
                if exc.status not in LINE_ERRORS or attempt == self.retries:
                    raise
            except SdhwError as exc:
                if not repeatable or attempt == self.retries:
                    if attempt:
                        raise SdhwError(f"{exc} ({attempt + 1} attempts)") from None
                    raise
            self.retried += 1
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ bus access
    def ping(self) -> dict:
        """The bridge's own identification: protocol version, words per request, rejected-frame count."""
        words = self.exchange(encode_ping(), "ping")
        if len(words) != PING_WORDS:
            raise SdhwError(f"unexpected ping response ({len(words)} words, expected {PING_WORDS})")
        info = {"protocol": words[0] & 0xFF, "rejected_frames": words[0] >> 8 & 0xFF, "max_words": words[0] >> 16}
        if info["max_words"] < 1:
            raise SdhwError(f"the bridge reports max_words = {info['max_words']}")
        self.max_words = info["max_words"]
        return info

    def write_words(self, addr: int, words) -> None:
        words = [int(w) for w in words]
        self._check_range(addr, len(words))
        for k in range(0, len(words), self.max_words):
            chunk = words[k:k + self.max_words]
            got = self.exchange(encode_write(addr + k, chunk), f"write of {len(chunk)} words at {addr + k:#07x}",
                                repeatable=(addr + k) >> 16 != hb.REGION_CSR)
            if got:
                raise SdhwError(f"unexpected response to a write: {len(got)} data words")

    def read_words(self, addr: int, count: int) -> list[int]:
        self._check_range(addr, count)
        out: list[int] = []
        for k in range(0, count, self.max_words):
            n = min(self.max_words, count - k)
            got = self.exchange(encode_read(addr + k, n), f"read of {n} words at {addr + k:#07x}")
            if len(got) != n:
                raise SdhwError(f"the board returned {len(got)} words for a read of {n}")
            out += got
        return out

    @staticmethod
    def _check_range(addr: int, count: int) -> None:
        if count < 0 or not 0 <= addr or addr + count > ADDR_LIMIT:
            raise SdhwError(f"{count} words at {addr:#x} do not fit the {hb.ADDR_BITS}-bit bus")

    def csr(self, offset: int, count: int = 1) -> list[int]:
        return self.read_words((hb.REGION_CSR << 16) | offset, count)

    # ------------------------------------------------------------------ the accelerator
    def start(self) -> None:
        """Start one run, exactly once however the line damages the exchange.

        ``done`` and ``error`` are cleared first (a clear of an idle accelerator may repeat). A start whose
        response is lost or corrupt may or may not have run: the status tells (busy, done or error: it ran),
        and only a start that did not run is sent again; a start the bridge rejected unexecuted is re-sent by
        :meth:`exchange`.
        """
        control = (hb.REGION_CSR << 16) | hb.CSR_CONTROL
        self.exchange(encode_write(control, [hb.CONTROL_CLEAR]), "clear", repeatable=True)
        for attempt in range(self.retries + 1):
            try:
                self.exchange(encode_write(control, [hb.CONTROL_START]), "start", repeatable=False)
                return
            except BridgeError:
                raise
            except SdhwError:
                (status,) = self.csr(hb.CSR_STATUS)
                if status & (hb.STATUS_BUSY | hb.STATUS_DONE | hb.STATUS_ERROR):
                    return
                if attempt == self.retries:
                    raise
            self.retried += 1

    def identify(self) -> dict:
        """Ping the bridge and read the accelerator's ID, version, lanes and memory depths."""
        info = {"bridge": self.ping()}
        ident, version, lanes = self.csr(hb.CSR_ID, 3)
        if ident != hb.ID_MAGIC:
            raise SdhwError(f"the board answers but is not an sdhw accelerator: ID {ident:#010x}, expected "
                            f"{hb.ID_MAGIC:#010x}")
        depths = self.csr(hb.CSR_DEPTHS, len(hb.DEPTH_CSRS))
        info.update({
            "id": ident, "version": version & 0xFF, "dense": bool(version >> 8 & 1), "exp_bits": version >> 12 & 0xF,
            "channel_lanes": lanes & 0xFFFF, "pixel_lanes": lanes >> 16,
            "depths": dict(zip(hb.DEPTH_CSRS, depths)),
        })
        info["pes"] = info["channel_lanes"] * info["pixel_lanes"]
        return info

    @staticmethod
    def check_image(image, info: dict) -> None:
        """Raise if ``image`` was laid out for another accelerator than the one ``identify()`` described."""
        cfg = image.meta.get("config")
        if not cfg:
            return
        want = {"dense": cfg["dense"], "exp_bits": cfg["exp_bits"], "channel_lanes": cfg["channel_lanes"],
                "pixel_lanes": cfg["pixel_lanes"]}
        have = {k: info[k] for k in want}
        memories = [name for name in hb.DEPTH_CSRS if not (cfg["dense"] and name == "basis_depth")]
        want.update({k: cfg[k] for k in memories})
        have.update({k: info["depths"][k] for k in memories})
        diff = [f"{k} {have[k]} (image: {want[k]})" for k in want if have[k] != want[k]]
        if diff:
            raise SdhwError("the program image was laid out for another accelerator; the board has "
                            + ", ".join(diff))

    def load(self, image) -> int:
        """Write every word of a program image, grouped into runs of consecutive addresses; returns the count."""
        runs: list[tuple[int, list[int]]] = []
        for addr, word in image.writes():
            if runs and runs[-1][0] + len(runs[-1][1]) == addr:
                runs[-1][1].append(word)
            else:
                runs.append((addr, [word]))
        for addr, words in runs:
            self.write_words(addr, words)
        return sum(len(w) for _, w in runs)

    def counters(self) -> dict:
        c = self.csr(hb.CSR_CYCLES, 8)
        return {name: c[2 * k] | c[2 * k + 1] << 32 for k, name in enumerate(("cycles", "macs", "skipped", "stalls"))}

    def run(self, image, x_q) -> dict:
        """Write one run's int8 inputs (the image's batch of them, one after the other), start, wait
        (``poll_timeout``), return outputs, status and counters.

        Returns ``{"output", "status", "error_code", "error", "layer", "cycles", "macs", "skipped",
        "stalls"}``; ``output`` holds the int8 outputs of the run (the batch's one after the other; empty when
        the accelerator raised its error flag).
        """
        x = np.asarray(x_q).reshape(-1)
        n_in = image.run_inputs
        if x.size != n_in:
            of = f"{image.batch} inputs of shape" if image.batch > 1 else "shape"
            raise SdhwError(f"input has {x.size} values; the program takes {n_in} "
                            f"({of} {tuple(image.meta['input_shape'])})")
        if x.size and (not np.issubdtype(x.dtype, np.integer) or x.min() < -128 or x.max() > 127):
            raise SdhwError("accelerator inputs must be int8 values (-128..127)")
        self.write_words(image.input_region << 16, [int(v) & 0xFFFFFFFF for v in x])
        self.start()
        deadline = time.monotonic() + self.poll_timeout
        while True:
            (status,) = self.csr(hb.CSR_STATUS)
            if not status & hb.STATUS_BUSY:
                break
            if time.monotonic() > deadline:
                raise SdhwError(f"the accelerator is still busy after {self.poll_timeout} s (status {status:#x})")
        code = (status >> 8) & 0xFF
        out = []
        if status & hb.STATUS_DONE and not status & hb.STATUS_ERROR:
            n_out = image.run_outputs
            out = [v - (1 << 32) if v >= 1 << 31 else v for v in self.read_words(image.output_region << 16, n_out)]
        return {"output": np.asarray(out, dtype=np.int64), "status": status, "error_code": code,
                "error": hb.ERROR_NAMES.get(code, f"error code {code}") if status & hb.STATUS_ERROR else None,
                "layer": status >> 16, **self.counters()}


def load_input(image, path) -> np.ndarray:
    """Inputs for ``image`` from a ``.npy`` file: ``(batch, n_in)`` int8 values.

    Integer arrays are taken as quantised int8 inputs; float arrays are quantised with the image's input
    scale and zero point (``golden.quant.QParams.quantize``, as ``golden.program.infer`` does). The array
    holds one input (``input_shape`` or flat) or a batch of them.
    """
    x = load_npy_array(path, "input")
    shape = tuple(image.meta["input_shape"])
    n_in = int(np.prod(shape))
    if x.size == 0 or x.size % n_in:
        raise SdhwError(f"input {str(path)!r} has shape {x.shape} ({x.size} values); the program takes inputs "
                        f"of shape {shape} ({n_in} values), one or a batch")
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < -128 or x.max() > 127:
            raise SdhwError(f"integer input {str(path)!r} must hold int8 values (-128..127), found "
                            f"{x.min()}..{x.max()}; give float inputs to have them quantised")
        x_q = x.astype(np.int64)
    elif np.issubdtype(x.dtype, np.floating):
        if "input_scale" not in image.meta or "input_zero_point" not in image.meta:
            raise SdhwError(f"input {str(path)!r} is float but the program image has no input scale and zero "
                            "point; give int8 quantised inputs")
        if not np.all(np.isfinite(x)):
            raise SdhwError(f"input {str(path)!r} holds NaN or infinite values")
        from golden.quant import QParams
        with np.errstate(over="ignore"):            # values past the int8 range saturate, as intended
            x_q = QParams(float(image.meta["input_scale"]), int(image.meta["input_zero_point"])).quantize(x)
    else:
        raise SdhwError(f"input {str(path)!r} has dtype {x.dtype}; expected int8 values or floats")
    return x_q.reshape(-1, n_in)


def run_on_board(transport: Transport, image, inputs, *, poll_timeout: float = 10.0,
                 retries: int = DEFAULT_RETRIES) -> dict:
    """Identify the board, check the image fits it, load it, run every input: in runs of the image's batch
    (a last run short of inputs is filled with zeros, whose outputs are dropped).

    Returns ``{"board": identify(), "words_loaded": n, "results": [...], "runs": [...], "retried": n}``:
    ``results`` one per input (its ``output`` and ``run``, the index of its run), ``runs`` one
    :meth:`Host.run` result per run (outputs, status, counters); ``retried``: requests re-sent after line
    errors. An accelerator error (its error flag) raises :class:`golden.SdhwError` naming the error code and
    the layer.
    """
    host = Host(transport, poll_timeout=poll_timeout, retries=retries)
    info = host.identify()
    host.check_image(image, info)
    loaded = host.load(image)
    n_in = int(np.prod(image.meta["input_shape"]))
    xs = [np.asarray(x).reshape(-1) for x in inputs]
    batch, results, runs = image.batch, [], []
    for first in range(0, len(xs), batch):
        chunk = xs[first:first + batch]
        run = host.run(image, np.concatenate(chunk + [np.zeros(n_in, dtype=np.int64)] * (batch - len(chunk))))
        which = f"input {first}" if batch == 1 else f"inputs {first}..{first + len(chunk) - 1}"
        if run["error"] is not None:
            raise SdhwError(f"the accelerator stopped with error {run['error_code']} ({run['error']}) at "
                            f"layer {run['layer']} of {which}")
        if not run["status"] & hb.STATUS_DONE:
            raise SdhwError(f"the accelerator did not finish {which} (status {run['status']:#x})")
        runs.append(run)
        for output in np.split(run["output"], batch)[:len(chunk)]:
            results.append({"output": output, "run": len(runs) - 1})
    return {"board": info, "words_loaded": loaded, "results": results, "runs": runs, "retried": host.retried}


def open_serial(port: str, baud: int = 115200, *, timeout: float = 1.0):
    """A pyserial port (8N1) as a transport; pyserial is imported here only."""
    try:
        import serial
    except ImportError:
        raise SdhwError("pyserial is not installed (pip install pyserial, or make install)") from None
    try:
        return serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SdhwError(f"cannot open serial port {port!r}: {exc}") from None
