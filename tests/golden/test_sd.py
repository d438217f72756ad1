"""golden.sd: row geometry, codes, the power-of-two quantiser, the rebuild rule, decomposition and pruning."""
from __future__ import annotations

import math

import numpy as np
import pytest

import golden.sd as sd
from golden import SdhwError
from golden.sd import (
    PRUNE_GROUP,
    SDWeights,
    code_values,
    decompose,
    from_rows,
    pow2_quantize,
    pow2_to_codes,
    quantize_decomposition,
    structural_mask,
    to_rows,
)


# ------------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize(("m", "k"), [(3, 7), (2, 8), (4, 9), (1, 1)])
def test_rows_fc_zero_padding(m, k):
    w = np.arange(1, m * k + 1, dtype=np.float64).reshape(m, k)
    rows = to_rows(w)
    n_rows = -(-k // 3)
    assert rows.shape == (m, n_rows, 3)
    for f in range(m):
        for i in range(n_rows):
            for j in range(3):
                want = w[f, 3 * i + j] if 3 * i + j < k else 0.0
                assert rows[f, i, j] == want, (f, i, j)
    assert np.array_equal(from_rows(rows, w.shape), w)


def test_rows_conv3x3_row_index_is_3c_plus_r():
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, (4, 5, 3, 3))
    rows = to_rows(w)
    assert rows.shape == (4, 15, 3)
    for f in range(4):
        for c in range(5):
            for r in range(3):
                for j in range(3):
                    assert rows[f, 3 * c + r, j] == w[f, c, r, j], (f, c, r, j)
    assert np.array_equal(from_rows(rows, w.shape), w)


@pytest.mark.parametrize("c", [5, 6])
def test_rows_conv1x1_triplets_of_input_channels(c):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, c, 1, 1))
    rows = to_rows(w)
    assert rows.shape == (3, -(-c // 3), 3)
    for f in range(3):
        for ch in range(rows.shape[1] * 3):
            want = w[f, ch, 0, 0] if ch < c else 0.0
            assert rows[f, ch // 3, ch % 3] == want
    back = from_rows(rows, w.shape)
    assert back.shape == w.shape and np.array_equal(back, w)


# --------------------------------------------------------------------------------------------------- codes
def test_code_values_explicit():
    codes = np.array([-15, -3, -2, -1, 0, 1, 2, 3, 7, 15], dtype=np.int8)
    want = []
    for c in codes.tolist():
        want.append(0 if c == 0 else int(math.copysign(2 ** (abs(c) - 1), c)))
    assert code_values(codes).tolist() == want == [-16384, -4, -2, -1, 0, 1, 2, 4, 64, 16384]


def test_check_codes_limit():
    sd.check_codes(np.array([3, -3, 0]), 2)
    with pytest.raises(SdhwError):
        sd.check_codes(np.array([4, 0]), 2)
    with pytest.raises(SdhwError):
        sd.check_codes(np.array([0, -2]), 1)


@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4])
def test_decomposition_codes_are_signed_powers_of_two_in_window(exp_bits):
    rng = np.random.default_rng(100 + exp_bits)
    rows = rng.normal(0, 0.1, (12, 20, 3)) * rng.uniform(0.1, 3, (12, 20, 1))
    keep = structural_mask(rows, 0.25, group=4)
    dec = decompose(rows, exp_bits=exp_bits, keep=keep, threshold=1e-3, basis_group=4, block_rows=8)
    assert dec.e_hi - dec.e_lo == 2 ** exp_bits - 2
    for v in dec.cq.reshape(-1):
        if v != 0:
            e = math.log2(abs(v))
            assert e == int(e) and dec.e_lo <= e <= dec.e_hi, (exp_bits, v, dec.e_lo, dec.e_hi)
    sdw, s_w = quantize_decomposition(dec, shape=(12, 60), exp_bits=exp_bits, basis_group=4, block_rows=8)
    limit = 2 ** exp_bits - 1
    assert sdw.codes.dtype == np.int8 and np.abs(sdw.codes).max() <= limit
    vals = code_values(sdw.codes)
    for c, v in zip(sdw.codes.reshape(-1).tolist(), vals.reshape(-1).tolist(), strict=True):
        assert (c == 0 and v == 0) or (abs(v) == 2 ** (abs(c) - 1) and (v > 0) == (c > 0))
    # the codes are the float coefficients relative to the window's bottom exponent
    assert np.array_equal(vals * 2.0 ** dec.e_lo, dec.cq)
    assert np.array_equal(pow2_to_codes(dec.cq, dec.e_lo), sdw.codes)
    # and the integer form rebuilds the float decomposition closely
    rec = dec.reconstruct(4, 8)
    rel = np.linalg.norm(from_rows(rec, (12, 60)) - sdw.rebuild() * s_w) / np.linalg.norm(rec)
    assert rel < 0.03, (exp_bits, rel)


# ------------------------------------------------------------------------------------------ pow2_quantize
@pytest.mark.parametrize(("x", "want"), [
    (0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (4.0, 4.0), (0.25, 0.25), (-0.5, -0.5),
    (3.0, 2.0),                 # [2, 4): 3 - 2 <= 4 - 3: the tie rounds down
    (3.0000001, 4.0), (2.9999999, 2.0),
    (1.5, 1.0), (1.5000001, 2.0), (-1.5, -1.0), (-1.50001, -2.0),
    (0.75, 0.5), (0.76, 1.0), (-0.375, -0.25), (-0.38, -0.5),
    (6.0, 4.0), (7.0, 4.0), (100.0, 4.0), (-1e9, -4.0),          # clipped to 2**e_hi
    (0.2, 0.25), (0.13, 0.25), (0.125, 0.25), (-0.125, -0.25),    # up to 2**e_lo (not nearer to 0)
    (0.1249, 0.0), (-0.1249, 0.0), (1e-300, 0.0),                # underflow to zero
])
def test_pow2_quantize_hand_cases(x, want):
    got = pow2_quantize(np.array([x]), -2, 2)
    assert got.tolist() == [want]


def _ref_pow2(x: float, e_lo: int, e_hi: int) -> float:
    mag = abs(x)
    if mag < 2.0 ** (e_lo - 1):
        return 0.0
    best = 2.0 ** e_lo
    for e in range(e_lo + 1, e_hi + 1):
        c = 2.0 ** e
        if abs(mag - c) < abs(mag - best):       # strictly nearer: ties keep the smaller power
            best = c
    return math.copysign(best, x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pow2_quantize_matches_nearest_power_reference(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        e_lo = int(rng.integers(-12, 3))
        e_hi = e_lo + int(rng.integers(0, 8))
        ks = rng.integers(e_lo - 4, e_hi + 4, 200).astype(float)
        special = np.concatenate([2.0 ** ks, 1.5 * 2.0 ** ks, 0.5 * 2.0 ** ks, [2.0 ** (e_lo - 1)]])
        special = np.concatenate([special, np.nextafter(special, 0), np.nextafter(special, np.inf)])
        x = np.concatenate([2.0 ** rng.uniform(e_lo - 5, e_hi + 5, 500), special, [0.0]])
        x = x * rng.choice([-1.0, 1.0], x.size)
        got = pow2_quantize(x, e_lo, e_hi)
        want = np.array([_ref_pow2(float(v), e_lo, e_hi) for v in x])
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (f"seed {seed}: window [{e_lo}, {e_hi}] x={x[bad[0]]!r} got {got[bad[0]]!r} "
                               f"want {want[bad[0]]!r}")


# ------------------------------------------------------------------------------------------------- rebuild
def ref_rebuild_rows(codes, bases, wshift, basis_group, block_rows, weight_bits):
    """The rebuild rule of golden/sd.py's docstring, one weight at a time with Python ints."""
    m, r, _ = codes.shape
    qmax = 2 ** (weight_bits - 1) - 1
    out = np.zeros((m, r, 3), dtype=np.int64)
    for f in range(m):
        for i in range(r):
            basis = bases[f // basis_group, i // block_rows]
            for j in range(3):
                exact = 0
                for k in range(3):
                    c = int(codes[f, i, k])
                    if c:
                        term = int(basis[k, j]) * 2 ** (abs(c) - 1)
                        exact += term if c > 0 else -term
                w = math.floor((exact + 2 ** (wshift - 1)) / 2**wshift) if wshift else exact
                out[f, i, j] = max(-qmax, min(qmax, w))
    return out


def _random_sdw(rng, *, saturate: bool = False):
    exp_bits = int(rng.integers(1, 5))
    limit = 2**exp_bits - 1
    m, r = int(rng.integers(1, 9)), int(rng.integers(1, 13))
    basis_group, block_rows = int(rng.integers(1, m + 2)), int(rng.integers(1, r + 2))
    ng, nb = -(-m // basis_group), -(-r // block_rows)
    if saturate:
        codes = rng.choice([-limit, limit], (m, r, 3))
        bases = rng.choice([-128, -127, 127], (ng, nb, 3, 3))
    else:
        codes = rng.integers(-limit, limit + 1, (m, r, 3))
        codes[rng.random((m, r)) < 0.3] = 0                              # some all-zero rows
        bases = rng.integers(-128, 128, (ng, nb, 3, 3))
    wshift = int(rng.integers(0, 2 + 2**exp_bits + 4))
    weight_bits = int(rng.choice([4, 8, 8, 12, 16]))
    k = 3 * r - int(rng.integers(0, 3))
    return SDWeights((m, k), codes.astype(np.int8), bases.astype(np.int8), exp_bits, basis_group, block_rows,
                     wshift, weight_bits)


@pytest.mark.parametrize("seed", range(6))
def test_rebuild_matches_explicit_rule(seed):
    rng = np.random.default_rng(seed)
    n_sat = 0
    for case in range(40):
        sdw = _random_sdw(rng, saturate=case % 4 == 0)
        want = ref_rebuild_rows(sdw.codes, sdw.bases, sdw.wshift, sdw.basis_group, sdw.block_rows,
                                sdw.weight_bits)
        msg = (f"seed {seed} case {case}: E={sdw.exp_bits} wshift={sdw.wshift} wb={sdw.weight_bits} "
               f"group={sdw.basis_group} block_rows={sdw.block_rows}")
        got_rows = sdw.rebuild_rows()
        assert np.array_equal(got_rows, want), msg
        got = sdw.rebuild()
        assert got.shape == sdw.shape, msg
        assert np.array_equal(got, want.reshape(want.shape[0], -1)[:, :sdw.shape[1]]), msg
        n_sat += int(np.sum(np.abs(want) == 2 ** (sdw.weight_bits - 1) - 1))
    assert n_sat > 0, f"seed {seed}: no saturated weight was exercised"


def test_rebuild_hand_case():
    basis = np.array([[1, 2, 3], [4, 5, 6], [7, 8, -128]], dtype=np.int8)[None, None]
    codes = np.array([[[2, -1, 0], [0, 0, 3], [15, 0, 0], [-15, 0, 0]]], dtype=np.int8)
    sdw = SDWeights((1, 12), codes, basis, 4, 1, 4, 1, 8)
    # row 0: exact = 2*B0 - B1 = [-2, -1, 0] -> (x + 1) >> 1 = [-1, 0, 0]
    # row 1: exact = 4*B2 = [28, 32, -512] -> [14, 16, -256 -> -127]
    # row 2: exact = 2**14 * B0 -> saturates to +127; row 3: -> -127
    assert sdw.rebuild_rows().tolist() == [[[-1, 0, 0], [14, 16, -127], [127, 127, 127], [-127, -127, -127]]]
    sdw0 = SDWeights((1, 12), codes, basis, 4, 1, 4, 0, 16)
    assert sdw0.rebuild_rows().tolist() == [[[-2, -1, 0], [28, 32, -512], [16384, 32767, 32767],
                                             [-16384, -32767, -32767]]]


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3, 3), (6, 5, 1, 1), (3, 1, 3, 3), (1, 1), (2, 9), (8, 4, 3, 3)])
def test_exact_sd_rebuilds_the_int8_weights(shape):
    rng = np.random.default_rng(sum(shape))
    w = rng.integers(-127, 128, shape).astype(np.int8)
    w[0] = 0                                                        # a filter of zero rows
    if shape[0] > 1:
        w[1].reshape(-1)[:2] = 127 * np.array([1, -1], dtype=np.int8)
    sdw = sd.exact_sd(w, exp_bits=2)
    assert np.array_equal(sdw.rebuild(), w), shape
    assert sdw.wshift == 0 and sdw.basis_group == 1
    assert np.array_equal(sdw.nonzero_rows, np.any(to_rows(w) != 0, axis=2))   # zero rows stay zero rows
    assert int(np.abs(sdw.codes).max(initial=0)) <= 1                   # one code value: any exponent width


def test_exact_sd_refuses_minus_128_and_floats():
    with pytest.raises(SdhwError, match=r"outside \[-127, 127\].*no exact SD encoding"):
        sd.exact_sd(np.array([[1, -128, 3]], dtype=np.int8))
    with pytest.raises(SdhwError, match="integer weights"):
        sd.exact_sd(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------- decomposition
def _masked_plain(rows, keep, e_lo, e_hi):
    w = np.where(keep[..., None], rows, 0.0)
    plain = np.where(keep[..., None], pow2_quantize(rows, e_lo, e_hi), 0.0)
    return w, float(np.linalg.norm(w - plain))


def test_decompose_history_and_beats_plain_pow2():
    total_final = total_plain = 0.0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        rows = rng.normal(0, 1, (40, 30, 3))
        for exp_bits in (1, 2, 3):
            for threshold in (0.0, 0.05):
                keep = structural_mask(rows, 0.3, group=16)
                dec = decompose(rows, exp_bits=exp_bits, keep=keep, threshold=threshold, basis_group=4,
                                block_rows=16)
                msg = f"seed {seed} E {exp_bits} threshold {threshold}"
                h = dec.history
                assert len(h) == dec.iterations + 1 and dec.iterations >= 1, msg
                assert all(b <= a for a, b in zip(h[:-1], h[1:], strict=True)), f"{msg}: history {h}"
                w, plain = _masked_plain(rows, keep, dec.e_lo, dec.e_hi)
                final = float(np.linalg.norm(w - dec.reconstruct(4, 16)))
                assert final == pytest.approx(h[-1], rel=1e-9), msg
                assert h[0] == pytest.approx(plain, rel=1e-9), msg
                assert final <= plain * (1 + 1e-12), f"{msg}: {final} > plain {plain}"
                total_final += final
                total_plain += plain
    assert total_final < 0.95 * total_plain, (total_final, total_plain)


def test_decompose_never_worse_than_plain_per_block_on_awkward_weights():
    """Heavy-tailed, mostly tiny weights: every block must still end no worse than plain pow2 rounding."""
    for seed in range(4):
        rng = np.random.default_rng(50 + seed)
        rows = rng.standard_t(1.5, (9, 10, 3)) * (rng.random((9, 10, 3)) < 0.5)
        keep = np.ones((9, 10), dtype=bool)
        for g in (1, 3):
            dec = decompose(rows, exp_bits=1, keep=keep, basis_group=g, block_rows=4, max_iter=5)
            rec = dec.reconstruct(g, 4)
            plain = pow2_quantize(rows, dec.e_lo, dec.e_hi)
            for _, _, fs, rs in sd.block_slices(9, 10, g, 4):
                e_dec = np.sum((rows[fs, rs] - rec[fs, rs]) ** 2)
                e_plain = np.sum((rows[fs, rs] - plain[fs, rs]) ** 2)
                assert e_dec <= e_plain * (1 + 1e-12) + 1e-300, f"seed {seed} group {g} block {fs}, {rs}"


def test_decompose_keep_mask_rows_are_exactly_zero():
    rng = np.random.default_rng(7)
    rows = rng.normal(0, 1, (20, 25, 3))
    keep = rng.random((20, 25)) < 0.6
    dec = decompose(rows, exp_bits=2, keep=keep, threshold=0.01, basis_group=5, block_rows=10)
    assert np.all(dec.cq[~keep] == 0)
    assert np.all(dec.reconstruct(5, 10)[~keep] == 0)
    assert np.any(dec.cq[keep] != 0)
    sdw, _ = quantize_decomposition(dec, shape=(20, 75), exp_bits=2, basis_group=5, block_rows=10)
    assert np.all(sdw.codes[~keep] == 0)
    assert not np.any(sdw.nonzero_rows & ~keep)
    assert np.all(sdw.rebuild_rows()[~keep] == 0)


def test_decompose_threshold_applied_to_ce_before_quantisation(monkeypatch):
    """Each coefficient matrix the iterations quantise has no entry in (0, threshold) and zero pruned rows."""
    rng = np.random.default_rng(11)
    rows = rng.normal(0, 1, (6, 12, 3))
    keep = np.ones((6, 12), dtype=bool)
    keep[:, [2, 7]] = False
    threshold = 0.4
    seen = []
    real = sd.pow2_quantize

    def recording(x, e_lo, e_hi):
        seen.append(np.array(x, dtype=np.float64))
        return real(x, e_lo, e_hi)

    monkeypatch.setattr(sd, "pow2_quantize", recording)
    dec = decompose(rows, exp_bits=2, keep=keep, threshold=threshold, basis_group=6, block_rows=12,
                    window=(-2, 0))
    assert (dec.e_lo, dec.e_hi) == (-2, 0)
    assert len(seen) == dec.iterations + 1            # one block: the B = I start, then one per iteration
    pruned = np.repeat(~keep.reshape(-1, 1), 3, axis=1)
    for n, ce in enumerate(seen[1:], 1):
        assert np.all(ce[pruned] == 0), f"iteration {n}"
        small = (np.abs(ce) < threshold) & (ce != 0)
        assert not np.any(small), f"iteration {n}: {ce[small]}"
        assert np.any(ce != 0), f"iteration {n}"
    # the start is plain pow2 rounding of W itself (no threshold)
    assert np.array_equal(seen[0][~pruned], rows.reshape(-1, 3)[~pruned])


def test_decompose_huge_threshold_falls_back_to_plain_pow2():
    rng = np.random.default_rng(3)
    rows = rng.normal(0, 1, (8, 12, 3))
    keep = structural_mask(rows, 0.25, group=4)
    dec = decompose(rows, exp_bits=2, keep=keep, threshold=1e9, basis_group=2, block_rows=6)
    _, plain = _masked_plain(rows, keep, dec.e_lo, dec.e_hi)
    want = np.where(keep[..., None], pow2_quantize(rows, dec.e_lo, dec.e_hi), 0.0)
    assert np.array_equal(dec.cq, want)
    assert np.array_equal(dec.bases, np.broadcast_to(np.eye(3), dec.bases.shape))
    assert dec.history == pytest.approx([plain] * len(dec.history), rel=1e-9)


@pytest.mark.parametrize("kwargs", [{"exp_bits": 0}, {"exp_bits": -1}, {"exp_bits": 2, "max_iter": 0},
                                    {"exp_bits": 2, "max_iter": -3}])
def test_decompose_rejects_bad_arguments(kwargs):
    rows = np.random.default_rng(0).normal(size=(2, 3, 3))
    with pytest.raises(SdhwError):
        decompose(rows, **kwargs)


@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4])
def test_choose_window_is_the_best_plain_pow2_window(exp_bits):
    width = 2**exp_bits - 2
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = rng.normal(0, 10 ** rng.uniform(-3, 1), (30, 3)) * (rng.random((30, 3)) < 0.8)
        e_lo, e_hi = sd.choose_window(values, exp_bits)
        assert e_hi - e_lo == width, f"seed {seed}"

        def err(hi, values=values):
            return float(np.sum((values - pow2_quantize(values, hi - width, hi)) ** 2))

        top = math.ceil(math.log2(np.abs(values).max()))
        best = min(err(hi) for hi in range(top - 12, top + 4))
        assert err(e_hi) <= best, f"seed {seed}: window [{e_lo}, {e_hi}]"


# ---------------------------------------------------------------------------------------- structural pruning
@pytest.mark.parametrize(("m", "r", "prune"), [(70, 20, 0.3), (32, 9, 0.5), (33, 10, 0.12), (5, 7, 0.9),
                                               (40, 10, 0.37), (64, 30, 0.0)])
def test_structural_mask_drops_weakest_rows_per_group(m, r, prune):
    seed = m * 1000 + r
    rng = np.random.default_rng(seed)
    rows = rng.normal(0, 1, (m, r, 3)) * rng.uniform(0, 2, (1, r, 1))
    rows[:, 0] = 0.0                                          # an all-zero row (like FC padding)
    keep = structural_mask(rows, prune)
    assert keep.shape == (m, r) and keep.dtype == bool
    n_drop = round(prune * r)
    for f0 in range(0, m, PRUNE_GROUP):
        group = range(f0, min(f0 + PRUNE_GROUP, m))
        msg = f"seed {seed}: group at filter {f0}"
        for f in group:
            assert np.array_equal(keep[f], keep[f0]), msg           # same rows for every filter of a group
        dropped = [i for i in range(r) if not keep[f0, i]]
        assert len(dropped) == n_drop, msg
        strength = [sum(abs(float(rows[f, i, j])) for f in group for j in range(3)) for i in range(r)]
        kept = [i for i in range(r) if keep[f0, i]]
        if dropped:
            assert 0 in dropped, msg                                  # the zero row goes first
            assert max(strength[i] for i in dropped) <= min(strength[i] for i in kept), msg


def test_structural_mask_groups_are_independent():
    rows = np.ones((64, 4, 3))
    rows[:32, 1] = 0.1          # first group: row 1 weakest
    rows[32:, 3] = 0.1          # second group: row 3 weakest
    keep = structural_mask(rows, 0.25)
    assert keep[:32].tolist() == [[True, False, True, True]] * 32
    assert keep[32:].tolist() == [[True, True, True, False]] * 32
    keep8 = structural_mask(rows, 0.25, group=8)
    assert np.array_equal(keep8, keep)


@pytest.mark.parametrize("prune", [-0.1, 1.0, 1.5, float("nan")])
def test_structural_mask_rejects_bad_ratio(prune):
    with pytest.raises(SdhwError):
        structural_mask(np.ones((2, 3, 3)), prune)
