"""Comparisons against constants as logic on a value's bits.

On iCE40 Yosys maps every comparator to a carry chain: a logic cell per bit, and one more to feed a chain's
carry-in. Against a constant the same test is a few LUTs (and no chain to place in a column)."""
from __future__ import annotations

from amaranth import Const, Value


def above(value: Value, bound: int) -> Value:
    """``value > bound`` for an unsigned ``value`` and an integer constant ``bound``.

    From the lowest bit up, "above in bits 0..i" is bit i AND the verdict of the bits below where ``bound``'s bit
    i is 1, and bit i OR it where it is 0 (bits of ``bound`` past the value's width make it never above)."""
    if bound < 0:
        return Const(1, 1)
    if bound >> len(value):
        return Const(0, 1)
    verdict = Const(0, 1)
    for i in range(len(value)):
        verdict = (value[i] & verdict) if (bound >> i) & 1 else (value[i] | verdict)
    return verdict
