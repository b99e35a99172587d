"""``label_issues``: find mislabeled rows with confident learning and drop, weigh down or
relabel them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels import confident as cl
from dsbuild.kernels.dtypes import as_dtype
from dsbuild.kernels.fairness import MIN_SKILL, skill, usable_weights, weight_values
from dsbuild.kernels.moments import ColumnMoments
from dsbuild.kernels.sanitize import (
    quantize,
)
from dsbuild.kernels.topk import HashSample, LargestPerKey, within_cut
from dsbuild.records import record_seeds, record_uniform
from dsbuild.stages.base import (
    METRIC,
    FitApplyStage,
    StageError,
    register,
    reject,
)
from dsbuild.stages.sanitize.classes import (
    _class_index,
    _plain,
    _sorted_classes,
    emptied_classes,
    require_classes,
)
from dsbuild.stages.sanitize.features import FeatureOptions, _Features


def _count_labels(values: pd.Series) -> dict:
    return {k: int(v) for k, v in values.dropna().value_counts(sort=False).items()}


def _add_counts(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


MODEL_GRID = 2.0**-10  # standardized features on this grid: dot products exact below 1,024 features within 1,024 sd


def _model_inputs(Z: np.ndarray) -> np.ndarray:
    """Standardized features rounded to ``MODEL_GRID``, so the squared distances k-NN
    computes as sums of products are exact whatever rows a partition batches together.
    Unrounded, equal distances (one-hot and whole-number features make many) came out a
    bit apart depending on the batch, and which neighbours won the tie, so the flags, with
    the partitioning: 988 rows at 1 partition, 989 at 4."""
    return np.round(Z / MODEL_GRID) * MODEL_GRID


def _without_classes(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``probs`` with the columns of ``classes`` below any probability, so no row's
    prediction or suggestion is one of them."""
    if not len(classes):
        return probs
    probs = probs.copy()
    probs[:, classes] = -1.0
    return probs


def _with_models(state: dict, shared: list) -> dict:
    """``state`` as the tasks get it: each round's models by their handle on the workers."""
    return {**state, "rounds": [{**rnd, "models": handle} for rnd, handle in zip(state["rounds"], shared)]}


MODELS = ("logistic_regression", "knn", "random_forest", "hist_gradient_boosting", "lda")


WEIGHED = "label_issues_weighted:"  # metric: kept rows weighed down, per class

MAX_QUIET_SHARE = 0.10  # flagging more of the labelled rows than this is said, with the models' skill


Scalar = int | float | str | bool | None


def make_model(name: str, params: dict, seed: int):
    """A scikit-learn classifier from the allow-list; the job never names code to import."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    if name == "logistic_regression":
        return LogisticRegression(**{"max_iter": 1000, **params})
    if name == "knn":  # 15 neighbours: probabilities in steps of 1/15, fine enough for per-class thresholds
        return KNeighborsClassifier(**{"n_neighbors": 15, **params})
    if name == "random_forest":
        return RandomForestClassifier(**{"n_estimators": 100, "random_state": seed, "n_jobs": 1, **params})
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(**{"random_state": seed, **params})
    if name == "lda":
        return LinearDiscriminantAnalysis(**{"solver": "lsqr", "shrinkage": "auto", **params})
    raise StageError(f"unknown model {name!r}; choose from {MODELS}")


ModelName = Literal["logistic_regression", "knn", "random_forest", "hist_gradient_boosting", "lda"]


FilterName = Literal["prune_by_noise_rate", "noise_rate", "predicted_neq_given"]


class LabelIssuesOptions(FeatureOptions):
    model: ModelName | list[ModelName] = Field(
        ["logistic_regression", "knn"],
        description="scikit-learn classifier for the out-of-fold probabilities; a list averages their probabilities",
    )
    model_params: dict[str, Scalar | dict[str, Scalar]] = Field(
        default_factory=dict, description="constructor settings of that classifier; for a list, per model: {knn: {n_neighbors: 10}}"
    )
    filter: FilterName | list[FilterName] = Field(
        ["noise_rate", "predicted_neq_given"],
        description=(
            "which rows are issues: prune_by_noise_rate (cleanlab's: within the confident joint's count per (given, true) "
            "class, largest margin first, and predicted as another class), noise_rate (the count alone, even where the "
            "prediction agrees: flips toward one class bias the model toward it), predicted_neq_given (every row predicted "
            "as another class); a list runs rounds, each re-fitting the models on the rows earlier rounds kept"
        ),
    )
    folds: int = Field(5, ge=2, description="cross-validation folds, assigned by a hash of the record id")
    max_train_rows: int = Field(100_000, ge=10, description="models train on a hash-chosen sample of this many rows (all if fewer)")
    action: Literal["drop", "relabel"] = Field("drop", description="drop flagged rows, or replace their label with the suggested one")
    last_round: Literal["weight", "drop"] = Field(
        "weight",
        description=(
            "action drop, two or more rounds: what becomes of the rows only the last round flags. Its models, re-fitted "
            "without the earlier rounds' flips, still predict another class for the flips those missed but also for clean "
            "rows near the class boundary, which a model needs: weight keeps them, their weight (columns.weight) "
            "multiplied by the models' probability of their given label; drop drops them"
        ),
    )
    original_column: str = Field("original_label", description="relabel: where the label before this stage is kept")

    @model_validator(mode="after")
    def _params_match_models(self):
        nested = {k for k, v in self.model_params.items() if isinstance(v, dict)}
        if isinstance(self.model, str) and nested:
            raise ValueError(f"model_params: settings per model ({sorted(nested)}) need a list of models")
        if isinstance(self.model, list) and set(self.model_params) - (nested & set(self.model)):
            raise ValueError(f"model_params: with a list of models, give settings per model, keyed by one of {self.model}")
        if isinstance(self.model, list) and not self.model:
            raise ValueError("model: name at least one model")
        if isinstance(self.filter, list) and not self.filter:
            raise ValueError("filter: name at least one filter")
        return self

    def filters(self) -> list[str]:
        return [self.filter] if isinstance(self.filter, str) else list(self.filter)


@register
class LabelIssues(_Features, FitApplyStage):
    """Find mislabeled rows with confident learning (Northcutt et al. 2021).

    Out-of-fold probabilities come from K models trained on a hash-chosen sample (all
    rows when the data fits ``max_train_rows``); a row is scored by the model that did
    not see its fold. Naming several models averages their probabilities: a linear
    model and k-NN err on different rows, so together they flag flips more reliably.

    Each entry of ``filter`` is a round. A round re-trains the fold models on the sample
    rows no earlier round flagged and scores the rows no earlier round flagged. The
    default first drops the confident joint's estimate of the flips per (given, true)
    class, which corrects for a model biased toward the class the flips went to, then,
    re-fitted on what is left and so no longer biased, every row still predicted as
    another class. Those last-round rows are the flips the first round missed but also
    clean rows near the class boundary, which a model needs: by default (``last_round:
    weight``) they stay, weighted by the models' probability of their given label.
    Passes: (1) column moments, label counts, the training sample; then per round with a
    noise-rate budget (2) per-class thresholds, (3) the confident joint, (4) the exact
    top-margin rows per (given, true) cell; then apply: drop as ``label-issue=<suggested>``
    (or weigh, above) or relabel.
    """

    name = "label_issues"
    Options = LabelIssuesOptions

    def _folds(self, ids: np.ndarray) -> np.ndarray:
        return (record_seeds(self.ctx.seed, self.ctx.name + ":fold", ids) % np.uint64(self.options.folds)).astype(np.int64)

    def check(self, meta: pd.DataFrame) -> None:
        super().check(meta)
        if self.options.action == "relabel":
            self.check_output_column(meta, "original_column", self.options.original_column)
        for name, params in self._model_specs():  # a misspelt or out-of-range setting, before the run
            self._model(name, params)

    def _model(self, name: str, params: dict):
        """The classifier ``make_model`` builds, its settings checked by scikit-learn; a
        mistake in ``model_params`` is the stage's error, naming the model and the setting."""
        where = f"stage {self.ctx.name!r}: model_params for {name}"
        try:
            model = make_model(name, params, self.ctx.seed)
        except TypeError as e:
            known = sorted(make_model(name, {}, self.ctx.seed).get_params())
            raise StageError(f"{where}: {e}; its settings are {known}") from None
        validate = getattr(model, "_validate_params", None)
        if validate is not None:
            try:
                validate()
            except ValueError as e:  # scikit-learn's InvalidParameterError is a ValueError
                raise StageError(f"{where}: {e}") from None
        return model

    def _partial_sample(self, part: pd.DataFrame, state: Any):
        X = self.raw_features(part)
        labels = part[self._label()]
        keep = labels.notna().to_numpy()
        ids = self.ids(part)
        draws = record_uniform(self.ctx.seed, self.ctx.name + ":sample", ids)
        sample = HashSample.of(draws[keep], ids[keep], labels.to_numpy(dtype=object)[keep], X[keep], self.options.max_train_rows)
        return ColumnMoments.of(X) if len(X) else None, _count_labels(labels), sample

    @staticmethod
    def _combine_sample(a, b):
        moments = b[0] if a[0] is None else a[0] if b[0] is None else a[0].merge(b[0])
        return moments, _add_counts(a[1], b[1]), a[2].merge(b[2])

    def _train(self, Z: np.ndarray, y: np.ndarray, folds: np.ndarray) -> list:
        models = []
        for f in range(self.options.folds):
            rows = folds != f
            if len(np.unique(y[rows])) < 2:
                raise StageError(f"stage {self.ctx.name!r}: fold {f} leaves fewer than two classes to train on")
            fold_models = []
            for name, params in self._model_specs():
                model = self._model(name, params)
                neighbours = getattr(model, "n_neighbors", None)
                if neighbours is not None and neighbours > rows.sum():
                    raise StageError(
                        f"stage {self.ctx.name!r}: {name} looks at {neighbours} neighbours, but fold {f}'s model trains on "
                        f"{int(rows.sum())} rows; set model_params n_neighbors lower (for a list of models: "
                        f"{{{name}: {{n_neighbors: ...}}}}) or use another model")
                fold_models.append(model.fit(Z[rows], y[rows]))
            models.append(fold_models)
        return models

    def _model_specs(self) -> list[tuple[str, dict]]:
        o = self.options
        if isinstance(o.model, str):
            return [(o.model, o.model_params)]
        return [(name, o.model_params.get(name, {})) for name in o.model]

    @staticmethod
    def _oof(Z: np.ndarray, folds: np.ndarray, models: list, n_classes: int) -> np.ndarray:
        """Out-of-fold probabilities over all classes: each row from the models of its fold."""
        probs = np.zeros((len(Z), n_classes))
        for f, fold_models in enumerate(models):
            rows = folds == f
            if rows.any():
                for model in fold_models:
                    probs[np.ix_(rows, model.classes_)] += model.predict_proba(Z[rows]) / len(fold_models)
        return quantize(probs)

    def _rows(self, part: pd.DataFrame, state: dict) -> tuple:
        """(standardized features, class index, ids, folds) of a partition."""
        ids = self.ids(part)
        Z = _model_inputs(state["standardizer"].standardize(self.raw_features(part)))
        return Z, _class_index(part[self._label()], state["classes"]), ids, self._folds(ids)

    @staticmethod
    def _in_budget(probs, labels, ids, rnd: dict) -> np.ndarray:
        rows, keys, margins = cl.margin_candidates(probs, labels, rnd["prune"])
        inside = np.zeros(len(labels), dtype=bool)
        inside[rows[within_cut(keys, quantize(margins), ids[rows], rnd["cut"])]] = True
        return inside

    def _scan(self, Z, labels, ids, folds, state: dict, upto: int):
        """Run rounds ``0 .. upto-1`` over these rows: (rows still in, the round that
        flagged each row or -1, suggested class index, the flagging round's probability
        of the given label), and, when round ``upto`` exists, its probabilities for the
        rows still in."""
        n_classes = len(state["classes"])
        active = np.flatnonzero(labels >= 0)
        flagged_in = np.full(len(labels), -1, dtype=np.int64)
        suggested = np.full(len(labels), -1, dtype=np.int64)
        given = np.ones(len(labels))
        for r, rnd in enumerate(state["rounds"][: upto + 1]):
            probs = self._oof(Z[active], folds[active], rnd["models"], n_classes)
            if r == upto:
                return active, flagged_in, suggested, given, probs
            y = labels[active]
            inside = self._in_budget(probs, y, ids[active], rnd) if cl.needs_budget(rnd["filter"]) else None
            learned = _without_classes(probs, rnd["unjudged"])  # a row predicted as an unlearned class is not said to be one
            hit = cl.issues(rnd["filter"], inside, learned, y) & ~np.isin(y, rnd["unjudged"])
            flagged_in[active[hit]] = r
            suggested[active[hit]] = cl.suggested_labels(learned[hit], y[hit])
            given[active[hit]] = probs[np.flatnonzero(hit), y[hit]]
            active = active[~hit]
        return active, flagged_in, suggested, given, None

    def _round_inputs(self, part, state):
        Z, labels, ids, folds = self._rows(part, state)
        active, _, _, _, probs = self._scan(Z, labels, ids, folds, state, len(state["rounds"]) - 1)
        return labels[active], probs, ids[active]

    def _partial_sums(self, part, state):
        labels, probs, _ = self._round_inputs(part, state)
        return cl.ConfidentSums.of(probs, labels, len(state["classes"]))

    def _partial_joint(self, part, state):
        labels, probs, _ = self._round_inputs(part, state)
        return cl.confident_joint(probs, labels, state["rounds"][-1]["thresholds"])

    def _partial_top(self, part, state):
        labels, probs, ids = self._round_inputs(part, state)
        prune = state["rounds"][-1]["prune"]
        rows, keys, margins = cl.margin_candidates(probs, labels, prune)
        return LargestPerKey.of(keys, quantize(margins), ids[rows], prune.ravel())

    @staticmethod
    def _merge(a, b):
        return a + b if isinstance(a, np.ndarray) else a.merge(b)

    def build(self, frame, shapes):
        label = self.ctx.name
        self.fit_categories(frame, shapes)
        moments, counts, sample = shapes.fit(frame, self._partial_sample, self._combine_sample, label=f"{label}-sample")
        classes = _sorted_classes(counts)
        if moments is None or len(classes) < 2:
            raise StageError(f"stage {label!r}: needs labelled rows of at least two classes")
        require_classes(label, self._label(), counts)
        state: dict[str, Any] = {"classes": classes, "standardizer": moments.standardizer(), "rounds": []}
        Zs = _model_inputs(state["standardizer"].standardize(sample.X))
        ys = _class_index(pd.Series(sample.labels, dtype=object), classes)
        folds = self._folds(sample.ids)
        self.rounds_ = []
        shared = self.shared_models_ = []  # each round's models on the workers, held while the run lives: tasks name them
        for r, name in enumerate(self.options.filters()):
            # the sample rows that earlier rounds kept, found by the same code as any partition's
            kept = self._scan(Zs, ys, sample.ids, folds, state, r)[0] if r else np.arange(len(ys))
            rnd: dict[str, Any] = {"filter": name, "models": self._train(Zs[kept], ys[kept], folds[kept])}
            if r:
                rnd["unjudged"] = state["rounds"][-1].get("unjudged", ())
            state["rounds"].append(rnd)
            shared.append(shapes.share(rnd["models"]))
            info: dict[str, Any] = {"filter": name, "train_rows": len(kept)}
            if cl.needs_budget(name) or not r:  # the first round says what the models learned, for itself and the rounds after
                sums = shapes.fit(frame, self._partial_sums, self._merge, _with_models(state, shared), label=f"{label}-thresholds-{r}")
                if not r:
                    rnd["unjudged"] = cl.unlearned_classes(sums, self.options.folds)
                    info["unjudged"] = {k: self._why_unlearned(sums, k) for k in rnd["unjudged"]}
                info.update(rows=sums.counts.astype(int).tolist(), balanced_accuracy=round(sums.balanced_accuracy(), 6))
            if cl.needs_budget(name):
                rnd["thresholds"] = sums.thresholds()
                joint = shapes.fit(frame, self._partial_joint, self._merge, _with_models(state, shared), label=f"{label}-joint-{r}")
                rnd["prune"] = cl.prune_counts(joint, sums.counts)
                rnd["prune"][rnd["unjudged"]] = 0
                rnd["prune"][:, rnd["unjudged"]] = 0
                rnd["cut"] = {}
                if rnd["prune"].any():
                    rnd["cut"] = shapes.fit(frame, self._partial_top, self._merge, _with_models(state, shared),
                                            label=f"{label}-top-{r}").cut()
                info.update(thresholds=rnd["thresholds"], joint=joint, prune=rnd["prune"])
            self.rounds_.append(info)
        # kept for the summary, without the models: the stage itself travels with its apply's tasks
        self.state_ = _with_models(state, [None] * len(shared))
        self.counts_ = {c: int(counts[c]) for c in classes}
        self.train_rows_ = len(sample.ids)
        return shapes.map(frame, self._apply, shapes.broadcast(state, graph=_with_models(state, shared)), label=label)

    def _why_unlearned(self, sums: cl.ConfidentSums, k: int) -> str:
        """Which sign of ``confident.unlearned_classes`` a class showed, for the summary."""
        rows = int(sums.counts[k])
        if rows < self.options.folds:
            return f"{rows} rows, fewer than the {self.options.folds} folds"
        mean_in = sums.grid_sums[k, k] / rows
        mean_out = (sums.grid_sums[:, k].sum() - sums.grid_sums[k, k]) / (sums.counts.sum() - rows)
        return (f"its {rows} rows get a probability of it of {mean_in:.3g} on average, the others {mean_out:.3g}: "
                f"t = {sums.separation()[k]:.2g}, below {cl.MIN_SEPARATION:g}")

    def _weighs(self) -> bool:
        """Whether the last round's flags are kept with a weight instead of dropped."""
        o = self.options
        return o.action == "drop" and o.last_round == "weight" and len(o.filters()) > 1

    @property
    def writes_weights(self) -> bool:
        """So a run checks the source's weight column before this multiplies it."""
        return self._weighs()

    def _weigh(self, part: pd.DataFrame, weighed: np.ndarray, given: np.ndarray, labels: np.ndarray, classes: list) -> pd.DataFrame:
        """Multiply the weight of the ``weighed`` rows (1 where there is none yet) by the
        models' probability of their given label: the chance, as the models see it, that
        the row is clean. A flip deep in another class gets ~0, a clean boundary row ~0.4,
        and no row is lost to a trainer that reads the weight. Counted per class, so a
        class whose every row was flagged is still said (``result_warnings``). A row whose
        weight no trainer takes (missing, infinite or negative, before and so after) is
        rejected with the value, as reweigh rejects it."""
        weight = self.ctx.roles.weight
        old = 1.0
        if weight in part.columns:
            old = weight_values(part[weight])
            part = reject(part, ~usable_weights(old), np.array([f"weight:{weight}={v}" for v in old], dtype=object))
        part[weight] = old * np.where(weighed, given, 1.0)
        part["_m_label_issues_weighted"] = weighed.astype(np.int64)
        per_class = {f"{METRIC}{WEIGHED}{_plain(name)!s}": (weighed & (labels == c)).astype(np.int64) for c, name in enumerate(classes)}
        return pd.concat([part, pd.DataFrame(per_class, index=part.index)], axis=1)  # one block: a column each fragmented the frame

    def apply(self, part: pd.DataFrame, state: dict) -> pd.DataFrame:
        Z, labels, ids, folds = self._rows(part, state)
        _, flagged_in, suggested_index, given, _ = self._scan(Z, labels, ids, folds, state, len(state["rounds"]))
        flagged = flagged_in >= 0
        suggested = np.asarray(state["classes"], dtype=object)[np.where(flagged, suggested_index, 0)]
        column = self._label()
        if self.options.action == "drop":
            dropped = flagged
            if self._weighs():
                weighed = flagged_in == len(state["rounds"]) - 1
                part = self._weigh(part, weighed, given, labels, state["classes"])
                dropped = flagged & ~weighed
            reasons = np.array([f"label-issue={s}" for s in suggested], dtype=object)
            part = reject(part, dropped, reasons)
        else:
            part[self.options.original_column] = part[column]
            new = part[column].astype(object).to_numpy(copy=True)
            new[flagged] = suggested[flagged]
            part[column] = as_dtype(pd.Series(new, index=part.index), part[column].dtype)
            part["_m_relabelled"] = flagged.astype(np.int64)
        part["_m_label_issues"] = flagged.astype(np.int64)
        part["_m_unscored"] = (labels < 0).astype(np.int64)  # no label to judge: kept, and said, as sanitize says it
        part["_m_unjudged"] = np.isin(labels, state["rounds"][0]["unjudged"]).astype(np.int64)  # a class the models did not learn
        for r in range(len(state["rounds"])):
            part[f"_m_label_issues_round_{r}"] = (flagged_in == r).astype(np.int64)
        return part

    def summary(self) -> dict:
        state = getattr(self, "state_", None)
        if state is None:
            return {}
        names = [str(_plain(c)) for c in state["classes"]]
        total = sum(self.counts_.values())
        out: dict[str, Any] = {
            "model": self.options.model,
            "features": self.features_used(),
            "filter": self.options.filter,
            "folds": self.options.folds,
            **({"last_round": "weight", "weight_column": self.ctx.roles.weight} if self._weighs() else {}),
            "train_rows": self.train_rows_,
            "trained_on_sample": self.train_rows_ < total,
        }
        rounds = []
        for info in self.rounds_:
            entry = {"filter": info["filter"], "train_rows": info["train_rows"]}
            if "balanced_accuracy" in info:
                entry["balanced_accuracy"] = info["balanced_accuracy"]
            if "unjudged" in info:
                entry["unjudged_classes"] = {names[k]: why for k, why in info["unjudged"].items()}
            if "joint" in info:
                entry["thresholds"] = dict(zip(names, info["thresholds"].round(6).tolist()))
                entry["confident_joint"] = {"given x true": names, "counts": info["joint"].tolist()}
                entry["flag_budget"] = {"given x true": names, "counts": info["prune"].tolist()}
            rounds.append(entry)
        first = next((e for e in rounds if "confident_joint" in e), None)
        if first is not None:  # the first noise-rate round's matrices, where the report looks for them
            out.update(thresholds=first["thresholds"], confident_joint=first["confident_joint"], flag_budget=first["flag_budget"])
        out["rounds"] = rounds
        out["chance_balanced_accuracy"] = round(1 / len(names), 6)
        return out

    def _large_share_notes(self, metrics: dict, ba: float, chance: float) -> list[str]:
        """Confident learning counts a row as mislabelled where its models give another class
        the probability its own class usually gets; rows the features do not decide look
        the same. With models of middling skill that is a large share, said nowhere: German
        credit, all 20 attributes (balanced accuracy 0.65), lost 22 % of its rows and had 4 %
        more weighed down, where published estimates of label noise in real data sets are a
        few percent."""
        labelled = sum(self.counts_.values())
        flagged = int(metrics.get("label_issues", 0))
        if not labelled or flagged <= MAX_QUIET_SHARE * labelled:
            return []
        if self.options.action == "relabel":
            did = f"relabelled {flagged:,}"
        else:
            weighed = int(metrics.get("label_issues_weighted", 0))
            did = f"dropped {flagged - weighed:,}" + (f" and weighed down {weighed:,}" if weighed else "")
        return [
            f"stage {self.ctx.name!r} {did} of {labelled:,} labelled rows ({flagged / labelled:.0%}) as mislabelled. Its "
            f"models' out-of-fold balanced accuracy is {ba:.3f} (chance {chance:.3f}): confident learning takes the rows "
            "they get wrong for mislabelled ones, so the further they are from perfect, the more of the rows the features "
            "do not decide it counts. If you do not expect that many wrong labels, check a sample of the flagged rows "
            "(rejects, reason label-issue) before training on the rest, or give it features that predict the label "
            "better; filter: prune_by_noise_rate (cleanlab's) flags fewer."]

    def result_warnings(self, entry: dict) -> list[str]:
        """Confident learning trusts its models: one that cannot tell the classes apart
        calls the minority classes noise (Adult's race from age and hours: 73 % of one
        class flagged, cleanlab's filter alike). Say so, with the evidence; and when they
        learned no class at all, that nothing was flagged."""
        metrics = entry.get("metrics", {})
        weighed = {k[len(WEIGHED):]: v for k, v in metrics.items() if k.startswith(WEIGHED)}
        notes = emptied_classes(self.ctx.name, self.counts_, entry, weighed)
        summary = entry.get("summary", {})
        rounds = summary.get("rounds", [])
        chance = summary.get("chance_balanced_accuracy")
        if not rounds or "balanced_accuracy" not in rounds[0] or chance is None:
            return notes
        ba, unjudged = rounds[0]["balanced_accuracy"], rounds[0].get("unjudged_classes", {})
        if len(unjudged) >= len(self.counts_) - 1:
            return notes + [
                f"stage {self.ctx.name!r}: its models learned {'no class' if len(unjudged) == len(self.counts_) else 'at most one class'} "
                f"of the label from the features (out-of-fold balanced accuracy {ba:.3f}; chance {chance:.3f}; per class: "
                f"{'; '.join(f'{name}: {why}' for name, why in unjudged.items())}), so it flagged nothing: a row can only be "
                "judged against classes the models tell apart. Give it features that predict the label."]
        if skill(ba, chance) < MIN_SKILL:
            notes.append(
                f"stage {self.ctx.name!r}: its models tell the classes apart little better than chance "
                f"(out-of-fold balanced accuracy {ba:.3f}; chance {chance:.3f}), so the rows it flags are "
                "mostly rows they cannot classify, not mislabelled ones. Give it features that predict the "
                "label, or check the flags (action: relabel keeps the rows) before dropping them.")
        else:
            notes += self._large_share_notes(metrics, ba, chance)
        return notes + [
            f"stage {self.ctx.name!r}: class {name} ({why}) is one its models did not learn, so its rows were kept unjudged "
            f"and no row was flagged as really being {name}. Give it more rows or features that predict it, or merge or "
            "drop it."
            for name, why in unjudged.items()
        ]
