"""A state machine kept one-hot: one flip-flop per state."""
from __future__ import annotations

from contextlib import contextmanager

from amaranth import Module, Signal


class OneHotFSM:
    """A state machine of ``m`` with a flip-flop per state, high exactly while the machine is in it.

    Used where Amaranth's ``m.FSM`` would be too slow: Yosys does not re-encode a state machine whose register
    has an initial value (every Amaranth FSM's has), and a binary state takes LUTs to decode in front of every
    decision. Here a state's body runs under its own flip-flop, and a flag is written only by the transitions
    into and out of its state, so its enable is the OR of those few conditions.

    Write the state bodies inside :meth:`states`, each in a :meth:`state`, and change state with :meth:`goto`
    inside one; index the machine by a state's name for its flag. ``init`` is the state after reset.
    """

    def __init__(self, m: Module, names, *, init: str, prefix: str = "in"):
        if init not in names:
            raise ValueError(f"init state {init!r} is not one of {list(names)}")
        self.m = m
        self.flags = {name: Signal(name=f"{prefix}_{name.lower()}", init=int(name == init)) for name in names}
        self._current = None
        self._targets: dict[str, list[str]] = {name: [] for name in names}

    def __getitem__(self, name: str) -> Signal:
        return self.flags[name]

    @contextmanager
    def states(self):
        """The machine's state bodies."""
        yield

    @contextmanager
    def state(self, name: str):
        """The body of state ``name`` (inside :meth:`states`): runs while its flag is high. Each body is an ``if``
        of its own flag alone, not a case of a switch over all flags: a switch's cases take priority in order,
        so Yosys would decode every earlier state's flag in front of each decision (it cannot know that the
        flags are one-hot)."""
        with self.m.If(self.flags[name]):
            outer, self._current = self._current, name
            try:
                yield
            finally:
                self._current = outer

    def goto(self, name: str) -> None:
        """Be in state ``name`` from the next cycle on (inside a :meth:`state`). As with ``m.next``, a later
        ``goto`` of the same cycle wins: it clears the flags the state's earlier ones may have set."""
        if self._current is None:
            raise RuntimeError("goto outside a state entered with OneHotFSM.state")
        targets = self._targets[self._current]
        self.m.d.sync += [self.flags[t].eq(0) for t in (self._current, *targets) if t != name]
        self.m.d.sync += self.flags[name].eq(1)
        if name not in targets:
            targets.append(name)
