"""The host port: the memory-mapped bus (``sdhw.hostbus``) decoded into memory writes, control, status, counters
and reads."""
from __future__ import annotations

from amaranth import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import hostbus as hb
from .config import VERSION, AcceleratorConfig

COUNTERS = ("cycles", "macs", "skipped", "stalls")


class Counters(wiring.Component):
    """Performance counters (``counter_bits`` wide, wrapping): cycles while busy, MACs issued, zero rows skipped,
    cycles without an op. ``clear`` zeroes them (a run's start and the host's clear)."""

    def __init__(self, *, bits: int, lanes: int):
        self.bits = bits
        super().__init__({
            "clear": In(1), "busy": In(1), "macs_inc": In(range(lanes + 1)), "skipped_inc": In(16), "stall": In(1),
            **{name: Out(bits) for name in COUNTERS},
        })

    def elaborate(self, platform):
        m = Module()
        incs = {"cycles": self.busy, "macs": self.macs_inc, "skipped": self.skipped_inc, "stalls": self.stall}
        for name, inc in incs.items():
            counter = getattr(self, name)
            with m.If(self.clear):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + inc)
        return m


def _or_all(terms: list) -> Value:
    """The OR of ``terms`` (a one-bit 0 when empty)."""
    return Cat(*terms).any() if terms else Const(0, 1)


class HostPort(wiring.Component):
    """Decode the host bus: writes to the memories (``w_*``: the word offset and data for every region, and an
    enable per region, all registered: a write reaches its memory a cycle after it is on the bus), the CONTROL
    register (``start`` two cycles after its write, ``clear``), and reads of the
    CSRs, the descriptors and the activation buffers, which return :data:`~sdhw.hostbus.READ_LATENCY` cycles
    after ``r_en``. The memories are read at the host's address while the accelerator is idle (``mem_latency``
    cycles); their data and the CSR multiplexer are registered, then the region's register is selected into
    ``r_data``. Writes to memories while busy are ignored by the memories; CSR reads work at any time and
    return the status and counters as they are two cycles after ``r_en``. ``start`` is dropped when ``busy``
    is high in the cycle after the CONTROL write.
    """

    def __init__(self, cfg: AcceleratorConfig, *, mem_latency: int = 1):
        self.cfg, self.mem_latency = cfg, mem_latency
        super().__init__({
            "bus": In(hb.HostBusSignature),
            "w_addr": Out(16), "w_data": Out(32),
            "desc_en": Out(1), "code_en": Out(1), "basis_en": Out(1), "bias_en": Out(1), "act_en": Out(2),
            "start": Out(1), "clear": Out(1),
            "busy": In(1), "done": In(1), "error": In(1), "err_code": In(8), "layer_index": In(16),
            **{name: In(cfg.counter_bits) for name in COUNTERS},
            "desc_data": In(32), "act_data": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, bus = self.cfg, self.bus
        # the request in registers first, its region decoded on the way in: every memory's write enable, address
        # and data start at a flip-flop (the memories sit across the die from where the bus comes in)
        offset = Signal(16)
        region = Signal(4)
        r_en = Signal()
        control = Signal()                              # a write to the CONTROL register
        low_offset = Signal()                           # offset < 32: the CSRs' range
        m.d.sync += [offset.eq(bus.addr[:16]), region.eq(bus.addr[16:20]), r_en.eq(bus.r_en),
                     self.w_data.eq(bus.w_data), low_offset.eq(bus.addr[5:16] == 0),
                     control.eq(bus.w_en & (bus.addr[16:20] == hb.REGION_CSR) & (bus.addr[:16] == hb.CSR_CONTROL))]
        m.d.comb += self.w_addr.eq(offset)
        for port, reg in ((self.desc_en, hb.REGION_DESC), (self.code_en, hb.REGION_CODES),
                          (self.basis_en, hb.REGION_BASES), (self.bias_en, hb.REGION_BIAS),
                          (self.act_en[0], hb.REGION_ACT0), (self.act_en[1], hb.REGION_ACT1)):
            m.d.sync += port.eq(bus.w_en & (bus.addr[16:20] == reg))
        # the run begins the cycle after the write, so the data path's flush fans out from a register
        m.d.sync += [self.start.eq(control & self.w_data[0] & ~self.busy), self.clear.eq(control & self.w_data[1])]

        depths = [0 if cfg.dense and name == "basis_depth" else getattr(cfg, name) for name in hb.DEPTH_CSRS]
        entries = {
            hb.CSR_ID: Const(hb.ID_MAGIC, 32),
            hb.CSR_VERSION: Const(VERSION | (int(cfg.dense) << 8) | (cfg.exp_bits << 12), 32),
            hb.CSR_LANES: Const(cfg.channel_lanes | (cfg.pixel_lanes << 16), 32),
            hb.CSR_STATUS: Cat(self.busy, self.done, self.error, Const(0, 5), self.err_code, self.layer_index),
        }
        for base, name in zip((hb.CSR_CYCLES, hb.CSR_MACS, hb.CSR_SKIPPED, hb.CSR_STALLS), COUNTERS):
            counter = getattr(self, name)
            entries[base] = counter[:32]
            if cfg.counter_bits > 32:                            # the high word reads 0 when narrower
                entries[base + 1] = counter[32:]
        for k, depth in enumerate(depths):
            entries[hb.CSR_DEPTHS + k] = Const(depth, 32)
        # the offset is decoded into one register per CSR in cycle 0, so cycle 1 is a shallow AND-OR (each bit
        # ORs the few entries that can set it) instead of a decoder in series with a 20-way multiplexer
        assert max(entries) < 32                            # low_offset and five offset bits select a CSR
        csr_sel = {offset_: Signal(name=f"csr_sel{offset_}") for offset_ in entries}
        m.d.sync += [sel.eq(low_offset & (offset[:5] == offset_)) for offset_, sel in csr_sel.items()]
        csr = Signal(32)
        m.d.comb += csr.eq(Cat(*[
            _or_all([csr_sel[offset_] & value[bit] for offset_, value in entries.items()
                     if bit < len(value) and not (isinstance(value, Const) and not (value.value >> bit) & 1)])
            for bit in range(32)]))

        # cycle 0: the request registered; cycle 1: the memories read the host's address; cycle 2 (mem_latency 1):
        # data registered beside the CSR multiplexer's; cycle 3: the region's register into r_data
        pending = Signal(2)
        regions = [Signal(4, name=f"r_region{k}") for k in range(2)]
        m.d.sync += [pending.eq(Cat(r_en, pending[0])), regions[0].eq(region), regions[1].eq(regions[0]),
                     bus.r_valid.eq(pending[1])]
        csr_q = Signal(32)
        m.d.sync += csr_q.eq(csr)
        desc_q, act_q = Signal(32), Signal(16)
        # block RAM data in cycle 1 is registered here; a registered memory output is already in cycle 2
        domain = m.d.sync if self.mem_latency == 1 else m.d.comb
        domain += [desc_q.eq(self.desc_data), act_q.eq(self.act_data)]
        data = Signal(32)
        with m.Switch(regions[1]):
            with m.Case(hb.REGION_CSR):
                m.d.comb += data.eq(csr_q)
            with m.Case(hb.REGION_DESC):
                m.d.comb += data.eq(desc_q)
            with m.Case(hb.REGION_ACT0):
                m.d.comb += data.eq(act_q[:8].as_signed())
            with m.Case(hb.REGION_ACT1):
                m.d.comb += data.eq(act_q[8:].as_signed())
        m.d.sync += bus.r_data.eq(data)
        return m
