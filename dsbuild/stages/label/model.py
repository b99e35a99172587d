"""The label model, method by method, over batches of votes; shared by both stages.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dsbuild.kernels import crowd
from dsbuild.records import record_uniform

LOWEST_SHOWN = 20


@dataclass(frozen=True)
class LabelModel:
    """What one method does in its rounds; shared by both stages, picklable for workers."""

    method: str
    n_classes: int
    n_annotators: int
    tol: float = 1e-5
    max_iter: int = 100
    smoothing: float = 0.0
    warm_start: int = 0

    @property
    def iterative(self) -> bool:
        return self.method in ("dawid_skene", "one_coin_dawid_skene", "glad")

    def _ds(self):
        if self.method == "glad":
            return crowd.Glad(self.n_classes, self.n_annotators, tol=self.tol, max_iter=self.max_iter)
        return crowd.DawidSkene(
            self.n_classes, self.n_annotators, one_coin=self.method == "one_coin_dawid_skene", tol=self.tol, max_iter=self.max_iter,
            smoothing=self.smoothing, warm_start=self.warm_start,
        )

    def stats(self, votes: crowd.Votes, state: dict | None) -> dict:
        if self.iterative:
            return self._ds().stats(votes, state)
        return crowd.agreement_stats(votes, crowd.majority_vote(votes)[1])

    def finalize(self, stats: dict, previous: dict | None = None) -> dict:
        if self.iterative:
            return self._ds().finalize(stats, previous)
        return {"skill": crowd.agreement_skill(stats), "votes": stats["votes"]}

    def converged(self, old: dict | None, new: dict) -> bool:
        return self._ds().converged(old, new)

    def posteriors(self, votes: crowd.Votes, state: dict) -> np.ndarray:
        if self.iterative:
            return self._ds().posteriors(votes, state)
        weights = state["skill"] if self.method == "wawa" else None
        return crowd.majority_vote(votes, weights)[1]


def fit_rounds(model: LabelModel, fit_round, shapes_fit) -> tuple[dict, dict, int, bool]:
    """(state, first-round stats, rounds, converged): rounds of ``shapes_fit(round_fn, state)``.

    The first round also carries method-free counts (gold answers, duplicates).
    """
    first = shapes_fit(functools.partial(fit_round, model=model, first=True), None)
    state = model.finalize(first)
    rounds, done = 1, True
    if model.iterative:
        previous = None
        for _ in range(model.max_iter):
            new = model.finalize(shapes_fit(functools.partial(fit_round, model=model, first=False), state), state)
            rounds += 1
            done = model.converged(previous, new)
            previous = state = new
            if done:
                break
    return state, first, rounds, done


def tie_draws(probas: np.ndarray, item_ids, seed: int, stage: str, ties: str) -> np.ndarray | None:
    """Per-item uniform draws that break ties, computed only for tied items."""
    if ties == "first" or len(probas) == 0:
        return None
    best = probas.max(axis=1, keepdims=True)
    tied = ((probas >= best - 1e-12 * np.maximum(1.0, best)).sum(axis=1)) > 1
    draws = np.zeros(len(probas))
    if tied.any():
        draws[tied] = record_uniform(seed, stage, np.asarray(item_ids, dtype=object)[tied])
    return draws


def annotator_table(names, state: dict, first: dict) -> pd.DataFrame:
    votes = first["votes"]
    gold_votes = first["gold_votes"]
    with np.errstate(invalid="ignore", divide="ignore"):
        gold_acc = np.where(gold_votes > 0, first["gold_right"] / np.maximum(gold_votes, 1), np.nan)
    return pd.DataFrame(
        {
            "annotator": pd.Series(list(names), dtype=object).astype(str),
            "votes": votes.astype(np.int64),
            "skill": state["skill"],
            "gold_votes": gold_votes.astype(np.int64),
            "gold_accuracy": gold_acc,
        }
    )


def annotator_summary(table: pd.DataFrame) -> dict:
    skill = table["skill"].dropna()
    shown = table.sort_values(["skill", "annotator"], na_position="first").head(LOWEST_SHOWN)
    return {
        "count": int(len(table)),
        "single_answer": int((table["votes"] == 1).sum()),
        "skill_quantiles": {str(q): round(float(skill.quantile(q)), 4) for q in (0.05, 0.25, 0.5, 0.75, 0.95)} if len(skill) else {},
        "lowest_skill": [
            {k: (None if isinstance(v, float) and np.isnan(v) else (round(v, 4) if isinstance(v, float) else v)) for k, v in row.items()}
            for row in shown.astype(object).to_dict("records")
        ],
        "with_gold": int((table["gold_votes"] > 0).sum()),
    }


def write_labels(part: pd.DataFrame, out: str, classes, codes: np.ndarray, confidence: np.ndarray, keep_old: bool) -> None:
    """The chosen label (code -1: none) and its confidence into ``out`` and
    ``<out>_confidence``; rows without a label keep ``out``'s old value if asked."""
    labeled = codes >= 0
    values = classes.decode(codes)
    values.index = part.index
    if out in part.columns and keep_old:
        values = values.astype(object).where(labeled, part[out].astype(object))
    part[out] = values
    part[f"{out}_confidence"] = np.where(labeled, confidence, np.nan)


def _jsonable(v):
    return v.item() if isinstance(v, np.generic) else v
