"""The accelerator top: the blocks of the lean data path, composed.

::

    host bus ─► HostPort ─► memories (descriptors, code stream, bases, biases, two activation buffers)
                   │
    Sequencer ─► layer registers ─► SdFill / DenseFill ─► WeightBuffer ─► Issuer ─► MacArray ─► Drain
    (descriptor, checks, loop)       (code stream, R rebuild units)       (pixels,    (N lanes)     │
                                                                           padding)                 ▼
                                                 next activation buffer ◄─ Writeback (requantiser)

For every channel group of N output channels, the fill rebuilds the group's weights once into the weight
buffer; the issuer replays them at every output pixel, one tap (N weights, one activation) per cycle; the
drain hands each pass's N sums to the requantiser while the next pass accumulates.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import hostbus as hb
from .config import DESC_WORDS, TAP_INFO_BITS, AcceleratorConfig
from .descriptor import KIND_K3
from .drain import Drain
from .fill import DenseFill, SdFill
from .hostport import Counters, HostPort
from .issuer import Issuer
from .mac_array import MacArray
from .memories import ActivationBuffers, HostMemory, WeightBuffer, address_bits
from .reader import SequentialReader
from .sequencer import Sequencer
from .writeback import Writeback


def _copy_fields(dst, src, names):
    return [getattr(dst, name).eq(getattr(src, name)) for name in names]


class Accelerator(wiring.Component):
    """The SD (or dense int8) accelerator for one :class:`~sdhw.config.AcceleratorConfig`.

    Ports: ``bus`` (the host port, :data:`sdhw.hostbus.HostBusSignature`, device side), ``busy``, ``done``
    and ``error`` status outputs.

    Throughput: ``pes`` MACs per cycle peak (one tap of every lane per cycle); zero rows of ``Ce`` take no
    cycle (they are not in the code stream). A group's weights are rebuilt at ``rebuild_lanes`` weights per
    cycle, once per layer and group (FC layers run at that rate); a pass costs a cycle more than its taps, and
    a group's outputs leave at the requantiser's rate.

    ``vendor_primitives`` instantiates device primitives (ECP5 ``MULT18X18D`` with registers, iCE40 ``SB_MAC16``
    in dual 8 x 8 mode) through wrapper modules of ours (:func:`sdhw.vendor.with_wrappers` appends them to
    the Verilog); without it (the default, for Amaranth's simulator) the same registers are built in logic.
    """

    def __init__(self, config: AcceleratorConfig, *, vendor_primitives: bool = False):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if not isinstance(vendor_primitives, bool):
            raise TypeError(f"vendor_primitives must be a bool, not {vendor_primitives!r}")
        self.config = config
        self.vendor_primitives = vendor_primitives
        super().__init__({"bus": In(hb.HostBusSignature), "busy": Out(1), "done": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        reg = cfg.register_ram_outputs
        latency = cfg.ram_latency
        sd = not cfg.dense
        act_bits = address_bits(cfg.act_depth)
        size_bits = max(1, cfg.act_depth.bit_length())
        group_bits = cfg.max_groups.bit_length()
        code_bits = address_bits(cfg.code_depth)
        bias_bits = address_bits(cfg.bias_depth)
        basis_bits = address_bits(cfg.basis_rows)
        entry_bits = ceil_log2(cfg.weight_depth)

        # ------------------------------------------------------------------ control
        m.submodules.host = host = HostPort(cfg, mem_latency=latency)
        # a copy of busy per memory's port select (descriptors, codes, biases, bases, two activation buffers) and
        # of flush per data path block
        data_blocks = ("words", "fill", "entries", "issuer", "mac", "drain", "writeback")
        m.submodules.seq = seq = Sequencer(cfg, desc_latency=latency, busy_copies=6, flush_copies=len(data_blocks),
                                           start_copies=2)
        copies = iter(seq.busy_copy)
        flushes = dict(zip(data_blocks, seq.flush_copy))
        m.submodules.counters = counters = Counters(bits=cfg.counter_bits, lanes=cfg.pes)
        wiring.connect(m, wiring.flipped(self.bus), host.bus)
        layer = seq.layer
        m.d.comb += [seq.start.eq(host.start), seq.clear.eq(host.clear), self.busy.eq(seq.busy),
                     self.done.eq(seq.done), self.error.eq(seq.error),
                     host.busy.eq(seq.busy), host.done.eq(seq.done), host.error.eq(seq.error),
                     host.err_code.eq(seq.err_code), host.layer_index.eq(seq.layer_index),
                     counters.clear.eq(seq.flush | (host.clear & ~seq.busy)), counters.busy.eq(seq.busy)]
        m.d.comb += [getattr(host, name).eq(getattr(counters, name)) for name in ("cycles", "macs", "skipped",
                                                                                  "stalls")]

        # ------------------------------------------------------------------ memories
        def host_memory(name, width, depth, enable, spram=False, register_output=reg):
            mem = HostMemory(width=width, depth=depth, spram=spram, register_output=register_output, name=name)
            m.submodules[name] = mem
            m.d.comb += [mem.host_addr.eq(host.w_addr), mem.host_data.eq(host.w_data), mem.host_en.eq(enable),
                         mem.busy.eq(next(copies))]
            return mem

        desc = host_memory("desc_mem", 32, cfg.desc_layers * DESC_WORDS, host.desc_en)
        codes = host_memory("code_mem", cfg.code_word_bits, cfg.code_depth, host.code_en,
                            spram=cfg.in_spram and cfg.code_word_bits <= 32)
        # the drain registers the bias after the memory itself (ECP5)
        bias = host_memory("bias_mem", 32, cfg.bias_depth, host.bias_en, register_output=False)
        m.d.comb += [seq.desc_data.eq(desc.r_data), desc.r_addr.eq(seq.desc_addr), desc.r_en.eq(seq.desc_en),
                     host.desc_data.eq(desc.r_data)]
        m.submodules.acts = acts = ActivationBuffers(depth=cfg.act_depth, spram=cfg.in_spram, register_output=reg)
        m.d.comb += [acts.host_addr.eq(host.w_addr), acts.host_data.eq(host.w_data), acts.host_en.eq(host.act_en),
                     acts.busy.eq(Cat(next(copies), next(copies))),
                     acts.in_sel.eq(seq.in_sel), host.act_data.eq(acts.host_data_out)]
        m.submodules.wbuf = wbuf = WeightBuffer(lanes=cfg.pes, fill_lanes=cfg.fill_lanes, depth=cfg.weight_depth,
                                                info_bits=TAP_INFO_BITS, register_output=reg)

        # ------------------------------------------------------------------ data path (cleared at every run)
        def data_path(name, block):
            m.submodules[name] = ResetInserter(flushes[name])(block)
            return block

        words = data_path("words", SequentialReader(addr_bits=code_bits, width=cfg.code_word_bits, latency=latency))
        m.d.comb += [codes.r_addr.eq(words.rd_addr), codes.r_en.eq(words.rd_en), words.rd_data.eq(codes.r_data)]
        fill_args = dict(depth=cfg.weight_depth, word_bits=cfg.code_word_bits, code_bits=code_bits,
                         group_bits=group_bits, pix_bits=size_bits, basis_bits=basis_bits)
        if sd:
            fill = data_path("fill", SdFill(lanes=cfg.pes, rebuild_lanes=cfg.rebuild_lanes, exp_bits=cfg.exp_bits,
                                            basis_latency=latency, register_basis_addr=cfg.register_basis_addr,
                                            **fill_args))
            bases = host_memory("basis_mem", cfg.basis_width, cfg.basis_rows, host.basis_en)
            m.d.comb += [bases.r_addr.eq(fill.basis_addr), bases.r_en.eq(1), fill.basis_data.eq(bases.r_data)]
        else:
            fill = data_path("fill", DenseFill(lanes=cfg.pes, fill_lanes=cfg.fill_lanes, **fill_args))
        m.d.comb += _copy_fields(fill.params, layer, ("code_base", "n_groups", "n_pix", "stream", "n_rows",
                                                      "tap_step", "basis_base", "n_thresh", "wshift"))
        m.d.comb += [fill.params.k3.eq(layer.kind == KIND_K3), fill.start.eq(seq.layer_start_copy[0]),
                     words.seek.eq(fill.seek), words.seek_addr.eq(fill.seek_addr), fill.word_addr.eq(words.consumed)]
        wiring.connect(m, words.o, fill.words)
        m.d.comb += [wbuf.w_addr.eq(fill.w_addr), wbuf.w_en.eq(fill.w_en), wbuf.w_data.eq(fill.w_data),
                     wbuf.info_en.eq(fill.info_en), wbuf.info_addr.eq(fill.info_addr),
                     wbuf.info_data.eq(fill.info_data)]

        entries = data_path("entries", SequentialReader(addr_bits=entry_bits, width=TAP_INFO_BITS, latency=latency,
                                                        limited=True))
        m.d.comb += [wbuf.info_r_addr.eq(entries.rd_addr), wbuf.info_r_en.eq(entries.rd_en),
                     entries.rd_data.eq(wbuf.info_r_data), entries.limit.eq(fill.wp)]
        issuer = data_path("issuer", Issuer(lanes=cfg.pes, entry_bits=entry_bits, act_bits=act_bits,
                                            size_bits=size_bits, side_bits=cfg.side_bits, group_bits=group_bits,
                                            bias_bits=bias_bits,
                                            act_latency=latency, register_act=cfg.register_mac_act))
        m.d.comb += _copy_fields(issuer.params, layer, ("n_groups", "last_lanes", "n_pix", "out_w", "in_h", "in_w",
                                                        "stride", "pad", "stream", "step_x", "row_wrap", "base0",
                                                        "out_c", "bias_base", "zp_in", "in_size"))
        wiring.connect(m, entries.o, issuer.entries)
        m.d.comb += [issuer.start.eq(seq.layer_start_copy[1]), entries.seek.eq(issuer.seek),
                     entries.seek_addr.eq(issuer.seek_addr), issuer.consumed.eq(entries.consumed),
                     issuer.start_ptr.eq(fill.wp),
                     fill.free.eq(issuer.free),
                     wbuf.w_r_addr.eq(issuer.w_addr), wbuf.w_r_en.eq(1), issuer.w_data.eq(wbuf.w_r_data),
                     acts.r_addr.eq(issuer.act_addr), acts.r_en.eq(1), issuer.act_data.eq(acts.r_data)]

        mac = data_path("mac", MacArray(lanes=cfg.pes, acc_bits=cfg.acc_bits, soft_products=cfg.soft_products,
                                        dsp="dual" if cfg.dual_products else
                                            "registered" if cfg.registered_dsps else "plain",
                                        vendor_primitives=self.vendor_primitives))
        m.d.comb += [mac.weights.eq(issuer.mac_weights), mac.act.eq(issuer.mac_act), mac.valid.eq(issuer.mac_valid),
                     mac.last.eq(issuer.mac_last), issuer.mac_done.eq(mac.done)]

        drain = data_path("drain", Drain(lanes=cfg.pes, acc_bits=cfg.acc_bits, tag_bits=act_bits,
                                         bias_bits=bias_bits, register_output=reg))
        m.d.comb += [drain.sums.eq(mac.sums), drain.load.eq(mac.done), drain.out_addr.eq(issuer.pass_out),
                     drain.bias_addr.eq(issuer.pass_bias), drain.lanes.eq(issuer.pass_lanes),
                     issuer.drain_busy_next.eq(drain.busy_next),
                     bias.r_addr.eq(drain.bias_rd_addr), bias.r_en.eq(drain.bias_rd_en),
                     drain.bias_rd_data.eq(bias.r_data)]
        writeback = data_path("writeback", Writeback(kind=cfg.requant, acc_bits=cfg.acc_bits, tag_bits=act_bits,
                                                     units=cfg.requant_units))
        wiring.connect(m, drain.o, writeback.i)
        m.d.comb += _copy_fields(writeback.params, layer, ("m0", "shift", "zp_out", "act_min", "n_thresh"))
        m.d.comb += [writeback.t_en.eq(fill.t_en), writeback.t_addr.eq(fill.t_addr), writeback.t_data.eq(fill.t_data),
                     acts.w_addr.eq(writeback.w_addr), acts.w_data.eq(writeback.w_data), acts.w_en.eq(writeback.w_en)]

        # ------------------------------------------------------------------ layer end, errors, counters
        m.d.comb += [seq.layer_done.eq(fill.done & issuer.done & ~issuer.busy & drain.idle & writeback.idle),
                     seq.fail.eq(fill.overrun | issuer.addr_error | fill.stuck),
                     seq.fail_code.eq(Mux(issuer.addr_error, hb.ERR_ACT_ADDR,
                                          Mux(fill.overrun, hb.ERR_WEIGHT_ADDR, hb.ERR_BUFFER))),
                     fill.starved.eq(~entries.o.valid)]
        m.d.comb += [counters.macs_inc.eq(issuer.macs), counters.skipped_inc.eq(fill.skipped if sd else 0),
                     counters.stall.eq(issuer.stall)]
        return m
