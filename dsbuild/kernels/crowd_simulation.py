"""Simulated crowds on real labels: to test and benchmark label aggregation honestly.

Annotators get random confusion matrices; some are spammers (answers independent of
the truth) and some adversarial (they mostly give one fixed wrong class per truth).
Each item gets between ``min_votes`` and ``max_votes`` answers from distinct annotators,
chosen with skewed activity, as real crowds have a few prolific workers and a long tail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_confusions(
    n_annotators: int,
    n_classes: int,
    rng: np.random.Generator,
    *,
    accuracy: tuple[float, float] = (0.55, 0.95),
    spammers: float = 0.15,
    adversaries: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """(confusions ``[a, true, given]``, kind per annotator: 0 honest, 1 spammer, 2 adversary)."""
    k = n_classes
    kind = rng.choice(3, size=n_annotators, p=[1 - spammers - adversaries, spammers, adversaries])
    conf = np.empty((n_annotators, k, k))
    for a in range(n_annotators):
        if kind[a] == 1:
            conf[a] = rng.dirichlet(np.ones(k))[None, :]
            continue
        off = rng.dirichlet(np.ones(k) * 0.5, size=k)
        if kind[a] == 2:
            wrong = (np.arange(k) + rng.integers(1, k)) % k
            off = np.full((k, k), 0.2 / k)
            off[np.arange(k), wrong] += 0.8
            conf[a] = off / off.sum(axis=1, keepdims=True)
            continue
        acc = rng.uniform(*accuracy)
        np.fill_diagonal(off, 0.0)
        off = off / off.sum(axis=1, keepdims=True)
        conf[a] = off * (1 - acc)
        np.fill_diagonal(conf[a], acc)
    return conf, kind


def simulate_annotations(
    truth: np.ndarray,
    n_annotators: int,
    rng: np.random.Generator,
    *,
    min_votes: int = 3,
    max_votes: int = 7,
    confusions: np.ndarray | None = None,
    item_ids=None,
    **confusion_options,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(annotations frame ``item, annotator, label``, confusions, annotator kinds).

    ``truth`` holds class codes 0..K-1; labels come out as the same codes.
    """
    truth = np.asarray(truth, dtype=np.int64)
    k = int(truth.max()) + 1 if confusions is None else confusions.shape[1]
    if confusions is None:
        confusions, kind = random_confusions(n_annotators, k, rng, **confusion_options)
    else:
        kind = np.zeros(len(confusions), dtype=np.int64)
    n = len(truth)
    per_item = rng.integers(min_votes, max_votes + 1, size=n)
    activity = rng.pareto(1.5, size=n_annotators) + 1.0
    activity /= activity.sum()
    total = int(per_item.sum())
    item = np.repeat(np.arange(n), per_item)
    # distinct annotators per item: draw with replacement, then redraw clashes
    annotator = rng.choice(n_annotators, size=total, p=activity)
    for _ in range(50):
        order = np.lexsort((annotator, item))
        clash = np.zeros(total, dtype=bool)
        same = (item[order][1:] == item[order][:-1]) & (annotator[order][1:] == annotator[order][:-1])
        clash[order[1:][same]] = True
        if not clash.any():
            break
        annotator[clash] = rng.integers(0, n_annotators, size=int(clash.sum()))
    cum = confusions[annotator, truth[item]].cumsum(axis=1)
    label = (rng.random(total)[:, None] > cum).sum(axis=1).clip(0, k - 1)
    ids = np.arange(n) if item_ids is None else np.asarray(item_ids)
    frame = pd.DataFrame({"item": ids[item], "annotator": annotator, "label": label})
    return frame, confusions, kind
