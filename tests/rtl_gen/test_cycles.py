"""The cycle model (`rtl_gen.cycles.expected_cycles`) against the accelerator's CYCLES counter in the Amaranth
simulator, on random programs (FC, conv 3x3 / 1x1, stride 1 / 2, 1-3 layers, random row densities) for every
family's timing: iCE40 (memory latency 1, threshold requantiser), ECP5 (latency 2, pipelined requantiser),
dense builds, streamed layers, the serial requantiser and several threshold units."""
from __future__ import annotations

import numpy as np
import pytest

from rtl_gen.cycles import expected_cycles
from rtl_gen.image import build_image, expected_counts
from sdhw.accelerator import Accelerator
from sdhw.config import AcceleratorConfig
from sim.amaranth_host import simulate
from sim.random_programs import random_input, random_program

SMALL = {"act_depth": 512, "code_depth": 2048, "desc_layers": 4}
CONFIGS = {
    "ecp5-sd": dict(pes=4, device="ecp5-25f", weight_depth=64, basis_depth=256, bias_depth=256, **SMALL),
    "ecp5-dense": dict(pes=4, dense=True, device="ecp5-25f", weight_depth=64, bias_depth=256, **SMALL),
    "up5k-sd": dict(pes=4, device="up5k", weight_depth=64, **SMALL),
    "up5k-dense": dict(pes=8, dense=True, device="up5k", **SMALL),
    "hx8k-sd": dict(pes=2, device="hx8k", desc_layers=4),
    "ecp5-serial": dict(pes=8, device="ecp5-25f", requant="serial", **SMALL),
    "up5k-two-units": dict(pes=4, device="up5k", requant_units=2, desc_layers=4),
    "ecp5-stream": dict(pes=2, device="ecp5-25f", weight_depth=16, **SMALL),
    "up5k-stream": dict(pes=2, device="up5k", weight_depth=16, desc_layers=4),
    "generic-table": dict(pes=2, device="generic", requant="table", requant_units=3, weight_depth=32, **SMALL),
    "ecp5-r2-e3": dict(pes=8, rebuild_lanes=2, exp_bits=3, device="ecp5-25f", **SMALL),
    "up5k-n16": dict(pes=16, device="up5k", desc_layers=4),
}


def _check(name: str, seed: int) -> None:
    cfg = AcceleratorConfig(**CONFIGS[name])
    rng = np.random.default_rng(seed)
    program = random_program(rng, cfg)
    result = simulate(Accelerator(cfg), build_image(program, cfg), [random_input(rng, program)])[0]
    assert result["error_code"] == 0
    want = expected_cycles(program, cfg)
    layers = [layer.describe() for layer in program.layers]
    assert result["cycles"] == want["cycles"], f"{name} seed {seed} {layers}: RTL {result['cycles']} cycles, " \
                                               f"model {want['cycles']} (per layer {want['layer_cycles']})"
    assert want["macs"] == result["macs"] == expected_counts(program, cfg)["macs"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cycle_model_equals_the_rtl_counter(name):
    _check(name, 11)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cycle_model_equals_the_rtl_counter_on_many_programs(name):
    for seed in range(100, 115):
        _check(name, seed)


def test_cycles_grow_with_the_work_and_report_per_layer():
    rng = np.random.default_rng(3)
    cfg = AcceleratorConfig(pes=4, device="ecp5-25f", **SMALL)
    program = random_program(rng, cfg)
    while not expected_counts(program, cfg)["macs"]:         # a program pruned to nothing has no utilisation
        program = random_program(rng, cfg)
    got = expected_cycles(program, cfg)
    assert len(got["layer_cycles"]) == len(program.layers)
    assert got["cycles"] > sum(got["layer_cycles"])              # the descriptor fetches come on top
    assert 0 < got["utilisation"] <= 1
