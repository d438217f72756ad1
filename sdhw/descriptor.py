"""Layer descriptors: the table the sequencer runs, one ``DESC_WORDS``-word slot per layer.

Each field is ``name: (word, lsb, width, signed)``. The compiler (``rtl_gen.image``) works out every loop
bound, address step and range from a golden program and writes them here, so the hardware needs no
multiplier, divider or range computation of its own; the last word is a checksum over the others, so a
corrupted descriptor stops the run with an error instead of running a loop the compiler never made.
"""
from __future__ import annotations

KIND_END, KIND_K1, KIND_K3 = 0, 1, 2      # K1: FC and conv 1x1 (FC = 1x1 conv on a 1x1 image); K3: conv 3x3
CHECKSUM_SEED = 0x5D5E_C0DE               # an erased (all-zero) slot does not pass as a valid end marker

FIELDS: dict[str, tuple[int, int, int, bool]] = {
    "kind": (0, 0, 2, False), "sd": (0, 2, 1, False), "stride": (0, 3, 2, False), "pad": (0, 5, 1, False),
    "stream": (0, 6, 1, False),           # groups too large for the weight buffer: rebuilt for every pixel
    "n_groups": (1, 0, 16, False),        # channel groups of pes output channels
    "last_lanes": (1, 16, 16, False),     # output channels of the last group (1..pes)
    "n_pix": (2, 0, 16, False),           # output pixels Ho * Wo
    "out_w": (2, 16, 16, False),          # Wo
    "in_h": (3, 0, 16, False), "in_w": (3, 16, 16, False),
    "step_x": (4, 0, 32, True),           # activation address step of one output pixel along x: s * C
    "row_wrap": (5, 0, 32, True),         # from the last pixel of an output row to the first of the next
    "base0": (6, 0, 32, True),            # address of tap (0, 0, 0) of output pixel 0: -pad * (W + 1) * C
    "out_c": (7, 0, 16, False),           # M: output address step of one pixel
    "tap_step": (7, 16, 16, False),       # activation offset from tap j to j + 1 of a row: C (3x3) or 1
    "code_base": (8, 0, 32, False),       # the layer's first code-memory word
    "bias_base": (9, 0, 16, False),
    "n_rows": (9, 16, 16, False),         # rows per filter (golden's row view): the bound of a group's rows
    "basis_base": (14, 17, 15, False),    # the layer's first basis-memory row
    "m0": (10, 0, 31, False),
    "shift": (11, 0, 6, True), "zp_in": (11, 8, 8, True), "zp_out": (11, 16, 8, True),
    "act_min": (11, 24, 8, True),         # table requantiser: the output of the smallest accumulator
    "wshift": (12, 0, 5, False),
    "n_thresh": (12, 8, 9, False),        # table requantiser: thresholds at code_base (0..255)
    "in_size": (13, 0, 17, False),        # H * W * C: taps at or past it read outside the input
    "out_size": (14, 0, 17, False),       # Ho * Wo * M
    "checksum": (15, 0, 32, False),       # CHECKSUM_SEED + the sum of words 0..14, modulo 2**32
}
CHECKSUM_WORD = FIELDS["checksum"][0]


def checksum(words: list[int]) -> int:
    """The checksum of a slot's words ``0 .. CHECKSUM_WORD - 1``."""
    return (CHECKSUM_SEED + sum(w & 0xFFFFFFFF for w in words[:CHECKSUM_WORD])) & 0xFFFFFFFF


def encode(values: dict[str, int], words: int) -> list[int]:
    """Pack field values into ``words`` 32-bit words (missing fields are 0), range-checked, with the checksum
    (unless ``values`` gives one)."""
    out = [0] * words
    for name, value in values.items():
        word, lsb, width, is_signed = FIELDS[name]
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"descriptor field {name} = {value} outside [{lo}, {hi}]")
        out[word] |= (value & ((1 << width) - 1)) << lsb
    if "checksum" not in values:
        out[CHECKSUM_WORD] = checksum(out)
    return out


def decode(words: list[int]) -> dict[str, int]:
    values = {}
    for name, (word, lsb, width, is_signed) in FIELDS.items():
        v = (words[word] >> lsb) & ((1 << width) - 1)
        if is_signed and v >= 1 << (width - 1):
            v -= 1 << width
        values[name] = v
    return values


# --------------------------------------------------------------------------------------- row headers
#: A row header in the code stream: one code-memory word (its low 32 bits) before each row's codes or weights.
HEADER_FIELDS: dict[str, tuple[int, int]] = {
    "off0": (0, 16),      # activation offset of tap 0 from the pixel's base address
    "dy": (16, 2),        # kernel row (3x3), 0 for 1x1 / FC
    "kill": (18, 3),      # taps not in the stream (FC padding past the input), bit j
    "last": (21, 1),      # the group's last row
    "count": (22, 1),     # 0: a placeholder row of an empty group (its products are zero and not counted)
    "basis": (23, 9),     # the row's (channel group, block) in the layer: its basis rows start at basis_base +
                          # 3 (pes / rebuild_lanes) basis, lane chunk k's column j at 3 k + j after that
}


def encode_header(**values: int) -> int:
    word = 0
    for name, value in values.items():
        lsb, width = HEADER_FIELDS[name]
        if not 0 <= value < 1 << width:
            raise ValueError(f"row header field {name} = {value} outside [0, {(1 << width) - 1}]")
        word |= value << lsb
    return word


def decode_header(word: int) -> dict[str, int]:
    return {name: (word >> lsb) & ((1 << width) - 1) for name, (lsb, width) in HEADER_FIELDS.items()}
