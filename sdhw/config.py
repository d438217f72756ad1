"""The accelerator configuration: one frozen, validated dataclass, and the devices it can target.

``pes`` (N) is the number of multipliers, i.e. peak MACs per cycle. It maps onto the MAC array as
``channel_lanes x pixel_lanes`` (Q x P): Q output channels are computed in parallel, each with its own
rebuilt weight per cycle, and every rebuilt weight is broadcast to P neighbouring output pixels
(weight reuse). Taps are consumed one per cycle, so a row of three taps takes three cycles.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from golden import SdhwError

VERSION = 1
MAX_PES = 1024
VALID_PES = tuple(1 << k for k in range(11))            # 1, 2, 4, ..., 1024
DESC_WORDS = 32                                         # words per layer descriptor slot
RUNNING_TOTALS_MAX_PES = 16                             # ECP5 builds with more lanes restart their sums


@dataclass(frozen=True)
class Device:
    name: str
    family: str               # "ice40" | "ecp5"
    luts: int
    dsps: int                 # SB_MAC16 (iCE40) or MULT18X18D (ECP5)
    bram_blocks: int
    bram_bits: int            # bits per block RAM
    spram_bits: int = 0       # iCE40 UP5K single-port RAM: 4 blocks of 16K x 16 bits (the code memory)


DEVICES = {
    "up5k": Device("up5k", "ice40", 5280, 8, 30, 4096, 4 * 262144),
    "hx8k": Device("hx8k", "ice40", 7680, 0, 32, 4096),
    "ecp5-25f": Device("ecp5-25f", "ecp5", 24288, 28, 56, 18432),
    "ecp5-45f": Device("ecp5-45f", "ecp5", 43848, 72, 108, 18432),
    "ecp5-85f": Device("ecp5-85f", "ecp5", 83640, 156, 208, 18432),
    # simulation only: no resource limits (for RTL simulation of configurations no device holds)
    "generic": Device("generic", "generic", 10**9, 10**9, 10**9, 18432),
}

#: Default PE count and memory depths (entries) per device, sized so that default fits the device.
DEFAULT_PES = {"up5k": 1, "hx8k": 1, "ecp5-25f": 16, "ecp5-45f": 64, "ecp5-85f": 128, "generic": 16}
DEFAULT_DEVICE = "ecp5-25f"
DEFAULT_DEPTHS = {
    "up5k": {"act_depth": 1024, "code_depth": 512, "bitmap_depth": 512, "basis_depth": 256, "bias_depth": 256,
             "desc_layers": 8},
    "hx8k": {"act_depth": 1024, "code_depth": 512, "bitmap_depth": 256, "basis_depth": 256, "bias_depth": 256,
             "desc_layers": 8},
    "ecp5-25f": {"act_depth": 2048, "code_depth": 2048, "bitmap_depth": 1024, "basis_depth": 1024,
                 "bias_depth": 1024, "desc_layers": 16},
    "ecp5-45f": {"act_depth": 4096, "code_depth": 2048, "bitmap_depth": 2048, "basis_depth": 2048,
                 "bias_depth": 2048, "desc_layers": 16},
    "ecp5-85f": {"act_depth": 4096, "code_depth": 4096, "bitmap_depth": 2048, "basis_depth": 4096,
                 "bias_depth": 2048, "desc_layers": 16},
}
DEFAULT_DEPTHS["generic"] = DEFAULT_DEPTHS["ecp5-85f"]
#: iCE40 UP5K single-port RAM block (SB_SPRAM256KA): 16K entries of 16 bits; the device has four
SPRAM_DEPTH, SPRAM_WIDTH, SPRAM_BLOCKS = 16384, 16, 4


def default_lanes(pes: int) -> tuple[int, int]:
    """``(channel_lanes, pixel_lanes)`` for N PEs: Q = min(N, max(4, 2 * sqrt(N))) rounded to a power of two."""
    q = min(pes, max(4, 1 << math.ceil(math.log2(2 * math.isqrt(pes))) if pes > 1 else 1))
    return q, pes // q


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class AcceleratorConfig:
    """Every generator parameter, validated once on construction (:class:`golden.SdhwError` if invalid)."""

    pes: int = 16
    dense: bool = False
    device: str = DEFAULT_DEVICE
    channel_lanes: int | None = None       # Q; None: derived from pes
    pixel_lanes: int | None = None         # P; None: derived from pes
    exp_bits: int = 2                      # largest code exponent field the decoder accepts
    weight_bits: int = 8
    acc_bits: int = 32
    act_depth: int | None = None           # bytes per activation buffer (two buffers, ping-pong)
    code_depth: int | None = None          # rows of codes (SD) or dense weights, all lanes side by side
    bitmap_depth: int | None = None        # 32-bit words of row bitmaps (SD only)
    basis_depth: int | None = None         # 3x3 bases, one per (channel group, block, lane) (SD only)
    bias_depth: int | None = None          # 32-bit biases
    desc_layers: int | None = None         # layer descriptors (program length)
    counter_bits: int | None = None        # performance counters (None: 32 on iCE40, 48 elsewhere)
    requant: str | None = None             # "pipelined" (4 DSPs, 1/cycle) | "serial" (no DSP); None: per family
    dsp_budget: int | None = None          # DSPs the MAC array may use (None: what the device has left)
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        def bad(name, value, valid):
            raise SdhwError(f"{name} must be {valid}, not {value!r}")

        if self.device not in DEVICES:
            bad("device", self.device, "one of " + ", ".join(DEVICES))
        if not isinstance(self.pes, int) or self.pes not in VALID_PES:
            bad("pes", self.pes, "a power of two from 1 to 1024 (valid: " + ", ".join(map(str, VALID_PES)) + ")")
        if not isinstance(self.dense, bool):
            bad("dense", self.dense, "true or false")
        q, p = self.channel_lanes, self.pixel_lanes
        if q is None and p is None:
            q, p = default_lanes(self.pes)
        elif q is None:
            q = self.pes // p if isinstance(p, int) and p >= 1 else 0
        elif p is None:
            p = self.pes // q if isinstance(q, int) and q >= 1 else 0
        if not (isinstance(q, int) and isinstance(p, int) and _power_of_two(q) and _power_of_two(p)
                and q * p == self.pes and p <= 64):
            bad("channel_lanes x pixel_lanes", (self.channel_lanes, self.pixel_lanes),
                f"powers of two whose product is pes={self.pes} (pixel_lanes <= 64)")
        object.__setattr__(self, "channel_lanes", q)
        object.__setattr__(self, "pixel_lanes", p)
        if not (isinstance(self.exp_bits, int) and 1 <= self.exp_bits <= 4):
            bad("exp_bits", self.exp_bits, "an integer in 1..4")
        if self.weight_bits != 8:
            bad("weight_bits", self.weight_bits, "8 (the MAC array is int8 x int8)")
        if not (isinstance(self.acc_bits, int) and 24 <= self.acc_bits <= 40):
            bad("acc_bits", self.acc_bits, "an integer in 24..40")
        defaults = dict(DEFAULT_DEPTHS[self.device])
        if DEVICES[self.device].spram_bits and self.code_width <= SPRAM_WIDTH * SPRAM_BLOCKS:
            defaults["code_depth"] = SPRAM_DEPTH            # single-port RAM: whole blocks anyway
        for name, value in defaults.items():
            v = getattr(self, name)
            if v is None:
                v = value
            if not (isinstance(v, int) and 1 <= v <= 65536):
                bad(name, v, "an integer in 1..65536")
            object.__setattr__(self, name, v)
        if self.counter_bits is None:
            object.__setattr__(self, "counter_bits", 32 if DEVICES[self.device].family == "ice40" else 48)
        if not (isinstance(self.counter_bits, int) and not isinstance(self.counter_bits, bool)
                and 16 <= self.counter_bits <= 64):
            bad("counter_bits", self.counter_bits, "an integer in 16..64")
        if self.requant is None:
            object.__setattr__(self, "requant", "serial" if DEVICES[self.device].family == "ice40" else "pipelined")
        if self.requant not in ("pipelined", "serial"):
            bad("requant", self.requant, '"pipelined" or "serial"')
        if self.dsp_budget is not None and not (isinstance(self.dsp_budget, int)
                                                and not isinstance(self.dsp_budget, bool) and self.dsp_budget >= 0):
            bad("dsp_budget", self.dsp_budget, "a non-negative integer (DSPs for MAC products) or unset")
        if self.extra:
            bad("config keys", sorted(self.extra), "known parameters only: " + ", ".join(PARAMETERS))

    # ------------------------------------------------------------------ derived widths
    @property
    def code_width(self) -> int:
        """Bits of one code-memory row: Q lanes x (3 codes of 1 + E bits, or 3 int8 weights when dense)."""
        per_lane = 24 if self.dense else 3 * (1 + self.exp_bits)
        return self.channel_lanes * per_lane

    @property
    def basis_width(self) -> int:
        """Bits of one basis-memory row: one basis column (3 int8) per channel lane, read once per tap."""
        return 24 * self.channel_lanes

    @property
    def code_in_spram(self) -> bool:
        """The code memory is built from the UP5K's single-port RAM blocks (16K x 16 bits each, up to four side by
        side) instead of block RAM: the device has them, the row is at most 64 bits wide and the memory at most
        16K deep. The host writes it only while the accelerator is idle and the row fetch reads it only while
        it runs, so one port with a shared address serves both."""
        return (DEVICES[self.device].spram_bits > 0 and self.code_width <= SPRAM_WIDTH * SPRAM_BLOCKS
                and self.code_depth <= SPRAM_DEPTH)

    @property
    def basis_rows(self) -> int:
        """Basis-memory rows: three (the columns) per (channel group, row block); ``basis_depth`` counts
        3x3 lane bases, so the memory holds ``ceil(basis_depth / Q)`` (channel group, block) pairs."""
        return 3 * -(-self.basis_depth // self.channel_lanes)

    @property
    def soft_products(self) -> int:
        """MAC products built from LUTs because the device's DSPs are spent (the others map to DSPs).

        Yosys maps every multiplication to a DSP and placement fails when they run out, so the generator
        budgets them: ``dsp_budget`` if set, else the device's DSPs minus the pipelined requantiser's four.
        Without a budget, devices without DSPs (HX8K) and the simulation-only ``generic`` device get none
        (yosys builds LUT multipliers there itself)."""
        device = DEVICES[self.device]
        if self.dsp_budget is not None:
            return max(0, self.pes - self.dsp_budget)
        if device.family not in ("ice40", "ecp5") or device.dsps == 0:
            return 0
        budget = max(0, device.dsps - (REQUANT_DSPS if self.requant == "pipelined" else 0))
        return max(0, self.pes - budget)

    @property
    def lean(self) -> bool:
        """iCE40 builds are lean: area-bound, with a clock set by long carry chains rather than by block RAM
        outputs, they leave out the registers that only shorten ECP5 paths (the decoder's entry queue and
        read-data register, the tap queue and rebuild input register, the drain's D2 and the MAC input's m2
        registers, the lane steppers' registered sums, the host read port's per-memory registers). Function,
        counters and ``READ_LATENCY`` are the same; cycle counts differ by a few cycles per group."""
        return DEVICES[self.device].family == "ice40"

    @property
    def registered_dsps(self) -> bool:
        """ECP5 builds take their DSP products through the DSP block's own input and output registers
        (:class:`~sdhw.ecp5.RegisteredMultipliers`): Yosys packs no flip-flop into ``MULT18X18D``, and the path
        register -> multiplier -> register across the chip was the ECP5-25F N = 64 critical path."""
        return DEVICES[self.device].family == "ecp5"

    @property
    def running_totals(self) -> bool:
        """The MAC accumulators never restart (see :class:`~sdhw.mac_array.MacArray`): ECP5 builds of up to
        :data:`RUNNING_TOTALS_MAX_PES` lanes. They save a multiplexer LUT per accumulator bit for two banks of
        flip-flops and a second drain multiplexer; iCE40 pays a logic cell per flip-flop, and at 64 lanes the
        doubled drain multiplexer (2 x 64 x 32 wires from the whole array) left ECP5-25F unroutable."""
        return not self.lean and self.pes <= RUNNING_TOTALS_MAX_PES

    def memories(self) -> dict[str, tuple[int, int, int]]:
        """``name -> (depth, width, copies)`` of every on-chip memory."""
        mems = {
            "descriptors": (self.desc_layers * DESC_WORDS, 32, 1),
            "activations": (self.act_depth, 8, 2 * self.pixel_lanes),
            "codes" if not self.dense else "weights": (self.code_depth, self.code_width, 1),
            "bias": (self.bias_depth, 32, 1),
        }
        if not self.dense:
            mems["bitmap"] = (self.bitmap_depth, 32, 1)
            mems["bases"] = (self.basis_rows, self.basis_width, 1)
        return mems

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, values: dict) -> AcceleratorConfig:
        known = {k: v for k, v in values.items() if k in PARAMETERS}
        extra = {k: v for k, v in values.items() if k not in PARAMETERS}
        return cls(**known, extra=extra)


PARAMETERS = tuple(f.name for f in fields(AcceleratorConfig) if f.name != "extra")


# ------------------------------------------------------------------------------------------ fit estimate
def _bram_blocks(device: Device, depth: int, width: int) -> int:
    """Block RAMs for one ``depth x width`` memory with the family's aspect ratios."""
    if device.family == "ice40":
        shapes = [(256, 16), (512, 8), (1024, 4), (2048, 2)]
    else:
        shapes = [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)]
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in shapes)


@dataclass(frozen=True)
class CostModel:
    """Yosys cells of one family's build, in parts: fixed (sequencer, host port, decoder, requantiser of the
    family's default kind), per channel lane (rebuild unit, weight path), per PE (accumulator, drain), per
    pixel lane (address stepping, padding and range checks) and per soft (LUT-built) MAC product; with
    running totals, each PE costs ``running_total`` more (fewer LUTs, more flip-flops), and with registered
    DSPs each DSP product ``registered_dsp`` more (its product register moves into the DSP block)."""
    fixed_sd: int
    fixed_dense: int
    sd_lane: int
    dense_lane: int
    pe: int
    pixel_lane: int
    soft_product: int
    running_total: int = 0
    registered_dsp: int = 0

    def count(self, cfg: AcceleratorConfig) -> int:
        q, p = cfg.channel_lanes, cfg.pixel_lanes
        fixed, lane = (self.fixed_dense, self.dense_lane) if cfg.dense else (self.fixed_sd, self.sd_lane)
        pe = self.pe + (self.running_total if cfg.running_totals else 0)
        dsp_products = q * p - cfg.soft_products if cfg.registered_dsps else 0
        return (fixed + lane * q + pe * q * p + self.pixel_lane * p + self.soft_product * cfg.soft_products
                + self.registered_dsp * dsp_products)


#: LUT4 and flip-flop models fitted on `bench/fpga.json` (2026-11-30, commit 52fdb6b: the synthesized harness
#: at UP5K N = 1..16 and ECP5-25F N = 1..64, SD and dense; every point within 1.5 % for LUT4, 2 % for
#: flip-flops). The sweep cannot separate the per-PE cost from the lane terms, so it is set from the
#: accumulator's width and the rest fitted. iCE40 builds are lean with the serial requantiser and 32-bit
#: counters; ECP5 (and the simulation-only generic device) have the pipeline registers, the pipelined
#: requantiser (about 500 LUT4 and four DSPs) and 48-bit counters. The soft-product terms were refitted after
#: the products became radix 4 (commit cf9c7b1: yosys on UP5K N = 16 and ECP5-25F N = 64, SD and dense, within
#: 3 %). The per-PE terms split when builds of more than 16 lanes stopped using running totals (yosys on
#: ECP5-25F N = 64, SD and dense: 330 LUT4 more, 4,128 flip-flops fewer than with them). Registered DSPs
#: (ECP5) take a 16-bit product register per DSP lane into the block (yosys, ECP5-25F N = 16 SD: 231 fewer
#: flip-flops, 36 more LUT4); dense ECP5 channel lanes have the tap queue's registers since 36d828c (yosys,
#: ECP5-25F N = 64 dense: about 25 flip-flops per lane). Yosys maps one
#: product per DSP and does not fall back to LUT multipliers when DSPs run out, so every MAC product needs a
#: DSP (iCE40 HX has none: its products become yosys' LUT multipliers).
LUT_MODEL = {"ice40": CostModel(3268, 2304, 225, 30, 100, 282, 88),
             "ecp5": CostModel(4205, 2780, 309, 99, 65, 662, 128, running_total=-5)}
FF_MODEL = {"ice40": CostModel(1634, 1183, 213, 110, 80, 139, 44),
            "ecp5": CostModel(2782, 2197, 277, 165, 65, 303, 49, running_total=65, registered_dsp=-16)}
DEFAULT_REQUANT = {"ice40": "serial", "ecp5": "pipelined"}
LUT_PIPELINED_REQUANT = 500
LUT_PER_SOFT_MULTIPLIER = 250          # yosys' LUT multiplier (iCE40 HX)
REQUANT_DSPS = 4
#: iCE40 logic cells after nextpnr packs: each LUT4 and about two thirds of the flip-flops (those that do not
#: pack with their own LUT); measured 0.65-0.70 per flip-flop at seven UP5K points (bench, 2026-11-30)
ICE40_LC_PER_FF = 0.67


def estimate_resources(cfg: AcceleratorConfig) -> dict[str, int]:
    """A pre-synthesis estimate calibrated on yosys (the synthesis flow reports the real figures)."""
    device = DEVICES[cfg.device]
    blocks = sum(_bram_blocks(device, depth, width) * copies for name, (depth, width, copies) in cfg.memories().items()
                 if not (cfg.code_in_spram and name in ("codes", "weights")))
    spram_blocks = -(-cfg.code_width // SPRAM_WIDTH) if cfg.code_in_spram else 0
    family = "ice40" if device.family == "ice40" else "ecp5"
    products = cfg.channel_lanes * cfg.pixel_lanes + (REQUANT_DSPS if cfg.requant == "pipelined" else 0)
    luts, ffs = LUT_MODEL[family].count(cfg), FF_MODEL[family].count(cfg)
    if cfg.requant != DEFAULT_REQUANT[family]:
        luts += LUT_PIPELINED_REQUANT if cfg.requant == "pipelined" else -LUT_PIPELINED_REQUANT
    dsps = products - cfg.soft_products
    if device.dsps == 0:                           # iCE40 HX: no DSPs, every product in LUTs
        luts += LUT_PER_SOFT_MULTIPLIER * products
        dsps = 0
    est = {"luts": luts, "ffs": ffs, "dsps": dsps, "bram_blocks": blocks, "spram_blocks": spram_blocks}
    if device.family == "ice40":
        est["logic_cells"] = round(luts + ICE40_LC_PER_FF * ffs)
    return est


def check_fits(cfg: AcceleratorConfig) -> dict[str, int]:
    """Raise :class:`SdhwError` naming the first resource the configuration overflows."""
    device = DEVICES[cfg.device]
    est = estimate_resources(cfg)
    if est["bram_blocks"] > device.bram_blocks:
        raise SdhwError(f"configuration does not fit {device.name}: block RAM needs ~{est['bram_blocks']} of "
                        f"{device.bram_blocks} blocks (memories: {_memory_summary(cfg)}); reduce the depths or pes")
    if est["dsps"] > device.dsps:
        raise SdhwError(f"configuration does not fit {device.name}: multipliers need {est['dsps']} of "
                        f"{device.dsps} DSPs ({cfg.pes} MAC lanes"
                        f"{f' + {REQUANT_DSPS} for the pipelined requantiser' if cfg.requant == 'pipelined' else ''}); "
                        "choose fewer pes or a larger device")
    if est["luts"] > device.luts:
        raise SdhwError(f"configuration does not fit {device.name}: logic needs ~{est['luts']} of {device.luts} "
                        f"LUTs for pes={cfg.pes}; choose fewer pes or a larger device")
    if device.family == "ice40" and est["logic_cells"] > device.luts:
        raise SdhwError(f"configuration does not fit {device.name}: ~{est['luts']} LUT4 plus the flip-flops that "
                        f"do not pack with them need ~{est['logic_cells']} of {device.luts} "
                        f"logic cells (LUTs) for pes={cfg.pes}; choose fewer pes or a larger device")
    return est


def _memory_summary(cfg: AcceleratorConfig) -> str:
    return ", ".join(f"{n} {d}x{w}{'x' + str(c) if c > 1 else ''}" for n, (d, w, c) in cfg.memories().items())
