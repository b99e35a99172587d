"""Tabular acquisition: are the rows synthesize and oversample add good to train on?

1. synthesize, train on synthetic / test on real (TSTR): a model trained on the stage's
   new rows alone (as many as the real training rows) is scored on real held-out rows,
   beside the same model trained on the real rows. Adult: the training file against the
   test file; German credit: 3 folds of 333 rows held out. The copula without the job's
   label (one copula) against with it (one copula per class).
2. oversample against imbalanced-learn's SMOTE on the numeric features of Adult and German
   credit (minority class grown to the majority's size): how far a row's neighbours are in
   each feature's standard deviations, and a model trained on the grown training rows,
   scored on the held-out rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

import dsbuild
from dsbuild.kernels.smote import nearest_neighbours
from dsbuild.stages.base import Roles
from dsbuild.stages.synth import Oversample, Synthesize
from dsbuild.testing import run_stage

DATA = Path(dsbuild.__file__).parent / "io" / "data"
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
GERMAN_NUMERIC = ["duration", "amount", "installment_rate", "residence_since", "age", "existing_credits", "people_liable"]


def data_sets(quick: bool) -> list[tuple[str, pd.DataFrame, pd.DataFrame, str, str]]:
    """(name, train, test, label, positive class)."""
    adult, adult_test = pd.read_csv(DATA / "adult.csv.gz"), pd.read_csv(DATA / "adult_test.csv.gz")
    if quick:
        adult, adult_test = adult.head(3000), adult_test.head(2000)
    german = pd.read_csv(DATA / "german_credit.csv.gz")
    order = np.random.default_rng(0).permutation(len(german))
    folds = [(f"German fold {k + 1}", german.drop(german.index[order[k * 333:(k + 1) * 333]]),
              german.iloc[order[k * 333:(k + 1) * 333]], "credit", "good") for k in range(1 if quick else 3)]
    return [("Adult", adult, adult_test, "income", ">50K"), *folds]


def scores(train: pd.DataFrame, test: pd.DataFrame, label: str, positive: str) -> dict[str, float]:
    """AUC of a logistic regression (one-hot categories) and of gradient boosting."""
    numeric = [c for c in train.columns if c != label and pd.api.types.is_numeric_dtype(test[c])]
    text = [c for c in train.columns if c != label and c not in numeric]

    def features(frame):
        out = frame[numeric + text].copy()
        out[numeric] = out[numeric].astype(float)
        out[text] = out[text].astype(object).fillna("?").astype(str)
        return out

    models = {
        "logistic": make_pipeline(make_column_transformer((StandardScaler(), numeric), (OneHotEncoder(handle_unknown="ignore"), text)),
                                  LogisticRegression(max_iter=2000)),
        "boosting": make_pipeline(make_column_transformer(
            (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1), text), ("passthrough", numeric)),
            HistGradientBoostingClassifier(categorical_features=list(range(len(text))), random_state=0)),
    }
    y, truth = (train[label] == positive).to_numpy(), (test[label] == positive).to_numpy()
    out = {}
    for name, model in models.items():
        model.fit(features(train), y)
        p = model.predict_proba(features(test))[:, 1]
        out[name] = roc_auc_score(truth, p)
        out[name + " BA"] = balanced_accuracy_score(truth, p >= 0.5)
    return out


def with_ids(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    return frame.assign(id=[f"r{i:06d}" for i in range(len(frame))])


def tstr_section(quick: bool) -> str:
    rows = []
    for name, train, test, label, positive in data_sets(quick):
        real = scores(train, test, label, positive)
        made = {}
        for side, roles in (("one copula", Roles()), ("per class", Roles(label=label))):
            kept, _ = run_stage(Synthesize(rows=len(train)), with_ids(train), npartitions=4, roles=roles)
            made[side] = scores(kept[kept["synthetic"]].drop(columns=["id", "synthetic"]), test, label, positive)
        for model in ("logistic", "boosting"):
            rows.append(f"| {name} | {model} | {real[model]:.4f} | {made['one copula'][model]:.4f} | {made['per class'][model]:.4f} |")
    return ("### synthesize: train on synthetic, test on real\n\nAUC on the real held-out rows of a model trained on "
            "the real training rows, or on as many rows of `synthesize` fitted on them (without `columns.label`: one "
            "copula; with it: one per class). Logistic regression on standardised numbers and one-hot categories; "
            "scikit-learn's gradient boosting with native categories.\n\n"
            "| data | model | real | one copula | per class |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def imblearn_rows(train: pd.DataFrame, label: str, features: list[str], scaled: bool) -> pd.DataFrame:
    """imbalanced-learn's SMOTE on the features (after a StandardScaler fitted on them if
    ``scaled``, as its users do, and back); the other columns of each new row are missing."""
    from imblearn.over_sampling import SMOTE

    x = train[features].to_numpy(np.float64)
    scaler = StandardScaler().fit(x) if scaled else None
    xr, yr = SMOTE(k_neighbors=5, random_state=0).fit_resample(scaler.transform(x) if scaled else x, train[label].to_numpy())
    new = xr[len(x):]
    new = scaler.inverse_transform(new) if scaled else new
    return pd.concat([train, pd.DataFrame(dict(zip(features, new.T)) | {label: yr[len(x):]})], ignore_index=True)


def neighbour_gaps(train: pd.DataFrame, label: str, features: list[str], minority: str, scale: np.ndarray | None) -> np.ndarray:
    """Mean |difference| between a minority row and its 5 neighbours, per feature, in standard deviations."""
    x = train.loc[train[label] == minority, features].to_numpy(np.float64)
    std = train[features].to_numpy(np.float64).std(axis=0)
    near = nearest_neighbours(x, 5, scale)
    return (np.abs(x[near] - x[:, None, :]) / std).mean(axis=(0, 1))


def smote_section(quick: bool) -> str:
    rows, gaps = [], []
    for name, train, test, label, positive in data_sets(quick):
        features = ADULT_NUMERIC if name == "Adult" else GERMAN_NUMERIC
        train = train[[*features, label] + [c for c in train.columns if c not in features and c != label]]
        minority = train[label].value_counts().idxmin()
        if not name.endswith("2") and not name.endswith("3"):
            std = train[features].to_numpy(np.float64).std(axis=0)
            for side, scale in (("raw units", None), ("scaled", std)):
                g = neighbour_gaps(train, label, features, minority, scale)
                gaps.append(f"| {name} | {side} | " + ", ".join(f"{f} {v:.2f}" for f, v in zip(features, g)) + " |")
        grown = {}
        for side, scale in (("dsbuild raw units (scale: false)", False), ("dsbuild (scale: true)", True)):
            kept, _ = run_stage(Oversample(scale=scale), with_ids(train), npartitions=4, roles=Roles(label=label, features=features))
            grown[side] = kept.drop(columns=["id"])
        grown["imbalanced-learn raw units"] = imblearn_rows(train, label, features, scaled=False)
        grown["imbalanced-learn after StandardScaler"] = imblearn_rows(train, label, features, scaled=True)
        base = scores(train[[*features, label]], test, label, positive)
        rows.append(f"| {name} | none | {base['logistic']:.4f} | {base['logistic BA']:.4f} | {base['boosting']:.4f} | {base['boosting BA']:.4f} |")
        for side, frame in grown.items():
            s = scores(frame[[*features, label]], test, label, positive)
            rows.append(f"| {name} | {side} | {s['logistic']:.4f} | {s['logistic BA']:.4f} | {s['boosting']:.4f} | {s['boosting BA']:.4f} |")
    return ("### oversample against imbalanced-learn's SMOTE\n\nMean distance from a minority row to its 5 nearest "
            "minority rows, per feature, in the feature's standard deviations (found in raw units, or after dividing "
            "each feature by its standard deviation):\n\n| data | neighbours | mean gap per feature |\n|---|---|---|\n"
            + "\n".join(gaps) + "\n\nThe minority class grown to the majority's size on the numeric features alone "
            "(k = 5), then a model trained on them and scored on the held-out rows (AUC, and balanced accuracy at 0.5):\n\n"
            "| data | oversampling | logistic AUC | logistic BA | boosting AUC | boosting BA |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def run(quick: bool = False) -> str:
    load = os.getloadavg()[0]
    return ("## Tabular acquisition (synthesize, oversample)\n\nQuality, not speed: the figures do not depend on the "
            f"machine's load ({load:.1f} when run).\n\n" + tstr_section(quick) + "\n" + smote_section(quick))
