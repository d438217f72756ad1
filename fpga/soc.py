"""The system on the board: UART receiver and transmitter, the bridge and the accelerator (``sdhw_system``).

::

    rx pin ─► UartRx ─► UartBridge ─► host bus ─► Accelerator ─► leds (busy, done, error)
    tx pin ◄─ UartTx ◄──────┘
"""
from amaranth import Cat, Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden import SdhwError
from sdhw.accelerator import Accelerator
from sdhw.config import AcceleratorConfig
from sdhw.vendor import with_wrappers

from .bridge import DEFAULT_MAX_WORDS, UartBridge
from .uart import MIN_DIVISOR, UartRx, UartTx

SYSTEM_NAME = "sdhw_system"
MAX_BAUD_ERROR = 0.02           # a UART tolerates ~4 % between the two ends; keep our side within 2 %


def uart_divisor(clk_freq: int, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq``; :class:`golden.SdhwError` if the UART cannot do it."""
    for name, value in (("clk_freq", clk_freq), ("baud", baud)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SdhwError(f"{name} must be a positive integer (Hz, bit/s), not {value!r}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise SdhwError(f"clk_freq / baud = {clk_freq} / {baud} gives {clk_freq / baud:.2f} clock cycles per bit; "
                        f"the UART needs at least {MIN_DIVISOR} (lower the baud rate or raise the clock)")
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise SdhwError(f"{baud} baud at {clk_freq} Hz is off by {error:.1%} with {divisor} cycles per bit "
                        f"(at most {MAX_BAUD_ERROR:.0%}); choose a baud rate closer to a divisor of the clock")
    return divisor


class SystemTop(wiring.Component):
    """The accelerator behind a UART: the top of a board build and of the system simulation.

    Latency and throughput are the UART's: a request of ``k`` words takes about ``(9 + 4k) * 10`` bit times
    on the line, its response ``(6 + 4k) * 10`` bit times (see ``docs/UART.md``); the accelerator runs at
    the clock rate in between.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator.
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        Line rate in bit/s; ``round(clk_freq / baud)`` must be at least 4 and within 2 % of the rate.
    timeout : int, optional
        The bridge's inter-byte timeout in clock cycles (default: 20 ms, at least 40 character times).
    max_words : int
        Words per request (the bridge's write buffer).

    Attributes
    ----------
    rx : In(1)
        Serial line from the host (idles high).
    tx : Out(1)
        Serial line to the host.
    leds : Out(3)
        Busy, done, error.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    leds: Out(3)

    def __init__(self, config: AcceleratorConfig, *, clk_freq: int, baud: int, timeout: int | None = None,
                 max_words: int = DEFAULT_MAX_WORDS):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.clk_freq, self.baud = clk_freq, baud
        self.divisor = uart_divisor(clk_freq, baud)
        if timeout is None:
            timeout = max(clk_freq // 50, 400 * self.divisor)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 20 * self.divisor:
            raise SdhwError(f"timeout must be at least two character times ({20 * self.divisor} cycles at "
                            f"{self.divisor} cycles per bit), not {timeout!r}")
        self.timeout = timeout
        self.max_words = max_words
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UartRx(divisor=self.divisor)
        m.submodules.uart_tx = tx = UartTx(divisor=self.divisor)
        m.submodules.bridge = bridge = UartBridge(max_words=self.max_words, timeout=self.timeout)
        m.submodules.accel = accel = Accelerator(self.config, vendor_primitives=True)
        wiring.connect(m, rx.o, bridge.rx)
        wiring.connect(m, bridge.tx, tx.i)
        wiring.connect(m, bridge.bus, accel.bus)
        m.d.comb += [
            rx.rx.eq(self.rx),
            bridge.rx_error.eq(rx.framing_error),
            self.tx.eq(tx.tx),
            self.leds.eq(Cat(accel.busy, accel.done, accel.error)),
        ]
        return m


def system_verilog(config: AcceleratorConfig, *, clk_freq: int, baud: int, **kwargs) -> str:
    """Verilog of :class:`SystemTop` as module ``sdhw_system`` (ports ``clk``, ``rst``, ``rx``, ``tx``, ``leds``)."""
    text = verilog.convert(SystemTop(config, clk_freq=clk_freq, baud=baud, **kwargs), name=SYSTEM_NAME)
    return with_wrappers(text)
