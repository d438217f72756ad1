"""Layer descriptors: the table the sequencer runs, one ``DESC_WORDS``-word slot per layer.

Each field is ``name: (word, lsb, width, signed)``. The compiler (``rtl_gen.image``) fills them from a
golden program; the sequencer loads them into registers at the start of every layer and checks them.
"""
from __future__ import annotations

KIND_END, KIND_K1, KIND_K3 = 0, 1, 2      # K1: FC and conv 1x1 (FC = 1x1 conv on a 1x1 image); K3: conv 3x3

FIELDS: dict[str, tuple[int, int, int, bool]] = {
    "kind": (0, 0, 2, False), "relu": (0, 2, 1, False), "stride": (0, 3, 2, False), "sd": (0, 5, 1, False),
    "in_h": (1, 0, 16, False), "in_w": (2, 0, 16, False), "in_c": (3, 0, 16, False),
    "out_c": (4, 0, 16, False),
    "n_pix": (5, 0, 17, False),           # output pixels Ho * Wo
    "out_w": (6, 0, 16, False),
    "n_rows": (7, 0, 17, False),          # rows per filter in hardware order (K1: ceil(C/3); K3: 4C)
    "bm_words": (8, 0, 16, False),        # bitmap words per channel group
    "in_size": (9, 0, 17, False),         # H * W * C
    "out_size": (10, 0, 17, False),       # Ho * Wo * M
    "wc": (11, 0, 17, False),             # W * C
    "step_x": (12, 0, 32, True),          # address step of one output pixel along x: s * C
    "step_y": (13, 0, 32, True),          # one output row down: s * W * C
    "row_wrap": (14, 0, 32, True),        # x wraps to the next output row: step_y - Wo * step_x
    "group_step": (15, 0, 32, True),      # P output pixels on: q_w * step_y + r_w * step_x
    "q_w": (16, 0, 16, False), "r_w": (16, 16, 16, False),      # P = q_w * Wo + r_w
    "qs": (17, 0, 16, False), "rs": (17, 16, 16, False),        # q_w * s, r_w * s
    "wo_s": (18, 0, 17, False),           # Wo * s
    "base0": (19, 0, 32, True),           # address of tap (0, 0) of output pixel 0: -pad * (W + 1) * C
    "bitmap_base": (20, 0, 16, False), "basis_base": (20, 16, 16, False),
    "code_base": (21, 0, 16, False), "bias_base": (21, 16, 16, False),
    "m0": (22, 0, 31, False),
    "shift": (23, 0, 6, True), "zp_in": (23, 8, 8, True), "zp_out": (23, 16, 8, True), "act_min": (23, 24, 8, True),
    "wshift": (24, 0, 5, False), "block_rows": (24, 16, 16, False),
    "n_blocks": (25, 0, 16, False),       # row blocks per filter (bases per lane per channel group)
    "pm_step": (26, 0, 32, False),        # P * M: output address step of one pixel group
}
USED_WORDS = 1 + max(word for word, *_ in FIELDS.values())


def encode(values: dict[str, int], words: int) -> list[int]:
    """Pack field values into ``words`` 32-bit words (missing fields are 0); range-checked."""
    out = [0] * words
    for name, value in values.items():
        word, lsb, width, is_signed = FIELDS[name]
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"descriptor field {name} = {value} outside [{lo}, {hi}]")
        out[word] |= (value & ((1 << width) - 1)) << lsb
    return out


def decode(words: list[int]) -> dict[str, int]:
    values = {}
    for name, (word, lsb, width, is_signed) in FIELDS.items():
        v = (words[word] >> lsb) & ((1 << width) - 1)
        if is_signed and v >= 1 << (width - 1):
            v -= 1 << width
        values[name] = v
    return values
