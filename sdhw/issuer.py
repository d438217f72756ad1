"""The issuer: weight-buffer entries to the MAC array, once per output pixel of every channel group."""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .fill import TAP_INFO


def issuer_params(*, size_bits: int, side_bits: int, addr_bits: int, group_bits: int, lane_bits: int,
                  bias_bits: int, out_bits: int) -> data.StructLayout:
    """The layer fields the issuer uses (sizes ``size_bits`` wide, image sides ``side_bits``, signed addresses
    ``addr_bits``)."""
    return data.StructLayout({
        "n_groups": group_bits, "last_lanes": lane_bits, "n_pix": size_bits, "out_w": side_bits,
        "in_h": side_bits, "in_w": side_bits, "stride": 2, "pad": 1, "stream": 1,
        "step_x": signed(addr_bits), "row_wrap": signed(addr_bits), "base0": signed(addr_bits),
        "out_c": out_bits, "bias_base": bias_bits, "zp_in": signed(8), "in_size": size_bits + 1,
    })


class Issuer(wiring.Component):
    """Issue a layer's ops: for every channel group, for every output pixel (raster order), the group's
    weight-buffer entries in order, one per cycle; an entry is one tap: its N weights and one activation.

    Entries come from ``entries`` (a :class:`~sdhw.reader.SequentialReader` over the buffer's tap info, limited
    by the fill's write pointer). A pass over a group ends with the entry marked ``last``; then the next pixel
    replays the group (``seek`` back to its first entry) unless the layer ``stream`` s (the fill writes the
    group again for every pixel), and after the group's last pixel the next group follows. ``free`` tells the
    fill which entries it may overwrite: those before the group's first while the group is replayed, those
    before the oldest unread one in its last pass (and always when streaming). A layer's first entry is
    ``start_ptr`` (the fill's write pointer as the layer starts).

    The pixel loop runs over every image of a batch, the images one after the other in the activation buffers:
    after an image's last output row the next row is the next image's first (its padding starts again at the
    top; the address steps by ``row_wrap`` as after any row).

    Per op: the activation address (the pixel's base plus the entry's offset), padding (the pixel's rows and columns
    inside the input, by the entry's kernel row and column: the input's zero point instead), the weights read from
    the buffer beside the activation, both ``act_latency`` cycles after the op's registers, then to the MAC array.
    The activation and weight memories are read every cycle at the issuer's addresses (only an issued op's words are
    used), so their enables wait on no decision. A pass's last op waits until the drain has room for its sums
    (the drain not busy, from ``drain_busy_next`` a cycle earlier, and no last op still in flight); its output
    address, bias entry and live lanes go with it (``pass_*``).

    Counters: ``macs`` (live lanes of an op that counts, a cycle after its issue), ``stall`` (no op issued).
    ``addr_error``: an op read outside the input (a corrupt program; two cycles after its issue).
    ``start`` begins a layer; ``done`` rises when its last op has been issued. ``params`` hold still from a cycle
    before ``start`` until ``done``.

    Throughput: one op per cycle; two cycles more at the end of every pass (the pixel steps, then its padding
    flags are registered; a replay's seek and read take the same two cycles).
    ``register_act`` puts the activation (after its padding multiplexer) in a register before the MAC array and
    reads the weights a cycle later to meet it.

    Latency: ``1 + act_latency + register_act + MacArray.LATENCY`` cycles from an issue to its accumulation
    (the op's registers, the memories, the activation's register, the MAC array).
    """

    def __init__(self, *, lanes: int, entry_bits: int, act_bits: int, size_bits: int, side_bits: int,
                 group_bits: int, bias_bits: int, act_latency: int = 1, register_act: bool = False):
        self.lanes, self.entry_bits, self.act_latency = lanes, entry_bits, act_latency
        self.register_act = register_act
        addr_bits = act_bits + 3
        self.addr_bits = addr_bits
        lane_bits = (lanes).bit_length()
        params = issuer_params(size_bits=size_bits, side_bits=side_bits, addr_bits=addr_bits, group_bits=group_bits,
                               lane_bits=lane_bits, bias_bits=bias_bits, out_bits=size_bits)
        entry = data.StructLayout({"data": TAP_INFO.size})
        super().__init__({
            "params": In(params), "start": In(1), "done": Out(1),
            "entries": In(stream.Signature(entry)), "seek": Out(1), "seek_addr": Out(entry_bits + 1),
            "consumed": In(entry_bits + 1), "free": Out(entry_bits + 1), "start_ptr": In(entry_bits + 1),
            "w_addr": Out(entry_bits), "w_data": In(8 * lanes),
            "act_addr": Out(act_bits), "act_data": In(signed(8)),
            "mac_weights": Out(data.ArrayLayout(signed(8), lanes)), "mac_act": Out(signed(8)),
            "mac_valid": Out(1), "mac_last": Out(1), "mac_done": In(1),
            "drain_busy_next": In(1),
            "pass_out": Out(act_bits), "pass_bias": Out(bias_bits), "pass_lanes": Out(range(lanes + 1)),
            "macs": Out(range(lanes + 1)), "stall": Out(1), "addr_error": Out(1), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = self.lanes
        info = Signal(TAP_INFO)
        m.d.comb += info.eq(self.entries.payload.data)
        ptr = self.consumed                          # the entry offered

        # the loop state: channel group, pixel, pixel position; padding from counters of the input rows and
        # columns left below and right of the pixel's first tap (no comparator against the image size)
        groups_left = Signal.like(p.n_groups)
        lanes = Signal(range(n + 1))                 # live lanes of this group
        pix_left = Signal.like(p.n_pix)
        last_pixel = Signal()                        # pix_left == 1, kept in a register of its own
        x_left = Signal.like(p.out_w)                # output pixels left in this row, this one included
        row_end = Signal()                           # x_left == 1, in a register of its own
        last_group = Signal()                        # groups_left == 1, in a register of its own
        cols_left = Signal(signed(len(p.in_w) + 2))  # input columns from the pixel's first tap column on
        rows_left = Signal(signed(len(p.in_h) + 2))
        left = Signal()                              # the pixel's first tap column is the left padding
        top = Signal()
        last_row = Signal()                          # the pixel's row is its image's last (from rows_left)
        base = Signal(signed(self.addr_bits))        # the pixel's address of tap (0, 0, 0)
        out = Signal(len(self.pass_out))             # the pixel's output address (lane 0)
        group_out = Signal(len(self.pass_out))       # pixel 0's output address in this group
        bias = Signal.like(self.pass_bias)
        group_start = Signal(self.entry_bits + 1)    # the group's first entry
        running = Signal()
        last_in_flight = Signal()                    # a pass's last op issued, its sums not yet in the drain
        step = Signal()                              # a pass ended last cycle: step the pixel (or group) now

        # a row's and an image's first counts, from the layer's fields a cycle earlier (no adder between the
        # sequencer's registers and the counters')
        cols_first = Signal.like(cols_left)
        rows_first = Signal.like(rows_left)
        m.d.sync += [cols_first.eq(p.in_w + p.pad), rows_first.eq(p.in_h + p.pad)]
        # and the counts a stride on, a cycle after the counts: they change only in a step (or at the start), and
        # the next step is at least a cycle later
        cols_next = Signal.like(cols_left)
        rows_next = Signal.like(rows_left)
        m.d.sync += [cols_next.eq(cols_left - p.stride), rows_next.eq(rows_left - p.stride)]

        def first_pixel():
            return [pix_left.eq(p.n_pix), last_pixel.eq(p.n_pix == 1), x_left.eq(p.out_w), row_end.eq(p.out_w == 1),
                    cols_left.eq(cols_first), rows_left.eq(rows_first), left.eq(p.pad), top.eq(p.pad),
                    base.eq(p.base0)]

        with m.If(self.start):
            m.d.sync += [running.eq(1), self.done.eq(0), groups_left.eq(p.n_groups), last_group.eq(p.n_groups == 1),
                         lanes.eq(Mux(p.n_groups == 1, p.last_lanes, n)), group_out.eq(0), out.eq(0),
                         bias.eq(p.bias_base), group_start.eq(self.start_ptr), *first_pixel()]
            m.d.comb += [self.seek.eq(1), self.seek_addr.eq(self.start_ptr)]

        # a batch's images follow each other in the buffers: after an image's last output row the next row is
        # the next image's first, whose padding starts again at the top. A row needs kernel - pad = 1 + pad input
        # rows from its first tap row on, so the last row has at most stride + pad left (``rtl_gen.image`` keeps
        # the address step from an image's last pixel to the next image's first equal to ``row_wrap``)
        m.d.sync += last_row.eq(~Mux(p.stride[1], Mux(p.pad, _above(rows_left, 3), _above(rows_left, 2)),
                                     Mux(p.pad, _above(rows_left, 2), _above(rows_left, 1))))

        # padding: the entry's kernel row and column inside the input
        row_ok = Signal(3)
        col_ok = Signal(3)
        m.d.sync += [row_ok.eq(Cat(~top & _above(rows_left, 0), _above(rows_left, 1), _above(rows_left, 2))),
                     col_ok.eq(Cat(~left & _above(cols_left, 0), _above(cols_left, 1), _above(cols_left, 2)))]
        pad = Signal()
        m.d.comb += pad.eq(~(row_ok.bit_select(info.dy, 1) & col_ok.bit_select(info.dx, 1)))
        act = Signal(signed(self.addr_bits))
        m.d.comb += act.eq(base + info.off)

        # the decision from two flip-flops and the entry: gate_open (running, neither in the pixel's step nor in
        # the cycle after, when its padding flags are registered) and drain_ok (the drain not busy, no pass's
        # last op in flight), each registered from its next value
        issue = Signal()
        gate_open = Signal()
        drain_ok = Signal(init=1)
        m.d.comb += [issue.eq(gate_open & self.entries.valid & (~info.last | drain_ok)),
                     self.entries.ready.eq(issue), self.busy.eq(running | last_in_flight)]
        last_issued = issue & info.last
        m.d.sync += [gate_open.eq((self.start | running) & ~step & ~last_issued),
                     drain_ok.eq(~self.drain_busy_next
                                 & (self.start | self.mac_done | ~(last_issued | last_in_flight)))]
        # the op in registers: the memories' addresses start at flip-flops (the activation buffer is far)
        op_valid, op_last, op_pad, op_checked = Signal(), Signal(), Signal(), Signal()
        op_act = Signal.like(act)
        op_entry = Signal(self.entry_bits)
        m.d.sync += [op_valid.eq(issue), op_last.eq(last_issued), op_pad.eq(pad),
                     op_checked.eq(issue & info.count & ~pad), op_act.eq(act), op_entry.eq(ptr)]
        m.d.comb += self.act_addr.eq(op_act)
        if self.register_act:
            # the weights are read a cycle after the activation, to meet it in its register
            w_entry = Signal.like(op_entry)
            m.d.sync += w_entry.eq(op_entry)
            m.d.comb += self.w_addr.eq(w_entry)
        else:
            m.d.comb += self.w_addr.eq(op_entry)
        # registered: the fill's room computation starts here (a cycle late frees an entry a cycle late)
        m.d.sync += self.free.eq(Mux(p.stream | last_pixel, self.consumed, group_start))

        # at a pass's last op: its drain information and the entry after it; the pixel (or group) steps a
        # cycle later, from registers, and no op issues until the next pixel's padding flags are registered
        end_ptr = Signal.like(group_start)
        # one adder for both steps of the pixel's base, its addend chosen a cycle ahead: row_end changes only in a
        # step, and the next step is three cycles later at the earliest
        base_step = Signal.like(base)
        m.d.sync += base_step.eq(Mux(row_end, p.row_wrap, p.step_x))
        m.d.sync += step.eq(last_issued)
        with m.If(last_issued):
            m.d.sync += last_in_flight.eq(1)
        # the pass's drain information follows the pixel's until its last op issues, and is held from then until
        # the drain has taken it: the registers' enable is a flip-flop, not the issue decision
        with m.If(~last_in_flight):
            m.d.sync += [self.pass_out.eq(out), self.pass_bias.eq(bias), self.pass_lanes.eq(lanes), end_ptr.eq(ptr + 1)]
        with m.If(step):
            with m.If(last_pixel):
                # the group's last pass: the next group starts after this entry
                m.d.sync += [group_start.eq(end_ptr), groups_left.eq(groups_left - 1), *first_pixel(),
                             last_group.eq(groups_left == 2),
                             lanes.eq(Mux(groups_left == 2, p.last_lanes, n)), group_out.eq(group_out + n),
                             out.eq(group_out + n), bias.eq(bias + n)]
                with m.If(last_group):
                    m.d.sync += [running.eq(0), self.done.eq(1)]
            with m.Else():
                m.d.sync += [pix_left.eq(pix_left - 1), last_pixel.eq(pix_left == 2), out.eq(out + p.out_c)]
                with m.If(row_end):
                    m.d.sync += [x_left.eq(p.out_w), row_end.eq(p.out_w == 1), cols_left.eq(cols_first),
                                 left.eq(p.pad), base.eq(base + base_step)]
                    with m.If(last_row):
                        m.d.sync += [rows_left.eq(rows_first), top.eq(p.pad)]
                    with m.Else():
                        m.d.sync += [rows_left.eq(rows_next), top.eq(0)]
                with m.Else():
                    m.d.sync += [x_left.eq(x_left - 1), row_end.eq(x_left == 2), cols_left.eq(cols_next),
                                 left.eq(0),
                                 base.eq(base + base_step)]
        # the replay's seek, in the step cycle, from a register of its own (so no path runs from the issuer's
        # flags through the reader's seek into its skid register)
        replay = Signal()
        m.d.sync += replay.eq(last_issued & ~last_pixel & ~p.stream)
        with m.If(replay):
            m.d.comb += [self.seek.eq(1), self.seek_addr.eq(group_start)]
        with m.If(self.mac_done):
            m.d.sync += last_in_flight.eq(0)

        # counters a cycle after the issue; the address check from the op's registers, two cycles after
        m.d.sync += [self.macs.eq(Mux(issue & info.count, lanes, 0)), self.stall.eq(running & ~issue),
                     self.addr_error.eq(op_checked & (op_act[-1] | (op_act >= p.in_size)))]

        # the activation and the weights arrive act_latency cycles after the op's registers
        valid, last, padded = op_valid, op_last, op_pad
        for k in range(self.act_latency):
            v, la, pa = Signal(name=f"d{k}_valid"), Signal(name=f"d{k}_last"), Signal(name=f"d{k}_pad")
            m.d.sync += [v.eq(valid), la.eq(last), pa.eq(padded)]
            valid, last, padded = v, la, pa
        act = Mux(padded, p.zp_in, self.act_data)
        if self.register_act:
            act_q, valid_q, last_q = Signal.like(self.mac_act), Signal(), Signal()
            m.d.sync += [act_q.eq(act), valid_q.eq(valid), last_q.eq(last)]
            act, valid, last = act_q, valid_q, last_q
        m.d.comb += [self.mac_valid.eq(valid), self.mac_last.eq(last), self.mac_act.eq(act),
                     self.mac_weights.as_value().eq(self.w_data)]
        with m.If(self.start):
            m.d.sync += last_in_flight.eq(0)
        return m


def _above(value, k: int):
    """``value > k`` for a signed ``value`` and ``k`` in 0..3, from its bits (no carry chain)."""
    magnitude = value[:-1]
    positive = ~value[-1]
    if k == 0:
        return positive & magnitude.any()
    if k == 1:
        return positive & magnitude[1:].any()
    if k == 3:
        return positive & magnitude[2:].any()
    return positive & (magnitude[2:].any() | (magnitude[0] & magnitude[1]))
