"""Cycles per inference of a whole program on one accelerator configuration, without simulating the RTL.

:func:`expected_cycles` extends :func:`rtl_gen.image.expected_counts` (MACs issued, zero rows skipped) to the
accelerator's CYCLES counter: the cycles from a run's start to ``busy`` dropping, for one inference of a
program laid out by :func:`rtl_gen.image.build_image`. The data path's timing does not depend on the data
(the weights, activations and sums only change values, never the number of cycles), only on the program's
structure (layer shapes, live rows of every channel group, requantisation shift) and the configuration.

The model follows the blocks of ``sdhw`` at the granularity of rows, ops and output elements, with each
block's documented latencies (the blocks' own constants, and the sequencer's below):

- the sequencer fetches and checks a descriptor slot in a fixed number of cycles, then starts the layer; a
  layer's end (fill, issuer, drain and writeback all finished) is seen two cycles later;
- the fill walks the code stream: per row a header (taken only while six weight-buffer entries are free),
  then its codes (SD: ``2 + T N / R`` cycles for ``T`` live taps, dense: ``1 + T N / F``), a cycle per channel
  group (and per pixel when the layer streams, plus the code reader's seek); a row's entries are committed
  after the rebuild pipeline;
- the issuer follows the committed entries through the tap-info reader, one op per cycle, two cycles more
  per pass (plus the reader's seek latency beyond two cycles when a group is replayed); a pass's last op
  waits until the drain has handed the previous pass's sums to the requantiser;
- the drain and the requantiser (pipelined, serial or threshold table) are simulated cycle by cycle per
  output element, since their rates and arbitration decide when the drain frees up.

Assumptions, each true of the generated RTL: the host only reads CSRs during the run; memories answer with
the family's fixed latency; the code and tap-info readers deliver a word per cycle once their latency has
passed (their buffers of two or four words cover it). ``tests/rtl_gen/test_cycles.py`` checks the model
against the accelerator's counter in the Amaranth simulator, and the cocotb regression checks it on every
random program it runs on the generated Verilog (``sim.runner.Job.add_program``). A corrupt program, which
stops with an error, is outside the model.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from golden.program import Program
from sdhw.config import AcceleratorConfig
from sdhw.mac_array import MacArray
from sdhw.rebuild import RebuildUnit
from sdhw.requant import Requantiser, SerialRequantiser, ThresholdSearch

from .image import LayerPlan, expected_counts, plan_layer, thresholds

#: cycles from the flush that starts a run to the first layer's ``layer_start``, less the memory latency: the
#: sequencer's FETCH state requests the slot's 16 words one per cycle, each arrives ``latency + 1`` cycles later
#: (the memory, then a register of the sequencer's); then VERIFY, CHECK, CHECKED and the registered start pulse
SEQ_FIRST_START = 20
#: cycles from a layer's end (every block finished, seen by the sequencer a cycle later, in a register) to the
#: next slot's ``layer_start``, less the memory latency
SEQ_NEXT_START = 23
#: cycles from the last layer's end to ``busy`` dropping (the end marker's fetch and checks), less the latency
SEQ_END = 22
#: a header is taken only while this many weight-buffer entries are free (two rows; ``sdhw.fill``)
ROOM_ENTRIES = 6


@dataclass
class LayerTiming:
    """When one layer ran, in cycles from the run's flush: ``start`` (its ``layer_start`` pulse), ``end`` (the
    first cycle every block is done), the fill's last code word and the issuer's last op."""

    start: int
    end: int
    fill_end: int           # the fill's last code word (its last row's last tap or word)
    issue_end: int          # the issuer's last op

    @property
    def cycles(self) -> int:
        return self.end - self.start


# ------------------------------------------------------------------------------------------ back end
class _BackEnd:
    """The drain and the requantiser, cycle by cycle: elements (one per live lane of a pass) enter when the
    MAC array's ``done`` loads the drain; :meth:`drain_free` is the first cycle the issuer may issue the next
    pass's last op (the drain's ``busy`` low), :meth:`idle` the cycle the writeback has written everything."""

    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        self.kind = cfg.requant
        self.registered = cfg.register_ram_outputs        # the drain's output register (ECP5, generic)
        self.t = 0                                        # the next cycle to simulate
        self.shadow = 0                                   # lanes in the drain's shadow not yet taken
        self.head_from = 0                                # first cycle the shadow's head is valid
        self.busy_until = 0                               # the drain's busy is low from this cycle on
        self.out_valid = False                            # the drain's output register holds an element
        self.out_empty_from = 0                           # ... and is empty from this cycle on
        self.last_write = -1                              # the writeback's last write
        self.in_flight = 0                                # elements inside the requantiser
        # serial: idle from this cycle; table: the input register, the units' slots and output registers
        self.serial_free = 0
        self.serial_done: deque[int] = deque()
        self.pipe_done: deque[int] = deque()
        self.shift = 0
        self.s_valid = False
        units = cfg.requant_units if self.kind == "table" else 0
        self.slots = [[{"busy": False, "bit": 0} for _ in range(ThresholdSearch.SLOTS)] for _ in range(units)]
        self.unit_out = [False] * units
        self.table_out = False

    # the requantiser's ready in the cycle being simulated, from its registered state
    def _ready(self, c: int) -> bool:
        if self.kind == "pipelined":
            return True
        if self.kind == "serial":
            return c >= self.serial_free
        return not self.s_valid

    def _accept(self, c: int) -> None:
        """An element enters the requantiser in cycle ``c``."""
        self.in_flight += 1
        if self.kind == "pipelined":
            self.pipe_done.append(c + Requantiser.LATENCY)
        elif self.kind == "serial":
            latency = SerialRequantiser.latency(self.shift)
            self.serial_free = c + latency
            self.serial_done.append(c + latency)
        else:
            self.s_valid = True

    def _write(self, c: int) -> None:
        self.in_flight -= 1
        self.last_write = c

    def _step_table(self, c: int, offered: bool) -> bool:
        """One cycle of the threshold requantiser; returns whether the input was taken this cycle."""
        phase = (c - 1) % 2                               # toggling from the cycle after the run's flush
        wrote = self.table_out
        self.table_out = False
        chosen = False
        picked = [False] * len(self.unit_out)
        for u, valid in enumerate(self.unit_out):
            if valid and not chosen:
                picked[u] = True
                self.table_out = True                     # the requantiser's output register, next cycle
            chosen = chosen or valid
        taken_by_unit = False
        new_unit_out = list(self.unit_out)
        for u, slots in enumerate(self.slots):
            out_free = not self.unit_out[u] or picked[u]
            if picked[u]:
                new_unit_out[u] = False
            slot = slots[phase]
            finish = slot["busy"] and slot["bit"] == 0 and out_free
            if finish:
                slot["busy"] = False
                new_unit_out[u] = True
            elif slot["busy"] and slot["bit"]:
                slot["bit"] -= 1
            if (not slot["busy"]) and self.s_valid and not taken_by_unit:
                slot["busy"], slot["bit"] = True, 7
                taken_by_unit = True
        self.unit_out = new_unit_out
        if wrote:
            self._write(c)
        accept = offered and not self.s_valid
        if taken_by_unit:
            self.s_valid = False
        return accept

    def _cycle(self, c: int) -> None:
        """Simulate cycle ``c``."""
        # completions of the pipelined and serial requantisers (their output is always read)
        for queue in (self.pipe_done, self.serial_done):
            while queue and queue[0] == c:
                queue.popleft()
                self._write(c)
        ready = self._ready(c)
        head = self.shadow > 0 and c >= self.head_from
        if self.kind == "table":
            offered = self.out_valid if self.registered else head
            taken = self._step_table(c, offered)
        else:
            offered = self.out_valid if self.registered else head
            taken = offered and ready
        if taken:
            self._accept(c)
        if self.registered:
            # the drain's element register: emptied by the requantiser, refilled from the shadow's head
            move = head and (not self.out_valid or taken)
            if taken:
                self.out_valid = False
                self.out_empty_from = c + 1
            if move:
                self.out_valid = True
                self.shadow -= 1
                if self.shadow == 0:
                    self.busy_until = c + 1
        elif taken:
            self.shadow -= 1
            if self.shadow == 0:
                self.busy_until = c + 1

    def _busy(self) -> bool:
        return bool(self.shadow or self.out_valid or self.in_flight)

    def run_to(self, t: int) -> None:
        """Simulate up to (not including) cycle ``t``, skipping cycles in which nothing is inside."""
        while self.t < t:
            if not self._busy() and not (self.kind == "table" and (any(self.unit_out) or self.table_out)):
                self.t = t
                break
            self._cycle(self.t)
            self.t += 1

    def load(self, cycle: int, lanes: int) -> None:
        """The MAC array's ``done`` in ``cycle``: a pass's ``lanes`` sums enter the drain."""
        self.run_to(cycle + 1)
        assert self.shadow == 0, "a pass loaded into a busy drain"
        self.shadow = lanes
        self.head_from = cycle + 1

    def drain_free(self) -> int:
        """The first cycle the drain's ``busy`` is low (every lane of the last pass taken from its shadow)."""
        while self.shadow:
            self._cycle(self.t)
            self.t += 1
        return self.busy_until

    def idle(self) -> int:
        """The first cycle the drain and the writeback are both idle (everything written)."""
        while self._busy() or (self.kind == "table" and (any(self.unit_out) or self.table_out)):
            self._cycle(self.t)
            self.t += 1
        return max(self.busy_until, self.last_write + 1, self.out_empty_from)


# ------------------------------------------------------------------------------------------ issuer
class _Issuer:
    """The issuer's ops of one layer, produced lazily one op at a time: the fill asks when an entry was read
    for the last time (so that it may be overwritten) before the rows after it are known."""

    def __init__(self, plan: LayerPlan, cfg: AcceleratorConfig, start: int, first_entry: int, commits: dict,
                 backend: _BackEnd, group_entries: list[int]):
        self.cfg, self.backend = cfg, backend
        self.latency = cfg.ram_latency
        self.first_word = 2 if self.latency == 1 else 4         # a reader's first word after a seek or a commit
        self.commits = commits                                  # entry -> cycle its commit is visible (wp)
        self.last_use: dict[int, int] = {}
        self.ops = self._ops(plan, first_entry, start, group_entries)
        self.end = start

    def _ops(self, plan: LayerPlan, first_entry: int, start: int, group_entries: list[int]):
        """Issue every op of the layer in order; yields after each op (its cycle is in ``last_use`` when it is
        the entry's last read)."""
        n = self.cfg.pes
        prev_last = None                                        # the previous pass's last op
        read_from = start + self.first_word                     # the tap-info reader, seeked at the start
        issue = start                                           # running from the cycle after the start
        entry0 = first_entry
        for g, count in enumerate(group_entries):
            lanes = min(n, plan.m - g * n)
            for o in range(plan.n_pix):
                first = entry0 + (o * count if plan.stream else 0)
                final = plan.stream or o == plan.n_pix - 1
                replay = not plan.stream and o > 0
                # the pixel steps, then its padding flags settle: two cycles without an op after a pass
                earliest = issue + 1 if prev_last is None else prev_last + 3
                if replay:
                    # the tap-info reader is seeked back to the group's first entry in the step cycle
                    read_from = prev_last + 1 + self.first_word
                issue = earliest - 1
                for k in range(count):
                    entry = first + k
                    valid = max(self.commits[entry] + self.first_word, read_from) if not replay else read_from
                    read_from = valid + 1
                    issue = max(issue + 1, valid, earliest)
                    if k == count - 1:
                        issue = max(issue, self._drain_ok(prev_last))
                    if final:
                        self.last_use[entry] = issue
                    yield
                prev_last = issue
                self.end = issue
                mac_done = issue + 1 + self.cfg.mac_latency + MacArray.LATENCY + 1
                self.backend.load(mac_done, lanes)
            entry0 += count * (plan.n_pix if plan.stream else 1)

    def _drain_ok(self, prev_last: int | None) -> int:
        """The first cycle a pass's last op may issue: the last pass's sums out of the MAC array and the
        drain done with them."""
        if prev_last is None:
            return 0
        in_flight_clear = prev_last + 1 + self.cfg.mac_latency + MacArray.LATENCY + 2
        return max(in_flight_clear, self.backend.drain_free())

    def used_by(self, entry: int) -> int:
        """The cycle of the last op that reads ``entry``."""
        while entry not in self.last_use:
            next(self.ops)
        return self.last_use[entry]

    def finish(self) -> int:
        """Issue the rest of the layer; the cycle of its last op."""
        for _ in self.ops:
            pass
        return self.end


# ------------------------------------------------------------------------------------------ the program
def _layer(plan: LayerPlan, layer, cfg: AcceleratorConfig, start: int, first_entry: int,
           last_use: dict[int, int], backend: _BackEnd) -> tuple[LayerTiming, int]:
    """Run one layer from its ``layer_start`` cycle; its timing and the weight buffer's next entry."""
    latency = cfg.ram_latency
    first_word = 2 if latency == 1 else 4
    n = cfg.pes
    sd = not cfg.dense  # an SD build runs every layer as SD (kept-dense ones in their exact encoding)
    chunks = n // cfg.fill_lanes
    rows_of = [[plan.taps(i) for i in rows] if rows else [1] for rows in plan.groups]
    group_entries = [sum(taps) for taps in rows_of]
    commits: dict[int, int] = {}
    backend.shift = layer.shift
    issuer = _Issuer(plan, cfg, start, first_entry, commits, backend, group_entries)

    def used_by(entry: int) -> int:
        if entry < first_entry:
            return last_use.get(entry, -10**9)
        return issuer.used_by(entry)

    # the fill: thresholds, then rows; `t` is the cycle its walk is in the HEADER state with the word offered
    n_thresh = len(thresholds(layer)[1]) if cfg.requant == "table" else 0
    t = start + first_word + n_thresh + 1 if n_thresh else start + first_word
    head = first_entry
    last_commit = start
    fill_end = start
    repeats = plan.n_pix if plan.stream else 1
    for taps_list in rows_of:
        for rep in range(repeats):
            for taps in taps_list:
                # room: the issuer's free pointer (registered after the op, then as the fill's limit and its
                # room flag) past the entries to reuse
                free_needed = head + ROOM_ENTRIES - cfg.weight_depth
                if free_needed > 0:
                    t = max(t, used_by(free_needed - 1) + 4)
                header = t
                if sd:
                    last = header + 1 + taps * chunks                 # the last tap of the last chunk
                    commit = last + (latency - 1) + int(cfg.register_basis_addr) + RebuildUnit.LATENCY + 1
                else:
                    last = header + taps * chunks                     # the last weight word
                    commit = last + 2
                for k in range(taps):
                    commits[head + k] = commit
                head += taps
                last_commit = commit
                fill_end = last
                t = last + 1
            group_end = t                                             # GROUP_END
            if plan.stream and rep < repeats - 1:
                t = group_end + first_word                            # seek back to the group's first row
            else:
                t = group_end + 1
    flush = t                                                         # FLUSH, after the last GROUP_END
    fill_done = max(flush, last_commit + 1) + 1
    issue_end = issuer.finish()
    for entry, cycle in issuer.last_use.items():
        last_use[entry] = cycle
    in_flight_clear = issue_end + 1 + cfg.mac_latency + MacArray.LATENCY + 2
    end = max(fill_done, in_flight_clear, backend.idle(), issue_end + 2)
    return LayerTiming(start, end, fill_end, issue_end), head


def program_timing(program: Program, cfg: AcceleratorConfig, batch: int = 1) -> list[LayerTiming]:
    """Every layer's timing for one run of ``batch`` inputs (cycles from the run's flush)."""
    latency = cfg.ram_latency
    backend = _BackEnd(cfg)
    last_use: dict[int, int] = {}
    entry = 0
    t = SEQ_FIRST_START + latency
    out = []
    for index, layer in enumerate(program.layers):
        plan = plan_layer(layer, cfg, index, batch)
        timing, entry = _layer(plan, layer, cfg, t, entry, last_use, backend)
        out.append(timing)
        t = timing.end + SEQ_NEXT_START + latency
    return out


def expected_cycles(program: Program, cfg: AcceleratorConfig, batch: int = 1) -> dict:
    """The CYCLES counter of one run of ``program`` on ``cfg`` (``batch`` inputs) and what else the counters
    show.

    Returns ``cycles`` (total), ``macs`` and ``rows_skipped`` (:func:`rtl_gen.image.expected_counts`),
    ``layer_cycles`` (per layer, from its start to its end; the rest is the sequencer's descriptor fetch,
    ``SEQ_*`` cycles per slot) and ``utilisation`` (MACs / (cycles x N)).
    """
    latency = cfg.ram_latency
    timings = program_timing(program, cfg, batch)
    total = timings[-1].end + SEQ_END + latency if timings else SEQ_END + latency
    counts = expected_counts(program, cfg, batch)
    return {"cycles": total, **counts, "layer_cycles": [t.cycles for t in timings],
            "utilisation": counts["macs"] / (total * cfg.pes) if total else 0.0}
