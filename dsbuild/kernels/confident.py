"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021), split into mergeable steps.

Given out-of-fold predicted probabilities ``P`` (rows x classes) and the given labels:

1. per-class thresholds ``t_j`` = mean of ``P[:, j]`` over rows labelled j
   (:class:`ConfidentSums`, a sum);
2. the confident joint ``C[i, j]``: rows labelled i whose probability of j reaches ``t_j``
   (the largest such j when several do) (:func:`confident_joint`, a count);
3. calibrate it so row i sums to the count of label i, and prune by noise rate: among
   rows labelled i, the ``C[i, j]`` with the largest margin ``P[:, j] - P[:, i]`` are label
   issues (:func:`prune_counts` then :class:`dsbuild.kernels.topk.LargestPerKey`);
4. a row whose prediction is its given label is never an issue (:func:`agrees_with_label`).

Which of these decide is the *filter* (:data:`FILTERS`, :func:`issues`):

- ``prune_by_noise_rate``: steps 3 and 4, cleanlab 2.x's
  ``find_label_issues(filter_by="prune_by_noise_rate")``, with the same constants and
  rounding: on the same probabilities it flags the same rows (nothing here imports
  cleanlab);
- ``noise_rate``: step 3 alone. When flips all went toward one class the model is biased
  toward it, so most flipped rows are *predicted* as their wrong label and step 4 would
  keep them; the per-class thresholds still count them, and the margin still ranks them;
- ``predicted_neq_given``: step 4 alone, every row whose prediction is not its label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FILTERS = ("prune_by_noise_rate", "noise_rate", "predicted_neq_given")
FUZZ = 1e-6
THRESHOLD_FLOOR = 2 * FUZZ
ABSENT_CLASS_THRESHOLD = 2.0
GRID = 2.0**20


@dataclass
class ConfidentSums:
    """Per given label: how many rows, the sum of their predicted probabilities, how
    many of them the most probable class gets right, and the sums of their probabilities
    and squared probabilities rounded to a grid of 2**-20 (exact in any order below 2**33
    rows), for :meth:`separation`."""

    counts: np.ndarray  # (classes,)
    prob_sums: np.ndarray  # (classes, classes): [given label, predicted class]
    hits: np.ndarray  # (classes,)
    grid_sums: np.ndarray  # (classes, classes)
    grid_squares: np.ndarray  # (classes, classes)

    @classmethod
    def of(cls, probs: np.ndarray, labels: np.ndarray, n_classes: int) -> ConfidentSums:
        labels = np.asarray(labels, dtype=np.int64)
        keep = labels >= 0
        probs, labels = probs[keep], labels[keep]
        sums, grid, squares = (np.zeros((n_classes, n_classes)) for _ in range(3))
        np.add.at(sums, labels, probs)
        np.add.at(grid, labels, _on_grid(probs))
        np.add.at(squares, labels, _on_grid(probs * probs))
        hits = np.bincount(labels[probs.argmax(axis=1) == labels], minlength=n_classes) if len(labels) else np.zeros(n_classes)
        return cls(np.bincount(labels, minlength=n_classes).astype(np.float64), sums, hits.astype(np.float64), grid, squares)

    def merge(self, other: ConfidentSums) -> ConfidentSums:
        return ConfidentSums(self.counts + other.counts, self.prob_sums + other.prob_sums, self.hits + other.hits,
                             self.grid_sums + other.grid_sums, self.grid_squares + other.grid_squares)

    def balanced_accuracy(self) -> float:
        """Mean recall of the most probable class over the classes present: what the
        models know about the labels, whatever the class sizes."""
        present = self.counts > 0
        return float(np.mean(self.hits[present] / self.counts[present])) if present.any() else float("nan")

    def thresholds(self) -> np.ndarray:
        """Expected self-confidence of each class: t_j = mean P[:, j] over rows labelled j."""
        own = np.diagonal(self.prob_sums)
        t = np.divide(own, self.counts, out=np.full_like(own, ABSENT_CLASS_THRESHOLD), where=self.counts > 0)
        return np.clip(t, THRESHOLD_FLOOR, None)

    def separation(self) -> np.ndarray:
        """Per class j, Welch's t statistic of P[:, j] between the rows labelled j and the
        others: how surely the models give their own rows more of it than they give the
        rest. Near 0 where the features say nothing of j (whatever the class's share),
        large where they do, even when no row is *predicted* as j (a class of 4 % whose
        rows get 0.09 and the rest 0.03); NaN where either side has fewer than 2 rows."""
        n_in, n_out = self.counts, self.counts.sum() - self.counts
        own_sum, own_sq = np.diagonal(self.grid_sums), np.diagonal(self.grid_squares)
        out_sum, out_sq = self.grid_sums.sum(axis=0) - own_sum, self.grid_squares.sum(axis=0) - own_sq
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_in, mean_out = own_sum / n_in, out_sum / n_out
            var_in = np.maximum(own_sq - n_in * mean_in**2, 0) / (n_in - 1)
            var_out = np.maximum(out_sq - n_out * mean_out**2, 0) / (n_out - 1)
            t = (mean_in - mean_out) / np.sqrt(var_in / n_in + var_out / n_out + 1e-24)
        return np.where((n_in >= 2) & (n_out >= 2), t, np.nan)


def _on_grid(values: np.ndarray) -> np.ndarray:
    return np.round(values * GRID) / GRID


MIN_SEPARATION = 3.0  # Welch's t of a class's own probability below which its models did not learn it


def unlearned_classes(sums: ConfidentSums, min_rows: int) -> np.ndarray:
    """Classes the models did not learn: fewer rows than ``min_rows`` (the folds: as
    scikit-learn's StratifiedKFold warns, some folds then train on none or one of them),
    or whose rows the models do not surely give more probability of it than the other
    rows (:meth:`ConfidentSums.separation` below ``MIN_SEPARATION``). Such a class's
    threshold says nothing: near 0 for a class of a few rows, so rows of every other class
    reach it and the noise-rate budget counts them as really being it (three rows of a new
    label made the default filter drop 62 of iris's 150 rows), and its own rows are
    predicted as another class merely for being rare. Neither is evidence of a wrong
    label, so the stage judges no row of such a class and flags no row as one. Absent
    classes (no rows) are not listed."""
    separation = sums.separation()
    unlearned = (sums.counts < min_rows) | ~(separation >= MIN_SEPARATION)
    return np.flatnonzero((sums.counts > 0) & unlearned)


def confident_guess(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Each row's confidently predicted class: the one whose probability reaches its
    threshold (the most probable when several do), or -1 when none does."""
    confident = probs >= thresholds - FUZZ
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, probs.argmax(axis=1), confident.argmax(axis=1))
    return np.where(n_confident > 0, guess, -1)


def confident_joint(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(classes, classes) counts of rows by (given label, confidently predicted class)."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = probs.shape[1]
    guess = confident_guess(probs, thresholds)
    use = (guess >= 0) & (labels >= 0)
    cell = labels[use] * n_classes + guess[use]
    return np.bincount(cell, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(np.int64)


def round_preserving_sum(values: np.ndarray) -> np.ndarray:
    """Round to integers whose total is the rounded total, adjusting the values rounded
    furthest from themselves. Equal remainders are common (a calibrated row is a few
    counts times one factor); they are ordered by numpy's default sort, as cleanlab's are,
    so the two pick the same classes on the same machine (the default sort is not stable,
    and its order of ties can differ between numpy builds and CPUs)."""
    values = np.asarray(values, dtype=np.float64)
    ints = np.round(values)
    diff = int(np.round(values.sum()) - ints.sum())
    if diff:
        step = 1 if diff > 0 else -1
        order = np.argsort(values - ints)[::-step]
        ints[order[: abs(diff)]] += step
    return ints.astype(np.int64)


def prune_counts(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """How many rows to flag per (given label i, true class j), in cleanlab 2.x's steps
    and order, so the same probabilities flag the same rows:

    0. each class's own cell counts at least one row (cleanlab's confident joint does);
    1. calibrate: row i rescaled to the number of rows labelled i, the whole to n, and
       rounded keeping row totals;
    2. every given label keeps at least one row on its diagonal: what that adds is taken
       evenly from the label's non-zero flips, and the result truncated to whole rows.
    """
    joint = np.asarray(joint, dtype=np.float64).copy()
    np.fill_diagonal(joint, np.maximum(np.diagonal(joint), 1))  # cleanlab's compute_confident_joint: a row of its own per class
    label_counts = np.asarray(label_counts, dtype=np.float64)
    calibrated = joint / np.clip(joint.sum(axis=1, keepdims=True), 1e-100, None) * label_counts[:, None]
    calibrated = calibrated / max(calibrated.sum(), 1e-100) * label_counts.sum()
    counts = np.vstack([round_preserving_sum(row) for row in calibrated]).astype(np.float64)
    diagonal = np.diagonal(counts).copy()
    added = np.maximum(diagonal, 1) - diagonal
    flips = np.maximum(np.count_nonzero(counts, axis=1) - 1, 1)
    counts = np.clip(counts - (added / flips)[:, None], 0, None).astype(np.int64)
    np.fill_diagonal(counts, 0)
    counts[label_counts <= 1] = 0
    return counts


def margin_candidates(probs: np.ndarray, labels: np.ndarray, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, key = i * classes + j, margin P[:, j] - P[:, i]) for every row labelled i
    and every class j with a positive budget ``budget[i, j]``."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = probs.shape[1]
    rows, keys, margins = [], [], []
    for i, j in zip(*np.nonzero(budget)):
        r = np.flatnonzero(labels == i)
        rows.append(r)
        keys.append(np.full(len(r), i * n_classes + j))
        margins.append(probs[r, j] - probs[r, i])
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return np.concatenate(rows), np.concatenate(keys), np.concatenate(margins)


def agrees_with_label(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows whose most probable class is the given one (with a small bonus for it)."""
    labels = np.asarray(labels, dtype=np.int64)
    bumped = probs.copy()
    ok = labels >= 0
    bumped[np.flatnonzero(ok), labels[ok]] += FUZZ
    return ok & (bumped.argmax(axis=1) == labels)


def suggested_labels(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The most probable class other than the given one."""
    labels = np.asarray(labels, dtype=np.int64)
    other = probs.copy()
    ok = labels >= 0
    other[np.flatnonzero(ok), labels[ok]] = -np.inf
    return other.argmax(axis=1)


def needs_budget(filter: str) -> bool:
    """Whether the filter uses the noise-rate budget (steps 1-3, three passes in the stage)."""
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; choose from {FILTERS}")
    return filter != "predicted_neq_given"


def issues(filter: str, in_budget: np.ndarray | None, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The label issues under ``filter``, from the rows inside the noise-rate budget
    (``None`` for ``predicted_neq_given``) and the probabilities. Unlabelled rows
    (label -1) are never issues."""
    labels = np.asarray(labels, dtype=np.int64)
    disagrees = (labels >= 0) & ~agrees_with_label(probs, labels)
    if not needs_budget(filter):
        return disagrees
    in_budget = np.asarray(in_budget, dtype=bool) & (labels >= 0)
    return in_budget if filter == "noise_rate" else in_budget & disagrees


def find_label_issues(probs: np.ndarray, labels: np.ndarray, ids=None, filter: str = "prune_by_noise_rate") -> np.ndarray:
    """All steps on one in-memory array: a boolean mask of label issues.

    The stage runs the same steps as mergeable passes; this is for data that fits in
    memory and for comparing with other implementations.
    """
    from dsbuild.kernels.topk import LargestPerKey, within_cut

    labels = np.asarray(labels, dtype=np.int64)
    n_classes = probs.shape[1]
    if not needs_budget(filter):
        return issues(filter, None, probs, labels)
    ids = np.array([f"{i:012d}" for i in range(len(labels))], dtype=object) if ids is None else np.asarray(ids, dtype=object)
    sums = ConfidentSums.of(probs, labels, n_classes)
    budget = prune_counts(confident_joint(probs, labels, sums.thresholds()), sums.counts)
    rows, keys, margins = margin_candidates(probs, labels, budget)
    top = LargestPerKey.of(keys, margins, ids[rows], budget.ravel())
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[rows[within_cut(keys, margins, ids[rows], top.cut())]] = True
    return issues(filter, flagged, probs, labels)
