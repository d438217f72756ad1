"""Compression, accuracy and energy figures of a compiled program.

Bits are counted from the packed container (:mod:`golden.format`): every stored bit, headers and
padding included. Energy figures are **estimates** from the per-operation table below (Horowitz,
ISSCC 2014, 45 nm), not measurements; the assumptions are listed in :data:`ENERGY_ASSUMPTIONS`.
"""
from __future__ import annotations

import math

import numpy as np

from . import format as fmt
from .compiler import CompileResult
from .program import Program

#: pJ per operation or per 64-bit access (45 nm, Horowitz ISSCC 2014).
ENERGY_PJ = {
    "mult8": 0.2,          # 8-bit integer multiply
    "add8": 0.03,          # 8-bit integer add (also one shift-add of the rebuild)
    "add32": 0.1,          # 32-bit integer add (accumulate)
    "mult32": 3.1,         # 32-bit integer multiply (requantisation)
    "sram64": 10.0,        # 64-bit read of an 8 KB SRAM
    "dram64": 1300.0,      # 64-bit DRAM read (low end of 1300-2600)
}
ENERGY_ASSUMPTIONS = (
    "estimate, not a measurement: Horowitz 45 nm per-operation energies",
    "every stored weight bit (the layer records of the packed program) is read once per inference",
    "activations: one 8-bit SRAM read per MAC issued and one 8-bit SRAM write per output",
    "SD skips zero rows: MACs issued = dense MACs x row density; every non-zero row is rebuilt once per "
    "inference with 9 shift-adds (8-bit adds)",
    "one 32-bit multiply + one 32-bit add per output for requantisation",
)


def layer_macs(layer) -> int:
    """MACs of a layer as the hardware issues them (zero SD rows skipped)."""
    per_output = int(np.prod(layer.weight_shape[1:]))
    outputs = math.prod(layer.out_shape)
    if layer.is_sd:
        return int(round(outputs * per_output * float(layer.weights.nonzero_rows.mean())))
    return outputs * per_output


def energy_estimate(program: Program, weights_in: str = "sram") -> dict:
    """Estimated energy per inference in pJ, split by component."""
    if weights_in not in ("sram", "dram"):
        raise ValueError(f"weights_in must be 'sram' or 'dram', not {weights_in!r}")
    e = ENERGY_PJ
    macs = sum(layer_macs(layer) for layer in program.layers)
    outputs = sum(math.prod(layer.out_shape) for layer in program.layers)
    weight_bits = sum(fmt.layer_sizes(layer).total * 8 for layer in program.layers)
    rebuild_adds = sum(9 * int(layer.weights.nonzero_rows.sum()) for layer in program.layers if layer.is_sd)
    parts = {
        "mac": macs * (e["mult8"] + e["add32"]),
        "rebuild": rebuild_adds * e["add8"],
        "requant": outputs * (e["mult32"] + e["add32"]),
        "weights": weight_bits / 64 * e[f"{weights_in}64"],
        "activations": (macs + outputs) * 8 / 64 * e["sram64"],
    }
    parts["total"] = sum(parts.values())
    return {"pj": parts, "macs": macs, "weight_bits": weight_bits}


def compile_report(result: CompileResult, packed: bytes) -> dict:
    """The figures ``sdhw compile`` prints, as one JSON-ready dict (keys documented in the README)."""
    program = result.program
    n_weights = program.n_weights
    layers = []
    for layer, rep in zip(program.layers, result.layers):
        sizes = fmt.layer_sizes(layer)
        layers.append({
            "index": rep.index, "layer": layer.describe(), "mode": rep.mode, "shape": list(rep.shape),
            "prune": rep.prune,
            "weights": layer.n_weights, "row_density": rep.row_density, "element_density": rep.element_density,
            "bits": sizes.total * 8, "bits_per_weight": sizes.total * 8 / layer.n_weights,
            "sections_bytes": {"header": sizes.header, "bias": sizes.bias, "bases": sizes.bases,
                               "bitmap": sizes.bitmap, "codes": sizes.codes,
                               "dense_weights": 0 if layer.is_sd else sizes.weights, "padding": sizes.padding},
            "rel_error": rep.rel_error,
            "plain_pow2_rel_error": None if math.isnan(rep.plain_pow2_rel_error) else rep.plain_pow2_rel_error,
            "macs": layer_macs(layer),
        })
    bits = len(packed) * 8
    energy = {where: energy_estimate(program, where) for where in ("sram", "dram")}
    return {
        "program": {"bytes": len(packed), "bits": bits, "weights": n_weights, "bits_per_weight": bits / n_weights,
                    "compression_vs_int8": 8 * n_weights / bits, "compression_vs_fp32": 32 * n_weights / bits},
        "layers": layers,
        "energy_estimate_pj": {where: v["pj"]["total"] for where, v in energy.items()},
        "energy_breakdown_pj": {where: v["pj"] for where, v in energy.items()},
    }


def format_table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
