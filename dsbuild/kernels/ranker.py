"""A scikit-learn model that scores rows, fitted out-of-fold on a seeded sample.

Massaging, preferential sampling and the model part of the audit need a score per row
("how likely is the favourable label"). The job picks a model by name from an
allow-list — never code from YAML. The model is fitted on a sample that is the same for
any partitioning (the rows with the smallest per-record uniforms), once per fold; a row
is scored by the model that did not see its fold, so scores are out-of-fold for sampled
rows and the rule is the same for every row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
MODELS = ("logistic_regression", "naive_bayes", "random_forest", "gradient_boosting")


def make_model(name: str, seed: int):
    """The allow-listed model by name. scikit-learn is imported here, not at module
    import, so workers that never rank rows never pay for it."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB

    return {
        "logistic_regression": lambda: LogisticRegression(max_iter=2000),
        "naive_bayes": lambda: GaussianNB(),
        "random_forest": lambda: RandomForestClassifier(n_estimators=100, min_samples_leaf=5, random_state=seed, n_jobs=1),
        "gradient_boosting": lambda: HistGradientBoostingClassifier(random_state=seed),
    }[name]()


def encoder(numeric: Sequence[str], categorical: Sequence[str]):
    """Impute and scale numbers, one-hot categories (missing is a category)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = []
    if numeric:
        parts.append(("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), list(numeric)))
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(categorical)))
    return ColumnTransformer(parts)


class OutOfFoldRanker:
    """One model per fold, each fitted on the sample without that fold.

    The encoding (imputation, scaling, one-hot) uses no labels, so it is fitted once on
    the whole sample and shared by the folds' models; scoring encodes each row once.
    """

    def __init__(self, model: str = "logistic_regression", numeric=(), categorical=(), folds: int = 5, seed: int = 0):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
        self.model = model
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.folds = folds
        self.seed = seed

    def fit(self, x: pd.DataFrame, y: np.ndarray, fold: np.ndarray, sample_weight: np.ndarray | None = None) -> OutOfFoldRanker:
        """``sample_weight``: the rows' weights (a survey's, an earlier reweigh's), which the
        stages' counts use too; without them the score ranked an unweighted population."""
        y = np.asarray(y, dtype=bool)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise ValueError("the ranker's sample has only one label; it cannot learn a score")
        self.encoder_ = encoder(self.numeric, self.categorical).fit(self._x(x))
        z = self.encoder_.transform(self._x(x))
        self.models_ = []
        for k in range(self.folds):
            train = np.asarray(fold) != k
            if len(np.unique(y[train])) < 2:
                train = np.ones(len(y), dtype=bool)
            self.models_.append(make_model(self.model, self.seed).fit(z[train], y[train], sample_weight=None if w is None else w[train]))
        self.n_samples_ = len(y)
        return self

    def score(self, x: pd.DataFrame, fold: np.ndarray) -> np.ndarray:
        """P(favourable) per row, from the model that did not see the row's fold."""
        out = np.zeros(len(x), dtype=np.float64)
        if len(x) == 0:
            return out
        z = self.encoder_.transform(self._x(x))
        fold = np.asarray(fold)
        for k, m in enumerate(self.models_):
            rows = fold == k
            if rows.any():
                out[rows] = m.predict_proba(z[rows])[:, list(m.classes_).index(True)]
        return out

    def _x(self, x: pd.DataFrame) -> pd.DataFrame:
        # an infinite value is imputed as a missing one is (scikit-learn refuses it, which stopped the stage)
        cols = {c: pd.to_numeric(x[c], errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan) for c in self.numeric}
        cols.update({c: x[c].astype("string").fillna("<NA>").astype(object) for c in self.categorical})
        return pd.DataFrame(cols, index=x.index)
