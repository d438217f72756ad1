"""UART bridge: framed byte requests from the host become accesses on the accelerator's host bus.

The framing (``docs/UART.md``) in short: a request is ``5A CMD ADDR[3] COUNT[2] PAYLOAD CRC[2]``, a response
``A5 STATUS COUNT[2] DATA CRC[2]``; multi-byte fields little-endian, CRC-16/MODBUS over everything after the
sync byte. A request is executed only once its CRC has been checked: written words are buffered on chip and
reach the bus afterwards, so a corrupt or truncated frame is reported and never executed.

The protocol constants and a Python CRC live here, next to the hardware that defines them;
:mod:`fpga.host` (the host driver) and the tests use the same names.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sdhw.compare import above
from sdhw.fsm import OneHotFSM
from sdhw.hostbus import ADDR_BITS, HostBusSignature

SYNC_REQUEST = 0x5A
SYNC_RESPONSE = 0xA5
CMD_WRITE, CMD_READ, CMD_PING = 0x01, 0x02, 0x03
PROTOCOL_VERSION = 1
DEFAULT_MAX_WORDS = 128
PING_WORDS = 1                   # ping response: version | rejected frames << 8 | max_words << 16
HEADER_BYTES = 6                 # CMD, ADDR (3), COUNT (2)

STATUS_OK = 0
STATUS_BAD_CHECK = 1             # CRC mismatch
STATUS_BAD_CMD = 2               # unknown command byte
STATUS_BAD_COUNT = 3             # COUNT of a read/write outside 1..max_words
STATUS_BAD_ADDR = 4              # address bits 20..23 not zero
STATUS_TIMEOUT = 5               # the line went quiet in the middle of a frame (truncated frame)
STATUS_FRAMING = 6               # a character with a bad stop bit (wrong baud rate, noise)
STATUS_NAMES = {
    STATUS_OK: "ok",
    STATUS_BAD_CHECK: "bad checksum (the request was corrupted on the line)",
    STATUS_BAD_CMD: "unknown command",
    STATUS_BAD_COUNT: "bad word count",
    STATUS_BAD_ADDR: "address outside the 20-bit bus",
    STATUS_TIMEOUT: "truncated frame (inter-byte timeout)",
    STATUS_FRAMING: "UART framing error (bad stop bit: wrong baud rate or a noisy line)",
}

CRC_INIT = 0xFFFF
CRC_POLY_REFLECTED = 0xA001      # CRC-16/MODBUS: poly 0x8005 reflected, init 0xFFFF, no final xor


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/MODBUS of ``data`` (``crc16(b"123456789") == 0x4B37``).

    Appending the result little-endian gives a message whose CRC is 0, which is how the bridge checks.
    """
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC_POLY_REFLECTED if crc & 1 else 0)
    return crc


def crc16_step(crc, byte):
    """The CRC after one more byte, as a combinational Amaranth expression (8 unrolled bit steps)."""
    c = crc ^ byte
    for _ in range(8):
        c = (c >> 1) ^ Mux(c[0], CRC_POLY_REFLECTED, 0)
    return c[:16]


class UartBridge(wiring.Component):
    """Framed requests (byte stream in) -> host-bus accesses (initiator) -> framed responses (byte stream out).

    Commands: write ``COUNT`` words from ``ADDR`` on (address + 1 per word), read ``COUNT`` words, ping (one
    word: the protocol version, the rejected-frame counter and ``max_words``). Every request gets exactly one
    response.
    Errors (``STATUS_*``) are answered without executing anything; after a header error, a bad checksum or a
    framing error the bridge first drops bytes until the line has been quiet for ``timeout`` cycles, so the
    rest of a bad frame cannot be mistaken for a new one. A frame that stops in the middle is answered with
    ``STATUS_TIMEOUT`` once ``timeout`` cycles have passed without a byte; the timeout wins over a byte or a
    framing error in the cycle after those (the byte is dropped, the status is ``STATUS_TIMEOUT``).

    Latency: a frame is decided 2 cycles after its last CRC byte (its CRC's verdict is registered first); a
    write then reaches the bus 2 cycles per word, then the response starts; a read word is fetched (1 bus
    cycle + 1) just before its four bytes are sent. Throughput: bytes are taken one per cycle (``rx.ready`` is
    high except in the cycle after the six header bytes; bytes that arrive while a request executes or its
    response is sent are dropped) and sent as fast as ``tx`` accepts them, so the UART line rate is the only
    limit.

    Parameters
    ----------
    max_words : int
        Largest ``COUNT`` of one request (words buffered on chip), 1..1024.
    timeout : int
        Inter-byte timeout in clock cycles (at least 2; give it several character times: ``20 * divisor``
        or more, and more than the gaps a USB-serial adapter leaves).

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Received bytes (from :class:`fpga.uart.UartRx`).
    rx_error : In(1)
        Framing-error pulse from the receiver.
    tx : Out(stream.Signature(8))
        Bytes to send (to :class:`fpga.uart.UartTx`).
    bus : Out(HostBusSignature)
        The accelerator's host port, bridge side.
    rejected : Out(8)
        Frames answered with an error status since reset (wraps at 256).
    """

    rx: In(stream.Signature(8))
    rx_error: In(1)
    tx: Out(stream.Signature(8))
    bus: Out(HostBusSignature)
    rejected: Out(8)

    def __init__(self, *, max_words: int = DEFAULT_MAX_WORDS, timeout: int):
        if isinstance(max_words, bool) or not isinstance(max_words, int) or not 1 <= max_words <= 1024:
            raise ValueError(f"max_words must be an integer in 1..1024, not {max_words!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 2 <= timeout <= 1 << 32:
            raise ValueError(f"timeout (clock cycles) must be an integer in 2..2**32, not {timeout!r}")
        self.max_words = max_words
        self.timeout = timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        max_words = self.max_words
        # written while a frame arrives, read while it executes: never both in a cycle, so Yosys need not add
        # its read-during-write bypass (about 70 flip-flops and 40 LUTs on iCE40)
        m.submodules.buffer = buffer = Memory(shape=32, depth=max_words, init=[], attrs={"no_rw_check": 1})
        wr = buffer.write_port()
        rd = buffer.read_port()

        # the six header bytes shift into hdr: CMD at [0:8], ADDR at [8:32], COUNT at [32:48]
        hdr = Signal(48)
        addr = hdr[8:8 + ADDR_BITS]
        count = hdr[32:48]
        # the header's verdicts, registered as its bytes arrive (each from the byte that decides it), so that
        # VALIDATE and the response decide from flip-flops rather than from comparisons of the whole header
        is_write, is_read, is_ping = Signal(name="is_write"), Signal(name="is_read"), Signal(name="is_ping")
        bad_addr = Signal()
        bad_count = Signal()
        # COUNT's low byte 0, and above max_words' low byte
        count_low_zero, count_low_above = Signal(name="count_low_zero"), Signal(name="count_low_above")
        bad_header = Signal()                                    # any of the header's checks fails
        n_words = Signal(range(max_words + 1))         # words of the request (ping: 1)
        idx = Signal(range(max(max_words, HEADER_BYTES)))
        # idx is the request's last word, a cycle late: idx never changes in the cycle before a decision that reads it
        last = Signal()
        has_data = Signal()
        nbyte = Signal(2)
        word = Signal(32)                               # payload assembly, then every response byte
        crc = Signal(16)
        # crc != 0 a cycle late: the frame's verdict (VERDICT, the BAD_CHECK status) reads a flip-flop, not a 16-bit
        # compare; SETTLE gives it the cycle after the last CRC byte
        bad_crc = Signal()
        # the CRC's byte is the transmitted one while a response is sent (R_HEAD .. R_CHECK), else the received
        # one: a flip-flop selects it, not the state decoding, so the CRC's XOR trees start at flip-flops
        responding = Signal()
        crc_next = Signal(16)
        status = Signal(3)
        # cycles since the last byte, counted up from 0: every bit restarts the same way, so every flip-flop of its
        # carry chain takes the same set/reset net and nextpnr-ice40 can place the chain in one piece (a restart
        # to a non-zero value gives some bits a sync reset and others none, and splits the chain into 2-bit pieces)
        timer = Signal(range(self.timeout + 1))
        # timer == timeout: `timeout` whole cycles without a byte, in a register of its own, so that the timeout
        # ends a frame from this one flip-flop, whatever the receiver offers in the same cycle
        quiet = Signal()
        rejected = self.rejected
        byte = self.rx.payload
        # registered, not decoded from the state: a comb signal that depends on nothing but a state register
        # which has not changed since time 0 stays X in Icarus
        rx_ready = Signal(init=1)
        # the bus write enable from a flip-flop (high in EXEC_WRITE), not decoded from the state: the accelerator's
        # write decode and memory enables sit behind it, across the chip
        w_en = Signal()
        # a payload word goes into the buffer the cycle after its last byte, from the assembled word and a register
        # of its index: the receiver's handshake does not reach the buffer's address and data pins
        buffer_write = Signal()
        buffer_addr = Signal.like(idx)
        m.d.sync += buffer_write.eq(0)
        m.d.comb += [wr.en.eq(buffer_write), wr.addr.eq(buffer_addr), wr.data.eq(word)]
        m.d.comb += self.bus.w_en.eq(w_en)
        m.d.comb += [
            n_words.eq(Mux(is_ping, PING_WORDS, count)),
            crc_next.eq(crc16_step(crc, Mux(responding, word[:8], byte))),
            self.rx.ready.eq(rx_ready),
            rd.addr.eq(idx),
            self.bus.addr.eq(addr),
            self.bus.w_data.eq(rd.data),
            self.tx.payload.eq(word[:8]),
        ]
        # idx against the last word's index (COUNT - 1 of a header that no longer changes), not idx + 1 against
        # the count: idx's adder stays out of it
        m.d.sync += last.eq(idx == Mux(is_ping, PING_WORDS - 1, count - 1)[:len(n_words)])
        shift = word.eq(Cat(word[8:], byte))           # rx: assemble a word; tx: next byte (top byte unused)

        # one-hot: every decision starts at its state's own flip-flop, not at a decoding of a binary state. The
        # states only move between each other; the data registers are written below from flat conditions on the
        # flags, one `If` each: a nested `If` under a state's flag hides the registers' hold path from Yosys,
        # which then builds their enables out of LUTs
        fsm = OneHotFSM(m, ("IDLE", "HEADER", "VALIDATE", "PAYLOAD", "CHECK", "SETTLE", "VERDICT", "DRAIN",
                            "EXEC_READ", "EXEC_WRITE", "R_LOAD", "R_HEAD", "R_FETCH", "R_LATCH", "R_DATA", "R_CRC",
                            "R_CHECK"),
                        init="IDLE", prefix="bridge")
        framing = fsm["HEADER"] | fsm["PAYLOAD"] | fsm["CHECK"]     # a byte of the frame after SYNC expected
        sending = fsm["R_HEAD"] | fsm["R_DATA"] | fsm["R_CHECK"]
        error = self.rx_error
        # rx.ready is low in VALIDATE only: in every other state a valid byte is a received one, and the
        # decisions need not wait for rx.ready's flip-flop
        got = self.rx.valid
        accepted = got & ~error & ~quiet                # the frame's next byte (once quiet, the frame has ended)
        sent = sending & self.tx.ready
        header_byte = fsm["HEADER"] & accepted
        header_done = header_byte & (idx[:3] == HEADER_BYTES - 1)  # idx counts the header's bytes (0..5)
        word_received = fsm["PAYLOAD"] & accepted & (nbyte == 3)
        check_done = fsm["CHECK"] & accepted & nbyte[0]
        word_sent = fsm["R_DATA"] & self.tx.ready & (nbyte == 3)
        response_done = fsm["R_CHECK"] & self.tx.ready & nbyte[0]
        bad_cmd = ~is_write & ~is_read & ~is_ping
        # COUNT outside 1..max_words, from its high byte (arriving) and flags of its low byte
        count_high = byte
        count_bad = (((count_high == 0) & count_low_zero) | above(count_high, max_words >> 8)
                     | ((count_high == max_words >> 8) & count_low_above))

        with fsm.states():
            with fsm.state("IDLE"):
                with m.If(error):
                    fsm.goto("DRAIN")
                with m.Elif(got & (byte == SYNC_REQUEST)):
                    fsm.goto("HEADER")
            for name in ("HEADER", "PAYLOAD", "CHECK"):
                with fsm.state(name):
                    with m.If(error):
                        fsm.goto("DRAIN")
                    with m.Elif({"HEADER": header_done, "PAYLOAD": word_received & last, "CHECK": check_done}[name]):
                        fsm.goto({"HEADER": "VALIDATE", "PAYLOAD": "CHECK", "CHECK": "SETTLE"}[name])
                    # the timeout wins, as the last goto: the gotos above never clear R_LOAD's flag, which is
                    # then set from the quiet flip-flop alone and its next state waits on neither the receiver's
                    # error nor its byte
                    with m.If(quiet):
                        fsm.goto("R_LOAD")
            with fsm.state("VALIDATE"):                # one cycle (rx.ready low: the receiver keeps a byte)
                with m.If(error | bad_header):
                    fsm.goto("DRAIN")
                with m.Elif(is_write):
                    fsm.goto("PAYLOAD")
                with m.Else():
                    fsm.goto("CHECK")
            with fsm.state("SETTLE"):                  # one cycle: the frame's CRC, now in its register, sets bad_crc
                fsm.goto("VERDICT")
            with fsm.state("VERDICT"):                 # one cycle: the frame's CRC must be 0
                with m.If(bad_crc):
                    fsm.goto("DRAIN")
                with m.Elif(is_write):
                    fsm.goto("EXEC_READ")
                with m.Else():
                    fsm.goto("R_LOAD")
            with fsm.state("DRAIN"):                   # drop bytes until the line is quiet, then answer
                with m.If(quiet):
                    fsm.goto("R_LOAD")
            # ------------------------------------------------ a checked write, from the buffer to the bus
            with fsm.state("EXEC_READ"):               # the buffer's read port latches idx
                fsm.goto("EXEC_WRITE")
            with fsm.state("EXEC_WRITE"):             # R_LOAD's goto last, so that no other one clears its flag
                with m.If(~last):
                    fsm.goto("EXEC_READ")
                with m.Else():
                    fsm.goto("R_LOAD")
            # ------------------------------------------------ the response, one byte of `word` at a time
            with fsm.state("R_LOAD"):
                fsm.goto("R_HEAD")
            with fsm.state("R_HEAD"):                  # A5 STATUS COUNT[2]; the CRC starts after A5
                with m.If(self.tx.ready & (nbyte == 3)):
                    with m.If(has_data):
                        fsm.goto("R_FETCH")
                    with m.Else():
                        fsm.goto("R_CRC")
            with fsm.state("R_FETCH"):
                fsm.goto("R_LATCH")
            with fsm.state("R_LATCH"):                 # waits for the read data (any latency)
                with m.If(~is_read | self.bus.r_valid):
                    fsm.goto("R_DATA")
            with fsm.state("R_DATA"):
                with m.If(word_sent):
                    with m.If(last):
                        fsm.goto("R_CRC")
                    with m.Else():
                        fsm.goto("R_FETCH")
            with fsm.state("R_CRC"):
                fsm.goto("R_CHECK")
            with fsm.state("R_CHECK"):
                with m.If(response_done):
                    fsm.goto("IDLE")

        m.d.comb += [self.tx.valid.eq(sending), self.bus.r_en.eq(fsm["R_FETCH"] & is_read)]
        m.d.sync += w_en.eq(fsm["EXEC_READ"])

        # inter-byte timer: restarts on every byte (and framing error), counts up otherwise, up to `timeout`
        listening = framing | fsm["DRAIN"]
        with m.If(listening & ~got & ~error & ~quiet):
            m.d.sync += [timer.eq(timer + 1), quiet.eq(timer == self.timeout - 1)]
        with m.If(fsm["IDLE"] | (listening & (got | error)) | (fsm["VALIDATE"] & error)):
            m.d.sync += [timer.eq(0), quiet.eq(0)]

        with m.If(fsm["IDLE"]):
            m.d.sync += status.eq(STATUS_OK)
        with m.If(fsm["VALIDATE"]):                    # the header's verdict, in the bridge's order of checks
            m.d.sync += status.eq(Mux(bad_cmd, STATUS_BAD_CMD, Mux(is_ping, STATUS_OK,
                                  Mux(bad_addr, STATUS_BAD_ADDR, Mux(bad_count, STATUS_BAD_COUNT, STATUS_OK)))))
        with m.If(fsm["VERDICT"] & bad_crc):
            m.d.sync += status.eq(STATUS_BAD_CHECK)
        with m.If((fsm["IDLE"] | framing | fsm["VALIDATE"]) & error):
            m.d.sync += status.eq(STATUS_FRAMING)
        # after FRAMING: a framing error in the cycle the timeout ends the frame is dropped like a byte
        with m.If(framing & quiet):
            m.d.sync += status.eq(STATUS_TIMEOUT)

        # the CRC: over the frame's bytes after SYNC, then over the response's after A5
        with m.If((framing & accepted) | (((fsm["R_HEAD"] & (nbyte != 0)) | fsm["R_DATA"]) & self.tx.ready)):
            m.d.sync += crc.eq(crc_next)
        with m.If(fsm["IDLE"] | fsm["R_LOAD"]):
            m.d.sync += crc.eq(CRC_INIT)
        m.d.sync += bad_crc.eq(crc != 0)

        # the header: its bytes, and its verdicts from the byte that decides each
        with m.If(header_byte):
            m.d.sync += hdr.eq(Cat(hdr[8:], byte))
        with m.If(header_byte & (idx[:3] == 0)):
            m.d.sync += [is_write.eq(byte == CMD_WRITE), is_read.eq(byte == CMD_READ), is_ping.eq(byte == CMD_PING)]
        with m.If(header_byte & (idx[:3] == 3)):
            m.d.sync += bad_addr.eq(byte[8 + ADDR_BITS - 24:] != 0)
        with m.If(header_byte & (idx[:3] == 4)):
            m.d.sync += [count_low_zero.eq(byte == 0), count_low_above.eq(above(byte, max_words & 0xFF))]
        with m.If(header_done):
            m.d.sync += [bad_count.eq(count_bad), bad_header.eq(bad_cmd | (~is_ping & (bad_addr | count_bad))),
                         rx_ready.eq(0)]
        with m.If(fsm["VALIDATE"]):
            m.d.sync += rx_ready.eq(1)
        with m.If(fsm["EXEC_WRITE"] | word_sent):
            m.d.sync += addr.eq(addr + 1)

        # counters: bytes of a word (nbyte), words or header bytes (idx)
        with m.If((fsm["PAYLOAD"] & accepted) | (fsm["CHECK"] & accepted) | sent):
            m.d.sync += nbyte.eq(nbyte + 1)
        with m.If(fsm["VALIDATE"] | check_done | fsm["R_LOAD"] | fsm["R_CRC"]):
            m.d.sync += nbyte.eq(0)
        with m.If(header_byte | word_received | fsm["EXEC_WRITE"] | word_sent):
            m.d.sync += idx.eq(idx + 1)
        with m.If(fsm["IDLE"] | fsm["VALIDATE"] | check_done | fsm["R_LOAD"]):
            m.d.sync += idx.eq(0)
        with m.If(word_received):
            m.d.sync += [buffer_write.eq(1), buffer_addr.eq(idx)]

        # word: a payload word being assembled, then the response's bytes
        with m.If((fsm["PAYLOAD"] & accepted) | sent):
            m.d.sync += shift
        with m.If(fsm["R_LOAD"]):
            ok_data = (status == STATUS_OK) & ~is_write
            m.d.sync += [word.eq(Cat(Const(SYNC_RESPONSE, 8), status, Const(0, 5), Mux(ok_data, n_words, 0),
                                     Const(0, 16 - len(n_words)))),
                         has_data.eq(ok_data), responding.eq(1)]
        with m.If(fsm["R_LATCH"] & ~is_read):
            m.d.sync += word.eq(Cat(Const(PROTOCOL_VERSION, 8), rejected, Const(max_words, 16)))
        with m.If(fsm["R_CRC"]):
            m.d.sync += word.eq(crc)
        # last, so that the bus's answer reaches the word register through one LUT
        with m.If(fsm["R_LATCH"] & self.bus.r_valid):
            m.d.sync += word.eq(self.bus.r_data)
        with m.If(response_done):
            m.d.sync += responding.eq(0)
        with m.If(response_done & (status != STATUS_OK)):
            m.d.sync += rejected.eq(rejected + 1)
        return m
