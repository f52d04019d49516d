"""Per-sample KL divergences of a CLIP-style model read as a density-ratio estimator (PAPER.md section 2).

Notation: a target embedding u (an image, or a text) is scored against N reference embeddings v_1..v_N of the
OTHER modality, drawn from that modality's marginal: s_j = a * <u, v_j>, a = exp(logit_scale) (always passed in).
With pi = softmax(s) (the self-normalised estimate of p(y|x) on the reference set) and the uniform distribution
U_N on the references (the estimate of p(y)):

    lse      = logsumexp_j s_j
    mean_s   = (1/N) sum_j s_j                      = a * <u, vbar>,   vbar = (1/N) sum_j v_j
    D_KL(u)  = KL(pi || U_N) = sum_j pi_j s_j - (lse - log N) = log N - H(pi)      in [0, log N]
    D_KLR(u) = KL(U_N || pi) = lse - log N - mean_s                               >= 0
    log r(u, y) = s(u, y) - lse + log N   (the self-normalised log density ratio; see core/scores.py)

Every quantity is invariant to adding one constant to all s_j of a row (the SigLIP bias b cancels).

Streaming form used by the chunked engine. Scores of one row arrive in column blocks; we keep, per row,

    m = running max of s_j,   A = sum_j exp(s_j - m),   B = sum_j exp(s_j - m) * (s_j - m)

and merge a block with block max mx, A_t, B_t (taken relative to the new max m' = max(m, mx)) by

    c  = exp(m - m')
    A' = c * A + A_t
    B' = c * (B + A * (m - m')) + B_t          (because s_j - m' = (s_j - m) + (m - m'))

At the end  lse = m + log A,  H(pi) = log A - B / A,  D_KL = log N + B / A - log A.  This last form has no
cancellation between two large numbers (B/A <= 0 and log A in [0, log N] are both O(log N)), unlike
sum_j pi_j s_j - lse + log N, which subtracts two O(a) numbers.

mean_s is not accumulated from the score blocks: sum_j s_j = a * <u, sum_j v_j>, so mean_s = a * <u, vbar> is
computed exactly in float64 from the reference mean (one (M, d) @ (d,) product), saving a pass over every block.

Second-order (exponential-family) forms, D_C and D_W, are in `second_order_stats`; the derivation of their 1/2 is
there.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

__all__ = [
    "DEFAULT_BUDGET_ELEMS",
    "LOG_FLOOR",
    "kl_against_reference",
    "kl_from_scores",
    "reference_moments",
    "second_order_stats",
    "conformity",
    "plan_chunks",
]

#: Default cap on the number of elements of one score block (rows x columns). 2**24 float32 = 64 MiB per buffer.
DEFAULT_BUDGET_ELEMS: int = 2**24
#: Default block shape when the budget allows it (`plan_chunks`). Measured on a 2-core EPYC (32 MiB L3): 1024 x 4096
#: float32 blocks keep the two block buffers (scores, exp; 16 MiB each) mostly in L3, which keeps the element-wise
#: passes after the matmul cheap, while the matmul still runs at full speed; see bench/bench_kl.py.
DEFAULT_ROW_CHUNK: int = 1024
DEFAULT_COL_CHUNK: int = 4096
#: Shifted scores below this are clamped before exp. exp(-80) = 1.8e-35: since the row maximum contributes
#: exp(0) = 1 to A, the clamp changes A and B by < N * 80 * exp(-80) relative (< 1e-24 for N < 1e9), far below
#: float32/float64 resolution. It exists because torch's float32 exp takes a ~10x slower scalar path for inputs
#: whose result underflows (below about -87); numpy's exp does not, so the numpy kernel skips it.
LOG_FLOOR: float = -80.0

Backend = Literal["torch", "numpy"]


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _check_2d(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, d), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a floating array, got dtype {x.dtype}")
    return x


def _check_scale(a) -> float:
    a = float(a)
    if not math.isfinite(a):
        raise ValueError(f"the logit scale a = exp(logit_scale) must be finite, got {a!r}")
    return a


def plan_chunks(m: int, n: int, budget_elems: int = DEFAULT_BUDGET_ELEMS,
                row_chunk: int | None = None, col_chunk: int | None = None) -> tuple[int, int]:
    """Block shape (rows, cols) for an (m, n) score matrix with rows * cols <= budget_elems.

    rows = min(m, row_chunk or DEFAULT_ROW_CHUNK, budget_elems); cols = min(n, col_chunk or DEFAULT_COL_CHUNK,
    budget_elems // rows). When the defaults are used and the budget allows more columns than the default, the
    default column count is kept (blocks that fit in cache are faster than bigger ones); an explicit col_chunk
    is honoured up to the budget.
    """
    budget_elems = int(budget_elems)
    if budget_elems < 1:
        raise ValueError(f"budget_elems must be >= 1, got {budget_elems}")
    if row_chunk is not None and int(row_chunk) < 1:
        raise ValueError(f"row_chunk must be >= 1, got {row_chunk}")
    if col_chunk is not None and int(col_chunk) < 1:
        raise ValueError(f"col_chunk must be >= 1, got {col_chunk}")
    rows = max(1, min(max(m, 1), int(row_chunk or DEFAULT_ROW_CHUNK), budget_elems))
    cols = max(1, min(max(n, 1), int(col_chunk or DEFAULT_COL_CHUNK), budget_elems // rows))
    assert rows * cols <= budget_elems
    return rows, cols


class _RowState:
    """Running (m, A, B) of the streaming logsumexp / softmax-weighted sum for a block of rows (float64)."""

    __slots__ = ("m", "A", "B")

    def __init__(self, rows: int):
        self.m = np.full(rows, -np.inf)
        self.A = np.zeros(rows)
        self.B = np.zeros(rows)

    def new_max(self, block_max: np.ndarray) -> np.ndarray:
        # (rows,) ; the block scores get shifted by this before exp
        return np.maximum(self.m, block_max)

    def merge(self, m_new: np.ndarray, a_t: np.ndarray, b_t: np.ndarray) -> None:
        """Merge one block whose A_t, B_t were taken relative to m_new (see the module docstring)."""
        with np.errstate(invalid="ignore", over="ignore"):
            # rows still at m = -inf have A = B = 0: use a zero shift there (0 * -inf would be NaN)
            delta = np.where(np.isneginf(self.m), 0.0, self.m - m_new)  # (rows,) <= 0
            c = np.exp(delta)
            self.B = c * (self.B + self.A * delta) + b_t
            self.A = c * self.A + a_t
        self.m = m_new

    def finish(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (lse, d_kl) for n columns seen."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_a = np.log(self.A)
            lse = self.m + log_a
            d_kl = math.log(n) + self.B / self.A - log_a
        return lse, d_kl


def _block_numpy(S: np.ndarray, E: np.ndarray, state: _RowState) -> None:
    """Fold one score block S (rows, cols), overwritten, into state. E is a scratch buffer of S's shape."""
    mx = S.max(axis=1)  # (rows, cols) -> (rows,)
    m_new = state.new_max(mx.astype(np.float64))
    np.subtract(S, m_new.astype(S.dtype)[:, None], out=S)  # t_ij = s_ij - m_i <= 0
    np.exp(S, out=E)  # e_ij = exp(t_ij)
    a_t = E.sum(axis=1).astype(np.float64)  # (rows,)
    b_t = np.einsum("ij,ij->i", E, S).astype(np.float64)  # (rows,)  sum_j e_ij t_ij
    state.merge(m_new, a_t, b_t)


def _block_torch(S: torch.Tensor, E: torch.Tensor, state: _RowState) -> None:
    """torch twin of _block_numpy (same arithmetic, plus the LOG_FLOOR clamp explained above).

    The row dot sum_j e_ij t_ij is torch.linalg.vecdot (a fused multiply-reduce); batched matmul
    (m,1,n)@(m,n,1) was 3x slower, as was einsum."""
    mx = S.amax(dim=1)  # (rows, cols) -> (rows,)
    m_new = state.new_max(mx.numpy().astype(np.float64))
    # m_new is a max of values of S's dtype (or -inf/NaN), so the cast below is exact
    S.sub_(torch.from_numpy(m_new).to(S.dtype)[:, None]).clamp_(min=LOG_FLOOR)
    torch.exp(S, out=E)
    a_t = E.sum(dim=1).numpy().astype(np.float64)  # (rows,)
    b_t = torch.linalg.vecdot(E, S, dim=1).numpy().astype(np.float64)  # (rows,)
    state.merge(m_new, a_t, b_t)


def kl_from_scores(scores, col_chunk: int | None = None) -> dict[str, np.ndarray]:
    """D_KL, D_KLR, lse and mean_s of each row of an explicit score matrix (M, N), in float64.

    The lower-level form of `kl_against_reference` for when scores are already at hand (tests, small sets).
    `col_chunk` streams the columns in blocks through the same online merge as the engine (None: one block).
    Rows containing NaN give NaN; +inf scores are not supported.
    """
    S = np.array(scores, dtype=np.float64, copy=True)
    if S.ndim != 2 or S.shape[1] == 0:
        raise ValueError(f"scores must be (M, N) with N >= 1, got shape {S.shape}")
    M, N = S.shape
    step = N if col_chunk is None else max(1, int(col_chunk))
    state = _RowState(M)
    for j in range(0, N, step):
        block = S[:, j:j + step].copy()  # (M, n_j)
        _block_numpy(block, np.empty_like(block), state)
    lse, d_kl = state.finish(N)
    mean_s = S.mean(axis=1)  # (M,)
    return {"d_kl": d_kl, "d_klr": lse - math.log(N) - mean_s, "lse": lse, "mean_s": mean_s}


def kl_against_reference(
    targets,
    refs,
    a: float,
    *,
    budget_elems: int = DEFAULT_BUDGET_ELEMS,
    dtype=np.float64,
    row_chunk: int | None = None,
    col_chunk: int | None = None,
    backend: Backend = "numpy",
) -> dict[str, np.ndarray]:
    """Chunked per-target D_KL and D_KLR of `targets` (M, d) against a reference set `refs` (N, d).

    For each target u with s_j = a * <u, v_j> over the N references (module docstring for the derivations):

        lse    = logsumexp_j s_j
        mean_s = (1/N) sum_j s_j = a * <u, vbar>
        d_kl   = sum_j pi_j s_j - (lse - log N) = log N - H(pi)    in [0, log N]     (pi = softmax(s))
        d_klr  = lse - log N - mean_s          = KL(Uniform_N || pi) >= 0

    Returns {"d_kl", "d_klr", "lse", "mean_s"}, each a float64 array (M,). lse and mean_s let the log-ratio
    functions of core/scores.py reuse this ONE pass: log r = s_pair - lse + log N.

    Inputs may be float16/float32/float64; embeddings are used as given (callers L2-normalise). `a` is the
    model's exp(logit_scale), never assumed. Targets are processed in row blocks and references in column blocks
    with at most `budget_elems` scores per block (see `plan_chunks`); a row's column blocks are merged with the
    streaming logsumexp / softmax-weighted sum, all merges in float64. A target row with a non-finite value
    gives NaN outputs for that row only; non-finite references raise ValueError (they would poison every row).

    dtype: float64 (default) does the matmul and element-wise work in float64 (agrees with an exact reference
    to ~1e-12). float32 is ~2x faster; its error is ~1e-6 * a on lse and ~1e-5 absolute on d_kl for a ~ 100,
    which does not change rankings or thresholds in practice; per-block sums are still accumulated into float64.

    backend: "numpy" (default) or "torch"; both do the same block arithmetic and the identical float64 merge,
    and agree to float rounding. Why numpy by default (measured with bench/bench_kl.py on the 2-core reference
    box, float32, 1024 x 4096 blocks): the matmul itself is as fast or faster in numpy (OpenBLAS sgemm ~10-20%
    above torch/MKL here), and the element-wise passes (max, shift, exp, row sums) cost ~7% of the matmul
    single-threaded in both. The difference is robustness on a shared machine: torch runs each of the ~6
    element-wise ops per block as an OpenMP parallel region whose barrier waits for the slowest thread, so when
    other processes compete for the cores (CI, a laptop running dagster dev) the torch engine fell to 0.38x of
    its matmul bound while numpy, whose element-wise ops are single-threaded, stayed at 0.65x and ran 2x faster
    end to end. Threads: numpy's BLAS uses OPENBLAS_NUM_THREADS (read at import), its element-wise passes one
    thread; the torch backend obeys torch.set_num_threads for everything. Pick "torch" on a dedicated many-core
    machine where parallel element-wise passes pay off.
    """
    dt = _check_dtype(dtype)
    a = _check_scale(a)
    X = _check_2d("targets", targets)
    R = _check_2d("refs", refs)
    if X.shape[1] != R.shape[1]:
        raise ValueError(f"targets have d={X.shape[1]} but refs have d={R.shape[1]}")
    M, N = X.shape[0], R.shape[0]
    if N == 0:
        raise ValueError("refs is empty: a reference set needs N >= 1 rows")
    if backend not in ("torch", "numpy"):
        raise ValueError(f"backend must be 'torch' or 'numpy', got {backend!r}")
    if not np.isfinite(R).all():
        raise ValueError("refs contain non-finite values")

    out = {k: np.empty(M, dtype=np.float64) for k in ("d_kl", "d_klr", "lse", "mean_s")}
    if M == 0:
        return out
    log_n = math.log(N)
    rows, cols = plan_chunks(M, N, budget_elems, row_chunk, col_chunk)

    Rc = np.ascontiguousarray(R, dtype=dt)  # (N, d) in the compute dtype, converted once
    vbar = R.mean(axis=0, dtype=np.float64)  # (d,), accumulated in float64 without a float64 copy of refs
    if backend == "torch":
        Rt = torch.from_numpy(Rc)
        S_buf = torch.empty(rows * cols, dtype=Rt.dtype)  # flat, so every (m, n) view is contiguous
        E_buf = torch.empty(rows * cols, dtype=Rt.dtype)
    else:
        S_np = np.empty(rows * cols, dtype=dt)
        E_np = np.empty(rows * cols, dtype=dt)

    for i0 in range(0, M, rows):
        i1 = min(M, i0 + rows)
        m = i1 - i0
        Xc = np.asarray(X[i0:i1], dtype=dt) * dt.type(a)  # (m, d), the scale folded into the targets
        state = _RowState(m)
        for j0 in range(0, N, cols):
            j1 = min(N, j0 + cols)
            n = j1 - j0
            if backend == "torch":
                S = S_buf[: m * n].view(m, n)
                # (m, d) @ (d, n) -> (m, n);  refs block transposed as a view, no copy
                torch.matmul(torch.from_numpy(Xc), Rt[j0:j1].T, out=S)
                _block_torch(S, E_buf[: m * n].view(m, n), state)
            else:
                S = S_np[: m * n].reshape(m, n)
                np.matmul(Xc, Rc[j0:j1].T, out=S)  # (m, d) @ (d, n) -> (m, n)
                _block_numpy(S, E_np[: m * n].reshape(m, n), state)
        lse, d_kl = state.finish(N)
        mean_s = a * (np.asarray(X[i0:i1], dtype=np.float64) @ vbar)  # (m, d) @ (d,) -> (m,)
        out["lse"][i0:i1] = lse
        out["d_kl"][i0:i1] = d_kl
        out["mean_s"][i0:i1] = mean_s
        out["d_klr"][i0:i1] = lse - log_n - mean_s
    return out


def reference_moments(ref, ddof: int = 0, chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of a reference set (N, d), in float64, streamed over row chunks.

        mean = (1/N) sum_j v_j
        cov  = (1/(N - ddof)) sum_j (v_j - mean)(v_j - mean)^T

    ddof=0 (default) is the covariance of the uniform distribution on the reference set, which is what the
    second-order expansion of D_KL against that set needs (see `second_order_stats`). The authors' code uses
    np.cov, i.e. ddof=1: a factor N/(N-1), irrelevant for rankings.
    """
    V = _check_2d("ref", ref)
    N, d = V.shape
    if N - ddof <= 0:
        raise ValueError(f"reference_moments needs N > ddof rows, got N={N}, ddof={ddof}")
    step = max(1, int(chunk_rows))
    total = np.zeros(d)
    for i in range(0, N, step):
        total += V[i:i + step].astype(np.float64).sum(axis=0)
    mean = total / N  # (d,)
    cov = np.zeros((d, d))
    for i in range(0, N, step):
        D = V[i:i + step].astype(np.float64) - mean  # (n, d)
        cov += D.T @ D  # (d, n) @ (n, d) -> (d, d)
    cov /= N - ddof
    return mean, (cov + cov.T) / 2.0


def second_order_stats(
    targets,
    mean_same,
    cov_other,
    a: float,
    *,
    half: bool = True,
    chunk_rows: int = 65536,
) -> dict[str, np.ndarray]:
    """Second-order (exponential-family) approximations of D_KL: {"d_c": (M,), "d_w": (M,)} in float64.

        d_w(u) = f * a^2 * (u - mean_u)^T Cov_v (u - mean_u)     (Cov_v: covariance of the OTHER modality)
        d_c(u) = f * a^2 * ||u - mean_u||^2                      (the same with Cov_v replaced by I)
        f = 1/2 if half else 1                                  (mean_u: mean of the SAME modality as u)

    Where the 1/2 comes from. With theta = a * u, the model's conditional on the reference set is the
    exponential family pi_theta(j) = exp(<theta, v_j>) / (N exp(F(theta))), F(theta) = log (1/N) sum_j
    exp(<theta, v_j>), sufficient statistic v_j, base measure Uniform_N. The KL between two members is the Bregman
    divergence of F:
        KL(pi_theta || pi_theta0) = F(theta0) - F(theta) + <theta - theta0, grad F(theta)>
                                  = (1/2) dtheta^T hess F(theta0) dtheta + O(|dtheta|^3),
        hess F(theta0) = Cov_{pi_theta0}(v).
    Take theta0 = a * mean_u with pi_theta0 = p(y) = Uniform_N (exact when the mean direction scores every
    reference equally, <mean_u, v_j> = const; approximately so in general). Then Cov_{pi_theta0}(v) = Cov_v of
    the reference set (ddof=0, `reference_moments`), dtheta = a (u - mean_u), and
        D_KL(u) = (1/2) a^2 (u - mean_u)^T Cov_v (u - mean_u) + O(a^3 |u - mean_u|^3)
    (D_KLR has the same second-order term: KL is symmetric to second order).
    half=True is this approximation: tests/core/test_kl.py::test_half_factor_matches_exact_kl shows
    d_w / D_KL(exact, chunked) -> 1 as u -> mean_u (and -> 2 with half=False). The authors' code
    (information_gain.py, modes CENTERIZED/WHITEN) omits the 1/2 AND the a^2 and uses np.cov (ddof=1);
    half=False with a=1 and ddof=1 moments reproduces it. Rankings are identical for every choice.

    `half` scales d_c too: d_c is the same quadratic form with Cov_v = I (exact when the other modality is
    isotropic with unit variance per direction), so the two stay comparable. For unit-norm u, d_c is an exact
    affine, decreasing function of `conformity` (see there).
    """
    a = _check_scale(a)
    X = _check_2d("targets", targets)
    mu = np.asarray(mean_same, dtype=np.float64).reshape(-1)  # (d,)
    C = np.asarray(cov_other, dtype=np.float64)  # (d, d)
    d = X.shape[1]
    if mu.shape != (d,) or C.shape != (d, d):
        raise ValueError(f"mean_same must be ({d},) and cov_other ({d}, {d}); got {mu.shape} and {C.shape}")
    f = (0.5 if half else 1.0) * a * a
    M = X.shape[0]
    d_c = np.empty(M)
    d_w = np.empty(M)
    step = max(1, int(chunk_rows))
    for i in range(0, M, step):
        D = X[i:i + step].astype(np.float64) - mu  # (m, d)
        d_c[i:i + step] = f * np.einsum("ij,ij->i", D, D)  # (m,)
        d_w[i:i + step] = f * np.einsum("ij,ij->i", D @ C, D)  # (m, d) @ (d, d) -> (m, d) -> (m,)
    return {"d_c": d_c, "d_w": d_w}


def conformity(u, mean_u) -> np.ndarray:
    """Cosine of each row of u (M, d) to the mean vector mean_u (d,): conf(u) = <u, m> / (||u|| ||m||), float64.

    Relation to D_C (module `second_order_stats`, f = 1/2 or 1): for unit-norm u,
        ||u - m||^2 = 1 - 2 <u, m> + ||m||^2 = 1 + ||m||^2 - 2 ||m|| conf(u),
        D_C(u) = f a^2 (1 + ||m||^2) - 2 f a^2 ||m|| conf(u),
    an exact affine map with negative slope, so Pearson(D_C, conformity) = -1 over any set of unit vectors.
    The other common definition, the mean cosine to a reference set {u_i} of unit vectors with mean m, is
    (1/K) sum_i <u, u_i> = <u, m> = ||m|| conf(u): the same ranking, also affine in D_C. If u is not unit-norm
    (e.g. float16 storage) the relation holds only approximately; normalise first.
    Rows with zero norm give NaN.
    """
    U = _check_2d("u", u).astype(np.float64)
    m = np.asarray(mean_u, dtype=np.float64).reshape(-1)  # (d,)
    if m.shape != (U.shape[1],):
        raise ValueError(f"mean_u must have shape ({U.shape[1]},), got {m.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return (U @ m) / (np.linalg.norm(U, axis=1) * np.linalg.norm(m))  # (M, d) @ (d,) -> (M,)
