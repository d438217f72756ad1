"""A serial test harness around the accelerator, for synthesis: every pin is registered, so Fmax is honest.

The accelerator's host port is 89 signals wide, more than the 39 I/O pins of an iCE40 UP5K-SG48, and pins
driven straight into the design would put I/O delays on its paths. The harness shifts one bus request in
through a single pin, replays it on the host port, and shifts read data out through another pin; the
accelerator's logic then only sees flip-flops at its edges. The reset pin is registered too: the accelerator
runs in its own clock domain on the same clock, reset from a flip-flop one cycle after the pin.
"""
from __future__ import annotations

from amaranth import Cat, ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sdhw import hostbus as hb
from sdhw.accelerator import Accelerator
from sdhw.config import AcceleratorConfig

#: request frame shifted in LSB first: addr, w_data, w_en, r_en
REQUEST_BITS = hb.ADDR_BITS + 32 + 2


class SerialHarness(wiring.Component):
    """The accelerator behind a one-pin request shifter and a one-pin response shifter.

    Ports: ``sin`` (request bits, one per cycle, LSB first), ``load`` (replay the shifted request on the host
    port for one cycle), ``sout`` (read data, LSB first, starting the cycle after ``r_valid``) and ``status``
    (busy, done, error). Every input, the reset included, is registered on entry and every output leaves from
    a flip-flop. The reset pin drives one flip-flop; everything else, the harness's own registers included, runs
    in the ``core`` domain reset from it.

    Latency: a request takes :data:`REQUEST_BITS` cycles to shift in, one to replay; read data starts to
    shift out ``hostbus.READ_LATENCY + 1`` cycles after the replay. It exists for synthesis and timing, not for
    throughput.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        super().__init__({"sin": In(1), "load": In(1), "sout": Out(1), "status": Out(3)})

    def elaborate(self, platform):
        m = Module()
        m.domains.core = ClockDomain("core")
        reset_r = Signal(init=1, reset_less=True)
        m.d.sync += reset_r.eq(ResetSignal("sync"))
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")), ResetSignal("core").eq(reset_r)]
        m.submodules.accel = accel = DomainRenamer("core")(Accelerator(self.config, vendor_primitives=True))

        sin_r = Signal()
        load_r = Signal()
        request = Signal(REQUEST_BITS)
        m.d.core += [sin_r.eq(self.sin), load_r.eq(self.load), request.eq(Cat(request[1:], sin_r))]

        bus = accel.bus
        addr = request[:hb.ADDR_BITS]
        w_data = request[hb.ADDR_BITS:hb.ADDR_BITS + 32]
        w_en, r_en = request[-2], request[-1]
        m.d.core += [bus.addr.eq(addr), bus.w_data.eq(w_data), bus.w_en.eq(load_r & w_en),
                     bus.r_en.eq(load_r & r_en)]

        response = Signal(32)
        with m.If(bus.r_valid):
            m.d.core += response.eq(bus.r_data)
        with m.Else():
            m.d.core += response.eq(response >> 1)
        m.d.core += [self.sout.eq(response[0]), self.status.eq(Cat(accel.busy, accel.done, accel.error))]
        return m
