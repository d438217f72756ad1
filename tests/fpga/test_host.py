"""The host driver (fpga.host) against a fake board: chunking, load grouping, run results, every error path."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from fake_board import FakeBoard

from fpga import bridge as br
from fpga.host import Host, encode_read, encode_response, encode_write, load_input, run_on_board
from golden import SdhwError
from golden.compiler import CompileOptions, compile_model
from golden.model import Layer, Model
from golden.program import run_program
from rtl_gen.image import build_image, expected_counts
from sdhw import hostbus as hb
from sdhw.config import AcceleratorConfig

CFG = AcceleratorConfig(pes=4, device="generic", act_depth=256, code_depth=256, basis_depth=64,
                        bias_depth=64, desc_layers=4)


def small_program(seed: int = 3, inputs: int = 12):
    rng = np.random.default_rng(seed)
    model = Model((inputs,), [Layer("fc", rng.normal(0, 0.3, (8, inputs)), rng.normal(0, 0.1, 8), relu=True),
                              Layer("fc", rng.normal(0, 0.3, (5, 8)), rng.normal(0, 0.1, 5))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_model(model, rng.normal(0, 1, (32, inputs)), CompileOptions(method="paper")).program


class Recorder:
    """Transport that records frames and answers each from a queue of canned responses."""

    def __init__(self, responses):
        self.responses, self.frames, self.pending = list(responses), [], b""

    def write(self, data):
        self.frames.append(bytes(data))
        self.pending += self.responses.pop(0) if self.responses else b""

    def read(self, n):
        data, self.pending = self.pending[:n], self.pending[n:]
        return data


def test_writes_and_reads_are_split_into_max_words_chunks():
    words = list(range(300))
    t = Recorder([encode_response(0)] * 3)
    Host(t).write_words(0x10000, words)
    assert t.frames == [encode_write(0x10000, words[:128]), encode_write(0x10080, words[128:256]),
                        encode_write(0x10100, words[256:])]
    t = Recorder([encode_response(0, range(100)), encode_response(0, range(50))])
    host = Host(t, max_words=100)
    assert host.read_words(0x60000, 150) == list(range(100)) + list(range(50))
    assert t.frames == [encode_read(0x60000, 100), encode_read(0x60064, 50)]


def test_response_errors_name_the_problem():
    with pytest.raises(SdhwError, match="no response from the board.*\\(3 attempts\\)"):
        Host(Recorder([])).read_words(0, 1)
    with pytest.raises(SdhwError, match="no response from the board \\(got 2 of 6 expected bytes"):
        Host(Recorder([encode_response(0, [1])[:6]]), retries=0).read_words(0, 1)
    with pytest.raises(SdhwError, match="checksum mismatch"):
        bad = bytearray(encode_response(0, [5]))
        bad[5] ^= 1
        Host(Recorder([bytes(bad)]), retries=0).read_words(0, 1)
    for status, words in ((br.STATUS_BAD_CHECK, "bad checksum"), (br.STATUS_TIMEOUT, "truncated"),
                          (br.STATUS_FRAMING, "framing"), (br.STATUS_BAD_COUNT, "word count")):
        with pytest.raises(SdhwError, match=words) as exc:
            Host(Recorder([encode_response(status)] * 3)).write_words(0, [1])
        assert exc.value.status == status and "nothing was executed" in str(exc.value)
    with pytest.raises(SdhwError, match="returned 2 words for a read of 1"):
        Host(Recorder([encode_response(0, [1, 2])])).read_words(0, 1)
    with pytest.raises(SdhwError, match="sync byte"):
        Host(Recorder([b"\x00" * 100]), retries=0).read_words(0, 1)
    with pytest.raises(SdhwError, match="20-bit bus"):
        Host(Recorder([])).read_words(0xFFFFF, 2)


def test_line_errors_are_retried_only_where_safe():
    """A request rejected as damaged on the line is re-sent (it did not run); after a lost or corrupt response
    only a request that may run twice is re-sent, never a control write by itself (it may start a run:
    :meth:`Host.start` asks the status first)."""
    corrupt = bytearray(encode_response(0))
    corrupt[-1] ^= 1
    t = Recorder([encode_response(br.STATUS_TIMEOUT), encode_response(br.STATUS_BAD_CHECK), encode_response(0)])
    host = Host(t)
    host.write_words(0x10004, [7, 8])
    assert t.frames == [encode_write(0x10004, [7, 8])] * 3 and host.retried == 2
    t = Recorder([bytes(corrupt), encode_response(0, [9])])
    host = Host(t)
    assert host.read_words(0x60000, 1) == [9] and host.retried == 1
    control = (hb.REGION_CSR << 16) | hb.CSR_CONTROL
    t = Recorder([encode_response(br.STATUS_FRAMING), encode_response(0)])
    host = Host(t)
    host.write_words(control, [hb.CONTROL_START])
    assert len(t.frames) == 2 and host.retried == 1
    t = Recorder([bytes(corrupt), encode_response(0)])
    with pytest.raises(SdhwError, match="checksum mismatch"):
        Host(t).write_words(control, [hb.CONTROL_START])
    assert len(t.frames) == 1
    # a bad header can only be line damage (the host's own headers are well-formed): re-sent, until retries run out
    t = Recorder([encode_response(br.STATUS_BAD_COUNT), encode_response(br.STATUS_BAD_ADDR), encode_response(0)])
    host = Host(t)
    host.write_words(0, [1])
    assert len(t.frames) == 3 and host.retried == 2
    t = Recorder([encode_response(br.STATUS_BAD_ADDR)] * 3)
    with pytest.raises(SdhwError, match="address"):
        Host(t).write_words(0, [1])
    assert len(t.frames) == 3
    with pytest.raises(SdhwError, match="retries must be a non-negative integer, not -1"):
        Host(t, retries=-1)


def test_run_on_noisy_line_matches_golden_and_starts_once_per_input():
    program = small_program()
    image = build_image(program, CFG)
    board = FakeBoard(program, CFG, mode="noisy")
    xs = np.random.default_rng(2).integers(-128, 128, (3, 12))
    report = run_on_board(board, image, xs)
    for x, r in zip(xs, report["results"]):
        assert r["output"].tolist() == run_program(program, x[None]).reshape(-1).tolist()
    assert report["retried"] > 0 and board.starts == len(xs)
    with pytest.raises(SdhwError, match="rejected|corrupt response"):
        run_on_board(board, image, xs, retries=0)


@pytest.mark.parametrize("mode", ["start-lost", "start-response-lost"])
def test_a_start_whose_exchange_is_lost_runs_exactly_once(mode):
    """A start request lost on the line is sent again; one that ran but whose response was lost is not (the
    status, cleared before the start, tells which)."""
    program = small_program()
    image = build_image(program, CFG)
    board = FakeBoard(program, CFG, mode=mode)
    x = np.random.default_rng(4).integers(-128, 128, 12)
    report = run_on_board(board, image, [x])
    assert board.starts == 1 and report["retried"] == (mode == "start-lost")
    assert report["results"][0]["output"].tolist() == run_program(program, x[None]).reshape(-1).tolist()


def test_stray_bytes_before_a_response_are_skipped():
    t = Recorder([b"\x13\x00" + encode_response(0, [42])])
    assert Host(t).read_words(5, 1) == [42]


def test_run_on_fake_board_matches_golden():
    program = small_program()
    image = build_image(program, CFG)
    board = FakeBoard(program, CFG)
    rng = np.random.default_rng(1)
    xs = rng.integers(-128, 128, (3, 12))
    report = run_on_board(board, image, xs)
    assert report["board"]["pes"] == 4 and report["board"]["bridge"]["max_words"] == br.DEFAULT_MAX_WORDS
    assert report["words_loaded"] == sum(len(w) for _, _, w in image.sections)
    for x, r in zip(xs, report["results"]):
        assert r["output"].tolist() == run_program(program, x[None]).reshape(-1).tolist()
    assert [r["run"] for r in report["results"]] == [0, 1, 2] and len(report["runs"]) == 3
    assert all(r["status"] == hb.STATUS_DONE and r["error"] is None and r["macs"] > 0 for r in report["runs"])


def test_run_a_batch_image_in_runs_of_its_batch():
    """Inputs go in runs of the image's batch; the last run, short of inputs, is filled and its extra outputs
    dropped."""
    program = small_program()
    image = build_image(program, CFG, batch=2)
    board = FakeBoard(program, CFG, batch=2)
    xs = np.random.default_rng(3).integers(-128, 128, (3, 12))
    report = run_on_board(board, image, xs)
    assert board.starts == 2 and [r["run"] for r in report["results"]] == [0, 0, 1]
    for x, r in zip(xs, report["results"]):
        assert r["output"].tolist() == run_program(program, x[None]).reshape(-1).tolist()
    assert report["runs"][0]["macs"] == 2 * expected_counts(program, CFG)["macs"]
    with pytest.raises(SdhwError, match=r"input has 12 values; the program takes 24 \(2 inputs of shape \(12,\)\)"):
        Host(FakeBoard(program, CFG, batch=2)).run(image, np.zeros(12, dtype=int))


def test_run_errors():
    program = small_program()
    image = build_image(program, CFG)
    with pytest.raises(SdhwError, match="error 8 .*activation address.* at layer 1"):
        run_on_board(FakeBoard(program, CFG, mode="error"), image, [np.zeros(12, dtype=int)])
    other = AcceleratorConfig(pes=16, device="generic")
    with pytest.raises(SdhwError, match="another accelerator.*channel_lanes 16 \\(image: 4\\)"):
        run_on_board(FakeBoard(program, other), image, [np.zeros(12, dtype=int)])
    host = Host(FakeBoard(program, CFG))
    with pytest.raises(SdhwError, match="input has 11 values; the program takes 12"):
        host.run(image, np.zeros(11, dtype=int))
    with pytest.raises(SdhwError, match="int8"):
        host.run(image, np.full(12, 128))


def test_load_input(tmp_path):
    program = small_program()
    image = build_image(program, CFG)
    x = np.linspace(-2, 2, 24).reshape(2, 12)
    np.save(tmp_path / "f.npy", x)
    got = load_input(image, tmp_path / "f.npy")
    assert got.tolist() == program.input_q.quantize(x).tolist()
    np.save(tmp_path / "i.npy", np.arange(-6, 6, dtype=np.int8))
    assert load_input(image, tmp_path / "i.npy").tolist() == [list(range(-6, 6))]
    np.save(tmp_path / "bad.npy", np.arange(13))
    with pytest.raises(SdhwError, match="shape \\(13,\\).*\\(12,\\)"):
        load_input(image, tmp_path / "bad.npy")
    np.save(tmp_path / "big.npy", np.arange(12) * 100)
    with pytest.raises(SdhwError, match="int8 values"):
        load_input(image, tmp_path / "big.npy")
    np.save(tmp_path / "nan.npy", np.full(12, np.nan))
    with pytest.raises(SdhwError, match="NaN"):
        load_input(image, tmp_path / "nan.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(SdhwError, match="cannot read input"):
        load_input(image, tmp_path / "junk.npy")
    with pytest.raises(SdhwError, match="cannot read input"):
        load_input(image, tmp_path / "missing.npy")
