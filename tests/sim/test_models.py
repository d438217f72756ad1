"""Whole models on the generated Verilog of the default builds, bit-exact against golden: an MNIST-size CNN
(28x28x1 -> conv3x3 16 -> conv3x3/s2 32 -> conv3x3/s2 64 -> FC 3136 -> 10) on the UP5K's 16-PE build and on the
ECP5-25F default build."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from rtl_gen.image import build_image, expected_counts
from rtl_gen.machine import run_image
from rtl_gen.tools import which
from sdhw.config import AcceleratorConfig, check_fits
from sim.runner import Build, Job, simulator

SEED = 28


def mnist_size_cnn(seed: int = SEED):
    rng = np.random.default_rng(seed)

    def conv(m, c, stride):
        return Layer("conv", rng.normal(0, 1 / np.sqrt(9 * c), (m, c, 3, 3)), rng.normal(0, 0.1, m), relu=True,
                     stride=stride)

    model = Model((28, 28, 1), [conv(16, 1, 1), conv(32, 16, 2), conv(64, 32, 2),
                                Layer("fc", rng.normal(0, 1 / np.sqrt(3136), (10, 3136)), rng.normal(0, 0.1, 10))])
    x_cal = rng.uniform(0, 1, (16, 28, 28, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = compile_model(model, x_cal, CompileOptions(method="paper", prune=0.3)).program
    return program, rng.integers(-128, 128, (28, 28, 1))


BUILDS = {"up5k-16": dict(device="up5k", pes=16), "ecp5-25f-default": dict(device="ecp5-25f")}


@pytest.fixture(scope="module")
def cnn():
    return mnist_size_cnn()


@pytest.mark.parametrize("build", BUILDS)
def test_mnist_size_cnn_compiles_for_the_default_builds(cnn, build):
    """The program fits the build's memories (activations up to 12,544 bytes) and its image computes golden's
    outputs in the accelerator's own loops (rtl_gen.machine)."""
    program, x = cnn
    cfg = AcceleratorConfig(**BUILDS[build])
    check_fits(cfg)
    image = build_image(program, cfg)
    result = run_image(image, cfg, x)
    assert np.array_equal(result["output"], run_program(program, x[None]).reshape(-1)), f"seed {SEED}"
    assert result["macs"] == expected_counts(program, cfg)["macs"]


@pytest.mark.slow
@pytest.mark.skipif(which("iverilog") is None and simulator() == "icarus",
                    reason="iverilog is not installed (make install adds the Debian package)")
@pytest.mark.parametrize("build", BUILDS)
def test_mnist_size_cnn_on_the_rtl(cnn, build, tmp_path, record_counts):
    program, x = cnn
    cfg = AcceleratorConfig(**BUILDS[build])
    job = Job()
    job.add_program(f"28x28 CNN on {build} (seed {SEED})", program, cfg, [x], timeout=2_000_000)
    stats = Build(cfg, tmp_path).run(job, seed=SEED, name="cnn28")
    assert stats["inferences"] == 1 and stats["outputs_checked"] == 10
    record_counts(layers=len(program.layers), programs=1, outputs=stats["outputs_checked"])
    print(f"28x28 CNN on {build}: {stats['cycles'][0]} cycles, {stats['macs'][0]} MACs, bit-exact")


def pooled_model(seed: int = SEED) -> Model:
    """conv 3x3 (ReLU), max pool, conv 3x3 (ReLU), residual add of the pool's output, average pool, FC: every
    layer kind the accelerator runs between host-side layers."""
    rng = np.random.default_rng(seed)
    return Model((8, 8, 2), [
        Layer("conv", rng.normal(0, 0.4, (4, 2, 3, 3)), rng.normal(0, 0.1, 4), relu=True), Layer("maxpool"),
        Layer("conv", rng.normal(0, 0.3, (4, 4, 3, 3)), rng.normal(0, 0.1, 4), relu=True),
        Layer("add", source=2, relu=True), Layer("avgpool"),
        Layer("fc", rng.normal(0, 0.3, (5, 16)), rng.normal(0, 0.1, 5))])


@pytest.mark.skipif(which("iverilog") is None, reason="iverilog is not installed (make install adds it)")
def test_pooled_model_runs_in_stages_on_the_rtl(tmp_path):
    """A model with pooling and a residual add: its runs of FC/conv layers on the RTL (each checked against
    golden), the other layers on the host; the whole equals golden's staged inference, counters summed."""
    from sim.digits import run_model

    rng = np.random.default_rng(SEED)
    model = pooled_model()
    x = rng.uniform(0, 1, (3, 8, 8, 2))
    result = run_model(model, rng.uniform(0, 1, (16, 8, 8, 2)), x, np.arange(3) % 5, pes=4, device="ecp5-25f",
                       build_dir=tmp_path, progress=lambda _: None)
    assert result["accelerator_runs"] == 3 and result["rtl_equals_golden"]
    assert result["host_layers"] == ["1: maxpool2x2/s2", "3: add activation 2", "4: avgpool2x2/s2"]
    # every output of each run: 8x8x4 and 4x4x4 activations and 5 logits, for each input
    assert result["outputs_checked"] == 3 * (8 * 8 * 4 + 4 * 4 * 4 + 5)
    assert result["cycles_per_inference"] > 0 and 0 < result["utilisation"] <= 1
