"""The accelerator's memories as the host and the data path see them.

The host writes every memory while the accelerator is idle and the data path reads them (and writes the
activation buffers) while it is busy, so a memory needs one read and one write port, and on the UP5K a
single-port RAM (``SB_SPRAM256KA``, 16K x 16 bits) serves as both: its address comes from the host while idle
and from the data path while busy, and a read never shares a cycle with a write (Yosys maps such a pair to one
port; ``ram_style = "huge"`` asks for the single-port RAM).
"""
from __future__ import annotations

import math

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["HostMemory", "ActivationBuffers", "WeightBuffer", "address_bits", "chunk_layout", "ram"]


def ram(*, shape, depth: int, spram: bool = False) -> Memory:
    """A memory for block RAM (or, with ``spram``, the UP5K's single-port RAM: Yosys' ``ram_style = "huge"``).

    Marked ``no_rw_check``: no block of this design reads an entry in the cycle it is written (the host writes
    only while idle, the data path writes only entries its readers are not at), so Yosys need not build the
    collision bypass it otherwise adds to every block RAM (on iCE40 about 70 flip-flops and 40 LUTs each)."""
    attrs = {"no_rw_check": 1}
    if spram:
        attrs["ram_style"] = "huge"
    return Memory(shape=shape, depth=depth, init=[], attrs=attrs)


def address_bits(depth: int) -> int:
    return max(1, ceil_log2(depth))


def chunk_layout(width: int) -> tuple[int, int]:
    """``(chunks, chunk address bits)`` of an entry of ``width`` bits written as 32-bit host words: chunk ``k``
    of entry ``e`` at host offset ``e << chunk_bits | k``; each chunk is written into its part of the entry."""
    chunks = (width + 31) // 32
    return chunks, (ceil_log2(chunks) if chunks > 1 else 0)


class HostMemory(wiring.Component):
    """A memory the host writes (32-bit words; wider entries in chunks) and the data path reads.

    Parameters
    ----------
    width, depth : int
        Entry width in bits and entries.
    spram : bool
        Map to iCE40 single-port RAM (Yosys ``ram_style = "huge"``): host writes and data-path reads share the
        one port, chosen by ``busy``.
    register_output : bool
        Register the read data once more (ECP5 block RAMs' slow clock-to-out): read latency 2 instead of 1.

    Ports: ``host_addr`` (the host's word offset in the region), ``host_data``, ``host_en`` (a write; ignored
    while ``busy``); ``busy``; ``r_addr``, ``r_en`` (the data path's reads while busy; while idle the host's
    address is read, for host read-back); ``r_data``, valid :attr:`latency` cycles after the read.
    """

    def __init__(self, *, width: int, depth: int, spram: bool = False, register_output: bool = False,
                 name: str = "mem"):
        self.width, self.depth, self.spram, self.register_output = width, depth, spram, register_output
        self._name = name
        super().__init__({
            "host_addr": In(16), "host_data": In(32), "host_en": In(1),
            "busy": In(1),
            "r_addr": In(address_bits(depth)), "r_en": In(1),
            "r_data": Out(width),
        })

    @property
    def latency(self) -> int:
        return 2 if self.register_output else 1

    def elaborate(self, platform):
        m = Module()
        mem = ram(shape=self.width, depth=self.depth, spram=self.spram)
        m.submodules[self._name] = mem
        chunks, chunk_bits = chunk_layout(self.width)
        # a wider entry is written a 32-bit chunk at a time straight into its part of the entry (a write enable
        # per granule of gcd(width, 32) bits: the block RAMs' bit masks), not staged in flip-flops
        granularity = math.gcd(self.width, 32) if chunks > 1 else None
        wr = mem.write_port(granularity=granularity)
        rd = mem.read_port()
        entry = self.host_addr[chunk_bits:chunk_bits + len(wr.addr)]
        write = Signal()
        m.d.comb += write.eq(self.host_en & ~self.busy)
        if chunks > 1:
            chunk = self.host_addr[:chunk_bits]
            m.d.comb += [wr.data.eq(self.host_data.replicate(chunks)[:self.width]),
                         wr.en.eq(Cat(write & (chunk == g * granularity // 32)
                                      for g in range(self.width // granularity)))]
        else:
            m.d.comb += [wr.data.eq(self.host_data[:self.width]), wr.en.eq(write)]
        address = Mux(self.busy, self.r_addr, entry)
        if self.spram:
            shared = Signal.like(wr.addr)
            m.d.comb += [shared.eq(address), wr.addr.eq(shared), rd.addr.eq(shared),
                         rd.en.eq(Mux(self.busy, self.r_en, 1) & ~wr.en.any())]
        else:
            m.d.comb += [wr.addr.eq(entry), rd.addr.eq(address), rd.en.eq(Mux(self.busy, self.r_en, 1))]
        if self.register_output:
            data = Signal(self.width)
            m.d.sync += data.eq(rd.data)
            m.d.comb += self.r_data.eq(data)
        else:
            m.d.comb += self.r_data.eq(rd.data)
        return m


class ActivationBuffers(wiring.Component):
    """The two activation buffers (ping-pong): a layer reads buffer ``in_sel`` and writes the other.

    Parameters
    ----------
    depth : int
        Bytes per buffer.
    spram : bool
        Each buffer in one UP5K single-port RAM (16-bit words, a byte selected on read, byte-masked writes);
        otherwise block RAM with byte entries.
    register_output : bool
        Register the read data once more (read latency 2).

    Ports: ``host_addr``, ``host_data`` (the low byte), ``host_en`` (two bits: write buffer 0 / 1; ignored while
    ``busy``), ``host_data_out`` (two bytes: what the host's address reads in buffer 0 / 1, :attr:`latency`
    cycles later); ``busy`` (two copies of one flag, a buffer's port select each), ``in_sel``; ``r_addr``,
    ``r_en``, ``r_data`` (the issuer's reads of buffer ``in_sel``); ``w_addr``, ``w_data``, ``w_en`` (the drain's
    writes to the other buffer).
    """

    def __init__(self, *, depth: int, spram: bool = False, register_output: bool = False):
        self.depth, self.spram, self.register_output = depth, spram, register_output
        bits = address_bits(depth)
        super().__init__({
            "host_addr": In(bits), "host_data": In(8), "host_en": In(2), "host_data_out": Out(16),
            "busy": In(2), "in_sel": In(1),
            "r_addr": In(bits), "r_en": In(1), "r_data": Out(8),
            "w_addr": In(bits), "w_data": In(8), "w_en": In(1),
        })

    @property
    def latency(self) -> int:
        return 2 if self.register_output else 1

    def elaborate(self, platform):
        m = Module()
        outputs = []
        for b in range(2):
            busy = self.busy[b]
            reading = busy & (self.in_sel == b)          # this buffer is the layer's input
            writing = busy & (self.in_sel != b)
            addr = Mux(busy, Mux(reading, self.r_addr, self.w_addr), self.host_addr)
            w_en = Mux(busy, writing & self.w_en, self.host_en[b])
            w_data = Mux(busy, self.w_data, self.host_data)
            r_en = Mux(busy, reading & self.r_en, 1)
            byte = Signal(8, name=f"act{b}_byte")
            if self.spram:
                mem = ram(shape=16, depth=-(-self.depth // 2), spram=True)
                m.submodules[f"act{b}"] = mem
                wr = mem.write_port(granularity=8)
                rd = mem.read_port()
                shared = Signal.like(wr.addr, name=f"act{b}_addr")
                high = Signal(name=f"act{b}_high")          # the byte read is the word's upper one
                # the byte of a write from its writer's address alone (the reader's cannot matter then)
                byte_sel = Mux(busy, self.w_addr[0], self.host_addr[0])
                m.d.comb += [shared.eq(addr[1:]), wr.addr.eq(shared), rd.addr.eq(shared),
                             wr.data.eq(Cat(w_data, w_data)), wr.en.eq(Cat(~byte_sel, byte_sel) & w_en.replicate(2)),
                             rd.en.eq(r_en & ~w_en)]
                with m.If(rd.en):
                    m.d.sync += high.eq(addr[0])
                m.d.comb += byte.eq(Mux(high, rd.data[8:], rd.data[:8]))
            else:
                mem = ram(shape=8, depth=self.depth)
                m.submodules[f"act{b}"] = mem
                wr = mem.write_port()
                rd = mem.read_port()
                m.d.comb += [wr.addr.eq(addr), wr.data.eq(w_data), wr.en.eq(w_en), rd.addr.eq(addr), rd.en.eq(r_en)]
                m.d.comb += byte.eq(rd.data)
            if self.register_output:
                reg = Signal(8, name=f"act{b}_q")
                m.d.sync += reg.eq(byte)
                byte = reg
            outputs.append(byte)
        # in_sel changes only between layers, when no read is in flight
        m.d.comb += [self.r_data.eq(Mux(self.in_sel, outputs[1], outputs[0])), self.host_data_out.eq(Cat(*outputs))]
        return m


class WeightBuffer(wiring.Component):
    """The rebuilt-weight buffer: ``depth`` entries of ``lanes`` int8 weights (written in chunks of
    ``fill_lanes`` lanes) and their tap info, a ring between the fill and the issuer.

    Ports: ``w_addr``, ``w_en`` (a bit per chunk), ``w_data`` (every chunk position gets the same data; the
    enables pick); ``info_en``, ``info_addr``, ``info_data``; ``info_r_addr``, ``info_r_en``, ``info_r_data`` and
    ``w_r_addr``, ``w_r_en``, ``w_r_data``, read :attr:`latency` cycles after the read.
    """

    def __init__(self, *, lanes: int, fill_lanes: int, depth: int, info_bits: int, register_output: bool = False):
        self.lanes, self.fill_lanes, self.depth, self.register_output = lanes, fill_lanes, depth, register_output
        bits = address_bits(depth)
        chunks = lanes // fill_lanes
        super().__init__({
            "w_addr": In(bits), "w_en": In(chunks), "w_data": In(8 * lanes),
            "info_en": In(1), "info_addr": In(bits), "info_data": In(info_bits),
            "info_r_addr": In(bits), "info_r_en": In(1), "info_r_data": Out(info_bits),
            "w_r_addr": In(bits), "w_r_en": In(1), "w_r_data": Out(8 * lanes),
        })

    @property
    def latency(self) -> int:
        return 2 if self.register_output else 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.weights = weights = ram(shape=8 * self.lanes, depth=self.depth)
        m.submodules.info = info = ram(shape=len(self.info_data), depth=self.depth)
        w_wr = weights.write_port(granularity=8 * self.fill_lanes)
        w_rd = weights.read_port()
        i_wr = info.write_port()
        i_rd = info.read_port()
        m.d.comb += [w_wr.addr.eq(self.w_addr), w_wr.en.eq(self.w_en), w_wr.data.eq(self.w_data),
                     i_wr.addr.eq(self.info_addr), i_wr.en.eq(self.info_en), i_wr.data.eq(self.info_data),
                     i_rd.addr.eq(self.info_r_addr), i_rd.en.eq(self.info_r_en),
                     w_rd.addr.eq(self.w_r_addr), w_rd.en.eq(self.w_r_en)]
        for port, out in ((i_rd, self.info_r_data), (w_rd, self.w_r_data)):
            if self.register_output:
                reg = Signal.like(out)
                m.d.sync += reg.eq(port.data)
                m.d.comb += out.eq(reg)
            else:
                m.d.comb += out.eq(port.data)
        return m
