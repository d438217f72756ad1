"""Random programs for the regression: layer kinds, shapes, row densities, zero points, ReLU, depth.

Every program is compiled by golden (so it is exactly what ``sdhw compile`` would produce) and is checked to
fit the accelerator's memories; the generator also makes the edge cases the regression names.
"""
from __future__ import annotations

import warnings

import numpy as np

from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import Program, QLayer
from rtl_gen.image import build_image
from sdhw import hostbus as hb
from sdhw.config import DESC_WORDS, AcceleratorConfig
from sdhw.descriptor import decode, encode

PRUNES = (0.0, 0.0, 0.25, 0.5, 0.75, 0.9)


def _random_layer(rng, shape: tuple[int, ...]) -> tuple[Layer, tuple[int, ...]]:
    kinds = ["fc"] if len(shape) == 1 else ["conv3", "conv3", "conv1", "fc"]
    kind = kinds[rng.integers(len(kinds))]
    relu = bool(rng.integers(2))
    if kind == "fc":
        k = int(np.prod(shape))
        m = int(rng.integers(1, 13))
        layer = Layer("fc", rng.normal(0, 1 / np.sqrt(k), (m, k)), rng.normal(0, 0.3, m), relu=relu)
    else:
        kernel = 3 if kind == "conv3" else 1
        c = shape[2]
        m = int(rng.integers(1, 9))
        stride = int(rng.integers(1, 3))
        layer = Layer("conv", rng.normal(0, 1 / np.sqrt(c * kernel * kernel), (m, c, kernel, kernel)),
                      rng.normal(0, 0.3, m), relu=relu, stride=stride)
    return layer, layer.output_shape(shape)


def random_program(rng, cfg: AcceleratorConfig, *, max_tries: int = 20) -> Program:
    """A random 1-3 layer program (FC, conv 3x3 s1/s2, conv 1x1 s1/s2) that fits ``cfg``."""
    for _ in range(max_tries):
        if rng.random() < 0.3:
            in_shape: tuple[int, ...] = (int(rng.integers(1, 41)),)
        else:
            in_shape = (int(rng.integers(1, 7)), int(rng.integers(1, 7)), int(rng.integers(1, 6)))
        shape, layers = in_shape, []
        for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
            layer, shape = _random_layer(rng, shape)
            layers.append(layer)
        model = Model(in_shape, layers)
        lo = float(rng.uniform(-2.0, 1.0))
        x_cal = rng.uniform(lo, lo + float(rng.uniform(0.2, 3.0)), (24, *in_shape))    # varied zero points
        # an SD build also runs layers kept dense (each layer of a program for one, one time in five)
        dense_layers = () if cfg.dense else tuple(i for i in range(len(layers)) if rng.random() < 0.2)
        opts = CompileOptions(method="paper", prune=float(rng.choice(PRUNES)), dense=cfg.dense,
                              exp_bits=int(rng.integers(1, cfg.exp_bits + 1)),
                              threshold=float(rng.choice([0.0, 1e-3, 0.05])), dense_layers=dense_layers)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = compile_model(model, x_cal, opts).program
            build_image(program, cfg)
        except SdhwError:
            continue
        return program
    raise RuntimeError("could not draw a program that fits the configuration")


def random_batch(rng, program: Program, cfg: AcceleratorConfig, most: int = 5) -> int:
    """A batch size in 2..``most`` that ``program`` runs with on ``cfg`` (buffers, layer shapes), or 1."""
    for batch in range(int(rng.integers(2, most + 1)), 1, -1):
        try:
            build_image(program, cfg, batch)
        except SdhwError:
            continue
        return batch
    return 1


def random_input(rng, program: Program, batch: int = 1) -> np.ndarray:
    """Random int8 inputs: one (``input_shape``), or ``batch`` of them (``(batch, *input_shape)``)."""
    return rng.integers(-128, 128, program.input_shape if batch == 1 else (batch, *program.input_shape))


# ------------------------------------------------------------------------------------------ edge cases
def _replace_layer(program: Program, index: int, **changes) -> Program:
    layers = list(program.layers)
    old = layers[index]
    layers[index] = QLayer(**{**old.__dict__, **changes})
    return Program(program.input_shape, program.input_q, layers)


def _fc_program(rng, cfg: AcceleratorConfig, k: int, m: int, prune: float = 0.0) -> Program:
    model = Model((k,), [Layer("fc", rng.normal(0, 1 / np.sqrt(k), (m, k)), rng.normal(0, 0.3, m), relu=False)])
    return compile_model(model, rng.normal(0, 1, (24, k)), CompileOptions(method="paper", prune=prune,
                                                                         dense=cfg.dense)).program


def edge_programs(rng, cfg: AcceleratorConfig) -> dict[str, Program]:
    """All-zero layer, single row, maximum exponents, saturating requantisation, the largest program that fits."""
    progs = {"single-row": _fc_program(rng, cfg, 2, 1)}
    sat = _fc_program(rng, cfg, 24, 6)
    progs["saturating-requant"] = _replace_layer(sat, 0, shift=max(sat.layers[0].shift - 12, -32))
    if not cfg.dense:
        base = _fc_program(rng, cfg, 30, 5)
        sdw = base.layers[0].weights
        zero = type(sdw)(**{**sdw.__dict__, "codes": np.zeros_like(sdw.codes)})
        progs["all-zero-layer"] = _replace_layer(base, 0, weights=zero)
        limit = (1 << cfg.exp_bits) - 1
        codes = np.where(sdw.codes != 0, np.sign(sdw.codes) * limit, 0).astype(np.int8)
        progs["max-exponents"] = _replace_layer(base, 0, weights=type(sdw)(
            **{**sdw.__dict__, "codes": codes, "exp_bits": cfg.exp_bits}))
    # the largest FC that fits: as many inputs as a buffer holds and the code memory takes, one channel group
    q = cfg.pes
    lo, hi = 1, cfg.act_depth
    while lo < hi:                                  # the most inputs whose program still fits
        k = (lo + hi + 1) // 2
        try:
            build_image(_fc_program(np.random.default_rng(0), cfg, k, q), cfg)
            lo = k
        except SdhwError:
            hi = k - 1
    progs["largest-fit"] = _fc_program(rng, cfg, lo, q)
    return progs


def corruptions(cfg: AcceleratorConfig) -> dict[str, tuple[dict, int]]:
    """Changes to a layer descriptor that ``cfg``'s build must refuse, each with the error code it must raise:
    an unknown kind, a bad stride, activations past a buffer, an image wider than the build takes, a tap address
    and a code address too wide for their registers, a wrong checksum (the others get a recomputed one)."""
    wide = {"wide-image": ({"in_w": cfg.max_side + 1}, hb.ERR_SHAPE)} if cfg.side_bits < 16 else {}
    return {"kind": ({"kind": 3}, hb.ERR_KIND), "stride": ({"stride": 0}, hb.ERR_STRIDE),
            "act-size": ({"out_size": cfg.act_depth + 1}, hb.ERR_ACT_SIZE), **wide,
            "tap": ({"base0": -4 * cfg.act_depth - 1}, hb.ERR_ACT_ADDR),
            "codes": ({"code_base": max(2, cfg.code_depth)}, hb.ERR_WEIGHT_ADDR),
            "checksum": ({"checksum": 1}, hb.ERR_CHECKSUM)}


def corrupt_first_descriptor(writes: list[list[int]], changes: dict) -> list[list[int]]:
    """A program image's host writes with ``changes`` made to its first layer descriptor."""
    by_addr = {a: w for a, w in writes}
    fields = decode([by_addr[(hb.REGION_DESC << 16) | k] for k in range(DESC_WORDS)])
    fields.pop("checksum")                          # recomputed, unless the change is the checksum itself
    fields.update(changes)
    for k, word in enumerate(encode(fields, DESC_WORDS)):
        by_addr[(hb.REGION_DESC << 16) | k] = word
    return [list(item) for item in by_addr.items()]
