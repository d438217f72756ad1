"""sim.faults without a simulator: the fault model (deterministic, stored bits only, one region) and the outcome
classification; the bench command's argument errors. The RTL campaign is in test_regression.py."""
from __future__ import annotations

import numpy as np
import pytest

from rtl_gen.cycles import expected_cycles
from rtl_gen.image import build_image
from sdhw import hostbus as hb
from sdhw.config import AcceleratorConfig
from sdhw.memories import chunk_layout
from sim.bench_faults import DEPTHS
from sim.faults import (
    ERROR,
    HANG,
    HANG_FACTOR,
    HANG_MARGIN,
    MATCH,
    SILENT,
    Outcome,
    classify,
    fault_regions,
    hang_bound,
    inject,
    tally,
    word_bits,
)
from sim.random_programs import random_program


@pytest.fixture(scope="module", params=[(4, False), (16, True)], ids=["sd4", "dense16"])
def image(request):
    pes, dense = request.param
    cfg = AcceleratorConfig(pes=pes, dense=dense, device="ecp5-85f", **DEPTHS)
    program = random_program(np.random.default_rng(3), cfg)
    return cfg, program, [tuple(w) for w in build_image(program, cfg).writes()]


def test_a_fault_is_deterministic_and_flips_only_its_region(image):
    cfg, _, writes = image
    for region in fault_regions(cfg):
        for flips in (1, 3):
            faulted, fault = inject(writes, cfg, np.random.default_rng([5, region, flips]), region=region,
                                    flips=flips)
            again, same = inject(writes, cfg, np.random.default_rng([5, region, flips]), region=region, flips=flips)
            assert (faulted, fault) == (again, same) and fault.region == region and len(fault.flips) == flips
            diff = {a: w ^ v for (a, w), (_, v) in zip(writes, faulted) if w != v}
            assert all(a >> 16 == region for a in diff)
            assert sum(bin(d).count("1") for d in diff.values()) == flips
            assert {(a & 0xFFFF, b) for a, d in diff.items() for b in range(32) if d >> b & 1} == set(fault.flips)


def test_every_stored_bit_and_no_other_can_be_flipped(image):
    """Flipping as many bits as the region stores flips each exactly once: the last chunk of a wide entry only
    in its low bits (a flip past the entry's width would never reach the memory)."""
    cfg, _, writes = image
    for region in fault_regions(cfg):
        words = [a for a, _ in writes if a >> 16 == region]
        total = sum(word_bits(cfg, region, a & 0xFFFF) for a in words)
        faulted, _ = inject(writes, cfg, np.random.default_rng(0), region=region, flips=total)
        for (a, w), (_, v) in zip(writes, faulted):
            stored = word_bits(cfg, region, a & 0xFFFF) if a >> 16 == region else 0
            assert w ^ v == (1 << stored) - 1
        with pytest.raises(ValueError, match="cannot flip"):
            inject(writes, cfg, np.random.default_rng(0), region=region, flips=total + 1)
    chunks, _ = chunk_layout(cfg.code_word_bits)
    assert word_bits(cfg, hb.REGION_CODES, chunks - 1) == cfg.code_word_bits - 32 * (chunks - 1)


def test_bad_fault_arguments(image):
    cfg, _, writes = image
    with pytest.raises(ValueError, match="flips must be a positive integer, not 0"):
        inject(writes, cfg, np.random.default_rng(0), region=hb.REGION_DESC, flips=0)
    with pytest.raises(ValueError, match="region 5 cannot be faulted"):
        inject(writes, cfg, np.random.default_rng(0), region=hb.REGION_BIAS)
    if cfg.dense:
        assert hb.REGION_BASES not in fault_regions(cfg)


def test_hang_bound_covers_the_program(image):
    """The bound takes every row as live: at least the bound the program's own rows would give."""
    cfg, program, _ = image
    assert hang_bound(program, cfg) >= HANG_FACTOR * expected_cycles(program, cfg)["cycles"] + HANG_MARGIN


def test_classification():
    done, error = hb.STATUS_DONE, hb.STATUS_ERROR | (hb.ERR_CHECKSUM << 8) | (2 << 16)
    assert classify(None, None, [1, 2]) == Outcome(HANG)
    assert classify(error, None, [1, 2]) == Outcome(ERROR, hb.ERR_CHECKSUM)
    assert str(classify(error, None, [1, 2])) == "error 11 (descriptor checksum mismatch)"
    assert classify(done, [1, 2], [1, 2]) == Outcome(MATCH)
    assert classify(done, [1, 3], [1, 2]) == Outcome(SILENT)
    assert classify(done, [1, None], [1, 2]) == Outcome(SILENT)
    results = [{"outcome": Outcome(k, c), "undefined": u} for k, c, u in
               [(MATCH, 0, 0), (ERROR, 11, 0), (ERROR, 8, 0), (ERROR, 11, 0), (SILENT, 0, 2), (SILENT, 0, 0)]]
    counts = tally(results)
    assert counts["runs"] == 6 and (counts[MATCH], counts[ERROR], counts[SILENT], counts[HANG]) == (1, 3, 2, 0)
    assert counts["errors_by_code"] == {8: 1, 11: 2} and counts["silent_undefined"] == 1
    assert counts["detection_rate"] == 3 / 5
    assert tally(results[:1])["detection_rate"] is None


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "--runs must be a positive integer, not 0"),
    (["--flips", "1", "-2"], "--flips must be positive integers, not -2"),
    (["--seed", "-1"], "--seed must be a non-negative integer, not -1"),
    (["--runs", "x"], "argument --runs: invalid int value: 'x'"),
])
def test_bench_rejects_bad_arguments_in_one_line(tmp_path, capsys, args, message):
    from sim.bench_faults import main

    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err == f"bench_faults: error: {message}\n"
    assert not list(tmp_path.iterdir())
