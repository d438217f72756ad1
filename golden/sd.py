"""The SmartDeal decomposition ``W ~= Ce . B`` and the rebuild rule the hardware implements.

Geometry
--------
Every decomposable weight is viewed as rows of three taps, per output filter ``m``:

* conv k x k with k = 3, weight ``(M, C, 3, 3)``: row ``i = 3*c + r`` is kernel row ``r`` of input
  channel ``c`` (``W.reshape(M, 3*C, 3)``);
* FC ``(M, K)`` and conv 1x1 ``(M, C, 1, 1)``: the input vector is zero-padded to a multiple of 3 and
  cut into consecutive triplets.

A *block* is a group of ``basis_group`` consecutive output filters times ``block_rows`` consecutive
rows; each block has its own 3x3 basis ``B``. Rows are the unit of structural sparsity: a zero row
of ``Ce`` costs no storage beyond its bitmap bit and no MAC cycle.

Codes
-----
A coefficient is stored as a signed code ``c`` in ``[-(2**E - 1), 2**E - 1]`` (``E`` = exponent bits),
packed as 1 sign bit + ``E`` magnitude bits. ``c = 0`` means zero; otherwise its value is
``sign(c) * 2**(|c| - 1)``. The layer's exponent window ``[e_lo, e_lo + 2**E - 2]`` is folded into
the basis scale, so codes are relative exponents.

Rebuild rule (bit-exact contract with the rebuild unit)
-------------------------------------------------------
For a row of codes ``c_0, c_1, c_2`` and its block basis ``B`` (int8)::

    exact_j = sum_k sign(c_k) * (B[k, j] << (|c_k| - 1))          (exact integer, no rounding)
    w_j     = clamp((exact_j + (1 << (wshift - 1))) >> wshift, -(2**(wb-1) - 1), 2**(wb-1) - 1)

with ``>>`` an arithmetic shift (round half up), no rounding when ``wshift = 0``, and ``wb`` the
MAC weight width (8 by default). The MAC weight ``w`` has the layer's weight scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import SdhwError

UPSTREAM_BLOCK_ROWS = 192
PRUNE_GROUP = 32          # output filters that share one structural-sparsity decision (upstream: 32)


# --------------------------------------------------------------------------------------------- geometry
def to_rows(weight: np.ndarray) -> np.ndarray:
    """View an FC ``(M, K)`` or conv ``(M, C, k, k)`` (k in 1, 3) weight as ``(M, R, 3)`` rows."""
    w = np.asarray(weight)
    m = w.shape[0]
    if w.ndim == 4 and w.shape[2:] == (3, 3):
        return w.reshape(m, 3 * w.shape[1], 3)
    flat = w.reshape(m, -1)
    k = flat.shape[1]
    pad = (-k) % 3
    if pad:
        flat = np.concatenate([flat, np.zeros((m, pad), dtype=flat.dtype)], axis=1)
    return flat.reshape(m, -1, 3)


def rows_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``to_rows(w).shape`` for a weight of ``shape``, computed without allocating it."""
    if len(shape) == 4 and tuple(shape[2:]) == (3, 3):
        return shape[0], 3 * shape[1], 3
    return shape[0], -(-int(np.prod(shape[1:], dtype=np.int64)) // 3), 3


def from_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_rows` for a weight of ``shape`` (drops the FC padding)."""
    m = shape[0]
    n = int(np.prod(shape[1:]))
    return rows.reshape(m, -1)[:, :n].reshape(shape)


def block_slices(n_filters: int, n_rows: int, basis_group: int, block_rows: int):
    """Yield ``(group_index, row_block_index, filter_slice, row_slice)`` for every block."""
    for g, f0 in enumerate(range(0, n_filters, basis_group)):
        for b, r0 in enumerate(range(0, n_rows, block_rows)):
            yield g, b, slice(f0, min(f0 + basis_group, n_filters)), slice(r0, min(r0 + block_rows, n_rows))


def n_blocks(n_filters: int, n_rows: int, basis_group: int, block_rows: int) -> tuple[int, int]:
    return -(-n_filters // basis_group), -(-n_rows // block_rows)


# ----------------------------------------------------------------------------------------------- codes
def code_values(codes: np.ndarray) -> np.ndarray:
    """Integer value of each code: 0 or ``sign * 2**(|code| - 1)``."""
    c = np.asarray(codes, dtype=np.int64)
    mag = np.abs(c)
    return np.where(c == 0, 0, np.sign(c) * (np.int64(1) << np.maximum(mag - 1, 0)))


def check_codes(codes: np.ndarray, exp_bits: int) -> None:
    limit = (1 << exp_bits) - 1
    c = np.asarray(codes)
    if c.size and int(np.abs(c).max()) > limit:
        raise SdhwError(f"coefficient code {int(np.abs(c).max())} exceeds the {exp_bits}-bit window (max {limit})")


def pow2_quantize(x: np.ndarray, e_lo: int, e_hi: int) -> np.ndarray:
    """Nearest signed power of two in the linear domain, magnitude clipped to ``[2**e_lo, 2**e_hi]``.

    ``|x|`` in ``[2**(e-1), 2**e)`` rounds down if ``|x| - 2**(e-1) <= 2**e - |x|``, else up (upstream rule);
    magnitudes below ``2**(e_lo - 1)`` (nearer to 0 than to ``2**e_lo``) become 0.
    """
    x = np.asarray(x, dtype=np.float64)
    mag = np.abs(x)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(mag > 0, mag, 1.0))) + 1        # 2**(e-1) <= |x| < 2**e
    lower = np.exp2(e - 1)
    rounded = np.where(mag - lower <= 2 * lower - mag, lower, 2 * lower)
    rounded = np.clip(rounded, 2.0 ** e_lo, 2.0 ** e_hi)
    rounded = np.where(mag < 2.0 ** (e_lo - 1), 0.0, rounded)
    return np.sign(x) * rounded


def pow2_to_codes(q: np.ndarray, e_lo: int) -> np.ndarray:
    """Codes of values produced by :func:`pow2_quantize` with the same ``e_lo``."""
    mag = np.abs(q)
    with np.errstate(divide="ignore"):
        rel = np.where(mag > 0, np.round(np.log2(np.where(mag > 0, mag, 1.0))) - e_lo + 1, 0)
    return (np.sign(q) * rel).astype(np.int8)


# --------------------------------------------------------------------------------------------- rebuild
def rebuild_exact(codes: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Exact integer rebuild of rows: ``codes (..., 3)`` x ``basis (3, 3)`` -> ``(..., 3)`` int64."""
    vals = code_values(codes)
    return vals @ np.asarray(basis, dtype=np.int64)


def round_saturate(exact: np.ndarray, wshift: int, weight_bits: int = 8) -> np.ndarray:
    """Round half up by ``wshift`` bits (arithmetic shift) and saturate symmetrically to ``weight_bits``."""
    x = np.asarray(exact, dtype=np.int64)
    if wshift > 0:
        x = (x + (1 << (wshift - 1))) >> wshift
    qmax = (1 << (weight_bits - 1)) - 1
    return np.clip(x, -qmax, qmax)


@dataclass
class SDWeights:
    """A decomposed weight in integer form: codes, per-block int8 bases and the rebuild shift."""

    shape: tuple[int, ...]             # the original weight shape (FC (M, K) or conv (M, C, k, k))
    codes: np.ndarray                  # int8 (M, R, 3) signed codes
    bases: np.ndarray                  # int8 (n_groups, n_row_blocks, 3, 3)
    exp_bits: int
    basis_group: int
    block_rows: int
    wshift: int
    weight_bits: int = 8

    def rebuild_rows(self) -> np.ndarray:
        """MAC weights as ``(M, R, 3)`` rows, per the rebuild rule."""
        out = np.zeros(self.codes.shape, dtype=np.int64)
        m, r, _ = self.codes.shape
        for g, b, fs, rs in block_slices(m, r, self.basis_group, self.block_rows):
            out[fs, rs] = rebuild_exact(self.codes[fs, rs], self.bases[g, b])
        return round_saturate(out, self.wshift, self.weight_bits)

    def rebuild(self) -> np.ndarray:
        """MAC weights in the original weight shape."""
        return from_rows(self.rebuild_rows(), self.shape)

    @property
    def n_rows(self) -> int:
        return self.codes.shape[0] * self.codes.shape[1]

    @property
    def nonzero_rows(self) -> np.ndarray:
        return np.any(self.codes != 0, axis=2)


#: rows of an exact encoding that share a basis: one per basis row (each row's code picks its own)
EXACT_BLOCK_ROWS = 3


def exact_sd(weights: np.ndarray, exp_bits: int = 1) -> SDWeights:
    """Int8 weights (FC ``(M, K)`` or conv ``(M, C, k, k)``) written exactly as SD: ``rebuild()`` equals them.

    Every filter has its own bases, one per block of three rows, whose basis row ``k`` holds row ``3 b + k``'s
    weights; that row's code is ``+1`` (value 1) in slot ``k`` and 0 elsewhere, and ``wshift`` is 0. An
    all-zero row gets all-zero codes, so it is a zero row the accelerator skips. Storage: 8 bits per weight in
    the bases plus ``3 (1 + exp_bits)`` code bits per row, so this is how an SD accelerator runs a layer kept
    dense, not a compression. -128 has no encoding (weights saturate at +-127): a clear error."""
    w = np.asarray(weights)
    if not np.issubdtype(w.dtype, np.integer):
        raise SdhwError(f"exact SD encoding takes integer weights, not {w.dtype}")
    if w.size and (int(w.min()) < -127 or int(w.max()) > 127):
        raise SdhwError(f"weights outside [-127, 127] (found {int(w.min())}..{int(w.max())}) have no exact SD "
                        "encoding")
    rows = to_rows(w.astype(np.int64))                                   # (M, R, 3)
    m, r, _ = rows.shape
    nb = -(-r // EXACT_BLOCK_ROWS)
    padded = np.zeros((m, nb * EXACT_BLOCK_ROWS, 3), dtype=np.int64)
    padded[:, :r] = rows
    bases = padded.reshape(m, nb, EXACT_BLOCK_ROWS, 3).astype(np.int8)
    slot = np.arange(r) % EXACT_BLOCK_ROWS
    codes = np.zeros((m, r, 3), dtype=np.int8)
    live = np.any(rows != 0, axis=2)                                     # (M, R)
    codes[:, np.arange(r), slot] = live.astype(np.int8)
    return SDWeights(tuple(w.shape), codes, bases, exp_bits, 1, EXACT_BLOCK_ROWS, 0, 8)


# ------------------------------------------------------------------------------------ structural pruning
def structural_mask(rows: np.ndarray, prune: float, group: int = PRUNE_GROUP) -> np.ndarray:
    """Row keep-mask ``(M, R)``: per group of ``group`` filters, drop the weakest ``prune`` fraction of rows.

    A row's strength is its L1 norm summed over the group's filters; all filters of a group drop the
    same rows (vector-wise sparsity), so the hardware can skip them together. Rows already all-zero
    (FC padding, pruned input) count among the dropped ones first.
    """
    if not 0.0 <= prune < 1.0:
        raise SdhwError(f"prune ratio must be in [0, 1), not {prune!r}")
    m, r, _ = rows.shape
    keep = np.ones((m, r), dtype=bool)
    n_drop = int(round(prune * r))
    if n_drop == 0:
        return keep
    for f0 in range(0, m, group):
        strength = np.abs(rows[f0:f0 + group]).sum(axis=(0, 2))
        order = np.argsort(strength, kind="stable")
        keep[f0:f0 + group, order[:n_drop]] = False
    return keep


# -------------------------------------------------------------------------------------- decomposition
@dataclass
class Decomposition:
    """Float result of :func:`decompose`: ``rows ~= Cq . B`` per block, with the error history."""

    cq: np.ndarray                     # (M, R, 3) float powers of two (or 0) inside the window
    bases: np.ndarray                  # (n_groups, n_row_blocks, 3, 3) float
    e_lo: int
    e_hi: int
    iterations: int
    history: list[float] = field(default_factory=list)   # Frobenius error after each accepted iterate

    def reconstruct(self, basis_group: int, block_rows: int) -> np.ndarray:
        out = np.zeros_like(self.cq)
        m, r, _ = self.cq.shape
        for g, b, fs, rs in block_slices(m, r, basis_group, block_rows):
            out[fs, rs] = self.cq[fs, rs] @ self.bases[g, b]
        return out


def choose_window(values: np.ndarray, exp_bits: int) -> tuple[int, int]:
    """Exponent window ``(e_lo, e_hi)`` of ``2**E - 1`` exponents minimising plain pow2 rounding error."""
    mag = np.abs(values[values != 0])
    if mag.size == 0:
        return -(1 << exp_bits) + 2, 0
    top = int(np.ceil(np.log2(mag.max())))
    width = (1 << exp_bits) - 2
    best = None
    for e_hi in range(top - 3, top + 1):
        err = float(np.sum((values - pow2_quantize(values, e_hi - width, e_hi)) ** 2))
        if best is None or err < best[0]:
            best = (err, e_hi)
    return best[1] - width, best[1]


def _lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(a, b, rcond=None)[0]


def decompose(rows: np.ndarray, *, exp_bits: int, keep: np.ndarray | None = None, threshold: float = 0.0,
              basis_group: int = 1, block_rows: int = UPSTREAM_BLOCK_ROWS, max_iter: int = 30,
              window: tuple[int, int] | None = None) -> Decomposition:
    """Alternating least squares: ``rows (M, R, 3) ~= Cq . B`` with ``Cq`` sparse signed powers of two.

    Per block: start from ``B = I``, ``Ce = W``; repeat ``Cq = pow2(Ce)``, ``B = lstsq(Cq, W)``,
    ``Ce = lstsq(B, W)``, zero ``|Ce| < threshold`` and the pruned rows, until ``Cq`` stops changing or
    ``max_iter`` is reached. An iterate is accepted only if it does not increase the block's error,
    so the error history is non-increasing and never worse than plain pow2 rounding of ``W``
    (the ``B = I`` start).
    """
    if exp_bits < 1:
        raise SdhwError(f"exponent bits must be >= 1, not {exp_bits!r}")
    if max_iter < 1:
        raise SdhwError(f"iteration cap must be >= 1, not {max_iter!r}")
    rows = np.asarray(rows, dtype=np.float64)
    m, r, _ = rows.shape
    if keep is None:
        keep = np.ones((m, r), dtype=bool)
    w = np.where(keep[..., None], rows, 0.0)
    e_lo, e_hi = window if window is not None else choose_window(w, exp_bits)
    quant = lambda x: pow2_quantize(x, e_lo, e_hi)      # noqa: E731
    ng, nb = n_blocks(m, r, basis_group, block_rows)
    cq_all = np.zeros_like(w)
    bases = np.zeros((ng, nb, 3, 3))
    blocks = list(block_slices(m, r, basis_group, block_rows))
    errors = np.zeros(len(blocks))
    per_iter = np.zeros((max_iter + 1, len(blocks)))
    iterations = 0
    for n, (g, b, fs, rs) in enumerate(blocks):
        wb = w[fs, rs].reshape(-1, 3)
        kb = np.repeat(keep[fs, rs].reshape(-1, 1), 3, axis=1)
        best_b = np.eye(3)
        best_c = np.where(kb, quant(wb), 0.0)
        best_err = float(np.sum((wb - best_c @ best_b) ** 2))
        per_iter[0, n] = best_err
        ce = wb.copy()
        prev = best_c
        for it in range(1, max_iter + 1):
            basis = _lstsq(prev, wb) if np.any(prev) else np.eye(3)
            ce = _lstsq(basis.T, wb.T).T
            ce[np.abs(ce) < threshold] = 0.0
            ce[~kb] = 0.0
            cq = quant(ce)
            basis = _lstsq(cq, wb) if np.any(cq) else basis
            err = float(np.sum((wb - cq @ basis) ** 2))
            if err <= best_err:
                best_err, best_c, best_b = err, cq, basis
            per_iter[it:, n] = best_err
            iterations = max(iterations, it)
            if np.array_equal(cq, prev):
                break
            prev = cq
        cq_all[fs, rs] = best_c.reshape(fs.stop - fs.start, rs.stop - rs.start, 3)
        bases[g, b] = best_b
        errors[n] = best_err
    history = [float(np.sqrt(per_iter[i].sum())) for i in range(iterations + 1)]
    return Decomposition(cq_all, bases, e_lo, e_hi, iterations, history)


def quantize_decomposition(dec: Decomposition, *, shape: tuple[int, ...], exp_bits: int, basis_group: int,
                           block_rows: int, weight_bits: int = 8,
                           target: np.ndarray | None = None) -> tuple[SDWeights, float]:
    """Integer form of a float decomposition: int8 bases, codes and the rebuild shift.

    Returns the weights and the layer's weight scale ``s_w`` (real weight = ``s_w * w``). ``B`` is
    quantised with one symmetric scale per layer after folding ``2**e_lo`` in; ``wshift`` is chosen to
    minimise the error of the rebuilt MAC weights against ``target`` (default: the decomposition itself).
    """
    codes = pow2_to_codes(dec.cq, dec.e_lo)
    check_codes(codes, exp_bits)
    folded = dec.bases * 2.0 ** dec.e_lo
    s_b = max(float(np.abs(folded).max()), 1e-12) / 127.0
    bases_q = np.clip(np.round(folded / s_b), -127, 127).astype(np.int8)
    rows_ref = dec.reconstruct(basis_group, block_rows) if target is None else np.asarray(target, np.float64)
    best = None
    for wshift in range(0, 2 + (1 << exp_bits) + 4):
        sdw = SDWeights(tuple(shape), codes, bases_q, exp_bits, basis_group, block_rows, wshift, weight_bits)
        s_w = s_b * 2.0 ** wshift
        err = float(np.sum((sdw.rebuild_rows() * s_w - rows_ref) ** 2))
        if best is None or err < best[0]:
            best = (err, sdw, s_w)
    return best[1], best[2]
