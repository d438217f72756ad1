"""ECP5 DSP blocks with their own registers: :class:`RegisteredMultipliers` and the Verilog module behind it.

Yosys maps ``*`` to a combinational ``MULT18X18D`` and packs no flip-flop into it, so a product's path ran from
a fabric register through the multiplier to a fabric register, with the DSP's delay and the routing to and from
it in one cycle. The ECP5 DSP slice has input and output registers of its own; :class:`RegisteredMultipliers`
uses them, which splits that path in two (routing into the DSP, multiplier inside it) with the same latency as
a register before and after a soft multiplier.

The primitives sit in a Verilog module of ours, :data:`WRAPPER_MODULE` (:data:`WRAPPER_VERILOG`, parameter
``LANES``), with vector ports: under ```ifdef SYNTHESIS`` (Yosys defines it) it instantiates one
``MULT18X18D`` per lane with ``REG_INPUTA_CLK``, ``REG_INPUTB_CLK`` and ``REG_OUTPUT_CLK`` on ``CLK0``;
otherwise it is a behavioural model with the same two register stages, for Icarus and Verilator (neither Yosys
nor nextpnr ships a simulation model of the primitive, only a black box). One module for all lanes keeps
simulation fast: its products change together, once per clock, where a primitive per lane (or per output bit)
wakes the logic behind them once per lane (or bit). :func:`sdhw.vendor.with_wrappers` appends the module to a Verilog
text that instantiates it; a platform build adds it as a file (:data:`WRAPPER_FILE`).
"""
from __future__ import annotations

from amaranth import Cat, ClockSignal, Instance, Module, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

PRIMITIVE = "MULT18X18D"
WRAPPER_MODULE = "sdhw_ecp5_registered_mults"
WRAPPER_FILE = f"{WRAPPER_MODULE}.v"
_PORT_BITS = 18


class RegisteredMultipliers(wiring.Component):
    """``p[k] = a[k] * b[k]`` (signed) for ``lanes`` lanes, with ``a`` and ``b`` registered on entry and the
    products registered on exit.

    Parameters
    ----------
    lanes : int
        Products, one ``MULT18X18D`` each.
    a_width, b_width : int
        Operand widths, 1..18 each.
    primitive : bool
        Instantiate :data:`WRAPPER_MODULE` (the ECP5 ``MULT18X18D`` s with their input and output registers in
        synthesis, a behavioural model in simulators); without it, the same two register stages in logic
        (for Amaranth's simulator, which cannot run an instance).

    The registers are never reset (the DSP's are tied off); a consumer that must ignore stale products tracks
    their validity beside them, as :class:`~sdhw.mac_array.MacArray` does.

    Latency 2 cycles (``a``, ``b`` to ``p``); throughput ``lanes`` products per cycle.
    """

    def __init__(self, *, lanes: int, a_width: int, b_width: int, primitive: bool):
        if not (isinstance(lanes, int) and 1 <= lanes <= 4096):
            raise ValueError(f"lanes must be an integer in 1..4096, not {lanes!r}")
        for name, value in (("a_width", a_width), ("b_width", b_width)):
            if not (isinstance(value, int) and 1 <= value <= _PORT_BITS):
                raise ValueError(f"{name} must be an integer in 1..{_PORT_BITS}, not {value!r}")
        if not isinstance(primitive, bool):
            raise ValueError(f"primitive must be a bool, not {primitive!r}")
        self.lanes, self.primitive = lanes, primitive
        super().__init__({"a": In(data.ArrayLayout(signed(a_width), lanes)),
                          "b": In(data.ArrayLayout(signed(b_width), lanes)),
                          "p": Out(data.ArrayLayout(signed(a_width + b_width), lanes))})

    def elaborate(self, platform):
        m = Module()
        if not self.primitive:
            a_r = Signal.like(self.a, reset_less=True)
            b_r = Signal.like(self.b, reset_less=True)
            products = Signal.like(self.p, reset_less=True)
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b)]
            m.d.sync += [products[k].eq(a_r[k] * b_r[k]) for k in range(self.lanes)]
            m.d.comb += self.p.eq(products)
            return m

        # whole-vector assignments (one Verilog assign each, not one per lane): in simulation, each assign
        # to a part of a vector wakes all the logic that reads it
        p = Signal(2 * _PORT_BITS * self.lanes)
        a = Cat(_sign_extended(self.a[k], _PORT_BITS) for k in range(self.lanes))
        b = Cat(_sign_extended(self.b[k], _PORT_BITS) for k in range(self.lanes))
        width = len(Value.cast(self.p[0]))
        m.d.comb += self.p.eq(Cat(p[2 * _PORT_BITS * k:2 * _PORT_BITS * k + width] for k in range(self.lanes)))
        m.submodules.dsps = Instance(WRAPPER_MODULE, p_LANES=self.lanes, i_CLK=ClockSignal("sync"),
                                     i_A=a, i_B=b, o_P=p)
        return m


def _sign_extended(value, width: int):
    bits = Value.cast(value)
    return Cat(bits, bits[-1].replicate(width - len(bits)))


#: The wrapper: ``P[k] = A[k] * B[k]`` (signed 18 x 18, lanes packed 18 / 36 bits apart), A and B registered on
#: entry, P on exit, on ``CLK``. Synthesis gets a ``MULT18X18D`` per lane with ``REG_INPUTA/B_CLK`` and
#: ``REG_OUTPUT_CLK`` = ``CLK0`` (CE0 high, RST0 low, the unused C operand zero, as Yosys' own DSP mapping ties
#: them); simulators the same two register stages.
WRAPPER_VERILOG = f"""
// sdhw: ECP5 MULT18X18D per lane with its input and output registers (synthesis), or a behavioural model of
// them (simulation). Latency 2 cycles: P[k] is A[k] * B[k] (signed) of two rising edges earlier.
module {WRAPPER_MODULE} #(parameter LANES = 1) (
    input CLK, input [18*LANES-1:0] A, input [18*LANES-1:0] B, output [36*LANES-1:0] P
);
`ifdef SYNTHESIS
    genvar i;
    generate for (i = 0; i < LANES; i = i + 1) begin : lane
        {PRIMITIVE} #(.REG_INPUTA_CLK("CLK0"), .REG_INPUTB_CLK("CLK0"), .REG_OUTPUT_CLK("CLK0")) dsp (
            {", ".join(f".A{j}(A[18*i+{j}])" for j in range(18))},
            {", ".join(f".B{j}(B[18*i+{j}])" for j in range(18))},
            {", ".join(f".C{j}(1'b0)" for j in range(18))},
            .SIGNEDA(1'b1), .SIGNEDB(1'b1), .SOURCEA(1'b0), .SOURCEB(1'b0),
            .CLK0(CLK), .CE0(1'b1), .RST0(1'b0),
            {", ".join(f".P{j}(P[36*i+{j}])" for j in range(36))}
        );
    end endgenerate
`else
    // the products are formed in a variable and registered at once: one update of P per clock, not one per
    // lane (each would wake the logic behind P again)
    reg [18*LANES-1:0] a_q = 0, b_q = 0;
    reg [36*LANES-1:0] p_q = 0, p_d;
    integer k;
    always @(posedge CLK) begin
        for (k = 0; k < LANES; k = k + 1)
            p_d[36*k +: 36] = $signed(a_q[18*k +: 18]) * $signed(b_q[18*k +: 18]);
        a_q <= A;
        b_q <= B;
        p_q <= p_d;
    end
    assign P = p_q;
`endif
endmodule
"""
