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
    ``STATUS_TIMEOUT`` ``timeout`` cycles after its last byte.

    Latency: a write reaches the bus 2 cycles per word after its last CRC byte, then the response starts; a
    read word is fetched (1 bus cycle + 1) just before its four bytes are sent. Throughput: bytes are taken
    one per cycle (``rx.ready`` is high except in the cycle after the six header bytes; bytes that arrive
    while a request executes or its response is sent are dropped) and sent as fast as ``tx`` accepts them,
    so the UART line rate is the only limit.

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
        cmd = hdr[0:8]
        addr = hdr[8:8 + ADDR_BITS]
        addr_top = hdr[8 + ADDR_BITS:32]
        count = hdr[32:48]
        n_words = Signal(range(max_words + 1))         # words of the request (ping: 1)
        idx = Signal(range(max(max_words, HEADER_BYTES)))
        last = Signal()
        has_data = Signal()
        nbyte = Signal(2)
        word = Signal(32)                               # payload assembly, then every response byte
        crc = Signal(16)
        crc_byte = Signal(8)
        crc_next = Signal(16)
        status = Signal(3)
        timer = Signal(range(self.timeout))
        quiet = Signal()                                # timer == 0, in a register of its own (off the FSM's paths)
        rejected = self.rejected
        byte = self.rx.payload
        got = Signal()
        # registered, not decoded from the state: a comb signal that depends on nothing but a state register
        # which has not changed since time 0 stays X in Icarus
        rx_ready = Signal(init=1)
        # the bus write enable from a flip-flop (high in EXEC_WRITE), not decoded from the state: the accelerator's
        # write decode and memory enables sit behind it, across the chip
        w_en = Signal()
        m.d.sync += w_en.eq(0)
        # a payload word goes into the buffer the cycle after its last byte, from the assembled word and a register
        # of its index: the receiver's handshake does not reach the buffer's address and data pins
        buffer_write = Signal()
        buffer_addr = Signal.like(idx)
        m.d.sync += buffer_write.eq(0)
        m.d.comb += [wr.en.eq(buffer_write), wr.addr.eq(buffer_addr), wr.data.eq(word)]
        m.d.comb += self.bus.w_en.eq(w_en)
        m.d.comb += [
            n_words.eq(Mux(cmd == CMD_PING, PING_WORDS, count)),
            last.eq(idx + 1 == n_words),
            crc_next.eq(crc16_step(crc, crc_byte)),
            crc_byte.eq(byte),
            got.eq(self.rx.valid & self.rx.ready),
            self.rx.ready.eq(rx_ready),
            rd.addr.eq(idx),
            self.bus.addr.eq(addr),
            self.bus.w_data.eq(rd.data),
            self.tx.payload.eq(word[:8]),
        ]
        shift = word.eq(Cat(word[8:], byte))           # rx: assemble a word; tx: next byte (top byte unused)

        def listen():
            """Inter-byte timer: restarts on every byte (and framing error), counts down otherwise."""
            with m.If(got | self.rx_error):
                m.d.sync += [timer.eq(self.timeout - 1), quiet.eq(0)]
            with m.Elif(~quiet):
                m.d.sync += [timer.eq(timer - 1), quiet.eq(timer == 1)]

        def receive():
            """A byte of the frame after SYNC: CRC it; a framing error or a timeout ends the frame."""
            listen()
            with m.If(self.rx_error):
                m.d.sync += status.eq(STATUS_FRAMING)
                m.next = "DRAIN"
            with m.Elif(got):
                m.d.sync += crc.eq(crc_next)
            with m.Elif(quiet):
                m.d.sync += status.eq(STATUS_TIMEOUT)
                m.next = "R_LOAD"
            return got & ~self.rx_error

        def send():
            """Put word[0:8] on the line; returns the handshake."""
            m.d.comb += [self.tx.valid.eq(1), crc_byte.eq(word[:8])]
            with m.If(self.tx.ready):
                m.d.sync += [shift, nbyte.eq(nbyte + 1)]
            return self.tx.ready

        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += [timer.eq(self.timeout - 1), quiet.eq(0), idx.eq(0), status.eq(STATUS_OK)]
                with m.If(self.rx_error):
                    m.d.sync += status.eq(STATUS_FRAMING)
                    m.next = "DRAIN"
                with m.Elif(got & (byte == SYNC_REQUEST)):
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(receive()):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], byte)), idx.eq(idx + 1)]
                    with m.If(idx == HEADER_BYTES - 1):
                        m.d.sync += rx_ready.eq(0)
                        m.next = "VALIDATE"
            with m.State("VALIDATE"):                  # one cycle (rx.ready low: the receiver keeps a byte)
                m.d.sync += [idx.eq(0), nbyte.eq(0), rx_ready.eq(1)]
                with m.If(self.rx_error):
                    listen()
                    m.d.sync += status.eq(STATUS_FRAMING)
                    m.next = "DRAIN"
                with m.Elif((cmd != CMD_WRITE) & (cmd != CMD_READ) & (cmd != CMD_PING)):
                    m.d.sync += status.eq(STATUS_BAD_CMD)
                    m.next = "DRAIN"
                with m.Elif(cmd == CMD_PING):
                    m.next = "CHECK"
                with m.Elif(addr_top != 0):
                    m.d.sync += status.eq(STATUS_BAD_ADDR)
                    m.next = "DRAIN"
                with m.Elif((count == 0) | above(count, max_words)):
                    m.d.sync += status.eq(STATUS_BAD_COUNT)
                    m.next = "DRAIN"
                with m.Elif(cmd == CMD_WRITE):
                    m.next = "PAYLOAD"
                with m.Else():
                    m.next = "CHECK"
            with m.State("PAYLOAD"):                   # buffered, not yet on the bus
                with m.If(receive()):
                    m.d.sync += [shift, nbyte.eq(nbyte + 1)]
                    with m.If(nbyte == 3):
                        m.d.sync += [buffer_write.eq(1), buffer_addr.eq(idx), idx.eq(idx + 1)]
                        with m.If(last):
                            m.next = "CHECK"
            with m.State("CHECK"):                     # two CRC bytes: the CRC over the frame must come out 0
                with m.If(receive()):
                    m.d.sync += nbyte.eq(nbyte + 1)
                    with m.If(nbyte[0]):
                        m.d.sync += [idx.eq(0), nbyte.eq(0)]
                        m.next = "VERDICT"
            with m.State("VERDICT"):                   # one cycle: the frame's CRC, now in its register, must be 0
                with m.If(crc != 0):
                    m.d.sync += status.eq(STATUS_BAD_CHECK)
                    m.next = "DRAIN"
                with m.Elif(cmd == CMD_WRITE):
                    m.next = "EXEC_READ"
                with m.Else():
                    m.next = "R_LOAD"
            with m.State("DRAIN"):                     # drop bytes until the line is quiet, then answer
                listen()
                with m.If(~got & ~self.rx_error & quiet):
                    m.next = "R_LOAD"
            # ------------------------------------------------ a checked write, from the buffer to the bus
            with m.State("EXEC_READ"):                 # the buffer's read port latches idx
                m.d.sync += w_en.eq(1)
                m.next = "EXEC_WRITE"
            with m.State("EXEC_WRITE"):
                m.d.sync += [addr.eq(addr + 1), idx.eq(idx + 1)]
                m.next = "EXEC_READ"
                with m.If(last):
                    m.next = "R_LOAD"
            # ------------------------------------------------ the response, one byte of `word` at a time
            with m.State("R_LOAD"):
                ok_data = (status == STATUS_OK) & (cmd != CMD_WRITE)
                m.d.sync += [word.eq(Cat(Const(SYNC_RESPONSE, 8), status, Const(0, 5), Mux(ok_data, n_words, 0),
                                         Const(0, 16 - len(n_words)))),
                             nbyte.eq(0), idx.eq(0), has_data.eq(ok_data)]
                m.next = "R_HEAD"
            with m.State("R_HEAD"):                    # A5 STATUS COUNT[2]; the CRC starts after A5
                with m.If(send()):
                    m.d.sync += crc.eq(Mux(nbyte == 0, CRC_INIT, crc_next))
                    with m.If(nbyte == 3):
                        m.next = "R_FETCH"
                        with m.If(~has_data):
                            m.next = "R_CRC"
            with m.State("R_FETCH"):
                m.d.comb += self.bus.r_en.eq(cmd == CMD_READ)
                m.next = "R_LATCH"
            with m.State("R_LATCH"):                   # waits for the read data (any latency)
                ping_word = Cat(Const(PROTOCOL_VERSION, 8), rejected, Const(max_words, 16))
                with m.If((cmd != CMD_READ) | self.bus.r_valid):
                    m.d.sync += word.eq(Mux(cmd == CMD_READ, self.bus.r_data, ping_word))
                    m.next = "R_DATA"
            with m.State("R_DATA"):
                with m.If(send()):
                    m.d.sync += crc.eq(crc_next)
                    with m.If(nbyte == 3):
                        m.d.sync += [idx.eq(idx + 1), addr.eq(addr + 1)]
                        m.next = "R_FETCH"
                        with m.If(last):
                            m.next = "R_CRC"
            with m.State("R_CRC"):
                m.d.sync += [word.eq(crc), nbyte.eq(0)]
                m.next = "R_CHECK"
            with m.State("R_CHECK"):
                with m.If(send()):
                    with m.If(nbyte[0]):
                        m.next = "IDLE"
                        with m.If(status != STATUS_OK):
                            m.d.sync += rejected.eq(rejected + 1)
        return m
