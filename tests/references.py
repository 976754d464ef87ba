"""NumPy references shared by the tests: scalar float64 transcriptions of the formulas in
shared/REFERENCES.md (one definition each; the test files import them from here)."""

import math

import numpy as np


def np_soft(z, t):
    """sign(z) max(|z| - t, 0), entry by entry."""
    out = []
    for v in np.asarray(z, np.float64).ravel():
        out.append(math.copysign(max(abs(v) - t, 0.0), v) if abs(v) > t else 0.0)
    return np.array(out).reshape(np.shape(z))


def np_soft_complex(z, t):
    """z max(1 - t/|z|, 0): shrinks the modulus, keeps the phase."""
    out = []
    for v in np.asarray(z, np.complex128).ravel():
        a = abs(v)
        out.append(v * max(1.0 - t / a, 0.0) if a > 0 else 0j)
    return np.array(out).reshape(np.shape(z))


def np_elastic(z, t, r, nonnegative=False):
    """S_t(z) / (1 + r), S the soft (or non-negative) threshold."""
    out = []
    for v in np.asarray(z, np.float64).ravel():
        s = max(v - t, 0.0) if nonnegative else math.copysign(max(abs(v) - t, 0.0), v)
        out.append(s / (1.0 + r))
    return np.array(out).reshape(np.shape(z))


def _groups(z, axis):
    """Index tuples selecting each group: all entries sharing the indices outside `axis`."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % z.ndim for a in axes)
    kept = [d for d in range(z.ndim) if d not in axes]
    for idx in np.ndindex(*[z.shape[d] for d in kept]):
        sl = [slice(None)] * z.ndim
        for d, i in zip(kept, idx, strict=True):
            sl[d] = i
        yield tuple(sl)


def np_group_norms(w, axis):
    """||w_g||_2 for each group, looping over the kept indices."""
    w = np.asarray(w, np.float64)
    return np.array([math.sqrt(sum(float(v) ** 2 for v in w[g].ravel())) for g in _groups(w, axis)])


def np_group(z, t, axis):
    """w_g max(0, 1 - t / ||w_g||) group by group, groups = all indices outside `axis`."""
    z = np.asarray(z, np.float64)
    out = np.zeros_like(z)
    for g in _groups(z, axis):
        norm = math.sqrt(sum(float(v) ** 2 for v in z[g].ravel()))
        out[g] = z[g] * max(0.0, 1.0 - t / norm) if norm > 0 else 0.0
    return out


def np_group_cols(z, t):
    """The group prox with one group per column of a matrix (axis=0)."""
    return np_group(z, t, 0)


def np_l1(leaves, strengths):
    """sum_l strength_l * sum_i |w_li| in float64, one strength per leaf."""
    return sum(
        s * np.sum(np.abs(np.asarray(w, np.float64)))
        for w, s in zip(leaves, strengths, strict=True)
    )


def np_project_l1_ball(v, radius):
    """Euclidean projection onto {w : ||w||_1 <= radius} (Duchi et al., 2008)."""
    v = np.asarray(v, np.float64)
    if np.sum(np.abs(v)) <= radius:
        return v
    u = np.sort(np.abs(v))[::-1]
    css = np.cumsum(u)
    j = np.arange(1, len(u) + 1)
    rho = np.max(j[u - (css - radius) / j > 0])
    theta = (css[rho - 1] - radius) / rho
    return np.sign(v) * np.maximum(np.abs(v) - theta, 0.0)
