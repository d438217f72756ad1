# amaranth: UnusedElaboratable=no
"""The formal flow (SBY from PyPI) and the proof harnesses: a proof passes, a broken variant fails with a
trace, every cover is reached. The full proofs take minutes each: they are ``slow`` (``make formal`` runs them)."""
from __future__ import annotations

import random

import pytest
from amaranth import Const, Elaboratable, Fragment, Module, Signal
from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Cover
from evaluate import evaluate

from rtl_gen.image import thresholds
from sdhw.descriptor import CHECKSUM_WORD
from sdhw.descriptor import checksum as descriptor_checksum
from verify import formal
from verify.bridge_proof import BridgeProof, register_of
from verify.harness import no_reset
from verify.proofs import PROOFS, TABLE_ZERO_POINT, ThresholdProof, checksum_by_halves, sequencer_bound

try:
    formal.find_tools()
    TOOLS_MISSING = None
except formal.FormalToolsMissing as error:
    TOOLS_MISSING = str(error)

needs_tools = pytest.mark.skipif(TOOLS_MISSING is not None, reason=TOOLS_MISSING or "")
SPECS = {spec.name: spec for spec in PROOFS}


class SaturatingCounter(Elaboratable):
    """A counter that stops at ``limit``; the property says it never passes 9."""

    def __init__(self, limit: int):
        self.limit = limit

    def elaborate(self, platform):
        m = Module()
        no_reset(m)
        count = Signal(4)
        with m.If(AnySeq(1) & (count != self.limit)):
            m.d.sync += count.eq(count + 1)
        m.d.comb += [Assert(count <= 9), Cover(count == 9)]
        return m


def test_missing_tools_is_one_line_error(monkeypatch):
    monkeypatch.setattr(formal, "_which", lambda command: None)
    with pytest.raises(formal.FormalToolsMissing, match=r"yowasp-sby.*pip install 'sdhw\[formal\]'") as info:
        formal.find_tools("boolector")
    assert "\n" not in str(info.value)


def test_bad_mode_and_depth_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of prove, bmc"):
        formal.check(SaturatingCounter(9), tmp_path, depth=4, mode="induct")
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        formal.check(SaturatingCounter(9), tmp_path, depth=0)


@needs_tools
@pytest.mark.parametrize("mode", ["prove", "bmc"])
def test_flow_proves_and_refutes(tmp_path, mode):
    good = formal.check(SaturatingCounter(9), tmp_path / "good", depth=12, mode=mode)
    assert good.proof.status == "PASS" and good.cover.status == "PASS", good
    bad = formal.check(SaturatingCounter(12), tmp_path / "bad", depth=12, mode=mode, cover=False)
    assert bad.proof.status == "FAIL", bad
    assert bad.proof.trace is not None and bad.proof.trace.stat().st_size > 0


@needs_tools
def test_boolector_flow(tmp_path):
    result = formal.check(SaturatingCounter(9), tmp_path, depth=12, mode="prove", solver="boolector", cover=False)
    assert result.proof.status == "PASS", result


@needs_tools
def test_rebuild_broken_variant_fails(tmp_path):
    spec = SPECS["rebuild"]
    result = formal.check(spec.harness("rebuild_flip_bit"), tmp_path, depth=spec.depth, mode=spec.mode, cover=False,
                          timeout=300)
    assert result.proof.status == "FAIL", result
    assert result.proof.trace is not None


@needs_tools
def test_sequencer_bound_is_proved_tight_and_a_hang_is_found(tmp_path):
    """The sequencer's no-hang proof passes, its covers (a run ending in done, one in error, one lasting exactly
    the bound) are reached, and a sequencer that misses a layer's done fails it."""
    spec = SPECS["sequencer"]
    result = formal.check(spec.harness(), tmp_path / "good", depth=spec.depth, mode=spec.mode, timeout=300)
    assert result.proof.status == "PASS" and result.cover.status == "PASS", result
    hang = formal.check(spec.harness("sequencer_miss_done"), tmp_path / "hang", depth=spec.depth, mode=spec.mode,
                        cover=False, timeout=300)
    assert hang.proof.status == "FAIL" and hang.proof.trace is not None, hang


def test_sequencer_bound_formula():
    """Two slots of layers, each fetched and checked in DESC_WORDS + latency + 4 cycles and run for its done
    (layer_cycles) plus the sequencer's two cycles, then a cycle to step to the next slot: the bound the proof
    shows tight."""
    assert sequencer_bound(2, 1, 2) == 2 * ((16 + 1 + 4) + (2 + 2) + 1)
    assert sequencer_bound(3, 2, 5) == 3 * (16 + 2 + 7 + 5)


@pytest.mark.parametrize("seed", [5])
def test_checksum_by_halves_is_the_descriptor_checksum(seed):
    """The sequencer proof's checksum (by 16-bit halves) equals golden's on random and extreme words."""
    rng = random.Random(seed)
    cases = [[0xFFFFFFFF] * CHECKSUM_WORD, [0] * CHECKSUM_WORD]
    cases += [[rng.getrandbits(32) for _ in range(CHECKSUM_WORD)] for _ in range(20)]
    for words in cases:
        got = checksum_by_halves([Const(w, 32) for w in words])
        assert evaluate(got) == descriptor_checksum(words), f"seed {seed}: words {words}"


def test_threshold_proof_uses_the_compilers_short_table():
    harness = ThresholdProof()
    Fragment.get(harness, None)
    assert (harness.base, harness.table) == thresholds(harness.layer)
    assert harness.base == TABLE_ZERO_POINT and 0 < len(harness.table) <= 8, harness.table


def test_bridge_proof_elaborates_and_names_what_it_cannot_find():
    """The bridge harness finds the bridge's registers and buffer (its lemmas name them); a name the bridge does not
    have is one clear error."""
    harness = BridgeProof()
    fragment = Fragment.get(harness, None)
    with pytest.raises(ValueError, match="0 registers named 'no_such_register' in the block, not one"):
        register_of(fragment, "no_such_register")
    spec = SPECS["bridge"]
    assert spec.check_of() == ("prove", spec.depth) and spec.check_of("bridge_crc_init_zero") == ("bmc", 26)
    assert spec.cover_depth == 32


@needs_tools
def test_bridge_proof_by_induction(tmp_path):
    """The bridge's k-induction proof (no bound) passes in seconds; its covers, checked from reset to 32 cycles,
    are the slow part (``slow``)."""
    spec = SPECS["bridge"]
    result = formal.check(spec.harness(), tmp_path, depth=spec.depth, mode=spec.mode, cover=False, timeout=300)
    assert result.proof.status == "PASS", result


@needs_tools
def test_bridge_with_the_wrong_crc_fails(tmp_path):
    """A bridge that checks CRC-16/ARC where the protocol says CRC-16/MODBUS fails the proof from reset."""
    spec = SPECS["bridge"]
    mode, depth = spec.check_of("bridge_crc_init_zero")
    result = formal.check(spec.harness("bridge_crc_init_zero"), tmp_path, depth=depth, mode=mode, cover=False,
                          timeout=300)
    assert result.proof.status == "FAIL" and result.proof.trace is not None, result


@needs_tools
def test_reader_proof_passes_and_a_word_kept_across_a_seek_fails(tmp_path):
    """The code-word reader's proof (read latency 1) passes in seconds; a reader that keeps offering a word across
    the consumer's seek fails it (the ring and drain proofs, a minute or more each, are ``slow``)."""
    spec = SPECS["reader"]
    result = formal.check(spec.harness(), tmp_path / "good", depth=spec.depth, mode=spec.mode, cover=False,
                          timeout=300)
    assert result.proof.status == "PASS", result
    stale = formal.check(spec.harness("reader_keep_after_seek"), tmp_path / "stale", depth=spec.depth,
                         mode=spec.mode, cover=False, timeout=300)
    assert stale.proof.status == "FAIL" and stale.proof.trace is not None, stale


@needs_tools
def test_pipelined_writeback_proof_passes_and_a_duplicated_write_fails(tmp_path):
    """The pipelined writeback's proof and covers pass in seconds; a writeback that writes an element twice fails
    it (the table writeback's proof, a minute or more, is ``slow``)."""
    spec = SPECS["writeback_pipelined"]
    result = formal.check(spec.harness(), tmp_path / "good", depth=spec.depth, mode=spec.mode,
                          cover_depth=spec.cover_depth, timeout=300)
    assert result.proof.status == "PASS" and result.cover.status == "PASS", result
    twice = formal.check(spec.harness("writeback_write_twice"), tmp_path / "twice", depth=spec.depth,
                         mode=spec.mode, cover=False, timeout=300)
    assert twice.proof.status == "FAIL" and twice.proof.trace is not None, twice


@needs_tools
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_proof_passes_and_covers_are_reached(tmp_path, name):
    spec = SPECS[name]
    result = formal.check(spec.harness(), tmp_path, depth=spec.depth, mode=spec.mode, cover_depth=spec.cover_depth,
                          timeout=1800)
    assert result.proof.status == "PASS", result
    assert result.cover.status == "PASS", result


@needs_tools
@pytest.mark.slow
@pytest.mark.parametrize("name, mutant", [(spec.name, mutant) for spec in PROOFS for mutant in spec.mutants])
def test_broken_variant_fails(tmp_path, name, mutant):
    spec = SPECS[name]
    mode, depth = spec.check_of(mutant)
    result = formal.check(spec.harness(mutant), tmp_path, depth=depth, mode=mode, cover=False, timeout=1800)
    assert result.proof.status == "FAIL", result
