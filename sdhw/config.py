"""The accelerator configuration: one frozen, validated dataclass, and the devices it can target.

``pes`` (N) is the number of multipliers, i.e. peak MACs per cycle: N channel lanes, each computing one output
channel. Every cycle one activation is broadcast to all lanes and each lane takes its own weight from the
rebuilt-weight buffer; a weight is rebuilt once per channel group and re-read at every output pixel.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from golden import SdhwError

VERSION = 2
MAX_PES = 1024
VALID_PES = tuple(1 << k for k in range(11))            # 1, 2, 4, ..., 1024
DESC_WORDS = 16                                         # words per layer descriptor slot
MAX_ACT_DEPTH = 65536                                   # the row header's activation offset has 16 bits


@dataclass(frozen=True)
class Device:
    name: str
    family: str               # "ice40" | "ecp5" | "generic"
    luts: int
    dsps: int                 # SB_MAC16 (iCE40) or MULT18X18D (ECP5)
    bram_blocks: int
    bram_bits: int            # bits per block RAM
    spram_blocks: int = 0     # iCE40 UP5K single-port RAM blocks (16K x 16 bits each)


DEVICES = {
    "up5k": Device("up5k", "ice40", 5280, 8, 30, 4096, 4),
    "hx8k": Device("hx8k", "ice40", 7680, 0, 32, 4096),
    "ecp5-25f": Device("ecp5-25f", "ecp5", 24288, 28, 56, 18432),
    "ecp5-45f": Device("ecp5-45f", "ecp5", 43848, 72, 108, 18432),
    "ecp5-85f": Device("ecp5-85f", "ecp5", 83640, 156, 208, 18432),
    # simulation only: no resource limits (for RTL simulation of configurations no device holds)
    "generic": Device("generic", "generic", 10**9, 10**9, 10**9, 18432),
}
DEFAULT_DEVICE = "ecp5-25f"

#: Per-device defaults, sized so that the default build fits the device. Depths count entries: activation
#: bytes per buffer, code-memory words, rebuilt-weight buffer entries (one tap of every lane), lane bases (3x3),
#: biases, descriptor slots.
DEFAULTS = {
    "up5k": {"pes": 16, "act_depth": 32768, "code_depth": 16384, "weight_depth": 256, "basis_depth": 256,
             "bias_depth": 256, "desc_layers": 8},
    "hx8k": {"pes": 4, "act_depth": 2048, "code_depth": 1024, "weight_depth": 256, "basis_depth": 64,
             "bias_depth": 256, "desc_layers": 8},
    "ecp5-25f": {"pes": 16, "act_depth": 16384, "code_depth": 4096, "weight_depth": 512, "basis_depth": 1024,
                 "bias_depth": 1024, "desc_layers": 16},
    "ecp5-45f": {"pes": 64, "act_depth": 16384, "code_depth": 4096, "weight_depth": 512, "basis_depth": 2048,
                 "bias_depth": 2048, "desc_layers": 16},
    "ecp5-85f": {"pes": 128, "act_depth": 32768, "code_depth": 4096, "weight_depth": 512, "basis_depth": 4096,
                 "bias_depth": 2048, "desc_layers": 16},
}
DEFAULTS["generic"] = dict(DEFAULTS["ecp5-85f"], pes=16)
DEFAULT_PES = {name: d["pes"] for name, d in DEFAULTS.items()}
#: wide builds of a device trade activation memory for the wider weight buffer: (device, pes at least) -> depths
WIDE_DEFAULTS = {("ecp5-25f", 64): {"act_depth": 8192}}


def device_defaults(device: str, pes: int) -> dict:
    """The default depths of ``device`` at ``pes`` channel lanes."""
    values = dict(DEFAULTS[device])
    for (name, at_least), changes in WIDE_DEFAULTS.items():
        if name == device and pes >= at_least:
            values.update(changes)
    return values
DEPTH_FIELDS = ("act_depth", "code_depth", "weight_depth", "basis_depth", "bias_depth", "desc_layers")

#: Per-family choices (named config fields, set from the device's family when left unset).
FAMILY_DEFAULTS = {
    "ice40": {"requant": "table", "requant_units": 1, "counter_bits": 24, "max_rebuild_lanes": 2, "acc_bits": 28,
              "side_bits": 8},
    "ecp5": {"requant": "pipelined", "requant_units": 1, "counter_bits": 48, "max_rebuild_lanes": 8, "acc_bits": 32,
             "side_bits": 8},
    "generic": {"requant": "pipelined", "requant_units": 1, "counter_bits": 48, "max_rebuild_lanes": 8,
                "acc_bits": 32, "side_bits": 8},
}
REQUANT_KINDS = ("pipelined", "serial", "table")
REQUANT_DSPS = 4                        # the pipelined requantiser's 16 x 16 products
SPRAM_DEPTH, SPRAM_WIDTH = 16384, 16    # iCE40 UP5K single-port RAM block (SB_SPRAM256KA)


def default_lanes(pes: int) -> tuple[int, int]:
    """``(channel_lanes, pixel_lanes)`` of N PEs: N channel lanes sharing one activation per cycle."""
    return pes, 1


def _integer(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def _power_of_two(n) -> bool:
    return _integer(n) and n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class AcceleratorConfig:
    """Every generator parameter, validated once on construction (:class:`golden.SdhwError` if invalid)."""

    pes: int | None = None                 # N: MAC lanes (None: the device's default)
    dense: bool = False
    device: str = DEFAULT_DEVICE
    channel_lanes: int | None = None       # = pes (one activation per cycle, broadcast to every lane)
    pixel_lanes: int | None = None         # = 1
    exp_bits: int = 2                      # largest code exponent field the rebuild units accept
    weight_bits: int = 8
    acc_bits: int | None = None            # MAC accumulators (None: per family; the compiler refuses layers whose
                                           # sums could leave them)
    act_depth: int | None = None           # bytes per activation buffer (two buffers, ping-pong)
    code_depth: int | None = None          # words of the weight stream memory (row headers and codes)
    weight_depth: int | None = None        # rebuilt-weight buffer entries (one tap of every lane each)
    basis_depth: int | None = None         # 3x3 lane bases (SD only)
    bias_depth: int | None = None          # 32-bit biases
    desc_layers: int | None = None         # layer descriptor slots (program length + the end marker)
    counter_bits: int | None = None        # performance counters (None: per family; they wrap)
    requant: str | None = None             # "pipelined" (4 DSPs) | "serial" | "table" (None: per family)
    requant_units: int | None = None       # threshold-search units ("table"): outputs per 8 cycles each
    rebuild_lanes: int | None = None       # R: weights rebuilt per cycle (SD); None: per family, at most pes
    dsp_budget: int | None = None          # DSPs the MAC array may use (None: what the device has left)
    side_bits: int | None = None           # an image's height and width: at most 2**side_bits - 1 (None: per
                                           # family); the pixel loop's counters are this wide
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        def bad(name, value, valid):
            raise SdhwError(f"{name} must be {valid}, not {value!r}")

        def setdefault(name, value):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

        if not isinstance(self.device, str) or self.device not in DEVICES:
            bad("device", self.device, "one of " + ", ".join(DEVICES))
        device = DEVICES[self.device]
        family = FAMILY_DEFAULTS[device.family]
        setdefault("pes", DEFAULTS[self.device]["pes"])
        if not isinstance(self.pes, int) or isinstance(self.pes, bool) or self.pes not in VALID_PES:
            bad("pes", self.pes, "a power of two from 1 to 1024 (valid: " + ", ".join(map(str, VALID_PES)) + ")")
        if not isinstance(self.dense, bool):
            bad("dense", self.dense, "true or false")
        setdefault("channel_lanes", self.pes)
        setdefault("pixel_lanes", 1)
        if not (_integer(self.channel_lanes) and _integer(self.pixel_lanes)) \
                or (self.channel_lanes, self.pixel_lanes) != (self.pes, 1):
            bad("channel_lanes x pixel_lanes", (self.channel_lanes, self.pixel_lanes),
                f"{self.pes} x 1 (this data path broadcasts one activation per cycle to pes channel lanes)")
        if not (_integer(self.exp_bits) and 1 <= self.exp_bits <= 4):
            bad("exp_bits", self.exp_bits, "an integer in 1..4")
        if not _integer(self.weight_bits) or self.weight_bits != 8:
            bad("weight_bits", self.weight_bits, "8 (the MAC array is int8 x int8)")
        setdefault("acc_bits", family["acc_bits"])
        if not (_integer(self.acc_bits) and 24 <= self.acc_bits <= 40):
            bad("acc_bits", self.acc_bits, "an integer in 24..40")
        defaults = device_defaults(self.device, self.pes)
        for name in DEPTH_FIELDS:
            setdefault(name, defaults[name])
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536):
                bad(name, v, "an integer in 1..65536")
        for name in ("act_depth", "code_depth", "weight_depth"):
            if not _power_of_two(getattr(self, name)):
                bad(name, getattr(self, name), "a power of two (its pointers wrap, so no range check is needed)")
        if self.weight_depth < 8:
            bad("weight_depth", self.weight_depth, "at least 8 (the fill takes a row with room for two)")
        setdefault("counter_bits", family["counter_bits"])
        if not (isinstance(self.counter_bits, int) and not isinstance(self.counter_bits, bool)
                and 16 <= self.counter_bits <= 64):
            bad("counter_bits", self.counter_bits, "an integer in 16..64")
        setdefault("requant", family["requant"])
        if not isinstance(self.requant, str) or self.requant not in REQUANT_KINDS:
            bad("requant", self.requant, " or ".join(f'"{k}"' for k in REQUANT_KINDS))
        setdefault("requant_units", family["requant_units"])
        if not (isinstance(self.requant_units, int) and not isinstance(self.requant_units, bool)
                and 1 <= self.requant_units <= 8):
            bad("requant_units", self.requant_units, "an integer in 1..8")
        setdefault("rebuild_lanes", min(self.pes, family["max_rebuild_lanes"]))
        if not (_power_of_two(self.rebuild_lanes) and self.rebuild_lanes <= self.pes):
            bad("rebuild_lanes", self.rebuild_lanes, f"a power of two from 1 to pes = {self.pes}")
        if self.dsp_budget is not None and not (isinstance(self.dsp_budget, int)
                                                and not isinstance(self.dsp_budget, bool) and self.dsp_budget >= 0):
            bad("dsp_budget", self.dsp_budget, "a non-negative integer (DSPs for MAC products) or unset")
        setdefault("side_bits", family["side_bits"])
        if not (_integer(self.side_bits) and 2 <= self.side_bits <= 16):
            bad("side_bits", self.side_bits, "an integer in 2..16")
        if self.extra:
            bad("config keys", sorted(self.extra), "known parameters only: " + ", ".join(PARAMETERS))

    # ------------------------------------------------------------------ family choices
    @property
    def family(self) -> str:
        return DEVICES[self.device].family

    @property
    def register_ram_outputs(self) -> bool:
        """Every block RAM output goes into a register before any logic reads it: ECP5 (and the simulation-only
        device, which models it), whose DP16KD clock-to-out is 5.8 ns. iCE40 clocks are set by carry chains,
        so iCE40 builds save the flip-flops (each costs a logic cell there)."""
        return self.family != "ice40"

    @property
    def ram_latency(self) -> int:
        """Cycles from a block RAM's read address to the data its readers use: 2 with registered outputs, else 1."""
        return 2 if self.register_ram_outputs else 1

    @property
    def register_mac_act(self) -> bool:
        """The activation goes into a register between the activation buffers' read multiplexers and the MAC
        array, the weights read a cycle later to meet it: iCE40, whose single-port RAMs (UP5K) sit at the die's
        corners and its DSPs along its sides. ECP5 registers every block RAM output already."""
        return self.family == "ice40"

    @property
    def register_basis_addr(self) -> bool:
        """The SD fill registers the basis memory's read address (its tap jobs wait a cycle more): iCE40, whose
        basis memory's block RAMs lie across the die from the fill's address adders."""
        return self.family == "ice40"

    @property
    def mac_latency(self) -> int:
        """Cycles from an op's registers in the issuer to the MAC array's inputs."""
        return self.ram_latency + int(self.register_mac_act)

    @property
    def registered_dsps(self) -> bool:
        """ECP5 DSP products go through the DSP block's own input and output registers
        (:class:`~sdhw.ecp5.RegisteredMultipliers`): Yosys packs no flip-flop into ``MULT18X18D``."""
        return self.family == "ecp5"

    @property
    def dual_products(self) -> bool:
        """Two signed 8 x 8 products per ``SB_MAC16`` (:class:`~sdhw.ice40.DualMultipliers`): iCE40 devices
        with DSPs (UP5K). Yosys maps one product per block, which would cap the UP5K at 8 lanes."""
        return self.family == "ice40" and DEVICES[self.device].dsps > 0

    @property
    def in_spram(self) -> bool:
        """Activation buffers (one SPRAM block each) and the code memory (two blocks side by side, 32-bit
        words) in the UP5K's single-port RAM; every other memory is block RAM."""
        return DEVICES[self.device].spram_blocks > 0

    # ------------------------------------------------------------------ derived widths
    @property
    def max_side(self) -> int:
        """The largest image height or width a layer may have."""
        return (1 << self.side_bits) - 1

    @property
    def max_groups(self) -> int:
        """The most channel groups a layer can have: its output channels fit an activation buffer."""
        return -(-self.act_depth // self.pes)

    @property
    def code_slot_bits(self) -> int:
        """Bits of one lane's three codes of a row: ``3 (1 + exp_bits)``."""
        return 3 * (1 + self.exp_bits)

    @property
    def code_word_bits(self) -> int:
        """Bits of one code-memory word: a chunk of R lanes' codes, at least 32 (a row header)."""
        return max(32, self.code_slot_bits * self.rebuild_lanes)

    @property
    def fill_lanes(self) -> int:
        """Lanes of the rebuilt-weight buffer written per cycle: R rebuilt weights (SD) or as many int8
        weights as a code word holds, a power of two (dense), at most ``pes``."""
        if not self.dense:
            return self.rebuild_lanes
        return min(self.pes, 1 << ((self.code_word_bits // 8).bit_length() - 1))

    @property
    def basis_width(self) -> int:
        """Bits of one basis-memory row: one basis column (3 int8) per rebuild lane."""
        return 24 * self.rebuild_lanes

    @property
    def basis_rows(self) -> int:
        """Basis-memory rows: three (the columns) per (lane chunk, block) of R lanes; ``basis_depth`` counts
        3x3 lane bases."""
        return 3 * -(-self.basis_depth // self.rebuild_lanes)

    @property
    def soft_products(self) -> int:
        """MAC products built from LUTs because the device's DSPs are spent (the others map to DSPs).

        The generator budgets DSPs itself (yosys maps every ``*`` to a DSP and placement fails when they run
        out): ``dsp_budget`` if set, else the device's DSPs (two products each on the UP5K) minus the pipelined
        requantiser's four. Devices without DSPs (HX8K) build every product from LUTs; the simulation-only
        ``generic`` device none."""
        device = DEVICES[self.device]
        if self.dsp_budget is not None:
            products = self.dsp_budget * (2 if self.dual_products else 1)
        elif device.family == "generic":
            return 0
        else:
            dsps = max(0, device.dsps - (REQUANT_DSPS if self.requant == "pipelined" else 0))
            products = dsps * (2 if self.dual_products else 1)
        return max(0, self.pes - products)

    def memories(self) -> dict[str, tuple[int, int]]:
        """``name -> (depth, width)`` of every on-chip memory (the two activation buffers as one entry each)."""
        mems = {
            "descriptors": (self.desc_layers * DESC_WORDS, 32),
            "act0": (self.act_depth, 8),
            "act1": (self.act_depth, 8),
            "codes": (self.code_depth, self.code_word_bits),
            "weights": (self.weight_depth, 8 * self.pes),
            "tap_info": (self.weight_depth, TAP_INFO_BITS),
            "bias": (self.bias_depth, 32),
        }
        if not self.dense:
            mems["bases"] = (self.basis_rows, self.basis_width)
        if self.requant == "table":
            mems["thresholds"] = (256 * self.requant_units, 32)
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

#: tap info per rebuilt-weight buffer entry: activation offset (16), kernel row dy (2), column dx (2), the pass's
#: last entry (1), counts as MACs (1)
TAP_INFO_BITS = 22


def check_file_values(values: dict, source: str) -> None:
    """Values read from a config file are single numbers, strings or booleans (``AcceleratorConfig`` checks
    their ranges); a table, array or date is refused here, before anything uses it as a key."""
    for name, value in values.items():
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise SdhwError(f"{source}: {name} is a {type(value).__name__}; valid: a single number, string or "
                            "boolean")


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
    """LUT4 (ECP5: two more per carry cell, which takes two LUT slots), flip-flops or (iCE40) logic cells of one
    family's build with its default requantiser, in parts: fixed (host port, sequencer, readers, fill, issuer, drain
    control, requantiser), what an SD build adds (basis memory port, rebuild control), per channel lane
    (accumulator, drain shadow, weight path), per rebuild lane and per soft (LUT-built) MAC product. Fitted by least
    squares to the yosys / nextpnr figures ``tests/fpga/test_flows.py`` keeps (``MEASURED``) and checked against
    them."""
    fixed: int
    sd: int
    lane: int
    rebuild_lane: int
    soft_product: int

    def count(self, cfg: AcceleratorConfig) -> int:
        rebuild = 0 if cfg.dense else self.sd + self.rebuild_lane * cfg.rebuild_lanes
        return self.fixed + self.lane * cfg.pes + rebuild + self.soft_product * cfg.soft_products


#: the measured builds as a model (docs/ARCHITECTURE.md has the per-block budget; `make bench` measures the
#: blocks beside it)
LUT_MODEL = {"ice40": CostModel(2027, 321, 64, 112, 114), "ecp5": CostModel(3259, 29, 56, 235, 174),
             "generic": CostModel(3259, 29, 56, 235, 174)}
FF_MODEL = {"ice40": CostModel(1374, 130, 63, 81, 14), "ecp5": CostModel(2295, 19, 75, 152, 29),
            "generic": CostModel(2295, 19, 75, 152, 29)}
#: iCE40 logic cells (nextpnr's packing: a LUT4 and a flip-flop share a cell where they can)
LC_MODEL = CostModel(3010, 375, 68, 138, 117)
#: requantisers (LUT4, flip-flops): the cost of a unit, beyond the family default the models include
REQUANT_COST = {"pipelined": (1100, 600), "serial": (570, 120), "table": (90, 60)}
ICE40_LC_PER_FF = 0.5                  # flip-flops of a requantiser that take a logic cell of their own


def _requant_cost(kind: str, units: int) -> tuple[int, int]:
    luts, ffs = REQUANT_COST[kind]
    units = units if kind == "table" else 1
    return luts * units, ffs * units


def estimate_resources(cfg: AcceleratorConfig) -> dict[str, int]:
    """A pre-synthesis estimate from the fitted cost models (the synthesis flow reports the real figures)."""
    device = DEVICES[cfg.device]
    mems = cfg.memories()
    spram = {"act0", "act1", "codes"} if cfg.in_spram else set()
    blocks = sum(_bram_blocks(device, depth, width) for name, (depth, width) in mems.items() if name not in spram)
    spram_blocks = (2 * -(-cfg.act_depth // (2 * SPRAM_DEPTH))
                    + -(-cfg.code_word_bits // SPRAM_WIDTH) * -(-cfg.code_depth // SPRAM_DEPTH)) if spram else 0
    family = device.family
    default = FAMILY_DEFAULTS[family]
    luts, ffs = LUT_MODEL[family].count(cfg), FF_MODEL[family].count(cfg)
    chosen = _requant_cost(cfg.requant, cfg.requant_units)
    built_in = _requant_cost(default["requant"], default["requant_units"])
    extra_luts, extra_ffs = chosen[0] - built_in[0], chosen[1] - built_in[1]
    luts, ffs = luts + extra_luts, ffs + extra_ffs
    products = cfg.pes - cfg.soft_products
    dsps = (-(-products // 2) if cfg.dual_products else products) + (REQUANT_DSPS if cfg.requant == "pipelined" else 0)
    if device.dsps == 0 and family != "generic":
        dsps = 0
    est = {"luts": luts, "ffs": ffs, "dsps": dsps, "bram_blocks": blocks, "spram_blocks": spram_blocks}
    if family == "ice40":
        est["logic_cells"] = round(LC_MODEL.count(cfg) + extra_luts + ICE40_LC_PER_FF * extra_ffs)
    return est


def check_fits(cfg: AcceleratorConfig) -> dict[str, int]:
    """Raise :class:`SdhwError` naming the first resource the configuration overflows."""
    device = DEVICES[cfg.device]
    est = estimate_resources(cfg)
    if est["bram_blocks"] > device.bram_blocks:
        raise SdhwError(f"configuration does not fit {device.name}: block RAM needs ~{est['bram_blocks']} of "
                        f"{device.bram_blocks} blocks (memories: {_memory_summary(cfg)}); reduce the depths or pes")
    if est["spram_blocks"] > device.spram_blocks:
        raise SdhwError(f"configuration does not fit {device.name}: single-port RAM needs {est['spram_blocks']} of "
                        f"{device.spram_blocks} blocks; reduce act_depth or code_depth")
    if est["dsps"] > device.dsps and device.family != "generic":
        raise SdhwError(f"configuration does not fit {device.name}: multipliers need {est['dsps']} of "
                        f"{device.dsps} DSPs; choose fewer pes or a larger device")
    if est["luts"] > device.luts:
        raise SdhwError(f"configuration does not fit {device.name}: logic needs ~{est['luts']} of {device.luts} "
                        f"LUTs for pes={cfg.pes}; choose fewer pes or a larger device")
    if device.family == "ice40" and est["logic_cells"] > device.luts:
        raise SdhwError(f"configuration does not fit {device.name}: ~{est['luts']} LUT4 plus the flip-flops that "
                        f"do not pack with them need ~{est['logic_cells']} of {device.luts} logic cells for "
                        f"pes={cfg.pes}; choose fewer pes or a larger device")
    return est


def _memory_summary(cfg: AcceleratorConfig) -> str:
    return ", ".join(f"{n} {d}x{w}" for n, (d, w) in cfg.memories().items())
