"""The accelerator top: memories, host port, sequencer and the SD datapath.

Data path of one layer (see docs/ARCHITECTURE.md)::

    bitmap ─► RowDecoder ─► row fetch (code memory) ─► Q x RebuildUnit ─► tap issuer ─► act buffers
                                                         (dense: none)        │              │
                                                                              └─► MacArray ◄─┘
    MacArray ─► drain shadow ─► bias ─► Requantiser ─► next activation buffer (all P copies)

The sequencer walks pixel groups (P output pixels) in the outer loop and channel groups (Q output
channels) in the inner loop; for every group the decoder streams the non-zero rows, each row takes three
cycles (one tap per cycle) on the MAC array, and the finished sums are requantised while the next group
accumulates.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import hostbus as hb
from .config import DESC_WORDS, VERSION, AcceleratorConfig
from .decoder import RowDecoder
from .descriptor import FIELDS, KIND_END, KIND_K1, KIND_K3, USED_WORDS
from .mac_array import MacArray
from .rebuild import RebuildUnit
from .requant import Requantiser, SerialRequantiser


def _bits(depth: int) -> int:
    """Address bits of a memory of ``depth`` entries."""
    return max(1, ceil_log2(depth))


def _dense_tap_weight(lane, tap):
    """Tap ``tap`` (0..2) of a dense row's channel lane: three int8 weights side by side."""
    return Mux(tap[1], lane[16:24], Mux(tap[0], lane[8:16], lane[:8]))


def _holds(value: int) -> int:
    """Bits of an unsigned register that holds ``0..value``."""
    return max(1, value.bit_length())


class Accelerator(wiring.Component):
    """The SD (or dense int8) accelerator for one :class:`~sdhw.config.AcceleratorConfig`.

    Ports: ``bus`` (the host port, :data:`sdhw.hostbus.HostBusSignature`, device side), ``busy``, ``done``
    and ``error`` status outputs.

    Throughput: ``pes`` MACs per cycle peak (Q channel lanes x P pixel lanes, one tap per cycle); zero
    ``Ce`` rows take no cycle. Latency: a layer costs its row steps plus a few cycles per channel group
    (pipeline fill) and a descriptor fetch.

    ``vendor_primitives`` instantiates device primitives where the configuration asks for them (ECP5:
    ``MULT18X18D`` with its registers, :attr:`~sdhw.config.AcceleratorConfig.registered_dsps`), for Verilog:
    through a wrapper module of ours that :func:`sdhw.ecp5.with_wrappers` appends to the text (the primitive
    in synthesis, a behavioural model in simulators). Without it (the default, for Amaranth's simulator) the
    same registers are built in logic.
    """

    def __init__(self, config: AcceleratorConfig, *, vendor_primitives: bool = False):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if not isinstance(vendor_primitives, bool):
            raise TypeError(f"vendor_primitives must be a bool, not {vendor_primitives!r}")
        self.config = config
        self.vendor_primitives = vendor_primitives
        super().__init__({
            "bus": In(hb.HostBusSignature),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
        })

    # ------------------------------------------------------------------------------------------------
    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        q_n, p_n = cfg.channel_lanes, cfg.pixel_lanes
        sd = not cfg.dense
        e_bits = cfg.exp_bits
        lane_w = 24 if cfg.dense else 3 * (1 + e_bits)

        # Widths from the memory depths. Sizes (dimensions, pixel and channel counts) are at most act_depth
        # (U bits); a valid program's addresses of live pixel lanes lie in (-2 D, 4 D) (S bits, signed), its
        # image coordinates in (-2 D, 2 D) (I bits, signed); rows in hardware order number at most 4 D (R bits).
        # Address steps are taken modulo 2**S (exact for every lane a program uses); descriptor fields wider
        # than their register are checked on fetch and raise the error their range check raises.
        # lean (iCE40) builds leave out the registers that only shorten ECP5 paths (AcceleratorConfig.lean);
        # ECP5's block RAM clock-to-out is 5.8 ns in nextpnr's -6 timing model, so there every block RAM output
        # is registered before any logic
        lean = cfg.lean
        depth = cfg.act_depth
        a_bits = _bits(depth)
        u_bits = _holds(depth)
        s_bits = a_bits + 3
        i_bits = u_bits + 2
        r_bits = _holds(4 * depth)
        m_bits = _holds((1 << u_bits) + 2 * q_n)           # output channel counters (out_c + Q)
        o_bits = _holds((1 << u_bits) + 2 * p_n)           # output pixel counters (n_pix + P)
        cb_bits = _holds(cfg.code_depth)
        bb_bits = _holds(cfg.bitmap_depth)
        kb_bits = _holds(cfg.basis_rows)
        zb_bits = _holds(cfg.bias_depth)
        size_err, waddr_err, params_err = hb.ERR_ACT_SIZE, hb.ERR_WEIGHT_ADDR, hb.ERR_PARAMS
        # field -> (register bits, error code if a wider value is refused; None: modulo, "sat": saturated)
        fit = {name: (u_bits, size_err) for name in ("in_h", "in_w", "in_c", "out_c", "n_pix", "out_w", "in_size",
                                                       "out_size", "wc", "r_w")}
        fit.update({"n_rows": (r_bits, size_err), "base0": (s_bits, hb.ERR_ACT_ADDR),
                    "code_base": (cb_bits, waddr_err), "bias_base": (zb_bits, hb.ERR_BIAS_ADDR),
                    "pm_step": (a_bits, None)})
        fit.update({name: (s_bits, None) for name in ("step_x", "step_y", "row_wrap", "group_step")})
        fit.update({name: (i_bits, None) for name in ("qs", "rs", "wo_s")})
        if sd:
            fit.update({"bm_words": (bb_bits, waddr_err), "bitmap_base": (bb_bits, waddr_err),
                        "basis_base": (kb_bits, waddr_err), "n_blocks": (kb_bits, params_err),
                        "block_rows": (r_bits, "sat")})

        # ---------------------------------------------------------------------------- memories
        desc_mem = Memory(shape=32, depth=cfg.desc_layers * DESC_WORDS, init=[])
        # "huge": yosys' name for the iCE40 single-port RAM; without it small code memories go to block RAM
        code_mem = Memory(shape=cfg.code_width, depth=cfg.code_depth, init=[],
                          attrs={"ram_style": "huge"} if cfg.code_in_spram else None)
        bias_mem = Memory(shape=32, depth=cfg.bias_depth, init=[])
        m.submodules.desc_mem = desc_mem
        m.submodules.code_mem = code_mem
        m.submodules.bias_mem = bias_mem
        if sd:
            bitmap_mem = Memory(shape=32, depth=cfg.bitmap_depth, init=[])
            basis_mem = Memory(shape=cfg.basis_width, depth=cfg.basis_rows, init=[])
            m.submodules.bitmap_mem = bitmap_mem
            m.submodules.basis_mem = basis_mem
        act_mems = [[Memory(shape=8, depth=cfg.act_depth, init=[]) for _ in range(p_n)] for _ in range(2)]
        for b in range(2):
            for p in range(p_n):
                m.submodules[f"act{b}_{p}"] = act_mems[b][p]

        desc_rd = desc_mem.read_port()
        desc_wr = desc_mem.write_port()
        code_rd = code_mem.read_port()
        code_wr = code_mem.write_port()
        bias_rd = bias_mem.read_port()
        bias_wr = bias_mem.write_port()
        if sd:
            bitmap_rd = bitmap_mem.read_port()
            bitmap_wr = bitmap_mem.write_port()
            basis_rd = basis_mem.read_port()
            basis_wr = basis_mem.write_port()
        act_rd = [[act_mems[b][p].read_port() for p in range(p_n)] for b in range(2)]
        act_wr = [[act_mems[b][p].write_port() for p in range(p_n)] for b in range(2)]

        # ---------------------------------------------------------------------------- control state
        flush = Signal()                        # clears the whole data path when a run starts
        busy = Signal()
        done = Signal()
        err = Signal()
        err_code = Signal(8)
        layer_idx = Signal(range(cfg.desc_layers + 1))
        in_buf = Signal()                       # activation buffer the current layer reads
        m.d.comb += [self.busy.eq(busy), self.done.eq(done), self.error.eq(err)]
        cycles = Signal(cfg.counter_bits)
        macs = Signal(cfg.counter_bits)
        skipped = Signal(cfg.counter_bits)
        stalls = Signal(cfg.counter_bits)

        # layer registers, one per descriptor field, as wide as the configuration needs (see ``fit``), and
        # for each checked field a flag: its value did not fit the register
        fld, over = {}, {}
        for name, (_, _, width, is_signed) in FIELDS.items():
            bits = min(width, fit.get(name, (width, None))[0])
            fld[name] = Signal(signed(bits) if is_signed else unsigned(bits), name=f"d_{name}")
            if bits < width and fit[name][1] is not None:
                over[name] = Signal(name=f"d_{name}_over")

        def over_any(*names):
            return Cat(*(over[n] for n in names if n in over)).any()

        # ---------------------------------------------------------------------------- host port
        bus = self.bus
        region = bus.addr[16:20]
        offset = bus.addr[:16]
        host_idle = ~busy
        start_req = Signal()
        start_r = Signal()      # the run starts a cycle after the write: flush's fan-out starts at a register
        clear_req = Signal()
        m.d.comb += [
            start_req.eq(bus.w_en & (region == hb.REGION_CSR) & (offset == hb.CSR_CONTROL) & bus.w_data[0]),
            clear_req.eq(bus.w_en & (region == hb.REGION_CSR) & (offset == hb.CSR_CONTROL) & bus.w_data[1]),
        ]
        m.d.sync += start_r.eq(start_req)
        hw = bus.w_en & host_idle
        m.d.comb += [
            desc_wr.addr.eq(offset), desc_wr.data.eq(bus.w_data), desc_wr.en.eq(hw & (region == hb.REGION_DESC)),
            bias_wr.addr.eq(offset), bias_wr.data.eq(bus.w_data), bias_wr.en.eq(hw & (region == hb.REGION_BIAS)),
        ]
        if sd:
            m.d.comb += [bitmap_wr.addr.eq(offset), bitmap_wr.data.eq(bus.w_data),
                         bitmap_wr.en.eq(hw & (region == hb.REGION_BITMAP))]

        def wide_write(port, width, region_id, tag, *, addr=None):
            """Entries wider than 32 bits: chunk k of entry e at offset (e << cb) | k; the last chunk commits.
            ``addr``: the port's address signal when the caller shares it with a read port (else the entry)."""
            chunks = (width + 31) // 32
            cb = _bits(chunks) if chunks > 1 else 0
            staging = Signal(32 * chunks, name=f"{tag}_staging")
            chunk = offset[:cb] if cb else Const(0, 1)
            entry = offset[cb:]
            sel = hw & (region == region_id)
            merged = Signal(32 * chunks, name=f"{tag}_merged")
            m.d.comb += merged.eq(staging)
            for k in range(chunks):
                with m.If(chunk == k):
                    m.d.comb += merged.word_select(k, 32).eq(bus.w_data)
            with m.If(sel):
                m.d.sync += staging.eq(merged)
            m.d.comb += [(port.addr if addr is None else addr).eq(entry), port.data.eq(merged[:width]),
                         port.en.eq(sel & (chunk == chunks - 1))]

        # single-port RAM (UP5K): the host's writes (idle) and the row fetch's reads (busy) share one address
        code_host_addr = Signal.like(code_wr.addr) if cfg.code_in_spram else None
        wide_write(code_wr, cfg.code_width, hb.REGION_CODES, "code", addr=code_host_addr)
        if sd:
            wide_write(basis_wr, cfg.basis_width, hb.REGION_BASES, "basis")

        # activation writes: the host when idle (region ACT0/ACT1), the drain when busy
        drain_wr_en = Signal()
        drain_wr_addr = Signal(_bits(cfg.act_depth))
        drain_wr_data = Signal(8)
        out_buf = ~in_buf
        for b in range(2):
            host_sel = hw & (region == (hb.REGION_ACT0 if b == 0 else hb.REGION_ACT1))
            for p in range(p_n):
                port = act_wr[b][p]
                with m.If(busy):
                    m.d.comb += [port.addr.eq(drain_wr_addr), port.data.eq(drain_wr_data),
                                 port.en.eq(drain_wr_en & (out_buf == b))]
                with m.Else():
                    m.d.comb += [port.addr.eq(offset), port.data.eq(bus.w_data[:8]), port.en.eq(host_sel)]

        # host reads: hb.READ_LATENCY = 3 cycles. The cycle after r_en every source is registered as it is (the
        # block RAMs' read data straight from their outputs, the counters through the CSR multiplexer); the
        # next cycle the region's register is selected into r_data. No block RAM output drives logic.
        r_region = Signal(4)
        r_region2 = Signal(4)
        r_offset = Signal(16)
        r_pending = Signal()
        r_pending2 = Signal()
        read_data = Signal(32)
        m.d.sync += [r_pending.eq(bus.r_en), r_pending2.eq(r_pending), bus.r_valid.eq(r_pending2),
                     r_region.eq(region), r_region2.eq(r_region), r_offset.eq(offset), bus.r_data.eq(read_data)]
        csr = Signal(32)
        lanes_word = Const(q_n | (p_n << 16), 32)
        depths = [cfg.desc_layers, cfg.act_depth, cfg.code_depth, cfg.bitmap_depth if sd else 0,
                  cfg.basis_depth if sd else 0, cfg.bias_depth]
        with m.Switch(r_offset):
            with m.Case(hb.CSR_ID):
                m.d.comb += csr.eq(hb.ID_MAGIC)
            with m.Case(hb.CSR_VERSION):
                m.d.comb += csr.eq(VERSION | (int(cfg.dense) << 8) | (e_bits << 12))
            with m.Case(hb.CSR_LANES):
                m.d.comb += csr.eq(lanes_word)
            with m.Case(hb.CSR_STATUS):
                m.d.comb += csr.eq(Cat(busy, done, err, Const(0, 5), err_code, layer_idx))
            for base, counter in ((hb.CSR_CYCLES, cycles), (hb.CSR_MACS, macs), (hb.CSR_SKIPPED, skipped),
                                  (hb.CSR_STALLS, stalls)):
                with m.Case(base):
                    m.d.comb += csr.eq(counter[:32])
                if cfg.counter_bits > 32:                        # the high word reads 0 when narrower
                    with m.Case(base + 1):
                        m.d.comb += csr.eq(counter[32:])
            for k, depth in enumerate(depths):
                with m.Case(hb.CSR_DEPTHS + k):
                    m.d.comb += csr.eq(depth)
        desc_data = Signal(32)                  # the descriptor block RAM's output, registered (also for FETCH)
        m.d.sync += desc_data.eq(desc_rd.data)
        csr_q = Signal(32)
        bias_q = Signal(32)
        bitmap_q = Signal(32)
        act_q = [Signal(8, name=f"act{b}_host_q") for b in range(2)]
        # lean builds multiplex first and register the result twice (the same latency, fewer flip-flops)
        read_domain = m.d.comb if lean else m.d.sync
        read_domain += [csr_q.eq(csr), bias_q.eq(bias_rd.data), act_q[0].eq(act_rd[0][0].data),
                        act_q[1].eq(act_rd[1][0].data)]
        if sd:
            read_domain += bitmap_q.eq(bitmap_rd.data)
        read_mux = Signal(32)
        if lean:
            m.d.sync += read_data.eq(read_mux)
        else:
            m.d.comb += read_data.eq(read_mux)
        with m.Switch(r_region if lean else r_region2):
            with m.Case(hb.REGION_CSR):
                m.d.comb += read_mux.eq(csr_q)
            with m.Case(hb.REGION_DESC):
                m.d.comb += read_mux.eq(desc_rd.data if lean else desc_data)
            with m.Case(hb.REGION_BIAS):
                m.d.comb += read_mux.eq(bias_q)
            if sd:
                with m.Case(hb.REGION_BITMAP):
                    m.d.comb += read_mux.eq(bitmap_q)
            with m.Case(hb.REGION_ACT0):
                m.d.comb += read_mux.eq(act_q[0].as_signed())
            with m.Case(hb.REGION_ACT1):
                m.d.comb += read_mux.eq(act_q[1].as_signed())

        # ---------------------------------------------------------------------------- sub-blocks
        decoder = RowDecoder(addr_bits=_bits(cfg.bitmap_depth), row_bits=r_bits, dense=cfg.dense,
                             register_data=not lean)
        m.submodules.decoder = ResetInserter(flush)(decoder)
        # ECP5: the decoder's entries pass through a two-entry queue: its ready comes from the queue's level,
        # so no combinational ready runs from the row fetch back into the decoder's scan logic
        entry = Signal(decoder.entry_layout)
        entry_valid = Signal()
        entry_take = Signal()
        if lean:
            m.d.comb += [entry.eq(decoder.o.payload), entry_valid.eq(decoder.o.valid), decoder.o.ready.eq(entry_take)]
        else:
            entry_queue = SyncFIFO(width=decoder.entry_layout.size, depth=2)
            m.submodules.entry_queue = ResetInserter(flush)(entry_queue)
            m.d.comb += [entry_queue.w_data.eq(decoder.o.payload), entry_queue.w_en.eq(decoder.o.valid),
                         decoder.o.ready.eq(entry_queue.w_rdy), entry.eq(entry_queue.r_data),
                         entry_valid.eq(entry_queue.r_rdy), entry_queue.r_en.eq(entry_take)]
        mac = MacArray(channel_lanes=q_n, pixel_lanes=p_n, acc_bits=cfg.acc_bits, soft_products=cfg.soft_products,
                       running_totals=cfg.running_totals, registered_dsps=cfg.registered_dsps,
                       vendor_primitives=self.vendor_primitives and cfg.registered_dsps)
        m.submodules.mac = ResetInserter(flush)(mac)
        tag_bits = _bits(cfg.act_depth)
        requant_cls = Requantiser if cfg.requant == "pipelined" else SerialRequantiser
        requant = requant_cls(acc_bits=cfg.acc_bits, tag_bits=tag_bits)
        m.submodules.requant = ResetInserter(flush)(requant)
        rebuild = []
        # a tap's info travels with rebuild lane 0; its activation offset, kernel row and channel kill are
        # worked out before the rebuild, so the tap issuer only adds the pixel lane's base
        info_layout = data.StructLayout({"tap_off": signed(s_bits), "kr": 2, "chan_kill": 1, "tap": 2,
                                         "empty": 1, "first": 1, "last": 1, "final": 1})
        info_bits = info_layout.size
        if sd:
            for q in range(q_n):
                unit = RebuildUnit(exp_bits=e_bits, weight_bits=8, tag_bits=info_bits if q == 0 else 0)
                m.submodules[f"rebuild{q}"] = ResetInserter(flush)(unit)
                rebuild.append(unit)
                m.d.comb += unit.wshift.eq(fld["wshift"])
        m.d.comb += [requant.m0.eq(fld["m0"]), requant.shift.eq(fld["shift"]),
                     requant.zero_point.eq(fld["zp_out"]), requant.act_min.eq(fld["act_min"]),
                     requant.act_max.eq(127), requant.o.ready.eq(1)]
        m.d.comb += [drain_wr_en.eq(requant.o.valid), drain_wr_addr.eq(requant.o.payload.tag),
                     drain_wr_data.eq(requant.o.payload.value)]

        is_k3 = fld["kind"] == KIND_K3

        # ---------------------------------------------------------------------------- sequencer state
        desc_word = Signal(range(DESC_WORDS + 1))
        pg_o = Signal(o_bits)                    # output pixel of pixel lane 0
        cg_m = Signal(m_bits)                    # output channel of channel lane 0
        pg_end = Signal()                        # pg_o >= n_pix, registered with pg_o
        cg_end = Signal()                        # cg_m >= out_c, registered with cg_m
        code_ptr = Signal(cb_bits)               # never past code_depth (checked before it moves on)
        bm_ptr = Signal(bb_bits)                 # never past bitmap_depth (checked at every group start)
        init_k = Signal(range(p_n + 1))
        group_code_start = Signal(cb_bits)       # first code entry of the current channel group
        group_code_end = Signal(cb_bits)         # one past its last entry
        # pixel lanes (coordinates and addresses modulo 2**I, 2**S: exact for every lane with an output pixel)
        lane_ox = [Signal(u_bits + 1, name=f"lane{p}_ox") for p in range(p_n)]
        lane_iy = [Signal(signed(i_bits), name=f"lane{p}_iy") for p in range(p_n)]
        lane_ix = [Signal(signed(i_bits), name=f"lane{p}_ix") for p in range(p_n)]
        lane_base = [Signal(signed(s_bits), name=f"lane{p}_base") for p in range(p_n)]
        lanes = (lane_ox, lane_iy, lane_ix, lane_base)
        # the lanes' state at pixel group 0, restored at the start of every channel group
        lanes_init = tuple([Signal.like(sig, name=f"{sig.name}_init") for sig in group] for group in lanes)

        # Stepping a pixel lane by (dq rows, dr columns) wraps at the row end: ox + dr >= out_w. Both outcomes
        # are summed a cycle ahead, in registers, from the lane's state and per-layer step constants (the
        # wrapped sums' constants pre-added), so a step is a sign bit and a multiplexer. Two step kinds:
        # the group step (P pixels on) and, while the lanes are set up, the step from lane k - 1 to lane k.
        init_mode = Signal()                     # lanes being set up: the steppers make the lane-to-lane step
        lanes_changed = Signal()                 # a lane (or init_mode) changes this cycle
        lanes_settled = Signal()                 # the steppers' sums are those of the current lanes
        # lean builds (iCE40) sum combinationally: always settled
        step_domain = m.d.comb if lean else m.d.sync
        if lean:
            m.d.comb += lanes_settled.eq(1)
        else:
            m.d.sync += lanes_settled.eq(~lanes_changed)
        stride = fld["stride"]
        consts = {                               # name: (width, signed, group step, lane-to-lane step)
            "dr": (u_bits + 1, False, fld["r_w"], 1),
            "dr_w": (u_bits + 2, True, fld["r_w"] - fld["out_w"], 1 - fld["out_w"]),
            "dq": (i_bits, True, fld["qs"], 0),
            "dq_w": (i_bits, True, fld["qs"] + stride, stride),
            "ds": (i_bits, True, fld["rs"], stride),
            "ds_w": (i_bits, True, fld["rs"] - fld["wo_s"], stride - fld["wo_s"]),
            "db": (s_bits, True, fld["group_step"], fld["step_x"]),
            "db_w": (s_bits, True, fld["group_step"] + fld["row_wrap"], fld["step_x"] + fld["row_wrap"]),
        }
        k_sel = {}
        for name, (width, is_signed, group_value, init_value) in consts.items():
            shape = signed(width) if is_signed else unsigned(width)
            k_group = Signal(shape, name=f"kstep_{name}")
            k_init = Signal(shape, name=f"kinit_{name}")
            step_domain += [k_group.eq(group_value), k_init.eq(init_value)]       # the fields are stable
            k_sel[name] = Mux(init_mode, k_init, k_group)
        steppers = []
        for p in range(p_n):
            ox = Signal(u_bits + 2, name=f"step{p}_ox")
            ox_w = Signal(signed(u_bits + 3), name=f"step{p}_ox_w")
            sums = [(Signal(signed(i_bits), name=f"step{p}_iy"), Signal(signed(i_bits), name=f"step{p}_iy_w")),
                    (Signal(signed(i_bits), name=f"step{p}_ix"), Signal(signed(i_bits), name=f"step{p}_ix_w")),
                    (Signal(signed(s_bits), name=f"step{p}_base"), Signal(signed(s_bits), name=f"step{p}_base_w"))]
            step_domain += [ox.eq(lane_ox[p] + k_sel["dr"]), ox_w.eq(lane_ox[p] + k_sel["dr_w"])]
            for (plain, wrapped), src, k in zip(sums, (lane_iy, lane_ix, lane_base), ("dq", "ds", "db")):
                step_domain += [plain.eq(src[p] + k_sel[k]), wrapped.eq(src[p] + k_sel[k + "_w"])]
            wrap = ~ox_w[-1]
            steppers.append((Mux(wrap, ox_w, ox), *(Mux(wrap, wrapped, plain) for plain, wrapped in sums)))

        def set_lane(p, values, init=False):
            stmts = [group[p].eq(v) for group, v in zip(lanes, values)]
            if init:
                stmts += [group[p].eq(v) for group, v in zip(lanes_init, values)]
            return stmts

        # group bookkeeping shared with the pipeline
        rows_in_flight = Signal(4)               # rows accepted by row fetch and not yet issued (<= 8)
        ops_in_flight = Signal(4)                # issued ops not yet accumulated
        last_in_flight = Signal()                # a group's last op issued, its sums not yet in the shadow
        shadow_busy = Signal()
        drain_active = Signal()
        requant_in_flight = Signal(range(Requantiser.LATENCY + 2))
        group_pending = Signal()                 # decoder started for the current group, not finished
        pipeline_empty = Signal()
        issue_idle = Signal()                    # no row waiting between the decoder and the MAC array


        fail = Signal()
        fail_code = Signal(8)
        # data-path checks (addresses out of range) stop the run one cycle later: their comparators sit at
        # the end of long arithmetic paths, so they go through a register before reaching the sequencer
        dp_fail = Signal()
        dp_code = Signal(8)
        dp_fail_r = Signal()
        dp_code_r = Signal(8)
        m.d.sync += [dp_fail_r.eq(dp_fail & busy), dp_code_r.eq(dp_code)]

        with m.If(busy & ~fail):
            m.d.sync += cycles.eq(cycles + 1)
        # the MAC count is pipelined (issue -> m1 -> lanes x channels -> counter) off the issue path; it lands
        # three cycles after an issue, long before the run's last output is written
        mac_issue = Signal()
        mac_live = Signal(range(cfg.pixel_lanes + 1))
        mac_chans = Signal(range(cfg.channel_lanes + 1))
        mac_inc_valid = Signal()
        mac_inc = Signal(range(cfg.pes + 1))
        # live lanes x channels as gated shifted adds: a ``*`` here would take a DSP from the MAC budget
        m.d.sync += [mac_inc_valid.eq(mac_issue),
                     mac_inc.eq(sum(Mux(mac_live[b], mac_chans << b, 0) for b in range(len(mac_live))))]
        with m.If(mac_inc_valid):
            m.d.sync += macs.eq(macs + mac_inc)
        with m.If(clear_req & ~busy):
            m.d.sync += [cycles.eq(0), macs.eq(0), skipped.eq(0), stalls.eq(0), err.eq(0), err_code.eq(0),
                         done.eq(0)]

        # bases are streamed from the basis memory: one row (column j of the Q lanes' bases) per tap
        block_next = Signal(r_bits + 1)          # golden row index where the next block starts
        block_ptr = Signal(kb_bits + 3)          # basis row of (channel group, current block, column 0)
        group_basis_ptr = Signal(kb_bits + 3)    # basis row of (channel group, block 0, column 0)

        decoder_start = Signal()
        m.d.comb += [decoder.base.eq(bm_ptr), decoder.n_rows.eq(fld["n_rows"]), decoder.skip_slot3.eq(is_k3),
                     decoder.start.eq(decoder_start)]
        if sd:
            m.d.comb += [bitmap_rd.addr.eq(Mux(busy, decoder.mem_addr, offset)),
                         bitmap_rd.en.eq(Mux(busy, decoder.mem_en, 1)), decoder.mem_data.eq(bitmap_rd.data)]

        # ---------------------------------------------------------------------------- row fetch
        # two stages: rf0 takes an entry from the queue (with its code address), so the decoder can finish a
        # group and restart for the next while rf still emits the taps of the row before; rf reads the row's
        # codes (SD) or dense weights as it takes the entry from rf0 and holds the row while its taps (3, or
        # 1 for an empty entry) leave one per cycle (rf_step). SD: while the entry waits in rf0, the basis
        # pointer advances to the block that holds the row, one block per cycle, decided from registers
        # (rf0_ok: the entry's block is current); a row spends at least two cycles in rf0 and three in rf.
        entry_layout = data.StructLayout({"row": r_bits, "last": 1, "empty": 1, "first": 1})
        rf0_valid = Signal()
        rf0_info = Signal(entry_layout)
        rf0_index = Signal(r_bits)               # golden row index of rf0's row
        rf0_ok = Signal()
        rf0_code = Signal.like(code_ptr, name="rf0_code")
        rf_valid = Signal()
        rf_info = Signal(entry_layout)
        rf_tap = Signal(2)
        rf_first_pending = Signal()              # next decoded entry is the group's first
        rf_ready = Signal()                      # rf takes rf0's entry this cycle if there is one
        rf_take = Signal()
        rf_step = Signal()                       # tap rf_tap of the held row moves on this cycle
        rf_final = Signal()                      # ... and it is the row's final tap
        m.d.comb += [rf_final.eq(rf_info.empty | (rf_tap == 2)), rf_ready.eq(~rf_valid | (rf_step & rf_final)),
                     rf_take.eq(rf0_valid & rf_ready & (rf0_ok if sd else 1))]
        accept_row = Signal()
        if sd and not lean:
            # ECP5 SD: rf0 takes an entry only when it is empty, so the hand-over (rf's final tap -> rf_take)
            # ends at rf instead of running on into the entry queue's read and the code pointer, the critical
            # path at N = 64 (88.6 MHz on seed 1; 90.8 / 90.4 on seeds 1 / 2 after, the row decoder's scan
            # then critical on both); a bubble behind rows that leave rf0 at once costs 0.2-0.9 % of the
            # digits cycles at N = 64. Dense and iCE40 builds keep the back-to-back hand-over (not critical).
            m.d.comb += accept_row.eq(entry_valid & ~rf0_valid & busy)
        else:
            m.d.comb += accept_row.eq(entry_valid & (~rf0_valid | rf_take) & busy)
        m.d.comb += entry_take.eq(accept_row)
        with m.If(accept_row):
            m.d.sync += [rf0_valid.eq(1), rf0_info.row.eq(entry.row), rf0_code.eq(code_ptr), rf0_ok.eq(0),
                         rf0_index.eq(entry.index), rf0_info.last.eq(entry.last), rf0_info.empty.eq(entry.empty),
                         rf0_info.first.eq(rf_first_pending), rf_first_pending.eq(0)]
            with m.If(~entry.empty):
                m.d.sync += code_ptr.eq(code_ptr + 1)
                with m.If(code_ptr >= cfg.code_depth):
                    m.d.comb += [dp_fail.eq(1), dp_code.eq(hb.ERR_WEIGHT_ADDR)]
        with m.Elif(rf_take):
            m.d.sync += rf0_valid.eq(0)
        if cfg.code_in_spram:
            code_addr = Signal.like(code_rd.addr)
            # a read never shares a cycle with a write (yosys maps the pair to one port only if it sees that)
            m.d.comb += [code_addr.eq(Mux(busy, rf0_code, code_host_addr)), code_rd.addr.eq(code_addr),
                         code_wr.addr.eq(code_addr), code_rd.en.eq(rf_take & ~rf0_info.empty & ~code_wr.en)]
        else:
            m.d.comb += [code_rd.addr.eq(rf0_code), code_rd.en.eq(rf_take & ~rf0_info.empty)]
        with m.If(rf_take):
            m.d.sync += [rf_valid.eq(1), rf_info.eq(rf0_info), rf_tap.eq(0)]
        with m.Elif(rf_ready):
            m.d.sync += rf_valid.eq(0)
        with m.Elif(rf_step):
            m.d.sync += rf_tap.eq(rf_tap + 1)
        rf_codes = Signal(cfg.code_width)
        m.d.comb += rf_codes.eq(Mux(rf_info.empty, 0, code_rd.data))

        # block switch (SD): a group's first entry restarts the blocks as it enters rf0; rf reads the tap's
        # basis column one cycle ahead: column 0 as it takes the row, column j + 1 when tap j moves on
        if sd:
            needs_block = Signal()
            m.d.comb += needs_block.eq(~rf0_info.empty & (rf0_index >= block_next))
            rf_bnext = Signal.like(block_ptr, name="rf_bnext")        # basis row of the held row's next column
            with m.If(accept_row & rf_first_pending):
                m.d.sync += [block_next.eq(fld["block_rows"]), block_ptr.eq(group_basis_ptr)]
            with m.Elif(busy & rf0_valid & ~rf0_ok):
                with m.If(needs_block):
                    # the next block exists in a valid program (the row lies in it or beyond)
                    m.d.sync += [block_next.eq(block_next + fld["block_rows"]), block_ptr.eq(block_ptr + 3)]
                    with m.If(block_ptr + 5 >= cfg.basis_rows):
                        m.d.comb += [dp_fail.eq(1), dp_code.eq(hb.ERR_WEIGHT_ADDR)]
                with m.Else():
                    m.d.sync += rf0_ok.eq(1)
            with m.If(rf_take):
                m.d.sync += rf_bnext.eq(block_ptr + 1)
                with m.If(~rf0_info.empty & (block_ptr + 2 >= cfg.basis_rows)):
                    m.d.comb += [dp_fail.eq(1), dp_code.eq(hb.ERR_WEIGHT_ADDR)]
            with m.Elif(rf_step):
                m.d.sync += rf_bnext.eq(rf_bnext + 1)
            m.d.comb += [basis_rd.addr.eq(Mux(rf_take, block_ptr, rf_bnext)),
                         basis_rd.en.eq(rf_take | (rf_step & ~rf_final))]

        # ---------------------------------------------------------------------------- rebuild / weights
        # one tap per cycle: (codes, tap) -> Q rebuild units (SD; unit 0 carries the tap's info as its tag),
        # or the tap's dense weights straight from the row fetch
        rf_tap_info = Signal(info_layout)
        # tap geometry: row h -> channel offset and kernel row (conv 3x3 rows are 4c + kernel row)
        c_row = Signal(s_bits)
        with m.If(is_k3):
            m.d.comb += [c_row.eq(rf_info.row >> 2), rf_tap_info.kr.eq(rf_info.row[:2])]
            m.d.comb += rf_tap_info.tap_off.eq(
                c_row + Mux(rf_info.row[:2] == 0, 0, Mux(rf_info.row[:2] == 1, fld["wc"], fld["wc"] << 1))
                + Mux(rf_tap == 0, 0, Mux(rf_tap == 1, fld["in_c"], fld["in_c"] << 1)))
        with m.Else():
            m.d.comb += [c_row.eq(rf_info.row + (rf_info.row << 1)), rf_tap_info.kr.eq(0),
                         rf_tap_info.tap_off.eq(c_row + rf_tap)]
        m.d.comb += rf_tap_info.chan_kill.eq(~is_k3 & (c_row + rf_tap >= fld["in_c"]))
        m.d.comb += [rf_tap_info.tap.eq(rf_tap), rf_tap_info.empty.eq(rf_info.empty),
                     rf_tap_info.first.eq(rf_info.first & (rf_tap == 0)), rf_tap_info.last.eq(rf_info.last & rf_final),
                     rf_tap_info.final.eq(rf_final)]
        rb_valid = Signal()                      # a tap's weights ready for the tap issuer
        rb_weights = Signal(data.ArrayLayout(signed(8), q_n))
        rb_info = Signal(info_layout)
        ti_take = Signal()                       # the tap issuer takes the tap this cycle
        ti_free = Signal()                       # the tap issuer can take a tap (it is empty or issuing)
        if sd and lean:
            # lean builds (iCE40): the rebuild units advance together when the tap issuer takes their output
            # (a ready chain back to the row fetch: cheap at iCE40 clock rates, and no tap queue)
            unit0 = rebuild[0]
            m.d.comb += rf_step.eq(rf_valid & unit0.i.ready)
            for q, unit in enumerate(rebuild):
                m.d.comb += [unit.i.valid.eq(rf_step), unit.o.ready.eq(ti_free),
                             unit.i.payload.column.as_value().eq(basis_rd.data[q * 24:(q + 1) * 24]),
                             unit.i.payload.codes.as_value().eq(rf_codes[q * lane_w:(q + 1) * lane_w]),
                             rb_weights[q].eq(unit.o.payload.weight)]
            m.d.comb += [unit0.i.payload.tag.eq(rf_tap_info), rb_valid.eq(unit0.o.valid),
                         rb_info.as_value().eq(unit0.o.payload.tag)]
        elif not lean:
            # credit flow (ECP5): the taps' path never stalls (no enable fans out to the rebuild units' registers
            # and no ready runs back from the tap issuer to the row fetch); a tap enters only when the queue
            # behind has room for every tap in flight. A tap holds its credit for LATENCY + 2 cycles at full
            # rate (the input register, the units, the queue), so the queue is one deeper than that for one tap
            # per cycle. Dense builds have no units (LATENCY 0): their tap's weights are picked from the
            # registered row, so the code block RAM's slow clock-to-out ends at a register here too.
            latency = RebuildUnit.LATENCY if sd else 0
            credits = latency + 3
            tap_queue = SyncFIFO(width=q_n * 8 + info_bits, depth=credits)
            m.submodules.tap_queue = ResetInserter(flush)(tap_queue)
            taps_held = Signal(range(credits + 1))      # taps in the input register, the units or the queue
            m.d.comb += rf_step.eq(rf_valid & (taps_held < credits))
            with m.If(rf_step & ~ti_take):
                m.d.sync += taps_held.eq(taps_held + 1)
            with m.Elif(ti_take & ~rf_step):
                m.d.sync += taps_held.eq(taps_held - 1)
            with m.If(flush):
                m.d.sync += taps_held.eq(0)
            # the code (and SD: basis) block RAMs' outputs are registered before anything else reads them
            # (their clock-to-out is most of a cycle)
            rb_in_valid = Signal()
            rb_in_codes = Signal(cfg.code_width)
            rb_in_info = Signal(info_layout)
            m.d.sync += [rb_in_valid.eq(rf_step & ~flush), rb_in_codes.eq(rf_codes), rb_in_info.eq(rf_tap_info)]
            if sd:
                rb_in_column = Signal(cfg.basis_width)
                m.d.sync += rb_in_column.eq(basis_rd.data)
                unit0 = rebuild[0]
                for q, unit in enumerate(rebuild):
                    m.d.comb += [unit.i.valid.eq(rb_in_valid), unit.o.ready.eq(1),
                                 unit.i.payload.column.as_value().eq(rb_in_column[q * 24:(q + 1) * 24]),
                                 unit.i.payload.codes.as_value().eq(rb_in_codes[q * lane_w:(q + 1) * lane_w]),
                                 tap_queue.w_data[q * 8:(q + 1) * 8].eq(unit.o.payload.weight)]
                m.d.comb += [unit0.i.payload.tag.eq(rb_in_info), tap_queue.w_en.eq(unit0.o.valid),
                             tap_queue.w_data[q_n * 8:].eq(unit0.o.payload.tag)]
            else:
                for q in range(q_n):
                    m.d.comb += tap_queue.w_data[q * 8:(q + 1) * 8].eq(
                        _dense_tap_weight(rb_in_codes[q * lane_w:(q + 1) * lane_w], rb_in_info.tap))
                m.d.comb += [tap_queue.w_en.eq(rb_in_valid), tap_queue.w_data[q_n * 8:].eq(rb_in_info)]
            m.d.comb += [rb_valid.eq(tap_queue.r_rdy), tap_queue.r_en.eq(ti_take),
                         rb_weights.as_value().eq(tap_queue.r_data[:q_n * 8]),
                         rb_info.as_value().eq(tap_queue.r_data[q_n * 8:])]
        else:
            # lean dense builds: the held row's tap goes straight to the tap issuer
            m.d.comb += [rf_step.eq(ti_take), rb_valid.eq(rf_valid), rb_info.eq(rf_tap_info)]
            for q in range(q_n):
                m.d.comb += rb_weights[q].eq(_dense_tap_weight(rf_codes[q * lane_w:(q + 1) * lane_w], rf_tap))
        row_taken = Signal()                     # a row's final tap enters the tap issuer
        m.d.comb += row_taken.eq(ti_take & rb_info.final)
        with m.If(accept_row & ~row_taken):
            m.d.sync += rows_in_flight.eq(rows_in_flight + 1)
        with m.Elif(row_taken & ~accept_row):
            m.d.sync += rows_in_flight.eq(rows_in_flight - 1)

        # ---------------------------------------------------------------------------- tap issuer
        ti_valid = Signal()
        ti_weights = Signal.like(rb_weights)
        ti_info = Signal(info_layout)
        ti_tap = ti_info.tap
        # the tap issuer follows the loop nest on its own (channel groups outside, pixel groups inside): at
        # each group's first tap it advances its group counters and the pixel lanes, so no record of the
        # group needs to travel down the pipeline
        ti_layer_start = Signal()                # the next group is the layer's first
        ti_m = Signal(m_bits)                    # output channel of channel lane 0
        ti_pix_out = Signal(a_bits)              # output address of (pixel lane 0, channel 0)
        # the group's counts, registered as the group starts (no subtract-and-compare behind the issue)
        ti_chan_left = Signal(m_bits)            # output channels from ti_m on
        ti_pix_left = Signal(o_bits)             # output pixels from pixel lane 0 on
        ti_qv = Signal(range(q_n + 1))           # channel lanes with an output channel
        ti_pv = Signal(range(p_n + 1))           # pixel lanes with an output pixel
        ti_pg_last = Signal()                    # the pixel group is its channel group's last
        issue = Signal()
        op_last = Signal()
        op_first = Signal()
        op_final_tap = Signal()
        m.d.comb += [op_final_tap.eq(ti_info.final), op_last.eq(ti_info.last), op_first.eq(ti_info.first)]
        # a group's first op steps the group counters and the pixel lanes while it waits in the tap issuer, one
        # cycle before it can issue: the step is decided from registers, and taking a tap only loads the
        # tap issuer's registers (a small fan-out on the path from the tap queue)
        ti_stepped = Signal()                    # the held op's group step is done
        step_now = Signal()
        m.d.comb += [
            step_now.eq(ti_valid & op_first & ~ti_stepped & lanes_settled),
            issue.eq(ti_valid & busy & ~(op_last & (shadow_busy | last_in_flight)) & (~op_first | ti_stepped)),
            ti_free.eq(~ti_valid | issue),
        ]
        ti_fill = Signal()                       # the held tap is replaced by a new one if it is free
        if lean:
            m.d.comb += [ti_take.eq(rb_valid & ti_free), ti_fill.eq(ti_take)]
            with m.If(ti_free):
                # without a tap to take these registers hold nothing (ti_valid goes low)
                m.d.sync += [ti_weights.eq(rb_weights), ti_info.eq(rb_info), ti_stepped.eq(0)]
        else:
            # a skid register behind the held tap: the tap issuer takes a tap whenever the skid is empty, so
            # the queue's read, the row counters and (dense) the row fetch's step depend on registers only,
            # not on the issue decision. The skid fills only in a cycle the held tap does not issue and is
            # emptied into the held tap by the next issue: one tap per cycle while ops issue. A waiting tap
            # implies a held one, so ``ti_valid`` alone says whether the tap issuer is empty.
            sk_valid = Signal()
            sk_weights = Signal.like(rb_weights)
            sk_info = Signal(info_layout)
            m.d.comb += [ti_take.eq(rb_valid & ~sk_valid), ti_fill.eq(ti_take | sk_valid)]
            with m.If(~sk_valid):
                m.d.sync += [sk_weights.eq(rb_weights), sk_info.eq(rb_info)]
            with m.If(ti_free):
                m.d.sync += [ti_weights.eq(Mux(sk_valid, sk_weights, rb_weights)),
                             ti_info.eq(Mux(sk_valid, sk_info, rb_info)), ti_stepped.eq(0),
                             sk_valid.eq(0)]
            with m.Elif(ti_take):
                m.d.sync += sk_valid.eq(1)
            with m.If(flush):
                m.d.sync += sk_valid.eq(0)
        with m.If(step_now):
            m.d.sync += ti_stepped.eq(1)
            m.d.comb += lanes_changed.eq(1)
            # the compares look at the counts before the subtraction (left - n >= n is left >= 2n), so they
            # run beside the subtractor instead of behind it
            with m.If(ti_layer_start | ti_pg_last):
                chan_left = Mux(ti_layer_start, fld["out_c"], ti_chan_left - q_n)
                chan_full = Mux(ti_layer_start, fld["out_c"] >= q_n, ti_chan_left >= 2 * q_n)
                m.d.sync += [ti_layer_start.eq(0), ti_m.eq(Mux(ti_layer_start, 0, ti_m + q_n)),
                             ti_chan_left.eq(chan_left), ti_qv.eq(Mux(chan_full, q_n, chan_left)),
                             ti_pix_left.eq(fld["n_pix"]), ti_pv.eq(Mux(fld["n_pix"] >= p_n, p_n, fld["n_pix"])),
                             ti_pg_last.eq(fld["n_pix"] <= p_n), ti_pix_out.eq(0)]
                with m.If(~ti_layer_start):
                    # next channel group: the pixel lanes restart
                    for p in range(p_n):
                        m.d.sync += [group[p].eq(init[p]) for group, init in zip(lanes, lanes_init)]
            with m.Else():
                pix_left = ti_pix_left - p_n
                m.d.sync += [ti_pix_left.eq(pix_left), ti_pv.eq(Mux(ti_pix_left >= 2 * p_n, p_n, pix_left)),
                             ti_pg_last.eq(ti_pix_left <= 2 * p_n), ti_pix_out.eq(ti_pix_out + fld["pm_step"])]
                for p in range(p_n):
                    m.d.sync += set_lane(p, steppers[p])
        with m.If(ti_fill):
            m.d.sync += ti_valid.eq(1)
        with m.Elif(issue):
            m.d.sync += ti_valid.eq(0)
        with m.If(busy & ~issue):
            m.d.sync += stalls.eq(stalls + 1)

        kr = ti_info.kr
        tap_off = ti_info.tap_off
        chan_kill = ti_info.chan_kill

        # per pixel lane: address, padding, kill; the activation read
        act_addr = [Signal(signed(s_bits), name=f"tap{p}_addr") for p in range(p_n)]
        pad = [Signal(name=f"tap{p}_pad") for p in range(p_n)]
        kill = [Signal(name=f"tap{p}_kill") for p in range(p_n)]
        addr_bad = Signal()
        for p in range(p_n):
            iy = lane_iy[p] + kr
            ix = lane_ix[p] + ti_tap
            m.d.comb += [act_addr[p].eq(lane_base[p] + tap_off),
                         pad[p].eq(is_k3 & ((iy < 0) | (iy >= fld["in_h"]) | (ix < 0) | (ix >= fld["in_w"]))),
                         kill[p].eq(chan_kill | ti_info.empty | (ti_pv <= p))]
            for b in range(2):
                port = act_rd[b][p]
                if p == 0:
                    m.d.comb += [port.addr.eq(Mux(busy, act_addr[p], offset)), port.en.eq(1)]
                else:
                    m.d.comb += [port.addr.eq(act_addr[p]), port.en.eq(1)]

        # stage after issue: activation data arrives; form the MAC inputs
        m1_valid = Signal()
        m1_first = Signal()
        m1_last = Signal()
        m1_w = Signal(data.ArrayLayout(signed(8), q_n))
        m1_pad = Signal(p_n)
        m1_kill = Signal(p_n)
        m1_buf = Signal()
        m1_qv = Signal.like(ti_qv)
        m1_addr = [Signal(signed(s_bits), name=f"m1_addr{p}") for p in range(p_n)]
        m.d.sync += [m1_valid.eq(issue), m1_first.eq(op_first), m1_last.eq(op_last), m1_buf.eq(in_buf),
                     m1_pad.eq(Cat(*pad)), m1_kill.eq(Cat(*kill)), m1_qv.eq(ti_qv)]
        m.d.sync += [m1_addr[p].eq(act_addr[p]) for p in range(p_n)]
        # the read addresses' range check, a cycle after the read (from registers; the failure is registered
        # once more before it stops the run)
        bad_terms = [~m1_pad[p] & ~m1_kill[p] & ((m1_addr[p] < 0) | (m1_addr[p] >= fld["in_size"]))
                     for p in range(p_n)]
        m.d.comb += addr_bad.eq(m1_valid & Cat(*bad_terms).any())
        with m.If(addr_bad):
            m.d.comb += [dp_fail.eq(1), dp_code.eq(hb.ERR_ACT_ADDR)]
        # count MACs: valid channel lanes x pixel lanes doing real work
        live = Signal(range(p_n + 1))
        m.d.comb += live.eq(sum((~m1_kill[p]).as_unsigned() for p in range(p_n)))
        m.d.sync += [mac_issue.eq(m1_valid), mac_live.eq(live), mac_chans.eq(m1_qv)]
        for q in range(q_n):
            m.d.sync += m1_w[q].eq(ti_weights[q])          # 0 for an empty entry (its codes are 0)
        if lean:
            m.d.comb += [mac.valid.eq(m1_valid), mac.first.eq(m1_first), mac.last.eq(m1_last),
                         mac.weights.eq(m1_w)]
            for p in range(p_n):
                data_p = Mux(m1_buf, act_rd[1][p].data, act_rd[0][p].data)
                m.d.comb += mac.acts[p].eq(Mux(m1_kill[p], 0, Mux(m1_pad[p], fld["zp_in"], data_p)))
        else:
            # m2: both buffers' activation block RAM outputs registered as they are (their clock-to-out leaves
            # no time for the buffer, padding and kill multiplexers in the same cycle)
            m2_valid, m2_first, m2_last, m2_buf = Signal(), Signal(), Signal(), Signal()
            m2_w = Signal.like(m1_w)
            m2_pad = Signal(p_n)
            m2_kill = Signal(p_n)
            m2_data = [[Signal(8, name=f"m2_act{b}_{p}") for p in range(p_n)] for b in range(2)]
            m.d.sync += [m2_valid.eq(m1_valid), m2_first.eq(m1_first), m2_last.eq(m1_last), m2_buf.eq(m1_buf),
                         m2_w.eq(m1_w), m2_pad.eq(m1_pad), m2_kill.eq(m1_kill)]
            m.d.sync += [m2_data[b][p].eq(act_rd[b][p].data) for b in range(2) for p in range(p_n)]
            m.d.comb += [mac.valid.eq(m2_valid), mac.first.eq(m2_first), mac.last.eq(m2_last),
                         mac.weights.eq(m2_w)]
            for p in range(p_n):
                data_p = Mux(m2_buf, m2_data[1][p], m2_data[0][p])
                m.d.comb += mac.acts[p].eq(Mux(m2_kill[p], 0, Mux(m2_pad[p], fld["zp_in"], data_p)))

        # ops in flight: issue -> m1 (-> m2) -> MacArray; last op tracked until the shadow copy
        with m.If(issue & op_last):
            m.d.sync += [last_in_flight.eq(1)]
        # a simple occupancy model: ops drain mac.latency + 1 (+ 1 for m2) cycles after issue
        op_delay = Signal(mac.latency + (1 if lean else 2))
        m.d.sync += op_delay.eq(Cat(issue, op_delay[:-1]))
        with m.If(op_delay[-1] & ~issue):
            m.d.sync += ops_in_flight.eq(ops_in_flight - 1)
        with m.Elif(issue & ~op_delay[-1]):
            m.d.sync += ops_in_flight.eq(ops_in_flight + 1)

        # group information travels with the group's last op
        pend_m = Signal(m_bits)
        pend_qv = Signal(range(q_n + 1))
        pend_out = Signal(a_bits)
        pend_pv = Signal(range(p_n + 1))
        with m.If(issue & op_last):
            m.d.sync += [pend_m.eq(ti_m), pend_qv.eq(ti_qv), pend_out.eq(ti_pix_out + ti_m), pend_pv.eq(ti_pv)]

        m.d.comb += [
            issue_idle.eq((rows_in_flight == 0) & ~ti_valid & ~rf_valid & ~rf0_valid & ~group_pending
                           & ~decoder.busy & ~entry_valid),
        ]
        # registered: its terms come from all over the data path; in LAYER_END nothing new starts, so once
        # the pipeline is empty it stays empty and the verdict may arrive a cycle late
        m.d.sync += pipeline_empty.eq(issue_idle & (ops_in_flight == 0) & ~last_in_flight & ~shadow_busy
                                      & ~drain_active & (requant_in_flight == 0))

        # ---------------------------------------------------------------------------- drain + requant
        # the shadow holds a finished group's sums while the next group accumulates; the drain selects one per
        # step from registered indices. (A shift register instead of the Q*P-way multiplexer was tried: it
        # costs a LUT per bit, Q*P*acc_bits in all, several times the multiplexer's area, and pushed ECP5-25F
        # N = 64 past the device.)
        acc_shape = signed(cfg.acc_bits)
        shadow = Signal.like(mac.acc)
        shadow_start = Signal.like(mac.acc) if mac.running_totals else None   # running totals: sum = acc - start
        sh_m = Signal(m_bits)
        sh_qv = Signal(range(q_n + 1))
        sh_pv = Signal(range(p_n + 1))
        d_q = Signal(range(q_n + 1))
        d_p = Signal(range(p_n + 1))
        d_addr = Signal(a_bits)                  # output address of (d_p, d_q)
        d_row_addr = Signal(a_bits)              # output address of (d_p, 0)
        d_bias = Signal(_holds((1 << zb_bits) + (1 << m_bits) + q_n))    # bias entry of channel sh_m + d_q
        d_bias_row = Signal.like(d_bias)                                   # ... of channel sh_m
        d_q_last = Signal()                      # d_q + 1 >= sh_qv, registered with d_q
        d_p_last = Signal()                      # d_p + 1 >= sh_pv, registered with d_p
        with m.If(mac.done):
            if mac.running_totals:
                m.d.sync += shadow_start.eq(mac.start)
            m.d.sync += [shadow.eq(mac.acc), shadow_busy.eq(1), last_in_flight.eq(0), sh_m.eq(pend_m),
                         sh_qv.eq(pend_qv), sh_pv.eq(pend_pv), d_q.eq(0), d_p.eq(0),
                         d_q_last.eq(pend_qv <= 1 if q_n > 1 else 1), d_p_last.eq(pend_pv <= 1 if p_n > 1 else 1),
                         d_addr.eq(pend_out), d_row_addr.eq(pend_out),
                         d_bias.eq(fld["bias_base"] + pend_m), d_bias_row.eq(fld["bias_base"] + pend_m)]
        # D0: pick one sum, read its bias; D1: the bias arrives from the block RAM; D2: registered, so the
        # block RAM's slow clock-to-out does not lead into the requantiser's first adder (with running totals,
        # D1 holds the picked lane's total and start, D2 their difference)
        d1_valid = Signal()
        d1_acc = Signal(acc_shape)
        d1_start = Signal(acc_shape)
        d1_tag = Signal(tag_bits)
        d2_valid = Signal()
        d2_acc = Signal(acc_shape)
        d2_bias = Signal(signed(32))
        d2_tag = Signal(tag_bits)
        d2_ready = Signal()
        sel_acc = Signal(acc_shape)
        p_log = ceil_log2(p_n)                  # P is a power of two: sum (q, p) sits at q * P + p
        sel_index = Cat(d_p[:p_log], d_q) if p_log else d_q
        m.d.comb += sel_acc.eq(shadow[sel_index] if q_n * p_n > 1 else shadow[0])
        drain_step = Signal()
        m.d.comb += [d2_ready.eq(~d2_valid | requant.i.ready), drain_step.eq(shadow_busy & (~d1_valid | d2_ready))]
        m.d.comb += [bias_rd.addr.eq(Mux(busy, d_bias, offset)), bias_rd.en.eq(Mux(busy, drain_step, 1))]
        m.d.comb += drain_active.eq(d1_valid | d2_valid)
        with m.If(drain_step):
            with m.If(d_bias >= cfg.bias_depth):
                m.d.comb += [dp_fail.eq(1), dp_code.eq(hb.ERR_BIAS_ADDR)]
            m.d.sync += [d1_valid.eq(1), d1_acc.eq(sel_acc), d1_tag.eq(d_addr)]
            if mac.running_totals:
                m.d.sync += d1_start.eq(shadow_start[sel_index] if q_n * p_n > 1 else shadow_start[0])
            with m.If(~d_q_last):
                m.d.sync += [d_q.eq(d_q + 1), d_q_last.eq(d_q + 2 >= sh_qv), d_addr.eq(d_addr + 1),
                             d_bias.eq(d_bias + 1)]
            with m.Elif(~d_p_last):
                m.d.sync += [d_q.eq(0), d_q_last.eq(sh_qv <= 1 if q_n > 1 else 1), d_p.eq(d_p + 1),
                             d_p_last.eq(d_p + 2 >= sh_pv),
                             d_addr.eq(d_row_addr + fld["out_c"]),
                             d_row_addr.eq(d_row_addr + fld["out_c"]), d_bias.eq(d_bias_row)]
            with m.Else():
                m.d.sync += shadow_busy.eq(0)
        with m.Elif(d2_ready):
            m.d.sync += d1_valid.eq(0)
        if lean:
            # lean builds (iCE40): no D2 register, D1 feeds the requantiser with the block RAM's bias
            m.d.comb += [d2_valid.eq(d1_valid), d2_acc.eq(d1_acc), d2_bias.eq(bias_rd.data), d2_tag.eq(d1_tag)]
        else:
            with m.If(d2_ready):
                # the read port holds its data while not enabled, so a stalled D1 keeps its bias
                m.d.sync += [d2_valid.eq(d1_valid), d2_bias.eq(bias_rd.data), d2_tag.eq(d1_tag),
                             d2_acc.eq(d1_acc - d1_start if mac.running_totals else d1_acc)]
        m.d.comb += [requant.i.valid.eq(d2_valid), requant.i.payload.acc.eq(d2_acc),
                     requant.i.payload.bias.eq(d2_bias), requant.i.payload.tag.eq(d2_tag)]
        with m.If(requant.i.valid & requant.i.ready & ~requant.o.valid):
            m.d.sync += requant_in_flight.eq(requant_in_flight + 1)
        with m.Elif(requant.o.valid & ~(requant.i.valid & requant.i.ready)):
            m.d.sync += requant_in_flight.eq(requant_in_flight - 1)

        # ---------------------------------------------------------------------------- the layer loop
        m.d.comb += [desc_rd.addr.eq(Mux(busy, Cat(desc_word[:5], layer_idx), offset)), desc_rd.en.eq(1)]
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(start_r):
                    m.d.comb += flush.eq(1)
                    m.d.sync += [busy.eq(1), done.eq(0), err.eq(0), err_code.eq(0), layer_idx.eq(0),
                                 in_buf.eq(0), desc_word.eq(0), cycles.eq(0), macs.eq(0), skipped.eq(0),
                                 stalls.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # word k is read in cycle k, registered (the block RAM's clock-to-out is slow) and lands in
                # its field registers in cycle k + 2
                m.d.sync += desc_word.eq(desc_word + 1)
                for name, (word, lsb, width, is_signed) in FIELDS.items():
                    value = desc_data[lsb:lsb + width]
                    bits = len(fld[name])
                    with m.If(desc_word == word + 2):
                        if bits == width:
                            m.d.sync += fld[name].eq(value)
                        else:
                            upper = value[bits - 1:] if is_signed else value[bits:]
                            too_wide = ~(upper.all() | ~upper.any()) if is_signed else upper.any()
                            if fit[name][1] == "sat":
                                m.d.sync += fld[name].eq(Mux(too_wide, (1 << bits) - 1, value[:bits]))
                            else:
                                m.d.sync += fld[name].eq(value[:bits])
                            if name in over:
                                m.d.sync += over[name].eq(too_wide)
                with m.If(desc_word == USED_WORDS + 1):
                    m.next = "CHECK"
                with m.If(fail):
                    m.next = "IDLE"
            with m.State("CHECK"):
                code = Signal(8)
                check_code = Signal(8)
                with m.If(fld["kind"] == KIND_END):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    with m.If((fld["kind"] != KIND_K1) & (fld["kind"] != KIND_K3)):
                        m.d.comb += code.eq(hb.ERR_KIND)
                    with m.Elif((fld["stride"] != 1) & (fld["stride"] != 2)):
                        m.d.comb += code.eq(hb.ERR_STRIDE)
                    with m.Elif(Cat(*((fld[n] == 0) & ~over_any(n) for n in ("in_h", "in_w", "in_c", "out_c", "n_pix",
                                                                               "out_w", "n_rows"))).any()):
                        m.d.comb += code.eq(hb.ERR_SHAPE)
                    with m.Elif(fld["sd"] != int(sd)):
                        m.d.comb += code.eq(hb.ERR_MODE)
                    with m.Elif((fld["in_size"] > cfg.act_depth) | (fld["out_size"] > cfg.act_depth)
                                | over_any(*(n for n in fit if fit[n][1] == size_err))):
                        m.d.comb += code.eq(hb.ERR_ACT_SIZE)
                    with m.Elif(Const(int(sd)) & ((fld["block_rows"] == 0) | (fld["n_blocks"] == 0)
                                                  | over_any("n_blocks"))):
                        m.d.comb += code.eq(hb.ERR_PARAMS)
                    # fields too wide for their registers, whose range checks come later in a run
                    with m.Elif(over_any(*(n for n in fit if fit[n][1] == waddr_err))):
                        m.d.comb += code.eq(hb.ERR_WEIGHT_ADDR)
                    with m.Elif(over_any("bias_base")):
                        m.d.comb += code.eq(hb.ERR_BIAS_ADDR)
                    with m.Elif(over_any("base0")):
                        m.d.comb += code.eq(hb.ERR_ACT_ADDR)
                    # the checks' verdict is registered: their priority chain stays off the error path
                    m.d.sync += check_code.eq(code)
                    m.next = "CHECKED"
                with m.If(fail):
                    m.next = "IDLE"
            with m.State("CHECKED"):
                with m.If(check_code != 0):
                    m.d.comb += [fail.eq(1), fail_code.eq(check_code)]
                    m.next = "IDLE"
                with m.Else():
                    pad0 = Mux(is_k3, -1, 0)
                    m.d.sync += set_lane(0, (0, pad0, pad0, fld["base0"]), init=True)
                    m.d.sync += [init_k.eq(1), init_mode.eq(1), pg_o.eq(0), pg_end.eq(0), ti_layer_start.eq(1)]
                    m.d.comb += lanes_changed.eq(1)
                    m.next = "INIT_LANES"
                with m.If(fail):
                    m.next = "IDLE"
            with m.State("INIT_LANES"):
                # lane k is lane k - 1 stepped one output pixel on, once the steppers have lane k - 1
                for k in range(1, p_n):
                    with m.If((init_k == k) & lanes_settled):
                        m.d.sync += set_lane(k, steppers[k - 1], init=True)
                        m.d.comb += lanes_changed.eq(1)
                with m.If(lanes_settled):
                    m.d.sync += init_k.eq(init_k + 1)
                with m.If((init_k >= p_n - 1) & lanes_settled if p_n > 1 else Const(1)):
                    m.d.comb += lanes_changed.eq(1)
                    m.d.sync += [init_mode.eq(0), cg_m.eq(0), cg_end.eq(0), code_ptr.eq(fld["code_base"]),
                                 group_code_start.eq(fld["code_base"]), group_code_end.eq(fld["code_base"]),
                                 bm_ptr.eq(fld["bitmap_base"]), group_basis_ptr.eq(fld["basis_base"])]
                    m.next = "GROUP"
                with m.If(fail):
                    m.next = "IDLE"
            with m.State("GROUP"):
                # channel groups outside, pixel groups inside: a channel group's bases load once per layer
                with m.If(cg_end):
                    m.next = "LAYER_END"
                with m.Elif(pg_end):
                    # next channel group; the pixel lanes restart when its first row reaches the tap issuer
                    m.d.sync += [cg_m.eq(cg_m + q_n), cg_end.eq(cg_m + q_n >= fld["out_c"]), pg_end.eq(0),
                                 bm_ptr.eq(bm_ptr + fld["bm_words"]),
                                 group_basis_ptr.eq(group_basis_ptr + (fld["n_blocks"] << 1) + fld["n_blocks"]),
                                 code_ptr.eq(group_code_end), group_code_start.eq(group_code_end), pg_o.eq(0)]
                with m.Elif(~decoder.busy & ~group_pending):
                    # start decoding this (channel group, pixel group)
                    m.d.comb += decoder_start.eq(1)
                    if sd:
                        # a data-path check (stops the run a cycle later): the decoder only reads meanwhile
                        with m.If((bm_ptr + fld["bm_words"] > cfg.bitmap_depth)
                                  | (group_basis_ptr + 2 >= cfg.basis_rows)):
                            m.d.comb += [dp_fail.eq(1), dp_code.eq(hb.ERR_WEIGHT_ADDR)]
                    m.d.sync += [group_pending.eq(1), rf_first_pending.eq(1)]
                    m.next = "DECODE"
                with m.If(fail):
                    m.next = "IDLE"
            with m.State("DECODE"):
                # wait until the decoder has handed out the group's last entry
                with m.If(accept_row & entry.last):
                    # the next pixel group re-reads this channel group's codes
                    m.d.sync += [group_pending.eq(0), pg_o.eq(pg_o + p_n), pg_end.eq(pg_o + p_n >= fld["n_pix"]),
                                 code_ptr.eq(group_code_start),
                                 group_code_end.eq(code_ptr + ~entry.empty),
                                 # conv 3x3 row slots 4c + 3 do not exist: not counted as skipped
                                 skipped.eq(skipped + decoder.skipped_count
                                            - (Mux(is_k3, fld["in_c"], 0) if sd else 0))]
                    m.next = "GROUP"
                with m.If(fail):
                    m.next = "IDLE"
            with m.State("LAYER_END"):
                with m.If(pipeline_empty):
                    m.d.sync += [layer_idx.eq(layer_idx + 1), in_buf.eq(~in_buf), desc_word.eq(0)]
                    with m.If(layer_idx + 1 >= cfg.desc_layers):
                        m.d.comb += [fail.eq(1), fail_code.eq(hb.ERR_NO_END)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FETCH"
                with m.If(fail):
                    m.next = "IDLE"

        with m.If(dp_fail_r):
            m.d.comb += [fail.eq(1), fail_code.eq(dp_code_r)]
        # a failure stops the run where it is: status shows the error code and the layer
        with m.If(fail & busy):
            m.d.sync += [err.eq(1), err_code.eq(fail_code), busy.eq(0), done.eq(0)]
        # the start of a run clears every pipeline register (submodules are reset by ResetInserter)
        if not lean:
            with m.If(flush):
                m.d.sync += d2_valid.eq(0)
        with m.If(flush):
            m.d.sync += [rf0_valid.eq(0), rf_valid.eq(0), ti_valid.eq(0), rows_in_flight.eq(0), ops_in_flight.eq(0),
                         last_in_flight.eq(0), shadow_busy.eq(0), d1_valid.eq(0),
                         requant_in_flight.eq(0), group_pending.eq(0), op_delay.eq(0), dp_fail_r.eq(0),
                         ti_layer_start.eq(0)]
        return m
