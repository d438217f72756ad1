"""``sdhw run``: a run on a fake board (float and int8 inputs, --output, --json) and its one-line errors (missing
port, bad image, shape mismatch, silent board, rejected frames, accelerator error, another accelerator)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from clirun import run
from fake_board import FakeBoard
from test_host import CFG, small_program

import fpga.host
from golden.program import run_program
from rtl_gen.image import build_image, pack_image
from sdhw.config import AcceleratorConfig


def assert_one_line_error(rc, err: str, *keywords: str, code: int = 1) -> None:
    assert rc == code, f"exit code {rc}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdhw: error: "), f"not one error line: {err!r}"
    for word in keywords:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"


@pytest.fixture
def files(tmp_path):
    program = small_program()
    (tmp_path / "p.sdimg").write_bytes(pack_image(build_image(program, CFG)))
    x = np.random.default_rng(0).integers(-128, 128, 12).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    return program, tmp_path, x


@pytest.fixture
def board(monkeypatch):
    """``sdhw run`` talks to a FakeBoard instead of opening a serial port; returns a setter for its mode/config."""
    made = {}

    def use(program, cfg=CFG, mode=None):
        def fake_open(port, baud=115200, *, timeout=1.0):
            made["board"] = FakeBoard(program, cfg, mode=mode)
            made["port"], made["baud"] = port, baud
            return made["board"]
        monkeypatch.setattr(fpga.host, "open_serial", fake_open)
        return made
    return use


def test_run_int8_input_prints_outputs_and_counters(files, board):
    program, d, x = files
    made = board(program)
    rc, out, err = run(["run", "--port", "/dev/fake0", "--baud", "921600", "--program", d / "p.sdimg",
                        "--input", d / "x.npy", "--output", d / "y.npy"])
    assert rc == 0, err
    want = run_program(program, x.astype(np.int64)[None]).reshape(-1)
    assert f"output {want.tolist()}" in out and "MACs" in out and "cycles" in out, out
    assert np.array_equal(np.load(d / "y.npy"), want.astype(np.int8).reshape(program.output_shape))
    assert made["port"] == "/dev/fake0" and made["baud"] == 921600 and made["board"].closed


def test_run_float_batch_json(files, board):
    program, d, _ = files
    board(program)
    x = np.random.default_rng(1).normal(0, 1, (3, 12))
    np.save(d / "xf.npy", x)
    rc, out, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "xf.npy", "--json",
                        "--output", d / "y.npy"])
    assert rc == 0, err
    report = json.loads(out)
    want = run_program(program, program.input_q.quantize(x))
    assert [r["output"] for r in report["results"]] == want.tolist()
    assert report["board"]["pes"] == 4 and all(r["macs"] > 0 for r in report["runs"]) and report["batch"] == 1
    assert np.load(d / "y.npy").shape == (3, *program.output_shape)


def test_missing_port(files):
    _, d, _ = files
    rc, _, err = run(["run", "--port", d / "no-such-tty", "--program", d / "p.sdimg", "--input", d / "x.npy"])
    assert_one_line_error(rc, err, "no-such-tty")
    assert "cannot open serial port" in err or "pyserial" in err


def test_bad_or_missing_image(files, board):
    program, d, _ = files
    board(program)
    (d / "junk.sdimg").write_bytes(b"junk" * 10)
    rc, _, err = run(["run", "--port", "p", "--program", d / "junk.sdimg", "--input", d / "x.npy"])
    assert_one_line_error(rc, err, "not a program image")
    data = bytearray((d / "p.sdimg").read_bytes())
    data[40] ^= 1
    (d / "bad.sdimg").write_bytes(bytes(data))
    rc, _, err = run(["run", "--port", "p", "--program", d / "bad.sdimg", "--input", d / "x.npy"])
    assert_one_line_error(rc, err, "checksum")
    rc, _, err = run(["run", "--port", "p", "--program", d / "none.sdimg", "--input", d / "x.npy"])
    assert_one_line_error(rc, err, "does not exist")


def test_input_shape_mismatch_and_bad_values(files, board):
    program, d, _ = files
    board(program)
    np.save(d / "x13.npy", np.zeros(13, dtype=np.int8))
    rc, _, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "x13.npy"])
    assert_one_line_error(rc, err, "shape (13,)", "(12,)")
    np.save(d / "x300.npy", np.full(12, 300))
    rc, _, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "x300.npy"])
    assert_one_line_error(rc, err, "int8")
    rc, _, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "missing.npy"])
    assert_one_line_error(rc, err, "cannot read input")


@pytest.mark.parametrize("mode, words", [("silent", "no response from the board"),
                                         ("reject", "rejected"), ("error", "error 8")])
def test_board_errors(files, board, mode, words):
    program, d, _ = files
    made = board(program, mode=mode)
    rc, out, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "x.npy",
                        "--output", d / "y.npy"])
    assert_one_line_error(rc, err, words)
    assert out == "" and not (d / "y.npy").exists() and made["board"].closed


def test_board_with_another_accelerator(files, board):
    program, d, _ = files
    board(program, cfg=AcceleratorConfig(pes=4, device="generic"))
    rc, _, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "x.npy"])
    assert_one_line_error(rc, err, "another accelerator", "act_depth")


def test_missing_arguments_exit_2(files):
    _, d, _ = files
    rc, _, err = run(["run", "--program", d / "p.sdimg", "--input", d / "x.npy"])
    assert rc == 2 and "--port" in err


def test_noisy_line_is_retried_and_reported(files, board):
    program, d, x = files
    made = board(program, mode="noisy")
    rc, out, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "x.npy"])
    assert rc == 0, err
    want = run_program(program, x.astype(np.int64)[None]).reshape(-1)
    assert f"output {want.tolist()}" in out and "requests re-sent after line errors" in out, out
    assert made["board"].starts == 1
    rc, _, err = run(["run", "--port", "p", "--program", d / "p.sdimg", "--input", d / "x.npy", "--retries", "-1"])
    assert_one_line_error(rc, err, "--retries", "-1")
