"""The sequencer: fetch and check each layer's descriptor, start the data path on it, step to the next layer."""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import hostbus as hb
from .compare import above
from .config import DESC_WORDS, AcceleratorConfig
from .descriptor import CHECKSUM_SEED, CHECKSUM_WORD, FIELDS, KIND_END, KIND_K1, KIND_K3
from .fsm import OneHotFSM


def _holds(value: int) -> int:
    return max(1, value.bit_length())


def layer_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """The layer registers: every descriptor field the data path reads, as wide as ``cfg``'s memories need."""
    size = _holds(cfg.act_depth)
    side = cfg.side_bits
    addr = ceil_log2(cfg.act_depth) + 3
    return data.StructLayout({
        "kind": 2, "stride": 2, "pad": 1, "stream": 1,
        "n_groups": _holds(cfg.max_groups), "last_lanes": _holds(cfg.pes), "n_pix": size, "out_w": side,
        "in_h": side, "in_w": side,
        "step_x": signed(addr), "row_wrap": signed(addr), "base0": signed(addr), "out_c": size, "tap_step": 16,
        "code_base": max(1, ceil_log2(cfg.code_depth)), "bias_base": max(1, ceil_log2(cfg.bias_depth)),
        "n_rows": 16, "basis_base": max(1, ceil_log2(cfg.basis_rows)), "m0": unsigned(31), "shift": signed(6),
        "zp_in": signed(8), "zp_out": signed(8), "act_min": signed(8), "wshift": 5, "n_thresh": 9,
        "in_size": size + 1,
    })


class Sequencer(wiring.Component):
    """Run the program: for each descriptor slot, fetch its words (from ``desc_addr``/``desc_data``, read
    latency ``desc_latency``), check them, and either end the run (an end marker), stop it with an error, or
    load ``layer`` and pulse ``layer_start``; when ``layer_done`` comes, the next slot, with the activation
    buffers swapped (``in_sel``).

    Checks (error code in ``err_code``, ``sdhw.hostbus``): the checksum; the kind; the stride; zero or
    oversized dimensions (``ERR_SHAPE``: an image side past ``cfg.max_side``, more channel groups than a buffer's
    bytes); the layer's mode against the build's; activations larger than a
    buffer; thresholds on a build without the table requantiser (or more than 255); an address field too wide
    for its register (the code, basis or bias base, an activation step). A slot index past the
    descriptor memory is ``ERR_NO_END``. ``fail`` stops a running layer with ``fail_code`` (the data path's own
    checks). ``start`` (a host write) begins a run and pulses ``flush``, which clears the data path; ``clear``
    drops ``done`` and ``error``.

    Each word goes through a register of the sequencer's before its checksum and checks (the descriptor memory
    is far from the layer registers).

    ``busy_copies``: that many more flip-flops holding ``busy`` (``busy_copy``), each its own register (it
    feeds back on itself, so synthesis keeps it apart), for the memories' port selects: each select starts
    at a flip-flop the placer can put beside its memory instead of one register fanning out across the die.
    ``flush_copies`` (``flush_copy``) likewise for the data path blocks' resets, ``start_copies``
    (``layer_start_copy``) for the blocks a layer starts.

    Latency: ``DESC_WORDS + desc_latency + 7`` cycles from a layer's end to the next one's start; an error
    stops the run two cycles after the data path raises it.
    """

    def __init__(self, cfg: AcceleratorConfig, *, desc_latency: int = 1, busy_copies: int = 0,
                 flush_copies: int = 0, start_copies: int = 0):
        self.cfg, self.desc_latency = cfg, desc_latency
        super().__init__({
            "start": In(1), "clear": In(1),
            "busy": Out(1), "busy_copy": Out(busy_copies), "done": Out(1), "error": Out(1), "err_code": Out(8),
            "layer_index": Out(range(cfg.desc_layers + 1)),
            "desc_addr": Out(max(1, ceil_log2(cfg.desc_layers * DESC_WORDS))), "desc_en": Out(1),
            "desc_data": In(32),
            "layer": Out(layer_layout(cfg)), "in_sel": Out(1),
            "flush": Out(1), "flush_copy": Out(flush_copies), "layer_start": Out(1),
            "layer_start_copy": Out(start_copies), "layer_done": In(1),
            "fail": In(1), "fail_code": In(8),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        layer = self.layer
        word = Signal(range(DESC_WORDS + 1))           # the next word to request
        # the word arriving next, one-hot: each word's register loads and check flags are then one LUT of two
        # flip-flops (this and ``arrive``), not a decoder of a word count in front of every layer register's enable
        at = Signal(DESC_WORDS, init=1)
        arrive = Signal(self.desc_latency + 1)         # requests in flight (the memory, then our register)
        desc_q = Signal(32)
        m.d.sync += desc_q.eq(self.desc_data)
        # the checksum of the words so far in two 16-bit halves (no 32-bit carry chain in a cycle): the low
        # half's carry goes into the high half with the next word
        low = Signal(17, init=CHECKSUM_SEED & 0xFFFF)
        high = Signal(16, init=CHECKSUM_SEED >> 16)
        low_ok = Signal()                              # the low half matches the slot's checksum word
        expected_high = Signal(16)                     # the checksum word's high half
        high_ok = Signal(2)                            # the high half matches, by bytes
        checksum_ok = Signal()
        m.d.comb += checksum_ok.eq(low_ok & high_ok.all())
        order = [hb.ERR_KIND, hb.ERR_STRIDE, hb.ERR_SHAPE, hb.ERR_MODE, hb.ERR_ACT_SIZE, hb.ERR_PARAMS,
                 hb.ERR_WEIGHT_ADDR, hb.ERR_BIAS_ADDR, hb.ERR_ACT_ADDR]
        bad = {code: Signal(name=f"bad_{code}") for code in order}
        code = Signal(8)                               # the checks' verdict (0: none)
        # the data path's verdicts, registered (they gather signals from every block); the layer's done is
        # taken from the third cycle of a layer on, once the blocks' done flags of the last layer have dropped
        done_q, fail_q, fail_code_q = Signal(), Signal(), Signal(8)
        settled = Signal(2)
        m.d.sync += [done_q.eq(self.layer_done), fail_q.eq(self.fail & self.busy), fail_code_q.eq(self.fail_code)]
        launch, finish = Signal(), Signal()            # the checked slot: run it; it ends the program

        # the checksum word is arriving, in a register of its own; it drops again after that word, which is right
        # only because the checksum is the slot's last word
        assert CHECKSUM_WORD == DESC_WORDS - 1
        at_checksum = Signal()

        def restart_checksum():
            return [low.eq(CHECKSUM_SEED & 0xFFFF), high.eq(CHECKSUM_SEED >> 16), at_checksum.eq(0)]

        def field(name, value):
            wordno, lsb, width, is_signed = FIELDS[name]
            raw = value[lsb:lsb + width]
            return raw.as_signed() if is_signed else raw

        m.d.comb += self.desc_addr.eq(Cat(word[:ceil_log2(DESC_WORDS)], self.layer_index))
        m.d.sync += [self.flush.eq(0), self.layer_start.eq(0)]
        error = Signal()
        m.d.comb += self.error.eq(error)


        # each check's test on whatever word is in desc_q, and which word that is, in registers of their own; a
        # cycle later the tests of the word that was there are gathered into the errors' flags (the last checked
        # word arrives before the checksum, whose comparison takes the same two cycles)
        hits = {err: [] for err in order}
        at_word = {}
        for name, test, err in _checks(cfg, layer):
            wordno = FIELDS[name][0]
            assert wordno < CHECKSUM_WORD                  # gathered by the time the checksum is compared
            if wordno not in at_word:
                at_word[wordno] = Signal(name=f"at_word{wordno}")
                m.d.sync += at_word[wordno].eq(arrive[-1] & at[wordno])
            failed = Signal(name=f"failed_{name}")
            m.d.sync += failed.eq(test(field(name, desc_q)))
            hits[err].append(at_word[wordno] & failed)
        for err, flags in hits.items():
            if flags:
                with m.If(Cat(*flags).any()):
                    m.d.sync += bad[err].eq(1)

        last_slot = Signal()                           # the slot running is the descriptor memory's last
        m.d.sync += last_slot.eq(self.layer_index == cfg.desc_layers - 1)
        fails, ends, overflows = Signal(), Signal(), Signal()   # the run stops now: error / end / no end marker
        # word `at` arrives: its fields go to the layer registers, its sum to the checksum. Words arrive only in
        # FETCH (no request is in flight as it ends), so this is decided by `arrive` alone, not the state (the
        # state machine's own assignments below come later and win)
        with m.If(arrive[-1]):
            value = desc_q
            m.d.sync += [at.eq(at.rotate_left(1)), at_checksum.eq(at[CHECKSUM_WORD - 1])]
            summed = ~at_checksum
            # high + addend + the low half's carry as one adder: the carry enters below bit 0 (a 1 added beside
            # it carries exactly when it is set), not as a second adder in series
            addend = Mux(summed, value[16:], 0)
            m.d.sync += high.eq((Cat(low[16], high) + Cat(Const(1, 1), addend))[1:17])
            with m.If(summed):
                m.d.sync += low.eq(low[:16] + value[:16])
            with m.Else():
                # the last carry folded in now, the comparison next cycle
                m.d.sync += [low_ok.eq(low[:16] == value[:16]), expected_high.eq(value[16:])]
            for name, _ in layer_layout(cfg):
                if name in FIELDS:
                    with m.If(at[FIELDS[name][0]]):
                        m.d.sync += getattr(layer, name).eq(field(name, value))
        # one-hot: the status registers and the fetch start at flip-flops, not at a binary state's decoding
        fsm = OneHotFSM(m, ("IDLE", "FETCH", "VERIFY", "CHECK", "CHECKED", "RUN", "NEXT"), init="IDLE", prefix="seq")
        with fsm.states():
            with fsm.state("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.layer_index.eq(0), self.in_sel.eq(0), self.flush.eq(1)]
                    fsm.goto("FETCH")
                m.d.sync += [word.eq(0), at.eq(1), arrive.eq(0), *restart_checksum()]
                m.d.sync += [flag.eq(0) for flag in bad.values()]
            with fsm.state("FETCH"):
                request = word < DESC_WORDS
                with m.If(request):
                    m.d.sync += word.eq(word + 1)
                m.d.sync += arrive.eq(Cat(request, arrive[:-1]))
                with m.If(arrive[-1] & at[DESC_WORDS - 1]):
                    fsm.goto("VERIFY")
            with fsm.state("VERIFY"):
                # two 8-bit comparisons, not a 16-bit one: their AND with low_ok is left to CHECK
                m.d.sync += high_ok.eq(Cat(high[:8] == expected_high[:8], high[8:] == expected_high[8:]))
                fsm.goto("CHECK")
            with fsm.state("CHECK"):
                # the verdict and the decision into registers: the checks' priority chain stays off the error
                # and start paths. A bad checksum or kind stops even an end marker; other checks ignore it.
                verdict = 0
                for err in reversed(order):
                    verdict = Mux(bad[err], err, verdict)
                fatal = ~checksum_ok | bad[hb.ERR_KIND]
                is_end = layer.kind == KIND_END
                m.d.sync += [code.eq(Mux(~checksum_ok, hb.ERR_CHECKSUM, Mux(bad[hb.ERR_KIND], hb.ERR_KIND, verdict))),
                             launch.eq(~fatal & ~Cat(*bad.values()).any() & ~is_end), finish.eq(~fatal & is_end)]
                fsm.goto("CHECKED")
            with fsm.state("CHECKED"):
                with m.If(launch):
                    m.d.sync += [self.layer_start.eq(1), settled.eq(0)]
                    fsm.goto("RUN")
                with m.Else():
                    fsm.goto("IDLE")
            with fsm.state("RUN"):
                m.d.sync += settled.eq(Cat(1, settled[0]))
                with m.If(fail_q):
                    fsm.goto("IDLE")
                with m.Elif(done_q & settled[1]):
                    fsm.goto("NEXT")
            with fsm.state("NEXT"):
                # the layer has ended: the next slot, from this state's flip-flop (the registers it resets, some
                # sixty, then share one enable term instead of the layer's end decision)
                m.d.sync += [self.layer_index.eq(self.layer_index + 1), self.in_sel.eq(~self.in_sel),
                             word.eq(0), at.eq(1), arrive.eq(0), *restart_checksum()]
                m.d.sync += [flag.eq(0) for flag in bad.values()]
                with m.If(last_slot):
                    fsm.goto("IDLE")
                with m.Else():
                    fsm.goto("FETCH")
        # the status registers from flat conditions on registered inputs, outside the FSM: each is a few LUTs
        # deep (busy drives every memory's port select, so its fan-in must stay short)
        m.d.comb += [fails.eq(fsm["CHECKED"] & ~launch & ~finish),
                     ends.eq(fsm["CHECKED"] & finish)]
        # from the state's flip-flop, not inside its case (which decodes the other states' flags in front of it)
        m.d.comb += self.desc_en.eq(fsm["FETCH"])
        running = fsm["RUN"]
        m.d.comb += overflows.eq(fsm["NEXT"] & last_slot)
        idle = fsm["IDLE"]
        with m.If(idle & (self.start | self.clear)):
            m.d.sync += [self.done.eq(0), error.eq(0), self.err_code.eq(0)]
        with m.Elif(fails | (running & fail_q) | overflows):
            m.d.sync += [error.eq(1),
                         self.err_code.eq(Mux(running, fail_code_q, Mux(fsm["NEXT"], hb.ERR_NO_END, code)))]
        with m.Elif(ends):
            m.d.sync += self.done.eq(1)
        stop = fails | ends | (running & fail_q) | overflows
        m.d.sync += self.busy.eq(Mux(idle, self.start, ~stop))
        for copy in self.busy_copy:                    # busy == ~idle: each copy follows its own state instead
            m.d.sync += copy.eq(Mux(copy, ~stop, self.start))
        for copy in self.flush_copy:                   # a pulse: never high two cycles running
            m.d.sync += copy.eq(idle & self.start & ~copy)
        for copy in self.layer_start_copy:             # likewise
            m.d.sync += copy.eq(fsm["CHECKED"] & launch & ~copy)
        return m


def _outside(width: int, is_signed: bool):
    """A test: the value does not fit a register of ``width`` bits (its bits from the register's top one up not
    all equal, signed; any of them set, unsigned)."""
    if is_signed:
        return lambda v: ~(v[width - 1:].all() | ~v[width - 1:].any())
    return lambda v: v[width:].any()


def _checks(cfg: AcceleratorConfig, layer) -> list:
    """``(field, test, error code)``: a descriptor field whose value makes ``test`` true stops the run."""
    tests = [
        ("kind", lambda v: (v != KIND_END) & (v != KIND_K1) & (v != KIND_K3), hb.ERR_KIND),
        ("stride", lambda v: (v != 1) & (v != 2), hb.ERR_STRIDE),
        ("n_groups", lambda v: (v == 0) | above(v, cfg.max_groups), hb.ERR_SHAPE),
        ("last_lanes", lambda v: (v == 0) | above(v, cfg.pes), hb.ERR_SHAPE),
        ("n_pix", lambda v: v == 0, hb.ERR_SHAPE),
        *((name, lambda v: (v == 0) | above(v, cfg.max_side), hb.ERR_SHAPE)
          for name in ("out_w", "in_h", "in_w")),
        ("sd", lambda v: v != int(not cfg.dense), hb.ERR_MODE),
        *((name, lambda v: above(v, cfg.act_depth), hb.ERR_ACT_SIZE)
          for name in ("in_size", "out_size", "n_pix")),
        ("n_thresh", (lambda v: above(v, 255)) if cfg.requant == "table" else (lambda v: v != 0), hb.ERR_PARAMS),
    ]
    # address fields whose value does not fit their register (a valid program's always do)
    for name, err in (("step_x", hb.ERR_ACT_ADDR), ("row_wrap", hb.ERR_ACT_ADDR), ("base0", hb.ERR_ACT_ADDR),
                      ("code_base", hb.ERR_WEIGHT_ADDR), ("basis_base", hb.ERR_WEIGHT_ADDR),
                      ("bias_base", hb.ERR_BIAS_ADDR)):
        _, _, width, is_signed = FIELDS[name]
        register = len(getattr(layer, name))
        if register < width:
            tests.append((name, _outside(register, is_signed), err))
    return tests
