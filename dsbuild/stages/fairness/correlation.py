"""``correlation_remover``: fairlearn's CorrelationRemover from moments merged across partitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.correlation import CorrelationRemover, Moments
from dsbuild.kernels.fairness import (
    MISSING,
    group_codes,
)
from dsbuild.stages.base import (
    StageError,
    register,
)
from dsbuild.stages.fairness.repairs import FeatureRepairOptions, _FeatureRepair


class CorrelationOptions(FeatureRepairOptions):
    alpha: float = Field(1.0, ge=0.0, le=1.0, description="as in fairlearn: 1 removes all correlation, 0 none")


@register
class CorrelationRemoverStage(_FeatureRepair):
    """fairlearn's CorrelationRemover, fitted from moments merged across partitions.

    Categorical (or binned) sensitive columns enter as indicators of their groups, one
    level left out; numeric ones as they are. The sensitive columns stay in the data
    (later stages and the audit still need them); only the features change. Rows with a
    missing or infinite feature, or a missing sensitive value, are left as they are and
    not used to fit.
    """

    name = "correlation_remover"
    Options = CorrelationOptions
    needs_label = False

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        return self._feature_warnings(meta)  # a numeric sensitive column without bins enters as a number, as in fairlearn

    def _design(self, part, levels: dict[str, list[str]] | None):
        """(levels, matrix [indicators, numeric sensitive, features], complete-row mask),
        written into one preallocated matrix: the features are copied once. A row missing
        a group is incomplete, as one missing a number is: ``<NA>`` is no level to fit."""
        numeric_s = self._unbinned_numeric(part)
        cats = [c for c in self.sensitive if c not in numeric_s]
        coded = {c: group_codes(part[c], self.bins.get(c)) for c in cats}
        if levels is None:
            levels = {c: sorted({names[i] for i in np.unique(codes)} - {MISSING}) for c, (codes, names) in coded.items()}
        no_group = np.zeros(len(part), dtype=bool)
        for codes, names in coded.values():
            no_group |= codes == len(names) - 1  # group_codes names the missing last
        numeric = [*numeric_s, *self.features(part)]
        width = sum(len(levels[c]) for c in cats) + len(numeric)
        x = np.zeros((len(part), width), dtype=np.float64)
        rows, at = np.arange(len(part)), 0
        for c in cats:
            codes, names = coded[c]
            column = pd.Index(levels[c], dtype=object).get_indexer(pd.Index(names, dtype=object))[codes]
            x[rows[column >= 0], at + column[column >= 0]] = 1.0
            at += len(levels[c])
        if numeric:
            x[:, at:] = part[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        return levels, x, np.isfinite(x[:, at:]).all(axis=1) & ~no_group  # an infinite value is as unusable as a missing one

    def partial(self, part, state):
        levels, x, ok = self._design(self.fit_rows(part), None)
        return levels, Moments.of(x if ok.all() else x[ok]), self._changed_groups(part)

    def _changed_groups(self, part) -> dict[str, set[str]]:
        """The groups of the rows the stage changes (complete ones), which the rows
        ``fit_on`` names may lack; without ``fit_on`` every such row is fitted."""
        if not self.options.fit_on:
            return {}
        numeric_s = self._unbinned_numeric(part)
        coded = {c: group_codes(part[c], self.bins.get(c)) for c in self.sensitive if c not in numeric_s}
        complete = np.ones(len(part), dtype=bool)
        for c in [*numeric_s, *self.features(part)]:  # a column at a time: no second copy of the features
            complete &= np.isfinite(part[c].to_numpy(dtype=np.float64, na_value=np.nan))
        for codes, names in coded.values():
            complete &= codes != len(names) - 1
        return {c: {names[i] for i in np.unique(codes[complete])} for c, (codes, names) in coded.items()}

    def combine(self, a, b):
        levels = {c: sorted(set(a[0][c]) | set(b[0][c])) for c in a[0]}
        changed = {c: a[2].get(c, set()) | b[2].get(c, set()) for c in {*a[2], *b[2]}}
        return levels, _pad(a[:2], levels).merge(_pad(b[:2], levels)), changed

    def finalize(self, stats, state):
        """Leave one level of each categorical column out, so the indicators have full rank."""
        levels, moments, changed = stats
        self.require_where_rows(int(moments.n), "fit_on")
        self._require_fitted_groups(levels, moments, changed)
        kept = {c: lv[:-1] for c, lv in levels.items()}
        index, at = [], 0
        for lv in levels.values():
            index += list(range(at, at + len(lv) - 1))
            at += len(lv)
        index += list(range(at, moments.mean.shape[0]))
        sub = Moments(moments.n, moments.mean[index], moments.cross[np.ix_(index, index)])
        self.left_out_ = {c: lv[-1] for c, lv in levels.items() if lv}
        self.moments_ = sub
        self.n_sensitive_ = sum(len(v) for v in kept.values()) + len(self._numeric_s)
        return {"levels": kept, "remover": CorrelationRemover(self.options.alpha).fit(sub, self.n_sensitive_)}

    def _require_fitted_groups(self, levels, moments, changed) -> None:
        """A group no fitted row has gets no indicator of its own: its rows were shifted
        as the left-out level's, another group's, without a word. fairlearn, given the
        indicators of every row, fits it a zero coefficient, which is no better: nothing
        was learnt about it, so it is refused."""
        at = 0
        for c, lv in levels.items():
            fitted = {name for name, mean in zip(lv, moments.mean[at:at + len(lv)]) if mean > 0}
            at += len(lv)
            missing = sorted(changed.get(c, set()) - fitted)
            if missing:
                raise StageError(
                    f"stage {self.ctx.name!r}: {c} group {missing[0]!r} is in none of the rows fit_on "
                    f"({self._where_text('fit_on')}) names{f' (nor {missing[1:]})' if len(missing) > 1 else ''}, "
                    f"so the fit learnt nothing about it and its rows would be shifted as another group's; "
                    f"fit on rows that have it, or merge it into a group they have first")

    def build(self, frame, shapes):
        self._numeric_s = self._unbinned_numeric(frame._meta)
        self._features = self.features(frame._meta)
        return super().build(frame, shapes)

    def apply(self, part, state):
        if part.empty:
            return part.astype({c: "float64" for c in self.features(part)})
        _, x, ok = self._design(part, state["levels"])
        k = self.n_sensitive_
        if ok.all():
            out = state["remover"].transform(x[:, :k], x[:, k:])
        else:
            out = x[:, k:].copy()
            out[ok] = state["remover"].transform(x[ok, :k], x[ok, k:])
        part[self.features(part)] = out
        return part

    def summary(self) -> dict:
        m, k = self.moments_, self.n_sensitive_
        sd = np.sqrt(np.clip(np.diag(m.cross), 0, None))
        sd[sd == 0] = 1.0
        corr = m.cross[:k, k:] / np.outer(sd[:k], sd[k:])
        feats = self._features
        remover = self.state_["remover"]
        after = _correlation_after(m, k, remover.beta_, self.options.alpha, sd[:k])
        return {
            "alpha": self.options.alpha,
            "rows_fitted": int(m.n),
            "sensitive_levels_left_out": self.left_out_,
            "max_abs_correlation_before": {f: round(float(np.abs(corr[:, i]).max()), 6) if k else 0.0 for i, f in enumerate(feats)},
            "max_abs_correlation_after": {f: round(float(np.abs(after[:, i]).max()), 6) if k else 0.0 for i, f in enumerate(feats)},
            "beta": np.round(remover.beta_, 8).tolist(),
        }


def _correlation_after(m: Moments, k: int, beta: np.ndarray, alpha: float, sd_sensitive: np.ndarray) -> np.ndarray:
    """The fitted rows' correlations of the sensitive columns with the changed features.

    The output ``z − α·S_c β`` keeps (1 − α) of each covariance, and its spread shrinks
    too: with ``C_ss β = C_sz``, its cross product is ``C_zz − (2α − α²)·β' C_ss β``; so
    the correlation is not (1 − α) of the one before, as the manifest had said."""
    explained = np.einsum("ij,ik,kj->j", beta, m.cross[:k, :k], beta)
    spread = np.sqrt(np.clip(np.diag(m.cross)[k:] - (2 * alpha - alpha * alpha) * explained, 0, None))
    spread[spread == 0] = 1.0
    return (1 - alpha) * m.cross[:k, k:] / np.outer(sd_sensitive, spread)


def _pad(stat, levels: dict[str, list[str]]) -> Moments:
    """Moments re-indexed to the merged levels; an unseen level is a column of zeros."""
    own, m = stat
    if own == levels:
        return m
    index, at = [], 0
    size = sum(len(v) for v in levels.values())
    for c, lv in levels.items():
        pos = {name: i for i, name in enumerate(lv)}
        index += [at + pos[name] for name in own[c]]
        at += len(lv)
    rest = m.mean.shape[0] - sum(len(v) for v in own.values())
    index += list(range(size, size + rest))
    total = size + rest
    mean = np.zeros(total)
    cross = np.zeros((total, total))
    mean[index] = m.mean
    cross[np.ix_(index, index)] = m.cross
    return Moments(m.n, mean, cross)
