"""The search for a better `label_issues` default at 10% flips (issue 5), in one process.

Not a ``bench_*`` module: ``python -m benchmarks`` does not run it. It repeats the stage's
steps in memory (the same standardizer, hash-assigned folds, confident-learning kernels and
rounds; on breast_cancer's benchmark split ``drop_last_round`` gives the stage's 57% / 61% of
before 2026-11-30, ``defaults`` its 43% / 66% since), so settings the
stage does not offer can be tried, and reports the share of the poisoning cost won back,
mean ± standard error over poisoning draws. Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.label_issues_search \
        [--data breast_cancer] [--draws 20] [--split test|val] [setting ...]

``--split val`` carves a stratified 30% validation split from the training split
(``random_state=1``) and measures on it instead of the test split.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import train_test_split

from benchmarks.bench_sanitize import accuracy, datasets, poison
from dsbuild.kernels import confident as cl
from dsbuild.kernels.sanitize import quantize
from dsbuild.records import record_seeds
from dsbuild.stages.sanitize import make_model

LR, KNN = ("logistic_regression", {}), ("knn", {})


def _folds(ids, k: int, rep: int) -> np.ndarray:
    name = "label_issues:fold" + (f":{rep}" if rep else "")
    return (record_seeds(0, name, ids) % np.uint64(k)).astype(np.int64)


def oof(Z, y, ids, n_classes, cfg, train):
    """(averaged, per-model) out-of-fold probabilities of every row; models see ``train`` rows."""
    k, reps, models = cfg.get("folds", 5), cfg.get("repeats", 1), cfg.get("models", [LR, KNN])
    probs = np.zeros((len(Z), n_classes))
    per = [np.zeros((len(Z), n_classes)) for _ in models]
    for rep in range(reps):
        folds = _folds(ids, k, rep)
        for f in range(k):
            tr, te = (folds != f) & train, folds == f
            for m, spec in enumerate(models):
                model = spec(0) if callable(spec) else make_model(spec[0], spec[1], 0)
                p = model.fit(Z[tr], y[tr]).predict_proba(Z[te])
                probs[np.ix_(te, model.classes_)] += p / len(models) / reps
                per[m][np.ix_(te, model.classes_)] += p / reps
    return quantize(probs), per


def disagree(p, y):
    return ~cl.agrees_with_label(p, y)


def cj_and_disagree(p, y):
    """In the confident joint's off-diagonal and predicted as another class."""
    guess = cl.confident_guess(p, cl.ConfidentSums.of(p, y, p.shape[1]).thresholds())
    return (guess >= 0) & (guess != y) & disagree(p, y)


def margin(m):
    def rule(p, y):
        other = p.copy()
        other[np.arange(len(y)), y] = -1
        return other.max(1) - p[np.arange(len(y)), y] > m

    return rule


def consensus(need=None):
    def rule(per, y):
        votes = np.array([disagree(p, y) for p in per]).sum(0)
        return votes >= (len(per) if need is None else need)

    rule.per_model = True
    return rule


def label_issues(X, y, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(rows dropped, weights) as the stage's rounds would make them. With two or more
    rounds and ``last_round`` weight (the stage's default since 2026-11-30; the settings
    recorded before it drop) the last round's flags stay, weighted by that round's
    probability of their given label."""
    n = len(y)
    ids = np.array([f"r{i:06d}" for i in range(n)], dtype=object)
    mean, std = X.mean(0), X.std(0)
    Z = (X - mean) / np.where(std > 1e-12 * np.maximum(np.abs(mean), 1), std, 1)
    classes = np.unique(y)
    yi = np.searchsorted(classes, y)
    active, removed, weights = np.arange(n), np.zeros(n, bool), np.ones(n)
    rules = cfg.get("filters", ["noise_rate", "predicted_neq_given"])
    for r, rule in enumerate(rules):
        train = np.zeros(n, bool)
        train[active] = True
        probs, per = oof(Z, yi, ids, len(classes), cfg, train)
        if getattr(rule, "per_model", False):
            hit = rule([p[active] for p in per], yi[active])
        elif callable(rule):
            hit = rule(probs[active], yi[active])
        else:
            hit = cl.find_label_issues(probs[active], yi[active], ids[active], filter=rule)
        if r == len(rules) - 1 and r and cfg.get("last_round") == "weight":
            weights[active[hit]] = probs[active[hit], yi[active[hit]]]
        else:
            removed[active[hit]] = True
        active = active[~hit]
    return removed, weights


SETTINGS = {
    "defaults": {"last_round": "weight"},
    "drop_last_round": {},  # the defaults before 2026-11-30, and the base of every setting below
    "folds10": {"folds": 10},
    "repeats3": {"repeats": 3},
    "folds10_repeats3": {"folds": 10, "repeats": 3},
    "lr_cv_c+knn": {"models": [lambda seed: LogisticRegressionCV(Cs=10, max_iter=1000), KNN]},
    "+hgb": {"models": [LR, KNN, ("hist_gradient_boosting", {})]},
    "+rf": {"models": [LR, KNN, ("random_forest", {})]},
    "+rf50": {"models": [LR, KNN, ("random_forest", {"n_estimators": 50})]},
    "lr+rf": {"models": [LR, ("random_forest", {})]},
    "noise_rate": {"filters": ["noise_rate"]},
    "noise_rate>noise_rate": {"filters": ["noise_rate", "noise_rate"]},
    "noise_rate>prune_by_noise_rate": {"filters": ["noise_rate", "prune_by_noise_rate"]},
    "noise_rate>cj_and_disagree": {"filters": ["noise_rate", cj_and_disagree]},
    "noise_rate>margin0.2": {"filters": ["noise_rate", margin(0.2)]},
    "noise_rate>margin0.4": {"filters": ["noise_rate", margin(0.4)]},
    "noise_rate>both_disagree": {"filters": ["noise_rate", consensus()]},
    "+rf:noise_rate>2_of_3_disagree": {"models": [LR, KNN, ("random_forest", {})], "filters": ["noise_rate", consensus(2)]},
}


def recovery(data, kind: str, rate: float, cfg: dict, draws: int, split: str = "test") -> dict:
    X, y, X_te, y_te = data
    if split == "val":
        tr, va = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=1)
        X, y, X_te, y_te = X[tr], y[tr], X[va], y[va]
    clean = accuracy(X, y, X_te, y_te)
    poisoned, won, oracle = [], [], []
    for seed in range(draws):
        Xp, yp, bad = poison(X, y, kind, rate, seed)
        poisoned.append(accuracy(Xp, yp, X_te, y_te))
        oracle.append(accuracy(Xp[~bad], yp[~bad], X_te, y_te) - poisoned[-1])
        dropped, weights = label_issues(Xp, yp, cfg)
        won.append(accuracy(Xp[~dropped], yp[~dropped], X_te, y_te, weights[~dropped]) - poisoned[-1])
    cost = clean - np.mean(poisoned)
    won = np.array(won)
    return {"cost": cost, "won": won.mean() / cost, "se": won.std(ddof=1) / np.sqrt(draws) / cost if draws > 1 else np.nan, "oracle": np.mean(oracle) / cost}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings", nargs="*", default=["defaults"], help=f"from {list(SETTINGS)}")
    parser.add_argument("--data", default="breast_cancer", choices=["breast_cancer", "digits", "adult"])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--split", default="test", choices=["test", "val"])
    args = parser.parse_args()
    data = datasets(args.data == "breast_cancer")[args.data]
    for name in args.settings:
        start = time.time()
        cells = []
        for kind in ("toward", "random"):
            r = recovery(data, kind, 0.10, SETTINGS[name], args.draws, args.split)
            cells.append(f"{kind} {r['won']:.0%} ± {r['se']:.0%} (cost {100 * r['cost']:.2f} pt, oracle {r['oracle']:.0%})")
        print(f"{name}: " + "; ".join(cells) + f"  [{time.time() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
