"""Static timing analysis over nextpnr-ice40's back-annotated delays (``nextpnr-ice40 --sdf``).

nextpnr reports only the worst path of each clock. :func:`analyse` reads the SDF file nextpnr writes and times
every register-to-register path of the design's clock: the worst slack and Fmax (nextpnr's own, on the same
placement), how many endpoints fail and by how much, the failing endpoints grouped by source and destination
block, and the worst path step by step.

    python -m fpga.sta FILE.sdf --period NS [--path K]

The timing graph:

* launch points: outputs with an IOPATH from a clock pin (``CLK``, ``RCLK``, ``WCLK``, ``CLOCK``, ``INPUT_CLK``,
  an edge-qualified input, or a pin a setup check refers to): the clock-to-out of logic-cell flip-flops, block
  and single-port RAMs, DSPs and registered I/O;
* arcs: INTERCONNECT (routing) and the other IOPATHs (logic: LUTs, carries, ...), each with the largest of its
  min:typ:max and rise/fall values;
* endpoints: pins with a SETUP or SETUPHOLD check, required at period - setup. On an ICESTORM_LC the setup at
  I0..I3 includes the LUT, as in nextpnr's reports.

Clock skew is taken as nextpnr takes it: the routing delay of the clock net into the launching clock pin is
added to the path and the one into the capturing clock pin is subtracted (on the UP5K the global clock reaches
logic cells 0.93 ns later than SPRAMs, so SPRAM -> logic paths gain 0.93 ns and logic -> SPRAM paths lose it).

Limits: one clock is timed, the domain (driver of the clock nets) with the most clock pins, at the period
given, all registers on the same edge. Paths launched or captured by other clock pins (in practice DSPs whose
CLK is tied to a constant, which nextpnr-ice40 still models as clocked) are not timed; the summary names those
pins. Paths from unclocked inputs (I/O pins, resets) and pins on combinational loops are not timed either.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

from golden import SdhwError

_TOKEN = re.compile(r'\(|\)|"[^"]*"|(?:\\.|[^\s()"\\])+')
_ESCAPED = re.compile(r"\\(.)")
# RCLK, WCLK, CLK, CLOCK, INPUT_CLK, OUTPUT_CLK; not the clock enables RCLKE / WCLKE
_CLOCK_PIN = re.compile(r"(CLK|CLOCK)$")
# nextpnr ties unused clock pins to its constant nets, driven by the $PACKER_GND / $PACKER_VCC cells
_CONSTANT_DRIVER = re.compile(r"PACKER_(GND|VCC)")
_TIMESCALE = re.compile(r"([\d.]+)\s*(fs|ps|ns|us)$", re.IGNORECASE)
_PS_PER_UNIT = {"fs": 1e-3, "ps": 1.0, "ns": 1e3, "us": 1e6}
_CLOCK_TO_OUT = "clock-to-out"


def _atom(item) -> str:
    """``item``, checked to be an atom (a name or number), not a statement."""
    if not isinstance(item, str):
        raise _bad_sdf("a parenthesised statement where a name belongs")
    return item


def _unescape(name: str) -> str:
    return _ESCAPED.sub(r"\1", _atom(name))


def _bad_sdf(why: str) -> SdhwError:
    return SdhwError(f"not a readable SDF file: {why}")


def _parse_sexpr(text: str) -> list:
    """The file's parenthesised statements as nested lists of atoms (strings)."""
    stack: list[list] = [[]]
    for token in _TOKEN.findall(text):
        if token == "(":
            statement: list = []
            stack[-1].append(statement)
            stack.append(statement)
        elif token == ")":
            if len(stack) == 1:
                raise _bad_sdf("unbalanced ')'")
            stack.pop()
        else:
            stack[-1].append(token)
    if len(stack) != 1:
        raise _bad_sdf("unbalanced '(' (the file ends inside a statement)")
    return stack[0]


def _keyword(item) -> str:
    """The upper-cased first atom of a statement, '' for anything else."""
    if isinstance(item, list) and item and isinstance(item[0], str):
        return item[0].upper()
    return ""


def _largest_delay(values: list) -> float | None:
    """The largest number in delay values such as ``(675:675:675) (680:680:680)``; None when all are empty."""
    largest = None
    for value in values:
        if not isinstance(value, list):
            continue
        for atom in value:
            if not isinstance(atom, str):
                continue
            for part in atom.split(":"):
                if not part:
                    continue
                try:
                    number = float(part)
                except ValueError:
                    raise _bad_sdf(f"{part!r} is not a delay") from None
                largest = number if largest is None else max(largest, number)
    return largest


def _split_pin_path(path: str) -> tuple[str, str]:
    """``cell/pin`` (escaped, divider '/') -> (cell, pin), unescaped; the last unescaped '/' divides."""
    path = _atom(path)
    i, divider = 0, -1
    while i < len(path):
        if path[i] == "\\":
            i += 2
            continue
        if path[i] == "/":
            divider = i
        i += 1
    if divider < 0:
        return "", _unescape(path)
    return _unescape(path[:divider]), _unescape(path[divider + 1:])


def _port(spec) -> tuple[str | None, str]:
    """A port as ``I0``, ``(posedge I0)`` or ``(COND expr I0)`` -> (edge or None, unescaped pin name)."""
    if isinstance(spec, list):
        if not spec:
            raise _bad_sdf("an empty port")
        if _keyword(spec) in ("POSEDGE", "NEGEDGE") and len(spec) > 1:
            return spec[0].lower(), _port(spec[1])[1]
        return None, _port(spec[-1])[1]
    return None, _unescape(spec)


def _timescale_ps(statements: list) -> float:
    for statement in statements:
        if _keyword(statement) == "TIMESCALE":
            match = _TIMESCALE.match("".join(a for a in statement[1:] if isinstance(a, str)))
            if not match:
                raise _bad_sdf(f"timescale {' '.join(map(str, statement[1:]))!r}")
            return float(match.group(1)) * _PS_PER_UNIT[match.group(2).lower()]
    return 1e3                                  # the SDF standard's default unit: 1 ns


class _TimingGraph:
    """Pins, arcs, clock-to-out and setup times of the placed and routed design (times in ps)."""

    def __init__(self):
        self.pin_ids: dict[tuple[str, str], int] = {}
        self.pins: list[tuple[str, str]] = []                  # pin id -> (cell, pin name)
        self.cell_types: dict[str, str] = {}
        self.arcs: list[tuple[int, int, float, str]] = []      # (from pin, to pin, delay, "routing" / "logic")
        self.clock_to_out: dict[int, tuple[float, int]] = {}   # clocked output -> (delay, its clock pin)
        self.setup: dict[int, tuple[float, int]] = {}          # checked input -> (setup time, its clock pin)
        self.clock_pins: set[int] = set()

    def pin(self, cell: str, name: str) -> int:
        key = (cell, name)
        pin_id = self.pin_ids.get(key)
        if pin_id is None:
            pin_id = self.pin_ids[key] = len(self.pins)
            self.pins.append(key)
        return pin_id

    def label(self, pin_id: int) -> str:
        cell, name = self.pins[pin_id]
        return f"{cell}.{name}" if cell else name

    def cell_type(self, pin_id: int) -> str:
        return self.cell_types.get(self.pins[pin_id][0], "?")


def _read_sdf(text: str) -> _TimingGraph:
    tree = _parse_sexpr(text)
    if not tree or _keyword(tree[0]) != "DELAYFILE":
        raise _bad_sdf("it does not start with (DELAYFILE")
    body = tree[0][1:]
    scale = _timescale_ps(body)
    graph = _TimingGraph()
    for cell in body:
        if _keyword(cell) != "CELL":
            continue
        cell_type, instance = "", ""
        iopaths, interconnects, checks = [], [], []
        for item in cell[1:]:
            key = _keyword(item)
            if key == "CELLTYPE" and len(item) > 1:
                cell_type = _unescape(item[1]).strip('"')
            elif key == "INSTANCE":
                instance = _unescape(item[1]) if len(item) > 1 else ""
            elif key == "DELAY":
                for block in item[1:]:          # ABSOLUTE / INCREMENT
                    for entry in block[1:] if isinstance(block, list) else ():
                        kind = _keyword(entry)
                        if kind == "IOPATH":
                            iopaths.append(entry)
                        elif kind == "INTERCONNECT":
                            interconnects.append(entry)
                        elif kind == "COND":    # (COND expr (IOPATH ...))
                            iopaths.extend(sub for sub in entry if _keyword(sub) == "IOPATH")
            elif key == "TIMINGCHECK":
                checks.extend(check for check in item[1:] if _keyword(check) in ("SETUP", "SETUPHOLD"))
        if cell_type and instance:
            graph.cell_types[instance] = cell_type
        _add_cell(graph, instance, iopaths, checks, scale)
        _add_routing(graph, instance, interconnects, scale)
    return graph


def _add_routing(graph: _TimingGraph, scope: str, interconnects: list, scale: float) -> None:
    """The routing arcs; nextpnr writes them all in the top cell, whose instance (``scope``) is empty."""
    for entry in interconnects:
        if len(entry) < 4:
            raise _bad_sdf(f"INTERCONNECT with {len(entry) - 1} fields")
        delay = _largest_delay(entry[3:])
        if delay is None:
            continue
        (from_cell, from_pin), (to_cell, to_pin) = _split_pin_path(entry[1]), _split_pin_path(entry[2])
        if scope:                               # inside a cell, the pins are named relative to it
            from_cell = f"{scope}/{from_cell}" if from_cell else scope
            to_cell = f"{scope}/{to_cell}" if to_cell else scope
        graph.arcs.append((graph.pin(from_cell, from_pin), graph.pin(to_cell, to_pin), delay * scale, "routing"))


def _add_cell(graph: _TimingGraph, instance: str, iopaths: list, checks: list, scale: float) -> None:
    """One cell's setup checks, clock-to-out delays and logic arcs."""
    # the checks first: the pins they refer to are the cell's clock pins, which tells clock-to-out from logic
    check_clocks = set()
    for check in checks:
        if len(check) < 4:
            raise _bad_sdf(f"{check[0]} check with {len(check) - 1} fields")
        setup = _largest_delay([check[3]])
        if setup is None:
            continue
        data = graph.pin(instance, _port(check[1])[1])
        clock = graph.pin(instance, _port(check[2])[1])
        check_clocks.add(clock)
        graph.clock_pins.add(clock)
        if setup * scale >= graph.setup.get(data, (-math.inf, None))[0]:
            graph.setup[data] = (setup * scale, clock)
    for path in iopaths:
        if len(path) < 4:
            raise _bad_sdf(f"IOPATH with {len(path) - 1} fields")
        delay = _largest_delay(path[3:])
        if delay is None:
            continue
        edge, in_name = _port(path[1])
        source = graph.pin(instance, in_name)
        output = graph.pin(instance, _port(path[2])[1])
        if source in check_clocks or edge is not None or _CLOCK_PIN.search(in_name):
            graph.clock_pins.add(source)
            if delay * scale >= graph.clock_to_out.get(output, (-math.inf, None))[0]:
                graph.clock_to_out[output] = (delay * scale, source)
        else:
            graph.arcs.append((source, output, delay * scale, "logic"))


def block_of(cell: str, depth: int) -> str:
    """The design block of a cell: the first ``depth`` dotted components of its name once yosys's and nextpnr's
    additions (``_SB_DFFESR_Q...``, ``_LC``, ``$...``, ``[3]``) are removed; ``(nextpnr)`` for cells nextpnr
    made itself (carry feed-ins, constant drivers)."""
    if cell.startswith("$nextpnr"):
        return "(nextpnr)"
    name = cell.removeprefix("$")
    for separator in ("_SB_", "$"):
        i = name.find(separator)
        if i > 0:
            name = name[:i]
    name = re.sub(r"_(LC|DFFLC|RAM|DSP|SPRAM|CARRY|CARRY_LC)$", "", name)
    name = re.sub(r"\[[^\]]*\]", "", name)
    return ".".join(name.split(".")[:depth])


def _ns(ps: float) -> float:
    return round(ps / 1e3, 3)


class _Analysis:
    """The longest paths of the main clock and every endpoint's slack; :meth:`summary` is :func:`analyse`'s."""

    def __init__(self, sdf_text: str, period_ns: float):
        if not isinstance(period_ns, (int, float)) or not (math.isfinite(period_ns) and period_ns > 0):
            raise SdhwError(f"the clock period must be a positive number of ns, not {period_ns!r}")
        self.period_ns = float(period_ns)
        self.period = self.period_ns * 1e3
        graph = self.graph = _read_sdf(sdf_text)
        if not graph.clock_to_out or not graph.setup:
            raise SdhwError("the SDF has no clocked cells to time")
        self._find_clock_domains()
        launches = {output: self.insertion[clock] + delay
                    for output, (delay, clock) in graph.clock_to_out.items() if self.domain[clock] == self.main_clock}
        self._longest_paths(launches)
        endpoints = []
        for pin, (setup, clock) in graph.setup.items():
            if self.domain[clock] == self.main_clock and self.arrival[pin] != -math.inf:
                required = self.period + self.insertion[clock] - setup
                endpoints.append((required - self.arrival[pin], pin))
        if not endpoints:
            raise SdhwError(f"the SDF has no register-to-register path on its clock ({self.main_clock})")
        self.endpoints = sorted(endpoints)      # worst first; (slack ps, endpoint pin)

    def _find_clock_domains(self) -> None:
        """Each clock pin's domain (the pin driving its net; '(undriven)' without one) and insertion delay (the
        routing delay into it: the rest of the clock network is common to the domain and cancels out)."""
        graph = self.graph
        self.domain: dict[int, str] = {}
        self.insertion: dict[int, float] = {}
        for source, sink, delay, kind in graph.arcs:
            if sink in graph.clock_pins and kind == "routing":
                self.domain[sink] = graph.label(source)
                self.insertion[sink] = max(delay, self.insertion.get(sink, 0.0))
        self.domain_pins: dict[str, list[int]] = defaultdict(list)
        for pin in graph.clock_pins:
            self.domain.setdefault(pin, "(undriven)")
            self.insertion.setdefault(pin, 0.0)
            self.domain_pins[self.domain[pin]].append(pin)
        self.main_clock = max(self.domain_pins, key=lambda name: (len(self.domain_pins[name]), name))

    def _longest_paths(self, launches: dict[int, float]) -> None:
        """Latest arrival at every pin from ``launches`` ({clocked output: arrival}), in topological order, with
        each pin's latest incoming arc and the clocked output its latest path starts from."""
        graph = self.graph
        count = len(graph.pins)
        fanout: list[list[tuple[int, float, str]]] = [[] for _ in range(count)]
        fanin_left = [0] * count
        for source, sink, delay, kind in graph.arcs:
            if sink in graph.clock_pins:        # the clock network enters through the insertion delays only
                continue
            fanout[source].append((sink, delay, kind))
            fanin_left[sink] += 1
        arrival = [-math.inf] * count
        latest_arc: list[tuple[int, float, str] | None] = [None] * count
        start = list(range(count))
        for output, time in launches.items():
            arrival[output] = time
            delay, clock = graph.clock_to_out[output]
            latest_arc[output] = (clock, delay, _CLOCK_TO_OUT)
        ready = [pin for pin in range(count) if fanin_left[pin] == 0]
        visited = 0
        while ready:
            pin = ready.pop()
            visited += 1
            time, origin = arrival[pin], start[pin]
            for sink, delay, kind in fanout[pin]:
                if time + delay > arrival[sink]:
                    arrival[sink] = time + delay
                    latest_arc[sink] = (pin, delay, kind)
                    start[sink] = origin
                fanin_left[sink] -= 1
                if fanin_left[sink] == 0:
                    ready.append(sink)
        self.arrival, self.latest_arc, self.start = arrival, latest_arc, start
        self.loop_pins = count - visited        # never ready: on (or behind) a combinational loop

    def path(self, rank: int) -> tuple[float, list[dict]]:
        """The ``rank``-th worst endpoint's (1 = the worst) slack (ns) and path, from the launching clock pin to
        the setup check; arrival times are relative to the capturing clock edge at its pin."""
        slack, endpoint = self.endpoints[rank - 1]
        graph = self.graph
        setup, capture_clock = graph.setup[endpoint]
        capture = self.insertion[capture_clock]
        chain, pin = [], endpoint
        while True:
            previous, delay, kind = self.latest_arc[pin]
            chain.append((pin, delay, kind))
            if kind == _CLOCK_TO_OUT:
                launch_clock = previous
                break
            pin = previous
        steps = []

        def step(pin_id, kind, delay, arrival):
            cell, name = graph.pins[pin_id]
            steps.append({"cell": cell, "pin": name, "kind": kind, "delay_ns": _ns(delay), "arrival_ns": _ns(arrival)})

        skew = self.insertion[launch_clock] - capture
        if skew:                                # as in nextpnr's reports: a step only when there is skew
            step(launch_clock, "skew", skew, skew)
        for pin_id, delay, kind in reversed(chain):
            step(pin_id, kind, delay, self.arrival[pin_id] - capture)
        step(endpoint, "setup", setup, self.arrival[endpoint] - capture + setup)
        return _ns(slack), steps

    def summary(self, depth: int = 2, top_groups: int = 12) -> dict:
        if not (isinstance(depth, int) and depth >= 1):
            raise SdhwError(f"the block depth must be a positive integer, not {depth!r}")
        if not (isinstance(top_groups, int) and top_groups >= 0):
            raise SdhwError(f"the number of groups must be a non-negative integer, not {top_groups!r}")
        graph = self.graph
        worst_slack = self.endpoints[0][0]
        if self.period - worst_slack <= 0:
            raise SdhwError("the SDF's worst register-to-register path has no delay")
        failing = [slack for slack, _ in self.endpoints if slack < 0]
        groups: dict[tuple[str, str], dict] = {}
        for slack, endpoint in self.endpoints:  # worst first: a group's first endpoint is its worst
            key = (block_of(graph.pins[self.start[endpoint]][0], depth), block_of(graph.pins[endpoint][0], depth))
            group = groups.setdefault(key, {"from": key[0], "to": key[1], "failing": 0, "timed": 0,
                                            "worst_slack_ns": _ns(slack)})
            group["timed"] += 1
            group["failing"] += slack < 0
        failing_groups = [group for group in groups.values() if group["failing"]]   # in order of worst slack
        return {
            "period_ns": self.period_ns,
            "worst_slack_ns": _ns(worst_slack),
            "fmax_mhz": round(1e6 / (self.period - worst_slack), 2),
            "endpoints": len(self.endpoints),
            "failing": len(failing),
            "total_negative_slack_ns": _ns(sum(failing)),
            "groups": failing_groups[:top_groups],
            "worst_path": self.path(1)[1],
            "untimed_clock_domains": self.untimed_clock_domains(),
        }

    def untimed_clock_domains(self) -> list[str]:
        """One line for each clock domain but the main one: its pins, their cells, what drives them."""
        notes = []
        for name, pins in sorted(self.domain_pins.items()):
            if name == self.main_clock:
                continue
            types = ", ".join(sorted({self.graph.cell_type(pin) for pin in pins}))
            plural = "s" if len(pins) > 1 else ""
            if _CONSTANT_DRIVER.search(name) or name == "(undriven)":
                why = "clocked by a constant (nextpnr-ice40 still times them as clocked)"
            else:
                why = "on another clock"
            notes.append(f"{len(pins)} {types} clock pin{plural} driven by {name}, {why}: their paths are not timed")
        return notes


def analyse(sdf_text: str, period_ns: float, *, depth: int = 2, top_groups: int = 12) -> dict:
    """Timing summary of nextpnr-ice40's ``--sdf`` output at a clock period of ``period_ns`` (JSON-serialisable).

    ``worst_slack_ns``, ``fmax_mhz`` and ``worst_path`` are nextpnr's own on the same file; ``endpoints`` counts
    the checked inputs a register of the clock reaches, ``failing`` those with negative slack (their sum is
    ``total_negative_slack_ns``). ``groups`` gathers the endpoints by (source block, destination block), the
    first ``depth`` components of the cells' names (:func:`block_of`); only groups with failing endpoints are
    listed, worst first, at most ``top_groups``. ``worst_path`` lists the steps from the launching clock (a
    ``skew`` step when the clock reaches the launching and capturing pins at different times) to the ``setup``
    check, with arrival times relative to the capturing clock edge: the last one is the critical path delay.
    ``untimed_clock_domains`` describes clock pins on other clocks or constants, whose paths are not timed.
    Raises :class:`golden.SdhwError` on a file that is no SDF or has no register-to-register path.
    """
    return _Analysis(sdf_text, period_ns).summary(depth, top_groups)


# ------------------------------------------------------------------------------------------------ command line
def _print_report(sdf: str, analysis: _Analysis, summary: dict, rank: int) -> None:
    print(f"{sdf}: clock {analysis.main_clock}, period {summary['period_ns']:.3f} ns")
    print(f"worst slack {summary['worst_slack_ns']:.3f} ns, Fmax {summary['fmax_mhz']:.2f} MHz; "
          f"{summary['failing']} of {summary['endpoints']} endpoints fail, "
          f"total negative slack {summary['total_negative_slack_ns']:.3f} ns")
    if analysis.loop_pins:
        print(f"warning: {analysis.loop_pins} pins on combinational loops are not timed")
    for note in summary["untimed_clock_domains"]:
        print(f"note: {note}")
    groups = summary["groups"]
    if groups:
        from_width = max(len("source block"), *(len(g["from"]) for g in groups))
        to_width = max(len("destination block"), *(len(g["to"]) for g in groups))
        print(f"\n{'source block':<{from_width}}  {'destination block':<{to_width}}  {'fail':>5} {'timed':>6}  "
              f"worst slack (ns)")
        for g in groups:
            print(f"{g['from']:<{from_width}}  {g['to']:<{to_width}}  {g['failing']:>5} {g['timed']:>6}  "
                  f"{g['worst_slack_ns']:>16.3f}")
    slack, steps = analysis.path(rank)
    print(f"\npath {rank} of {summary['endpoints']} (slack {slack:.3f} ns), times from the capturing clock edge:")
    print(f"  {'kind':<12} {'delay':>6} {'arrival':>8}  pin")
    for s in steps:
        print(f"  {s['kind']:<12} {s['delay_ns']:>6.3f} {s['arrival_ns']:>8.3f}  {s['cell']}.{s['pin']}")
    print(f"  slack {slack:.3f} ns = period {summary['period_ns']:.3f} ns - path {steps[-1]['arrival_ns']:.3f} ns")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpga.sta", description=__doc__.splitlines()[0])
    parser.add_argument("sdf", help="the SDF file from nextpnr-ice40 --sdf")
    parser.add_argument("--period", type=float, required=True, metavar="NS", help="clock period in ns")
    parser.add_argument("--path", type=int, default=1, metavar="K",
                        help="show the path of the K-th worst endpoint (default 1, the worst)")
    args = parser.parse_args(argv)
    try:
        try:
            text = Path(args.sdf).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SdhwError(f"cannot read {args.sdf}: {getattr(exc, 'strerror', None) or exc}") from None
        analysis = _Analysis(text, args.period)
        if not 1 <= args.path <= len(analysis.endpoints):
            raise SdhwError(f"--path must be in 1..{len(analysis.endpoints)}, not {args.path}")
        _print_report(args.sdf, analysis, analysis.summary(), args.path)
    except SdhwError as exc:
        print(f"sdhw: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
