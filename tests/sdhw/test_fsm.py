# amaranth: UnusedElaboratable=no
"""sdhw.fsm.OneHotFSM against Amaranth's own ``m.FSM`` with the same states, transitions and bodies, under
random inputs (Amaranth simulator, fixed seeds): the same state and outputs every cycle, one flag high."""
from __future__ import annotations

import random

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from sdhw.fsm import OneHotFSM

STATES = ("IDLE", "LOAD", "RUN", "DRAIN")


def _machine(m: Module, a, b, count, out, *, state: str, goto) -> None:
    """One state's body: a register written in several states and transitions on the inputs."""
    if state == "IDLE":
        m.d.sync += count.eq(0)
        with m.If(a):
            goto("LOAD")
    elif state == "LOAD":
        m.d.sync += count.eq(count + 1)
        with m.If(b):
            goto("RUN")
        with m.Elif(~a):
            goto("IDLE")
        with m.If(b & count[0]):                 # a later transition of the same cycle wins
            goto("DRAIN")
    elif state == "RUN":
        m.d.comb += out.eq(1)
        m.d.sync += count.eq(count + 2)
        with m.If(a & b):
            goto("DRAIN")
    else:
        m.d.sync += count.eq(count - 1)
        goto("IDLE")


class Pair(Elaboratable):
    """The same machine twice: as a :class:`OneHotFSM` and as an ``m.FSM`` (the reference)."""

    def __init__(self):
        self.a, self.b = Signal(), Signal()
        self.count, self.ref_count = Signal(8), Signal(8)
        self.out, self.ref_out = Signal(), Signal()
        self.flags = None
        self.ref_state = Signal(range(len(STATES)))

    def elaborate(self, platform):
        m = Module()
        fsm = OneHotFSM(m, STATES, init="IDLE", prefix="dut")
        self.flags = [fsm[name] for name in STATES]
        with fsm.states():
            for name in STATES:
                with fsm.state(name):
                    _machine(m, self.a, self.b, self.count, self.out, state=name, goto=fsm.goto)

        def ref_goto(name):
            m.next = name
        with m.FSM(name="ref") as ref:
            for name in STATES:
                with m.State(name):
                    _machine(m, self.a, self.b, self.ref_count, self.ref_out, state=name, goto=ref_goto)
        for k, name in enumerate(STATES):
            with m.If(ref.ongoing(name)):
                m.d.comb += self.ref_state.eq(k)
        return m


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_hot_machine_follows_the_reference_fsm(seed):
    dut = Pair()
    rng = random.Random(seed)
    seen = set()

    async def bench(ctx):
        for cycle in range(400):
            ctx.set(dut.a, rng.random() < 0.5)
            ctx.set(dut.b, rng.random() < 0.4)
            flags = [ctx.get(flag) for flag in dut.flags]
            state = ctx.get(dut.ref_state)
            assert sum(flags) == 1 and flags[state] == 1, f"seed {seed} cycle {cycle}: flags {flags}, ref {state}"
            assert ctx.get(dut.count) == ctx.get(dut.ref_count), f"seed {seed} cycle {cycle}"
            assert ctx.get(dut.out) == ctx.get(dut.ref_out), f"seed {seed} cycle {cycle}"
            seen.add(state)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == set(range(len(STATES))), f"seed {seed}: states visited {sorted(seen)}"


def test_bad_init_and_goto_outside_a_state():
    with pytest.raises(ValueError, match="init state 'NOPE'"):
        OneHotFSM(Module(), STATES, init="NOPE")
    with pytest.raises(RuntimeError, match="goto outside a state"):
        OneHotFSM(Module(), STATES, init="IDLE").goto("RUN")
