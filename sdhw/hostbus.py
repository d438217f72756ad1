"""The host port: a simple memory-mapped bus of 32-bit words (see docs/ARCHITECTURE.md for the map)."""
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

ADDR_BITS = 20

#: Cycles from ``r_en`` to ``r_data`` (``r_valid`` high): the request is registered as it enters, the memories'
#: read data as it leaves the block RAMs, then multiplexed and registered again as it leaves the accelerator.
READ_LATENCY = 4

#: From the host's side. ``r_data`` is valid (``r_valid`` high) exactly :data:`READ_LATENCY` cycles after
#: ``r_en``; initiators should wait for ``r_valid``.
#: A write reaches its memory the cycle after ``w_en`` (a read issued then sees it). One access per cycle; never
#: stalls.
HostBusSignature = wiring.Signature({
    "addr": Out(ADDR_BITS),
    "w_data": Out(32),
    "w_en": Out(1),
    "r_en": Out(1),
    "r_data": wiring.In(32),
    "r_valid": wiring.In(1),
})

# regions: addr[19:16] (region 2 is not used)
REGION_CSR, REGION_DESC, REGION_CODES, REGION_BASES, REGION_BIAS = 0, 1, 3, 4, 5
REGION_ACT0, REGION_ACT1 = 6, 7

# CSR word offsets
CSR_ID, CSR_VERSION, CSR_LANES, CSR_CONTROL, CSR_STATUS = 0, 1, 2, 3, 4
CSR_CYCLES, CSR_MACS, CSR_SKIPPED, CSR_STALLS = 8, 10, 12, 14       # counters (counter_bits): lo, hi
CSR_DEPTHS = 16                                                     # 16..22: DEPTH_CSRS (read-only)
#: the configuration figures the CSRs from CSR_DEPTHS on report, in this order (basis_depth reads 0 when dense)
DEPTH_CSRS = ("desc_layers", "act_depth", "code_depth", "weight_depth", "basis_depth", "bias_depth", "rebuild_lanes")
ID_MAGIC = 0x53444857                                               # "SDHW"

CONTROL_START, CONTROL_CLEAR = 1, 2
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4

# error codes (STATUS[15:8])
ERR_NONE = 0
ERR_KIND = 1            # unknown layer kind
ERR_STRIDE = 2          # stride not 1 or 2
ERR_SHAPE = 3           # a zero or inconsistent dimension
ERR_MODE = 4            # SD layer on a dense build or dense layer on an SD build
ERR_ACT_SIZE = 5        # activations larger than a buffer
ERR_WEIGHT_ADDR = 6     # a code or basis address outside its memory, or a group's code stream past the layer's rows
ERR_BIAS_ADDR = 7       # a bias address outside its memory
ERR_ACT_ADDR = 8        # a tap reads outside the input activations
ERR_NO_END = 9          # no end descriptor before the end of the descriptor memory
ERR_PARAMS = 10         # requantiser parameters the build cannot take (thresholds without the table unit)
ERR_CHECKSUM = 11       # a descriptor's checksum does not match its words
ERR_BUFFER = 12         # a replayed channel group larger than the weight buffer (fill and issuer wait on each other)
ERROR_NAMES = {ERR_KIND: "unknown layer kind", ERR_STRIDE: "bad stride", ERR_SHAPE: "bad shape",
               ERR_MODE: "layer mode does not match the build", ERR_ACT_SIZE: "activations exceed a buffer",
               ERR_WEIGHT_ADDR: "weight address out of range", ERR_BIAS_ADDR: "bias address out of range",
               ERR_ACT_ADDR: "activation address out of range",
               ERR_NO_END: "no end descriptor", ERR_PARAMS: "bad requantiser parameters",
               ERR_CHECKSUM: "descriptor checksum mismatch",
               ERR_BUFFER: "a replayed channel group does not fit the weight buffer"}

