"""A board in plain Python for the host driver's and ``sdhw run``'s tests: speaks the bridge's framing (parsed
independently of fpga.host's encoder where it matters), holds the accelerator's memory map and runs programs
with golden. Modes make it fail the ways a real board can."""
from __future__ import annotations

import numpy as np

from fpga import bridge as br
from fpga.host import encode_response
from golden.program import Program, run_program
from rtl_gen.image import expected_counts
from sdhw import hostbus as hb
from sdhw.config import VERSION, AcceleratorConfig


class FakeBoard:
    """``write``/``read`` transport. ``mode``: None (works), "silent" (never answers), "reject" (every write
    is answered with a bad-checksum status), "error" (the accelerator raises error 8 at layer 1), "noisy" (a
    line that damages frames: of every five, the second is rejected unexecuted as corrupted and the fourth is
    executed but its response arrives corrupted, control writes included), "start-lost" (the first start
    request never arrives), "start-response-lost" (the first start runs but its response never arrives).
    ``starts`` counts the runs started; a run takes ``batch`` inputs."""

    def __init__(self, program: Program, cfg: AcceleratorConfig, *, mode: str | None = None, batch: int = 1):
        self.program, self.cfg, self.mode, self.batch = program, cfg, mode, batch
        self.mem: dict[int, int] = {}
        self.out = bytearray()
        self.status = 0
        self.counters = {hb.CSR_CYCLES: 0, hb.CSR_MACS: 0, hb.CSR_SKIPPED: 0, hb.CSR_STALLS: 0}
        self.frames = 0
        self.starts = 0
        self.closed = False

    # transport
    def write(self, data: bytes) -> int:
        self.frames += 1
        start = data[1] == br.CMD_WRITE and int.from_bytes(data[2:5], "little") == \
            (hb.REGION_CSR << 16) | hb.CSR_CONTROL and data[7] & hb.CONTROL_START
        if start and self.mode in ("start-lost", "start-response-lost"):
            if self.mode == "start-response-lost":
                self._handle(bytes(data))
            self.mode = None                            # once
            return len(data)
        if self.mode == "noisy" and self.frames % 5 == 2:
            self.out += encode_response(br.STATUS_BAD_CHECK)
        elif self.mode != "silent":
            response = bytearray(self._handle(bytes(data)))
            if self.mode == "noisy" and self.frames % 5 == 4:
                response[-1] ^= 0x40
            self.out += response
        return len(data)

    def read(self, n: int) -> bytes:
        data = bytes(self.out[:n])
        del self.out[:n]
        return data

    def close(self) -> None:
        self.closed = True

    # the bridge
    def _handle(self, frame: bytes) -> bytes:
        assert frame[0] == br.SYNC_REQUEST and br.crc16(frame[1:]) == 0, f"bad frame {frame.hex()}"
        cmd = frame[1]
        addr = int.from_bytes(frame[2:5], "little")
        count = int.from_bytes(frame[5:7], "little")
        assert len(frame) == 9 + (4 * count if cmd == br.CMD_WRITE else 0), f"frame length {frame.hex()}"
        if cmd == br.CMD_PING:
            return encode_response(br.STATUS_OK, [br.PROTOCOL_VERSION | br.DEFAULT_MAX_WORDS << 16])
        assert 1 <= count <= br.DEFAULT_MAX_WORDS
        if cmd == br.CMD_READ:
            return encode_response(br.STATUS_OK, [self._read(addr + k) for k in range(count)])
        if self.mode == "reject":
            return encode_response(br.STATUS_BAD_CHECK)
        for k in range(count):
            self._write(addr + k, int.from_bytes(frame[7 + 4 * k:11 + 4 * k], "little"))
        return encode_response(br.STATUS_OK)

    # the accelerator
    def _read(self, addr: int) -> int:
        region, offset = addr >> 16, addr & 0xFFFF
        cfg = self.cfg
        if region != hb.REGION_CSR:
            value = self.mem.get(addr, 0)
            return (value & 0xFF) - (256 if value & 0x80 else 0) & 0xFFFFFFFF if region >= hb.REGION_ACT0 else value
        depths = [0 if cfg.dense and name == "basis_depth" else getattr(cfg, name) for name in hb.DEPTH_CSRS]
        csr = {hb.CSR_ID: hb.ID_MAGIC, hb.CSR_VERSION: VERSION | int(cfg.dense) << 8 | cfg.exp_bits << 12,
               hb.CSR_LANES: cfg.channel_lanes | cfg.pixel_lanes << 16, hb.CSR_STATUS: self.status,
               **{hb.CSR_DEPTHS + k: d for k, d in enumerate(depths)}}
        for base, value in self.counters.items():
            csr[base], csr[base + 1] = value & 0xFFFFFFFF, value >> 32
        return csr.get(offset, 0)

    def _write(self, addr: int, word: int) -> None:
        if addr == (hb.REGION_CSR << 16) | hb.CSR_CONTROL:
            if word & hb.CONTROL_CLEAR:
                self.status &= ~(hb.STATUS_DONE | hb.STATUS_ERROR)
            if word & hb.CONTROL_START:
                self._start()
            return
        self.mem[addr] = word

    def _start(self) -> None:
        self.starts += 1
        if self.mode == "error":
            self.status = hb.STATUS_ERROR | hb.ERR_ACT_ADDR << 8 | 1 << 16
            return
        n_in = self.batch * int(np.prod(self.program.input_shape))
        x = [(self.mem.get((hb.REGION_ACT0 << 16) | k, 0) & 0xFF) for k in range(n_in)]
        x = np.asarray([v - 256 if v > 127 else v for v in x]).reshape(self.batch, *self.program.input_shape)
        y = run_program(self.program, x).reshape(-1)
        region = hb.REGION_ACT0 if len(self.program.layers) % 2 == 0 else hb.REGION_ACT1
        for k, v in enumerate(y):
            self.mem[(region << 16) | k] = int(v) & 0xFFFFFFFF
        counts = expected_counts(self.program, self.cfg, self.batch)
        self.counters = {hb.CSR_CYCLES: 1000 + counts["macs"], hb.CSR_MACS: counts["macs"],
                         hb.CSR_SKIPPED: counts["rows_skipped"], hb.CSR_STALLS: 0}
        self.status = hb.STATUS_DONE
