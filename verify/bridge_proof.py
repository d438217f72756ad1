"""Proof harness of the UART bridge (:class:`fpga.bridge.UartBridge`): a reference of the request being received,
built from the bytes the bridge accepts, says which bus accesses and which response the request must give.

The reference follows the framing of ``docs/UART.md`` on the bridge's ports only: between frames every byte but
SYNC is ignored; after SYNC each accepted byte (``rx.valid & rx.ready``) is the frame's next byte (CMD, ADDR,
COUNT, PAYLOAD, CHECK) and goes into a CRC-16/MODBUS (:func:`fpga.bridge.crc16_step`); a framing error ends the
frame, and so does the cycle after ``timeout`` cycles without a byte, whatever comes in it (a byte or framing
error then is dropped: the frame ends with TIMEOUT); the frame is answered by one response, after which the next
SYNC starts a new frame.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Elaboratable, Fragment, Module, Mux, Signal
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Cover, MemoryInstance

from fpga.bridge import (
    CMD_PING,
    CMD_READ,
    CMD_WRITE,
    CRC_INIT,
    HEADER_BYTES,
    PING_WORDS,
    PROTOCOL_VERSION,
    STATUS_BAD_ADDR,
    STATUS_BAD_CHECK,
    STATUS_BAD_CMD,
    STATUS_BAD_COUNT,
    STATUS_FRAMING,
    STATUS_OK,
    STATUS_TIMEOUT,
    SYNC_REQUEST,
    SYNC_RESPONSE,
    UartBridge,
    crc16_step,
)
from sdhw.hostbus import ADDR_BITS

from .harness import checked_sink, no_reset

#: the bridge proof's parameters: two words per request (so a request of the most words, its execution and its
#: response fit the check's depth) and an inter-byte timeout of four cycles
BRIDGE_MAX_WORDS = 2
BRIDGE_TIMEOUT = 4

# the reference's phases: between frames, inside a frame (after its SYNC), frame ended and not yet answered
_WAITING, _RECEIVING, _ANSWERING = 0, 1, 2
RESPONSE_HEADER_BYTES = 4                      # SYNC, STATUS, COUNT (2)
#: the bridge's states (one flip-flop each, ``bridge_<state>``), for the lemmas over its internals
BRIDGE_STATES = ("IDLE", "HEADER", "VALIDATE", "PAYLOAD", "CHECK", "SETTLE", "VERDICT", "DRAIN", "EXEC_READ",
                 "EXEC_WRITE", "R_LOAD", "R_HEAD", "R_FETCH", "R_LATCH", "R_DATA", "R_CRC", "R_CHECK")


def register_of(fragment: Fragment, name: str) -> Signal:
    """The register ``name`` (a signal of the ``sync`` domain) of an elaborated block or of one of its
    subfragments, for a lemma over the block's state; ValueError unless exactly one has that name."""
    found = {}

    def walk(frag):
        # the signals a statement assigns, nested ones included (Amaranth's own walk; no public one)
        for statement in getattr(frag, "statements", {}).get("sync", []):
            found.update((id(signal), signal) for signal in statement._lhs_signals() if signal.name == name)
        for sub, _, _ in getattr(frag, "subfragments", []):
            walk(sub)
    walk(fragment)
    if len(found) != 1:
        raise ValueError(f"{len(found)} registers named {name!r} in the block, not one")
    return next(iter(found.values()))


def memory_contents(fragment: Fragment, depth: int, width: int) -> list[Signal]:
    """The words of the one memory of an elaborated block, as signals (an asynchronous read port per address
    added to it), for a lemma over its contents; ValueError unless the block has exactly one memory."""
    found = []

    def walk(frag):
        if isinstance(frag, MemoryInstance):
            found.append(frag)
        for sub, _, _ in getattr(frag, "subfragments", []):
            walk(sub)
    walk(fragment)
    if len(found) != 1:
        raise ValueError(f"{len(found)} memories in the block, not one")
    contents = []
    for address in range(depth):
        data = Signal(width, name=f"memory_word{address}")
        found[0].read_port(domain="comb", addr=Const(address, (depth - 1).bit_length()), data=data, en=Const(1),
                           transparent_for=())
        contents.append(data)
    return contents


def bridge_cover_depth(max_words: int = BRIDGE_MAX_WORDS, timeout: int = BRIDGE_TIMEOUT) -> int:
    """The cycles the covers of :class:`BridgeProof` need, one byte in each cycle the bridge takes one: a read of
    ``max_words`` words answered in full (SYNC, six header bytes, the header check, two CRC bytes, two cycles of
    frame check, the response's load and four header bytes, per word a fetch, a latch and four bytes, then the
    CRC's load and two bytes: last byte in cycle ``19 + 6 * max_words``), or a frame that ``timeout`` ends,
    answered, then a one-word write reaching the bus (cycle ``timeout + 27``)."""
    return max(19 + 6 * max_words, timeout + 27) + 1


def bridge_mutant_depth(max_words: int = BRIDGE_MAX_WORDS) -> int:
    """The cycles a check from reset needs to see a write of ``max_words`` words reach the bus and its response
    start (its last bus write in cycle ``11 + 6 * max_words``, the response's first byte two cycles later): deep
    enough for every broken bridge of :mod:`verify.mutants` to show its fault."""
    return 11 + 6 * max_words + 3


class BridgeProof(Elaboratable):
    """:class:`~fpga.bridge.UartBridge`: a frame with a bad length, header or checksum never reaches the host bus;
    a good frame performs exactly its accesses and gets the response it should.

    Free inputs: ``rx`` (any byte, valid in any cycle: a byte the bridge does not accept is lost), ``rx_error`` in
    any cycle but one (below), ``tx.ready``, and the bus's read answers: ``r_valid`` any time after an ``r_en``
    it answers (any latency, in order), ``r_data`` any word.

    Asserted in every cycle, with the reference of the module docstring (``COUNT`` and ``ADDR`` as the frame's
    header gave them; a frame is *good* when its command is known, for a write or a read ``ADDR`` bits 20..23 are
    0 and ``COUNT`` is in ``1..max_words``, all its bytes came with no framing error and no ``timeout``-cycle gap,
    and the CRC over every byte after SYNC, CHECK included, is 0):

    * a bus write happens only in answer to a good write frame, once per payload word: the k-th at address
      ``ADDR + k`` (modulo 2**20) with the frame's k-th word, all of them before the response, ``COUNT`` in all;
    * a bus read happens only in answer to a good read frame: the k-th at ``ADDR + k``, ``COUNT`` in all; never a
      read and a write in one cycle;
    * a response is sent only after a frame has ended, one per frame: ``A5``, the status the frame earns (OK,
      BAD_CMD, BAD_ADDR, BAD_COUNT in the bridge's order of checks, BAD_CHECK, TIMEOUT, FRAMING), the data words'
      count (the read's ``COUNT``, 1 for a ping, else 0), the words (a read's: the bus's answers in order; a
      ping's: version, rejected frames, ``max_words``), and the CRC-16/MODBUS of STATUS .. DATA, little-endian;
    * ``rejected`` counts the error responses; ``rx.ready`` is low exactly in the cycle after a frame's sixth
      header byte; ``tx`` keeps the stream rules (valid held, payload stable until ready).

    Lemmas, asserted too (:meth:`state_lemmas`): the bridge's state flags (one high), counters, header and its
    verdict flags, word, CRC and timer registers and its buffer's contents are those the reference's phase and
    counts call for. With them the assertions are inductive: a k-induction of depth 2 proves them in every
    reachable state, for runs of any length. Without them a solver cannot see that the bridge's CRC register and
    the reference's agree (XOR after XOR over every run that led there): a bounded check took minutes per cycle
    past cycle 14. They name the bridge's registers and state flags and read its buffer through a port added for
    the proof, so a change of the bridge's internals may need a change of them (:func:`register_of` and
    :func:`memory_contents` say which name is missing).

    Covers: a write of ``max_words`` words reaches its last bus write; a read of ``max_words`` words is answered
    in full; a frame with a bad checksum and a truncated frame are answered (their status byte sent); a write
    after a rejected frame reaches the bus.
    """

    def __init__(self, dut: UartBridge | None = None, *, max_words: int = BRIDGE_MAX_WORDS,
                 timeout: int = BRIDGE_TIMEOUT):
        self.max_words, self.timeout = max_words, timeout
        self.dut = dut if dut is not None else UartBridge(max_words=max_words, timeout=timeout)

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        m.submodules.dut = fragment = Fragment.get(dut, platform)
        no_reset(m)
        max_words, timeout = self.max_words, self.timeout
        bus, tx = dut.bus, dut.tx
        rx_error, byte = AnySeq(1), AnySeq(8)
        m.d.comb += [dut.rx.valid.eq(AnySeq(1)), dut.rx.payload.eq(byte), dut.rx_error.eq(rx_error),
                     bus.r_valid.eq(AnySeq(1)), bus.r_data.eq(AnySeq(32))]
        checked_sink(m, tx, "tx")

        # the bus answers each read once, in order, a cycle or more after it
        pending = Signal(2, name="bus_pending")
        m.d.comb += Assume(~bus.r_valid | (pending != 0))
        m.d.sync += pending.eq(pending + bus.r_en - bus.r_valid)

        # ------------------------------------------------------------------------ the frame being received
        ref = _Reference(max_words, timeout)
        phase, pos, cmd, addr, count, words = ref.phase, ref.pos, ref.cmd, ref.addr, ref.count, ref.words
        crc, gap, checking, status = ref.crc, ref.gap, ref.checking, ref.status
        got = dut.rx.valid & dut.rx.ready
        crc_next = Signal(16, name="ref_crc_next")
        m.d.comb += crc_next.eq(crc16_step(crc, byte))
        m.d.sync += [checking.eq(0), ref.settle.eq(0), ref.verdict.eq(ref.settle), ref.stored.eq(0)]

        known = (cmd == CMD_WRITE) | (cmd == CMD_READ) | (cmd == CMD_PING)
        header_status = ref.header_status
        m.d.comb += header_status.eq(
            Mux(~known, STATUS_BAD_CMD,
                Mux(cmd == CMD_PING, STATUS_OK,
                    Mux(addr[ADDR_BITS:] != 0, STATUS_BAD_ADDR,
                        Mux((count == 0) | (count > max_words), STATUS_BAD_COUNT, STATUS_OK)))))
        frame_end = ref.payload_end + 2

        def end(value):
            m.d.sync += [phase.eq(_ANSWERING), status.eq(value)]

        with m.Switch(phase):
            with m.Case(_WAITING):
                with m.If(rx_error):
                    end(STATUS_FRAMING)
                with m.Elif(got & (byte == SYNC_REQUEST)):
                    m.d.sync += [phase.eq(_RECEIVING), pos.eq(0), crc.eq(CRC_INIT), gap.eq(0)]
            with m.Case(_RECEIVING):
                with m.If(gap == timeout):
                    end(STATUS_TIMEOUT)
                with m.Elif(rx_error):
                    end(STATUS_FRAMING)
                with m.Elif(checking):
                    with m.If(header_status != STATUS_OK):
                        end(header_status)
                with m.Elif(got):
                    m.d.sync += [crc.eq(crc_next), pos.eq(pos + 1), gap.eq(0)]
                    with m.Switch(pos):
                        with m.Case(0):
                            m.d.sync += cmd.eq(byte)
                        for i in range(3):
                            with m.Case(1 + i):
                                m.d.sync += addr[8 * i:8 * i + 8].eq(byte)
                        for i in range(2):
                            with m.Case(4 + i):
                                m.d.sync += count[8 * i:8 * i + 8].eq(byte)
                        for k in range(max_words):
                            for i in range(4):
                                with m.Case(HEADER_BYTES + 4 * k + i):
                                    m.d.sync += words[k][8 * i:8 * i + 8].eq(byte)
                    with m.If(pos == HEADER_BYTES - 1):
                        m.d.sync += checking.eq(1)
                    with m.If(ref.in_payload & (ref.payload_offset[:2] == 3)):
                        m.d.sync += ref.stored.eq(1)
                    with m.If((pos >= HEADER_BYTES) & (pos + 1 == frame_end)):
                        end(Mux(crc_next == 0, STATUS_OK, STATUS_BAD_CHECK))
                        m.d.sync += ref.settle.eq(1)
                with m.Else():
                    m.d.sync += gap.eq(gap + 1)

        m.d.comb += Assert(dut.rx.ready == ~checking, "bridge: rx.ready not low exactly after the header")

        # ------------------------------------------------------------------------ the bus accesses it asks for
        answering = phase == _ANSWERING
        good = ref.good
        writes, reads, answers, returned = ref.writes, ref.reads, ref.answers, ref.returned
        with m.If(phase == _WAITING):
            m.d.sync += [writes.eq(0), reads.eq(0), answers.eq(0)]
        with m.If(bus.w_en):
            m.d.sync += writes.eq(writes + 1)
            m.d.comb += [
                Assert(good & (cmd == CMD_WRITE) & (writes < count),
                       "bridge: a bus write not asked for by a good write frame"),
                Assert(bus.addr == (addr + writes)[:ADDR_BITS], "bridge: a bus write to the wrong address"),
                Assert(bus.w_data == Array(words)[writes], "bridge: a bus write of the wrong word"),
            ]
        with m.If(bus.r_en):
            m.d.sync += reads.eq(reads + 1)
            m.d.comb += [
                Assert(good & (cmd == CMD_READ) & (reads < count),
                       "bridge: a bus read not asked for by a good read frame"),
                Assert(bus.addr == (addr + reads)[:ADDR_BITS], "bridge: a bus read from the wrong address"),
            ]
        with m.If(bus.r_valid & answering):
            m.d.sync += [Array(returned)[answers].eq(bus.r_data), answers.eq(answers + 1)]
        m.d.comb += Assert(~(bus.w_en & bus.r_en), "bridge: a bus read and write in one cycle")

        # ------------------------------------------------------------------------ the response it earns
        data_words, sent, response_crc, rejected = ref.data_words, ref.sent, ref.response_crc, ref.rejected
        taken = tx.valid & tx.ready
        word_index, byte_index = ref.data_index[2:], ref.data_index[:2]
        first_crc_byte = ref.first_crc_byte
        last_byte = taken & (sent == first_crc_byte + 1)
        with m.If(phase == _WAITING):
            m.d.sync += sent.eq(0)
        m.d.comb += Assert(~tx.valid | answering, "bridge: a response with no frame ended to answer")
        with m.If(taken):
            m.d.sync += sent.eq(sent + 1)
            with m.If(sent < first_crc_byte):
                m.d.sync += response_crc.eq(Mux(sent == 0, CRC_INIT, crc16_step(response_crc, tx.payload)))
            with m.If(sent == 0):
                m.d.comb += [Assert(tx.payload == SYNC_RESPONSE, "bridge: a response not starting with A5"),
                             Assert(writes == Mux(good & (cmd == CMD_WRITE), count, 0),
                                    "bridge: not exactly COUNT bus writes before the response")]
            with m.Elif(sent == 1):
                m.d.comb += Assert(tx.payload == status, "bridge: a response with the wrong status")
            with m.Elif(sent < RESPONSE_HEADER_BYTES):
                m.d.comb += Assert(tx.payload == data_words.word_select(sent[0], 8),
                                   "bridge: a response with the wrong word count")
            with m.Elif(sent < first_crc_byte):
                m.d.comb += [Assert((cmd == CMD_PING) | (word_index < answers),
                                    "bridge: a read word sent before the bus returned it"),
                             Assert(tx.payload == ref.data_word(word_index).word_select(byte_index, 8),
                                    "bridge: a response data byte differs from the word read")]
            with m.Elif(sent == first_crc_byte):
                m.d.comb += Assert(tx.payload == response_crc[:8], "bridge: a response's CRC is wrong")
            with m.Else():
                m.d.comb += [Assert(tx.payload == response_crc[8:], "bridge: a response's CRC is wrong"),
                             Assert(reads == Mux(good & (cmd == CMD_READ), count, 0),
                                    "bridge: not exactly COUNT bus reads for the response")]
                m.d.sync += [phase.eq(_WAITING), rejected.eq(rejected + (status != STATUS_OK))]
        m.d.comb += Assert(dut.rejected == rejected, "bridge: rejected differs from the error responses sent")

        self.state_lemmas(m, fragment, ref, pending)

        m.d.comb += [
            Cover(bus.w_en & (count == max_words) & (writes == max_words - 1)),
            Cover(last_byte & good & (cmd == CMD_READ) & (count == max_words)),
            Cover(taken & (sent == 1) & (status == STATUS_BAD_CHECK)),
            Cover(taken & (sent == 1) & (status == STATUS_TIMEOUT)),
            Cover(bus.w_en & (rejected != 0)),
        ]
        return m

    def state_lemmas(self, m: Module, fragment: Fragment, ref: _Reference, pending: Signal) -> None:
        """Assert that the bridge's state flags, counters, header, CRC, timer and byte registers are those the
        reference's phase and counts call for: the state it is in for every part of a frame and of a response,
        the bytes received so far in its header and word registers, the bytes still to send in its word
        register."""
        reg = {name: register_of(fragment, name)
               for name in ("crc", "bad_crc", "hdr", "idx", "nbyte", "word", "status", "timer", "quiet", "has_data",
                            "buffer_write", "buffer_addr", "w_en", "last", "responding", "is_write", "is_read",
                            "is_ping", "bad_addr", "bad_count", "count_low_zero", "count_low_above", "bad_header")}
        flags = {state: register_of(fragment, f"bridge_{state.lower()}") for state in BRIDGE_STATES}

        def at(*states):
            return Cat(flags[state] for state in states).any()

        lemmas = []

        def lemma(condition, text):
            m.d.comb += Assert(condition, f"bridge state: {text}", src_loc_at=1)
            lemmas.append(condition)

        one_hot = Signal(range(len(flags) + 1), name="bridge_states_on")
        m.d.comb += one_hot.eq(sum(flag for flag in flags.values()))
        lemma(one_hot == 1, "exactly one state flag high")

        def prefix_is(register, value, count_bytes, width):
            """``register`` holds ``value``'s bytes from byte ``count_bytes`` on, in its low bytes"""
            return Cat((count_bytes != j) | (register[:width - 8 * j] == value[8 * j:width])
                       for j in range(width // 8)).all()

        phase, pos, cmd, addr, count = ref.phase, ref.pos, ref.cmd, ref.addr, ref.count
        receiving, answering = phase == _RECEIVING, phase == _ANSWERING
        header = Cat(cmd, addr, count)
        hdr, idx, nbyte, word = reg["hdr"], reg["idx"], reg["nbyte"], reg["word"]
        in_header = receiving & ~ref.checking & (pos < HEADER_BYTES)
        in_payload = receiving & ~ref.checking & ref.in_payload
        in_check = receiving & ~ref.checking & (pos >= HEADER_BYTES) & ~ref.in_payload
        lemma((phase == _WAITING) == at("IDLE"), "IDLE between frames")
        lemma(in_header == at("HEADER"), "HEADER for the header's bytes")
        lemma(ref.checking == at("VALIDATE"), "VALIDATE after the header")
        lemma(in_payload == at("PAYLOAD"), "PAYLOAD for a write's words")
        lemma(in_check == at("CHECK"), "CHECK for the CRC bytes")
        lemma(ref.settle == at("SETTLE"), "SETTLE after the frame's last byte")
        lemma(ref.verdict == at("VERDICT"), "VERDICT two cycles after the frame's last byte")
        lemma(phase != 3, "no fourth phase")
        lemma(~ref.checking | (pos == HEADER_BYTES), "the header checked after its sixth byte")
        lemma(~receiving | (pos < HEADER_BYTES) | (pos < ref.payload_end + 2), "no byte past the frame")

        bridge_crc = reg["crc"]
        deciding = ref.settle | ref.verdict
        lemma(~(receiving | deciding) | (bridge_crc == ref.crc), "CRC of the frame")
        lemma(~ref.verdict | (reg["bad_crc"] == (ref.crc != 0)), "the frame's CRC verdict in bad_crc")
        lemma(~deciding | ((reg["status"] == STATUS_OK) & (idx == 0) & (nbyte == 0)
                           & (ref.status == Mux(ref.crc == 0, STATUS_OK, STATUS_BAD_CHECK))),
              "no status before the verdict, counters cleared")
        lemma(~receiving | ((reg["timer"] == ref.gap[:len(reg["timer"])]) &
                            (reg["quiet"] == (ref.gap == self.timeout)) & (reg["status"] == STATUS_OK)),
              "inter-byte timer")
        lemma(~in_header | ((idx == pos) & Cat((pos != p) | (hdr[48 - 8 * p:] == header[:8 * p])
                                               for p in range(1, HEADER_BYTES)).all()),
              "header bytes received")
        lemma(~((receiving & (pos >= HEADER_BYTES)) | deciding) | (hdr == header), "header held")
        lemma(~((receiving & ~ref.checking & (pos >= HEADER_BYTES)) | deciding | ref.good)
              | (ref.header_status == STATUS_OK), "a frame past its header has a good header")
        # the header's verdicts the bridge keeps in flags: those of the bytes received so far, then of the header
        flag_cmd = Cat(reg["is_write"], reg["is_read"], reg["is_ping"])

        def cmd_flags(value):
            return Cat(value == CMD_WRITE, value == CMD_READ, value == CMD_PING)

        def count_low_flags(value):
            return Cat(value == 0, value > (self.max_words & 0xFF))
        low_flags = Cat(reg["count_low_zero"], reg["count_low_above"])
        lemma(~in_header | (pos < 1) | (flag_cmd == cmd_flags(cmd)), "command flags from the command byte")
        lemma(~in_header | (pos < 4) | (reg["bad_addr"] == (addr[ADDR_BITS:] != 0)), "address flag")
        lemma(~in_header | (pos < 5) | (low_flags == count_low_flags(count[:8])), "count flags from its low byte")
        header_known = (receiving & (pos >= HEADER_BYTES)) | deciding | ref.good
        bridge_count = hdr[32:48]
        bad_cmd = ~reg["is_write"] & ~reg["is_read"] & ~reg["is_ping"]
        lemma(~header_known
              | ((flag_cmd == cmd_flags(hdr[:8])) & (reg["bad_addr"] == (hdr[8 + ADDR_BITS:32] != 0))
                 & (low_flags == count_low_flags(bridge_count[:8]))
                 & (reg["bad_count"] == ((bridge_count == 0) | (bridge_count > self.max_words)))
                 & (reg["bad_header"] == (bad_cmd | (~reg["is_ping"] & (reg["bad_addr"] | reg["bad_count"]))))),
              "header flags")
        last_index = Mux(reg["is_ping"], PING_WORDS - 1, bridge_count - 1)[:self.max_words.bit_length()]
        lemma(~(at("EXEC_WRITE", "R_LATCH", "R_DATA") | (at("PAYLOAD") & (nbyte != 0)))
              | (reg["last"] == (idx == last_index)), "last: the request's last word")
        lemma(reg["responding"] == at("R_HEAD", "R_FETCH", "R_LATCH", "R_DATA", "R_CRC", "R_CHECK"),
              "the CRC steps over sent bytes while a response is sent")
        offset = ref.payload_offset
        lemma(~in_payload
              | ((idx == offset[2:]) & (nbyte == offset[:2])
                 & Cat((offset[:2] != j) | (word[32 - 8 * j:] == Array(ref.words)[offset[2:]][:8 * j])
                       for j in range(1, 4)).all()),
              "payload bytes received")
        lemma(~in_check | (nbyte == (pos - ref.payload_end)[:2]), "CRC bytes received")
        stored_index = (offset[2:] - 1)[:len(reg["buffer_addr"])]
        lemma(reg["buffer_write"] == ref.stored, "a payload word written to the buffer after its last byte")
        lemma(~ref.stored | ((reg["buffer_addr"] == stored_index) & (word == Array(ref.words)[stored_index])),
              "the word written to the buffer")
        buffered = Signal(range(self.max_words + 1), name="ref_buffered")      # payload words in the buffer
        m.d.comb += buffered.eq(Mux(receiving & ~ref.checking & (cmd == CMD_WRITE) & (pos >= HEADER_BYTES),
                                    offset[2:] - ref.stored, Mux(ref.good & (cmd == CMD_WRITE), count, 0)))
        for k, stored_word in enumerate(memory_contents(fragment, self.max_words, 32)):
            lemma((buffered <= k) | (stored_word == ref.words[k]), f"payload word {k} in the buffer")

        # ---------------------------------------------------------------------------------- the answer
        good = ref.good
        writes, reads, answers, sent = ref.writes, ref.reads, ref.answers, ref.sent
        bus_addr = hdr[8:8 + ADDR_BITS]
        lemma(~(answering & ~deciding) | (reg["status"] == ref.status), "status of the answer")
        lemma(~(receiving | at("SETTLE", "VERDICT", "DRAIN"))
              | ((writes == 0) & (reads == 0) & (ref.answers == 0) & (sent == 0)), "nothing done before the verdict")
        lemma(~good | (Cat(hdr[:8], hdr[8 + ADDR_BITS:]) == Cat(cmd, addr[ADDR_BITS:], count)), "good header held")
        lemma(~at("DRAIN") | (answering & (ref.status != STATUS_OK) & (ref.status != STATUS_TIMEOUT)),
              "DRAIN before an error response")
        lemma(~(good & (cmd != CMD_WRITE) & at("R_LOAD", "R_HEAD")) | (bus_addr == addr[:ADDR_BITS]),
              "a read's address held until its first fetch")
        executing = at("EXEC_READ", "EXEC_WRITE")
        lemma(~executing | (good & (cmd == CMD_WRITE) & (writes < count) & (idx == writes) & (sent == 0)
                            & (reads == 0) & (answers == 0) & (bus_addr == (addr + writes)[:ADDR_BITS])),
              "a write executing")
        lemma(reg["w_en"] == at("EXEC_WRITE"), "w_en in EXEC_WRITE")
        lemma(~at("R_LOAD", "R_HEAD", "R_FETCH", "R_LATCH", "R_DATA", "R_CRC", "R_CHECK")
              | (writes == Mux(good & (cmd == CMD_WRITE), count, 0)), "every write done before the response")
        lemma(~at("R_LOAD") | (answering & (sent == 0) & (reads == 0) & (answers == 0)), "response loaded")
        data_words = ref.data_words
        head_word = Cat(Const(SYNC_RESPONSE, 8), ref.status, Const(0, 5), data_words)
        lemma(~at("R_HEAD") | (answering & (sent == nbyte) & (idx == 0) & (reg["has_data"] == (data_words != 0))
                               & prefix_is(word, head_word, nbyte, 32) & (reads == 0) & (answers == 0)),
              "response header")
        reading = cmd == CMD_READ
        data_part = at("R_FETCH", "R_LATCH", "R_DATA")
        lemma(~data_part | (answering & reg["has_data"] & (idx < data_words)
                            & (sent == RESPONSE_HEADER_BYTES + 4 * idx + nbyte)
                            & (~reading | (bus_addr == (addr + idx)[:ADDR_BITS]))), "response data")
        lemma(~at("R_FETCH", "R_LATCH") | (nbyte == 0), "a word fetched before its bytes")
        lemma(~at("R_FETCH") | ((reads == Mux(reading, idx, 0)) & (answers == reads)), "a word to fetch")
        lemma(~at("R_LATCH") | ((reads == Mux(reading, idx + 1, 0)) & (answers == Mux(reading, idx, 0))),
              "a word fetched")
        lemma(~at("R_DATA") | ((reads == Mux(reading, idx + 1, 0)) & (answers == Mux(reading, idx + 1, 0))
                               & prefix_is(word, ref.data_word(idx), nbyte, 32)), "a word's bytes")
        lemma(pending == (answering & at("R_LATCH") & reading), "a read outstanding while the bridge waits")
        crc_part = at("R_CRC", "R_CHECK")
        lemma(~crc_part | (answering & (reads == Mux(good & reading, count, 0)) & (answers == reads)),
              "response data sent")
        lemma(~at("R_CRC") | (sent == ref.first_crc_byte), "response CRC loaded")
        lemma(~at("R_CHECK") | ((sent == ref.first_crc_byte + nbyte) & (nbyte < 2)
                                & prefix_is(word, ref.response_crc, nbyte, 16)),
              "response CRC bytes")
        lemma(~(answering & (sent != 0)) | (bridge_crc == ref.response_crc), "CRC of the response")
        lemma(~(at("R_HEAD") & (nbyte == 0)) | (bridge_crc == CRC_INIT), "the response's CRC started")

        # each lemma assumed in the cycles after it was checked: the cover task does not assume the asserts, and
        # without the lemmas it takes minutes a cycle to show that a cover is not reached yet
        held = Signal(init=1, name="lemmas_held")
        m.d.sync += held.eq(Cat(lemmas).all())
        m.d.comb += Assume(held)


class _Reference:
    """The reference's registers (``ref_*``) and what it derives from them."""

    def __init__(self, max_words: int, timeout: int):
        frame_bytes = HEADER_BYTES + 4 * max_words + 2
        self.phase = Signal(2, name="ref_phase")
        self.pos = Signal(range(frame_bytes + 1), name="ref_pos")           # bytes of the frame after SYNC
        self.cmd, self.addr, self.count = Signal(8, name="ref_cmd"), Signal(24, name="ref_addr"), \
            Signal(16, name="ref_count")
        self.words = [Signal(32, name=f"ref_word{k}") for k in range(max_words)]
        self.crc = Signal(16, name="ref_crc")
        self.gap = Signal(range(timeout + 1), name="ref_gap")               # cycles since the frame's last byte
        self.checking = Signal(name="ref_checking")                         # the cycle after the sixth header byte
        self.settle = Signal(name="ref_settle")                             # the cycle after the frame's last byte
        self.verdict = Signal(name="ref_verdict")                           # the cycle after that
        self.stored = Signal(name="ref_stored")                             # the cycle after a word's last byte
        self.status = Signal(3, name="ref_status")
        self.header_status = Signal(3, name="ref_header_status")            # the header's verdict, once complete
        self.writes = Signal(range(max_words + 2), name="ref_writes")
        self.reads = Signal(range(max_words + 2), name="ref_reads")
        self.answers = Signal(range(max_words + 2), name="ref_answers")     # read words returned by the bus
        self.returned = [Signal(32, name=f"ref_returned{k}") for k in range(max_words)]
        self.sent = Signal(range(RESPONSE_HEADER_BYTES + 4 * max_words + 3), name="ref_sent")
        self.response_crc = Signal(16, name="ref_response_crc")
        self.rejected = Signal(8, name="ref_rejected")
        self.max_words = max_words

        self.payload_end = HEADER_BYTES + Mux(self.cmd == CMD_WRITE, self.count * 4, 0)
        self.payload_offset = (self.pos - HEADER_BYTES)[:len(self.pos)]
        self.in_payload = (self.pos >= HEADER_BYTES) & (self.cmd == CMD_WRITE) & (self.pos < self.payload_end)
        self.good = (self.phase == _ANSWERING) & (self.status == STATUS_OK)
        self.data_words = Mux(self.good & (self.cmd == CMD_READ), self.count,
                              Mux(self.good & (self.cmd == CMD_PING), PING_WORDS, 0))[:16]
        self.first_crc_byte = RESPONSE_HEADER_BYTES + 4 * self.data_words
        self.data_index = (self.sent - RESPONSE_HEADER_BYTES)[:len(self.sent)]

    def data_word(self, index):
        """The response's data word ``index``: a read's word as the bus returned it, or the ping word."""
        ping_word = Cat(Const(PROTOCOL_VERSION, 8), self.rejected, Const(self.max_words, 16))
        return Mux(self.cmd == CMD_PING, ping_word, Array(self.returned)[index])
