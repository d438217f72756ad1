"""8N1 UART receiver and transmitter with byte streams (``amaranth.lib.stream``).

One start bit (0), eight data bits LSB first, one stop bit (1); the line idles high. ``divisor`` is the
number of clock cycles per bit (``clk_freq // baud``), at least 4.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

MIN_DIVISOR = 4
MAX_DIVISOR = 1 << 24


def check_divisor(divisor) -> int:
    """``divisor`` as an int, or a ValueError naming the bad value and the valid range."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not MIN_DIVISOR <= divisor <= MAX_DIVISOR:
        raise ValueError(f"divisor (clock cycles per bit) must be an integer in {MIN_DIVISOR}..{MAX_DIVISOR}, "
                         f"not {divisor!r}")
    return divisor


class UartRx(wiring.Component):
    """8N1 receiver: ``rx`` pin in, received bytes out as a stream.

    ``rx`` goes through a two-flop synchroniser. A falling edge starts a character; the start bit is checked
    again half a bit later (a shorter low pulse is a glitch and is ignored), then every bit is sampled in its
    middle, ``divisor`` cycles apart. A stop bit read as 0 is a framing error: the byte is dropped,
    ``framing_error`` pulses for one cycle (the cycle after the stop bit's sample) and the receiver waits for the
    line to return high.

    Latency: a byte is ``valid`` about 9.5 bit times + 3 cycles after its start edge (the middle of the stop
    bit). Throughput: back-to-back characters at the full line rate (one byte per 10 bit times). The output
    holds one byte; a byte not taken (``ready`` low) before the next one is complete is overwritten, so the
    consumer must keep up with the line (at most one byte per ``10 * divisor`` cycles).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, 4..2**24.

    Attributes
    ----------
    rx : In(1)
        The serial line.
    o : Out(stream.Signature(8))
        Received bytes.
    framing_error : Out(1)
        One-cycle pulse when a stop bit is 0.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)

    def __init__(self, *, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sync0 = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [sync0.eq(self.rx), line.eq(sync0)]

        timer = Signal(range(d))
        bit = Signal(range(9))
        shreg = Signal(8)
        # timer == 0 in a flip-flop of its own, set as the timer steps from 1 and cleared when it is loaded: the
        # decisions it starts do not sit behind the timer's comparison
        tick = Signal(init=1)
        with m.If(~tick):
            m.d.sync += [timer.eq(timer - 1), tick.eq(timer == 1)]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        # a register: the bit timer's comparison stays off the consumer's paths
        m.d.sync += self.framing_error.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += [timer.eq(d // 2 - 1), tick.eq(0)]
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(line):                        # shorter than half a bit: a glitch
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0), tick.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], line)), bit.eq(bit + 1), tick.eq(0)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(line):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):                          # wait for the line to go idle (high) again
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter: bytes in as a stream, ``tx`` pin out (registered, idles high).

    Latency: the start bit appears on ``tx`` one cycle after the byte is accepted. Throughput: one byte per
    ``10 * divisor`` cycles exactly: ``i.ready`` rises in the last cycle of the stop bit, so back-to-back
    bytes leave no gap on the line.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, 4..2**24.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        The serial line.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, *, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        left = Signal(range(10))                # bits still to put on the line after the current one
        shreg = Signal(9)                       # data bits, then the stop bit
        # i.ready is a flip-flop, high exactly when the timer and the bit count are both 0: the consumer's
        # decisions start at it, not at the timer's comparisons
        idle = Signal(init=1)
        m.d.comb += self.i.ready.eq(idle)
        with m.If(idle):
            m.d.sync += idle.eq(~self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.i.payload, 1)), left.eq(9), timer.eq(d - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg >> 1), left.eq(left - 1), timer.eq(d - 1)]
        with m.Else():
            m.d.sync += [timer.eq(timer - 1), idle.eq((timer == 1) & (left == 0))]
        return m
