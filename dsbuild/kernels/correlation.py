"""fairlearn's CorrelationRemover, fitted from mergeable moments instead of the whole matrix.

fairlearn solves ``lstsq(S - mean(S), Z)`` on the full data. The same coefficients come
from the normal equations ``C_ss β = C_sz``, where ``C`` is the centred cross-product
matrix of ``[S, Z]``. ``C`` merges exactly across partitions (Chan et al.'s pairwise
update), and centring per partition keeps it accurate for large-valued features, so
the result equals fairlearn's to ~1e-9 (relative; the coefficients are rounded to 32
bits so that they do not depend on the partitioning) while memory is O(columns²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsbuild.kernels.moments import round_bits


@dataclass
class Moments:
    """Count, means and centred cross products of the columns of a matrix."""

    n: int
    mean: np.ndarray
    cross: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if len(x) == 0:
            k = x.shape[1]
            return cls(0, np.zeros(k), np.zeros((k, k)))
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)

    def merge(self, other: Moments) -> Moments:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        cross = self.cross + other.cross + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, cross)

    def covariance(self) -> np.ndarray:
        return self.cross / max(self.n - 1, 1)


def coefficients(moments: Moments, n_sensitive: int) -> tuple[np.ndarray, np.ndarray]:
    """(sensitive means, β) for moments of ``[S, Z]`` with S in the first columns.

    β is the minimum-norm least-squares solution, as ``numpy.linalg.lstsq`` gives
    fairlearn; where S is rank deficient the projection ``S_c β`` is still unique.
    """
    s = n_sensitive
    c_ss = moments.cross[:s, :s]
    c_sz = moments.cross[:s, s:]
    if s == 0:
        return np.zeros(0), np.zeros((0, moments.cross.shape[0]))
    scale = np.sqrt(np.clip(np.diag(c_ss), 0, None))
    scale[scale == 0] = 1.0
    scaled = c_ss / np.outer(scale, scale)
    beta_scaled = np.linalg.pinv(scaled, rcond=1e-12, hermitian=True) @ (c_sz / scale[:, None])
    return moments.mean[:s].copy(), beta_scaled / scale[:, None]


class CorrelationRemover:
    """Linear removal of the sensitive columns' correlation with the others.

    ``alpha`` as in fairlearn: 1 removes all of it, 0 none; the output is
    ``alpha · filtered + (1 − alpha) · original``. Unlike fairlearn, ``fit`` takes
    :class:`Moments` (one per partition, merged), and the sensitive columns are not part
    of the transformed output.
    """

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, moments: Moments, n_sensitive: int) -> CorrelationRemover:
        """Coefficients rounded to 32 significant bits: moments merged in another order
        (another partitioning) differ in their last bits, and so did every changed value."""
        self.n_sensitive_ = n_sensitive
        mean, beta = coefficients(moments, n_sensitive)
        self.sensitive_mean_, self.beta_ = round_bits(mean, 32), round_bits(beta, 32)
        return self

    def transform(self, sensitive: np.ndarray, features: np.ndarray) -> np.ndarray:
        s = np.asarray(sensitive, dtype=np.float64).reshape(len(features), -1)
        z = np.asarray(features, dtype=np.float64)
        # alpha · (z − shift) + (1 − alpha) · z, with one temporary instead of three
        shift = (s - self.sensitive_mean_) @ self.beta_
        shift *= self.alpha
        return z - shift
