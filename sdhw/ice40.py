"""iCE40 DSP blocks with two signed 8 x 8 products each: :class:`DualMultipliers` and the Verilog module behind it.

Yosys maps one product per ``SB_MAC16``, so a UP5K (8 blocks) would hold 8 MAC lanes. In ``MODE_8x8`` the
block has two independent 8 x 8 multipliers, top (``A[15:8] * B[15:8]`` on ``O[31:16]``) and bottom
(``A[7:0] * B[7:0]`` on ``O[15:0]``), each with its own product register; with ``A_SIGNED`` and ``B_SIGNED``
both are signed (Yosys' cell model sign-extends both halves in 8 x 8 mode; ``tests/sdhw/test_ice40.py``
checks the wrapper against that model). Inputs are registered in the block (``A_REG``, ``B_REG``), products
too (``TOP_8x8_MULT_REG``, ``BOT_8x8_MULT_REG``), and the outputs select the registered products
(``TOPOUTPUT_SELECT = BOTOUTPUT_SELECT = 2``).

As in :mod:`sdhw.ecp5`, the primitives sit in a Verilog module of ours, :data:`WRAPPER_MODULE` (parameter
``PAIRS``): ``SB_MAC16`` under ```ifdef SYNTHESIS``, a behavioural model of the same two register stages
otherwise (for Icarus and Verilator).
"""
from __future__ import annotations

from amaranth import Cat, ClockSignal, Instance, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

PRIMITIVE = "SB_MAC16"
WRAPPER_MODULE = "sdhw_ice40_dual_mults"
WRAPPER_FILE = f"{WRAPPER_MODULE}.v"

#: ``SB_MAC16`` parameters of the dual 8 x 8 mode with registered inputs and products
PARAMETERS = {"MODE_8x8": "1'b1", "A_SIGNED": "1'b1", "B_SIGNED": "1'b1", "A_REG": "1'b1", "B_REG": "1'b1",
              "TOP_8x8_MULT_REG": "1'b1", "BOT_8x8_MULT_REG": "1'b1", "TOPOUTPUT_SELECT": "2'b10",
              "BOTOUTPUT_SELECT": "2'b10"}


class DualMultipliers(wiring.Component):
    """``p[k] = a[k] * b[k]`` (signed 8 x 8) for ``lanes`` lanes, two per ``SB_MAC16``; ``a`` and ``b`` are
    registered on entry and the products on exit.

    Parameters
    ----------
    lanes : int
        Products; lanes ``2k`` and ``2k + 1`` share block ``k`` (an odd last lane leaves half a block idle).
    primitive : bool
        Instantiate :data:`WRAPPER_MODULE` (``SB_MAC16`` in synthesis, a behavioural model in simulators);
        without it, the same two register stages in logic (for Amaranth's simulator).

    Latency 2 cycles (``a``, ``b`` to ``p``); throughput ``lanes`` products per cycle. The registers are never
    reset.
    """

    def __init__(self, *, lanes: int, primitive: bool):
        if not (isinstance(lanes, int) and 1 <= lanes <= 4096):
            raise ValueError(f"lanes must be an integer in 1..4096, not {lanes!r}")
        if not isinstance(primitive, bool):
            raise ValueError(f"primitive must be a bool, not {primitive!r}")
        self.lanes, self.primitive = lanes, primitive
        super().__init__({"a": In(data.ArrayLayout(signed(8), lanes)), "b": In(data.ArrayLayout(signed(8), lanes)),
                          "p": Out(data.ArrayLayout(signed(16), lanes))})

    @property
    def blocks(self) -> int:
        return (self.lanes + 1) // 2

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
        pad = 2 * self.blocks - self.lanes
        a = Cat(self.a.as_value(), Signal(8 * pad))
        b = Cat(self.b.as_value(), Signal(8 * pad))
        p = Signal(32 * self.blocks)
        m.d.comb += self.p.eq(p[:16 * self.lanes])
        m.submodules.dsps = Instance(WRAPPER_MODULE, p_PAIRS=self.blocks, i_CLK=ClockSignal("sync"),
                                     i_A=a, i_B=b, o_P=p)
        return m


_PARAMS = ", ".join(f".{k}({v})" for k, v in PARAMETERS.items())

#: The wrapper: lanes ``2i`` and ``2i + 1`` (bytes of A and B 16 bits apart) in block ``i``; ``P`` holds the
#: 16-bit products side by side, registered twice as in the block.
WRAPPER_VERILOG = f"""
// sdhw: two signed 8x8 products per iCE40 SB_MAC16, inputs and products registered (synthesis), or a
// behavioural model of them (simulation). Latency 2 cycles: P[16k +: 16] = A[8k +: 8] * B[8k +: 8] (signed).
module {WRAPPER_MODULE} #(parameter PAIRS = 1) (
    input CLK, input [16*PAIRS-1:0] A, input [16*PAIRS-1:0] B, output [32*PAIRS-1:0] P
);
`ifdef SYNTHESIS
    genvar i;
    generate for (i = 0; i < PAIRS; i = i + 1) begin : pair
        {PRIMITIVE} #({_PARAMS}) dsp (
            .CLK(CLK), .CE(1'b1), .A(A[16*i +: 16]), .B(B[16*i +: 16]), .C(16'b0), .D(16'b0),
            .AHOLD(1'b0), .BHOLD(1'b0), .CHOLD(1'b0), .DHOLD(1'b0), .IRSTTOP(1'b0), .IRSTBOT(1'b0),
            .ORSTTOP(1'b0), .ORSTBOT(1'b0), .OLOADTOP(1'b0), .OLOADBOT(1'b0), .ADDSUBTOP(1'b0),
            .ADDSUBBOT(1'b0), .OHOLDTOP(1'b0), .OHOLDBOT(1'b0), .CI(1'b0), .ACCUMCI(1'b0), .SIGNEXTIN(1'b0),
            .O(P[32*i +: 32])
        );
    end endgenerate
`else
    reg [16*PAIRS-1:0] a_q = 0, b_q = 0;
    reg [32*PAIRS-1:0] p_q = 0, p_d;
    integer k;
    always @(posedge CLK) begin
        for (k = 0; k < 2 * PAIRS; k = k + 1)
            p_d[16*k +: 16] = $signed(a_q[8*k +: 8]) * $signed(b_q[8*k +: 8]);
        a_q <= A;
        b_q <= B;
        p_q <= p_d;
    end
    assign P = p_q;
`endif
endmodule
"""
