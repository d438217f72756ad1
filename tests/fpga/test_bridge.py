# amaranth: UnusedElaboratable=no
"""UartBridge in the Amaranth simulator against a small fake bus memory: writes then reads back, ping, every
error status, bad frames never executed (the memory is checked untouched), timeout recovery, backpressure."""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from fpga import bridge as br
from fpga.bridge import UartBridge, crc16
from fpga.host import decode_request, encode_ping, encode_read, encode_request, encode_response, encode_write

TIMEOUT = 40
MAX_WORDS = 8


class Garbage(bytes):
    """Bytes sent without waiting for a response."""


def run_bridge(items, *, seed: int = 1, max_words: int = MAX_WORDS, mem: dict | None = None,
               tx_stall: float = 0.0, framing_error_at: set | None = None):
    """Feed ``items`` to the bridge like a host does; return (responses, memory, bus writes).

    An item is a request frame (bytes: sent, then the response is awaited), :class:`Garbage` (sent, no
    response awaited) or an int (idle cycles). Bytes go out with 0-3 idle cycles between them (seeded); the
    bus model answers reads one cycle after ``r_en`` and records every write; ``framing_error_at``: indices
    of bytes replaced by a framing-error pulse; ``tx_stall``: probability that ``tx.ready`` is low.
    """
    rng = random.Random(seed)
    dut = UartBridge(max_words=max_words, timeout=TIMEOUT)
    mem = dict(mem or {})
    writes, out = [], []
    state = {"done": False, "responses": 0}
    framing_error_at = framing_error_at or set()

    async def sender(ctx):
        n = frames = 0
        for item in items:
            if isinstance(item, int):
                await ctx.tick().repeat(item)
                continue
            for byte in item:
                if n in framing_error_at:
                    ctx.set(dut.rx_error, 1)
                    await ctx.tick()
                    ctx.set(dut.rx_error, 0)
                else:
                    ctx.set(dut.rx.payload, byte)
                    ctx.set(dut.rx.valid, 1)
                    await ctx.tick().until(dut.rx.ready)
                    ctx.set(dut.rx.valid, 0)
                n += 1
                gap = rng.randrange(4)
                if gap:
                    await ctx.tick().repeat(gap)
            if not isinstance(item, Garbage):
                frames += 1
                for _ in range(10 * TIMEOUT + 40 * max_words + 100):
                    if state["responses"] >= frames:
                        break
                    await ctx.tick()
                else:
                    raise AssertionError(f"seed {seed}: no response to frame {frames}: {item.hex()}")
        await ctx.tick().repeat(2 * TIMEOUT)
        state["done"] = True

    async def bus(ctx):
        while not state["done"]:
            _, _, w_en, r_en, addr, w_data = await ctx.tick().sample(dut.bus.w_en, dut.bus.r_en, dut.bus.addr,
                                                                      dut.bus.w_data)
            assert not (w_en and r_en)
            if w_en:
                mem[addr] = w_data
                writes.append((addr, w_data))
            ctx.set(dut.bus.r_valid, r_en)
            ctx.set(dut.bus.r_data, mem.get(addr, 0xDEAD0000 | addr & 0xFFFF) if r_en else 0)

    async def receiver(ctx):
        start = 0
        while not state["done"]:
            ready = int(rng.random() >= tx_stall)
            ctx.set(dut.tx.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if valid and ready:
                out.append(payload)
                if len(out) - start >= 4 and len(out) - start == 6 + 4 * (out[start + 2] | out[start + 3] << 8):
                    state["responses"] += 1
                    start = len(out)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(sender)
    sim.add_testbench(bus)
    sim.add_testbench(receiver)
    sim.run()
    return split_responses(bytes(out)), mem, writes


def split_responses(data: bytes) -> list[tuple[int, list[int]]]:
    """Parse back-to-back responses, checking sync bytes and CRCs."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos] == br.SYNC_RESPONSE, f"response at byte {pos} starts with {data[pos]:#x}: {data.hex()}"
        count = int.from_bytes(data[pos + 2:pos + 4], "little")
        end = pos + 4 + 4 * count + 2
        frame = data[pos:end]
        assert len(frame) == end - pos, f"truncated response {frame.hex()}"
        assert crc16(frame[1:]) == 0, f"bad response CRC {frame.hex()}"
        words = [int.from_bytes(frame[4 + 4 * k:8 + 4 * k], "little") for k in range(count)]
        assert frame == encode_response(frame[1], words)
        out.append((frame[1], words))
        pos = end
    return out


def test_crc16_reference_value():
    assert crc16(b"123456789") == 0x4B37                     # CRC-16/MODBUS check value
    frame = encode_write(0x12345, [1, 0xFFFFFFFF])
    assert crc16(frame[1:]) == 0 and decode_request(frame) == (br.CMD_WRITE, 0x12345, 2, [1, 0xFFFFFFFF])


def test_doc_example_frames():
    """The example frames of docs/UART.md."""
    assert encode_write(0x10005, [0x11223344]).hex(" ") == "5a 01 05 00 01 01 00 44 33 22 11 33 d0"
    assert encode_response(br.STATUS_OK).hex(" ") == "a5 00 00 00 71 c0"
    assert encode_read(0x00000, 1).hex(" ") == "5a 02 00 00 00 01 00 00 69"
    assert encode_response(br.STATUS_OK, [0x53444857]).hex(" ") == "a5 00 01 00 57 48 44 53 f9 8e"
    assert encode_response(br.STATUS_BAD_CHECK).hex(" ") == "a5 01 00 00 20 00"
    assert encode_ping().hex(" ") == "5a 03 00 00 00 00 00 00 28"
    assert encode_response(br.STATUS_OK, [1 | 128 << 16]).hex(" ") == "a5 00 01 00 01 00 80 00 7a ed"


@pytest.mark.parametrize("bad", [0, 1025, True, 2.0])
def test_max_words_is_validated(bad):
    with pytest.raises(ValueError, match="max_words") as exc:
        UartBridge(max_words=bad, timeout=10)
    assert repr(bad) in str(exc.value)


@pytest.mark.parametrize("bad", [1, 0, None, 1.5])
def test_timeout_is_validated(bad):
    with pytest.raises(ValueError, match="timeout"):
        UartBridge(timeout=bad)


@pytest.mark.parametrize("seed, tx_stall", [(1, 0.0), (2, 0.6)])
def test_write_then_read_back(seed, tx_stall):
    rng = random.Random(seed)
    words = [rng.getrandbits(32) for _ in range(MAX_WORDS)]
    few = [rng.getrandbits(32) for _ in range(3)]
    items = [encode_ping(), encode_write(0x60010, words), encode_write(0xFFFFD, few),
             encode_read(0x6000F, MAX_WORDS), encode_read(0xFFFFD, 3), encode_read(0x60017, 1)]
    resp, mem, writes = run_bridge(items, seed=seed, tx_stall=tx_stall)
    assert resp[0] == (br.STATUS_OK, [br.PROTOCOL_VERSION | MAX_WORDS << 16]), f"seed {seed}: ping {resp[0]}"
    assert resp[1] == (br.STATUS_OK, []) and resp[2] == (br.STATUS_OK, [])
    assert writes == [(0x60010 + k, w) for k, w in enumerate(words)] + [(0xFFFFD + k, w) for k, w in enumerate(few)]
    assert resp[3] == (br.STATUS_OK, [0xDEAD000F] + words[:-1]), f"seed {seed}: read back {resp[3]}"
    assert resp[4] == (br.STATUS_OK, few)
    assert resp[5] == (br.STATUS_OK, [words[7]])
    assert len(resp) == len(items)


def _corrupt(frame: bytes, index: int) -> bytes:
    return frame[:index] + bytes([frame[index] ^ 0x01]) + frame[index + 1:]


def test_bad_frames_are_rejected_and_never_executed():
    """Each bad request gets one error response, nothing reaches the bus; a good frame after each works."""
    mem = {0x10000 + k: 0xAAAA0000 + k for k in range(4)}
    good = encode_write(0x10001, [7])
    cases = {
        "bad crc byte": (_corrupt(encode_write(0x10000, [1, 2, 3]), -1), br.STATUS_BAD_CHECK),
        "bad payload byte": (_corrupt(encode_write(0x10000, [1, 2, 3]), 9), br.STATUS_BAD_CHECK),
        "bad command": (encode_request(0x07, 0x10000, 1, [5]), br.STATUS_BAD_CMD),
        "count 0": (encode_request(br.CMD_WRITE, 0x10000, 0), br.STATUS_BAD_COUNT),
        "count too large": (encode_write(0x10000, list(range(MAX_WORDS + 1))), br.STATUS_BAD_COUNT),
        "read count too large": (encode_read(0x10000, MAX_WORDS + 1), br.STATUS_BAD_COUNT),
        "address above 20 bits": (b"\x5a\x01\x00\x00\x10\x01\x00" + bytes(4), br.STATUS_BAD_ADDR),
    }
    addr_frame = cases["address above 20 bits"][0]
    cases["address above 20 bits"] = (addr_frame + crc16(addr_frame[1:]).to_bytes(2, "little"), br.STATUS_BAD_ADDR)
    items = []
    for frame, _ in cases.values():
        items += [frame, good]
    resp, after, writes = run_bridge(items, mem=mem)
    want = []
    for _, status in cases.values():
        want += [(status, []), (br.STATUS_OK, [])]
    assert [r[0] for r in resp] == [w[0] for w in want], f"statuses {resp}"
    assert resp == want
    assert writes == [(0x10001, 7)] * len(cases), f"only the good frames may write: {writes}"
    assert after == {**mem, 0x10001: 7}


def test_truncated_frame_times_out_then_a_good_frame_works():
    frame = encode_write(0x20000, [1, 2])
    items = [frame[:9], encode_write(0x20000, [3, 4]), encode_read(0x20000, 2),
             encode_read(0x20000, 2)[:3], encode_ping()]
    resp, mem, writes = run_bridge(items)
    assert resp == [(br.STATUS_TIMEOUT, []), (br.STATUS_OK, []), (br.STATUS_OK, [3, 4]), (br.STATUS_TIMEOUT, []),
                    (br.STATUS_OK, [br.PROTOCOL_VERSION | 2 << 8 | MAX_WORDS << 16])], resp
    assert writes == [(0x20000, 3), (0x20001, 4)]


def _ping_with_gap(gap: int, *, error: bool = False) -> list[tuple[int, list[int]]]:
    """The responses to a ping whose third byte comes ``gap`` idle cycles after its second, the other bytes back
    to back; ``error``: a framing-error pulse in place of that third byte."""
    dut = UartBridge(max_words=MAX_WORDS, timeout=TIMEOUT)
    out = []

    async def sender(ctx):
        for i, byte in enumerate(encode_ping()):
            if i == 2:
                await ctx.tick().repeat(gap)
                if error:
                    ctx.set(dut.rx_error, 1)
                    await ctx.tick()
                    ctx.set(dut.rx_error, 0)
                    continue
            ctx.set(dut.rx.payload, byte)
            ctx.set(dut.rx.valid, 1)
            await ctx.tick().until(dut.rx.ready)
            ctx.set(dut.rx.valid, 0)

    async def receiver(ctx):
        ctx.set(dut.tx.ready, 1)
        for _ in range(3 * TIMEOUT + 100):
            _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if valid:
                out.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(sender)
    sim.add_testbench(receiver)
    sim.run()
    return split_responses(bytes(out))


@pytest.mark.parametrize("error", [False, True])
def test_timeout_is_timeout_whole_cycles_and_wins_over_a_byte(error):
    """``timeout`` idle cycles end a frame: a byte (or framing error) after ``timeout - 1`` still belongs to the
    frame, one after ``timeout`` is dropped and the frame answered with TIMEOUT."""
    in_time = _ping_with_gap(TIMEOUT - 1, error=error)
    if error:
        assert in_time == [(br.STATUS_FRAMING, [])], in_time
    else:
        assert in_time == [(br.STATUS_OK, [br.PROTOCOL_VERSION | MAX_WORDS << 16])], in_time
    assert _ping_with_gap(TIMEOUT, error=error) == [(br.STATUS_TIMEOUT, [])]


def test_framing_error_is_reported_and_the_frame_dropped():
    frame = encode_write(0x30000, [9, 10])
    items = [frame, encode_read(0x30000, 2)]
    resp, _, writes = run_bridge(items, framing_error_at={4}, mem={0x30000: 1, 0x30001: 2})
    assert resp == [(br.STATUS_FRAMING, []), (br.STATUS_OK, [1, 2])]
    assert writes == []


def test_garbage_between_frames_is_ignored():
    items = [Garbage(b"\x00\xff\x13"), encode_write(0x40000, [5]), Garbage(b"\xa5\x01"), 5, encode_read(0x40000, 1)]
    resp, _, _ = run_bridge(items)
    assert resp == [(br.STATUS_OK, []), (br.STATUS_OK, [5])]


def test_decode_request_rejects_bad_frames():
    from golden import SdhwError
    with pytest.raises(SdhwError, match="malformed"):
        decode_request(_corrupt(encode_ping(), 3))
