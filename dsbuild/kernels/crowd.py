"""Crowd label aggregation: majority vote, Wawa, Dawid–Skene (full and one-coin), GLAD.

Votes are integer-coded: item codes local to a batch of votes, annotator and class codes
global, stored compactly (int32, int32, int8) because a stage keeps them in worker memory
for all the rounds. The E-step needs every vote of an item at once (callers group votes by item);
the M-step needs only sums keyed by annotator × given label × true class, which add up
across any split of the items. So a model is fitted by rounds of ``stats`` on each batch,
``merge_stats`` of the results, and ``finalize`` into the next round's parameters; ``fit``
runs the same rounds on one batch, for tests and small data.

The updates and the stopping rule (evidence lower bound per vote rising by less than
``tol``) follow crowd-kit's ``DawidSkene``/``OneCoinDawidSkene``, so results agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

EPS = 1e-10
ONE_COIN_UNIFORM_ROUNDS = 3  # states whose class prior one-coin holds uniform (DawidSkene.warming_up)
WATCHED_ROUNDS = 10  # rounds before max_iter whose label changes a run that reaches it reports (DawidSkene.movement)


def label_dtype(n_classes: int) -> type:
    """The smallest integer type that holds every class code."""
    return np.int8 if n_classes <= np.iinfo(np.int8).max else np.int32


@dataclass(frozen=True)
class Votes:
    """Votes of a batch of items: ``label[j]`` given by ``annotator[j]`` to ``item[j]``.

    ``gold`` holds, per item, the known class code or -1.
    """

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    n_items: int
    n_annotators: int
    n_classes: int
    gold: np.ndarray | None = None

    def __post_init__(self):
        if self.n_classes < 1:
            raise ValueError("need at least one class")
        for name, n, dtype in (("item", self.n_items, np.int32), ("annotator", self.n_annotators, np.int32), ("label", self.n_classes, label_dtype(self.n_classes))):
            codes = np.asarray(getattr(self, name))
            if len(codes) and (codes.min() < 0 or codes.max() >= n):
                raise ValueError(f"{name} codes must lie in [0, {n})")
            object.__setattr__(self, name, codes.astype(dtype, copy=False))
        if self.gold is not None:
            object.__setattr__(self, "gold", np.asarray(self.gold, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.item)

    @property
    def gold_mask(self) -> np.ndarray:
        if self.gold is None:
            return np.zeros(self.n_items, dtype=bool)
        return self.gold >= 0

    def per_item(self, values: np.ndarray) -> np.ndarray:
        """Sum per-vote rows (``(n_votes, K)``) into per-item rows."""
        out = np.empty((self.n_items, values.shape[1]))
        for k in range(values.shape[1]):
            out[:, k] = np.bincount(self.item, weights=values[:, k], minlength=self.n_items)
        return out

    def counts_per_annotator(self) -> np.ndarray:
        return self._annotator_counts.copy()

    @cached_property
    def _annotator_counts(self) -> np.ndarray:
        return np.bincount(self.annotator, minlength=self.n_annotators).astype(np.float64)

    @cached_property
    def incidence(self) -> sp.csr_matrix:
        """Items × (annotator, given label) with a 1 per vote, built once per batch.

        Both EM steps are products with it: per item log-likelihoods are ``incidence @
        log_errors`` and the M-step's confusion sums ``incidence.T @ posteriors``, one pass
        of scipy's C loop each instead of a gather and a bincount per class.
        """
        key = self.annotator * np.int32(self.n_classes) + self.label
        order = None if len(self.item) < 2 or bool((self.item[1:] >= self.item[:-1]).all()) else np.argsort(self.item, kind="stable")
        if order is not None:
            key = key[order]
        indptr = np.zeros(self.n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.item, minlength=self.n_items), out=indptr[1:])
        return sp.csr_matrix((np.ones(len(key)), key, indptr), shape=(self.n_items, self.n_annotators * self.n_classes))


def merge_stats(a: dict, b: dict) -> dict:
    """Statistics are dicts of sums: merging adds them key by key; a ``*_max`` keeps the larger."""
    return {k: max(a[k], b[k]) if k.endswith("_max") else a[k] + b[k] for k in a}


# -- majority vote and Wawa ---------------------------------------------------------------


def vote_scores(votes: Votes, annotator_weight: np.ndarray | None = None) -> np.ndarray:
    """``(n_items, K)`` votes per class, each weighted by its annotator's weight."""
    w = None if annotator_weight is None else np.asarray(annotator_weight, dtype=np.float64)[votes.annotator]
    flat = np.bincount(votes.item.astype(np.int64) * votes.n_classes + votes.label, weights=w, minlength=votes.n_items * votes.n_classes)
    return flat.reshape(votes.n_items, votes.n_classes).astype(np.float64)


def normalize_rows(scores: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; an all-zero row becomes uniform."""
    total = scores.sum(axis=1, keepdims=True)
    k = scores.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, scores / np.where(total > 0, total, 1), 1.0 / k)
    return out


def top_classes(probas: np.ndarray) -> np.ndarray:
    """Per row, the classes tied for the highest probability (to rounding)."""
    best = probas.max(axis=1, keepdims=True)
    return probas >= best - 1e-12 * np.maximum(1.0, np.abs(best))


def most_probable(probas: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """The best class per row; ties go to the first class, or to the tied class that a
    per-row uniform draw in ``tie_break`` picks (seeded by the caller, so deterministic)."""
    if probas.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    tied = top_classes(probas)
    if tie_break is None:
        return tied.argmax(axis=1).astype(np.int64)
    n_tied = tied.sum(axis=1)
    pick = np.minimum((np.asarray(tie_break) * n_tied).astype(np.int64), n_tied - 1)
    rank = np.cumsum(tied, axis=1) - 1
    return np.argmax(tied & (rank == pick[:, None]), axis=1).astype(np.int64)


def with_gold(probas: np.ndarray, votes: Votes) -> np.ndarray:
    """Known labels replace the estimate: gold items are certain."""
    mask = votes.gold_mask
    if mask.any():
        probas = probas.copy()
        probas[mask] = 0.0
        probas[mask, votes.gold[mask]] = 1.0
    return probas


def majority_vote(
    votes: Votes, annotator_weight: np.ndarray | None = None, tie_break: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probas): the (weighted) share of votes per class, gold items fixed."""
    probas = with_gold(normalize_rows(vote_scores(votes, annotator_weight)), votes)
    return most_probable(probas, tie_break), probas


def agreement_stats(votes: Votes, probas: np.ndarray) -> dict:
    """Per annotator: votes that match the aggregate label, and votes in all (mergeable).

    An item whose top classes tie is no one label: a vote for one of its ``n`` tied
    classes agrees ``1/n`` (the chance a fair draw picks it). Counted by a drawn label,
    two annotators who always disagree came out 0.49 and 0.51, and Wawa's weighted
    vote then gave every one of their items to the second: the draw's noise, amplified.
    Fractions on the grid (see :func:`on_grid`), so the merged sums are exact."""
    tied = top_classes(probas)
    share = tied / tied.sum(axis=1, keepdims=True)
    agree = on_grid(share[votes.item, votes.label])
    return {
        "agree": np.bincount(votes.annotator, weights=agree, minlength=votes.n_annotators),
        "votes": votes.counts_per_annotator(),
    }


def gold_stats(votes: Votes) -> dict:
    """Per annotator: answers on gold items, and how many were right (mergeable)."""
    if votes.gold is None:
        on_gold = np.zeros(len(votes), dtype=bool)
    else:
        on_gold = votes.gold[votes.item] >= 0
    right = on_gold & (votes.gold[votes.item] == votes.label) if votes.gold is not None else on_gold
    return {
        "gold_votes": np.bincount(votes.annotator, weights=on_gold.astype(np.float64), minlength=votes.n_annotators),
        "gold_right": np.bincount(votes.annotator, weights=right.astype(np.float64), minlength=votes.n_annotators),
    }


def agreement_skill(stats: dict) -> np.ndarray:
    """Share of an annotator's votes that agree with the aggregate (0 for no votes)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(stats["votes"] > 0, stats["agree"] / np.maximum(stats["votes"], 1), 0.0)


def others_agreement_stats(votes: Votes, cast: Votes | None = None, partners=()) -> dict:
    """Per rule: how often its vote agrees with the majority of the *other* votes on an
    item, over the items some other rule voted on (a tie of ``n`` classes agrees ``1/n``).

    Agreement with a majority it is part of counts a rule that fires alone as always
    right (Wawa's skill): on Adult, 0.96 for a rule that is right 0.70 of the time.
    ``cast`` holds every vote cast when ``votes`` are the ones counted, and a rule's
    ``partners`` (pairs of rules that vote together) are no other vote for it: a copy
    agrees with its rule always. Sums on the grid, so merged partitions agree exactly."""
    if len(votes) == 0:
        zero = np.zeros(votes.n_annotators)
        return {"others_agree": zero, "others_votes": zero.copy()}
    cast = votes if cast is None else cast
    others = vote_scores(cast)[votes.item]
    others[np.arange(len(votes)), votes.label] -= 1.0
    if len(partners):
        given = np.full((cast.n_items, cast.n_annotators), -1, dtype=np.int64)
        given[cast.item, cast.annotator] = cast.label
        for a, b, *_ in partners:
            for rule, partner in ((a, b), (b, a)):
                at = np.flatnonzero((votes.annotator == rule) & (given[votes.item, partner] >= 0))
                others[at, given[votes.item[at], partner]] -= 1.0
    seen = others.sum(axis=1) > 0
    tied = others >= others.max(axis=1, keepdims=True)
    agree = np.where(seen, on_grid(tied[np.arange(len(votes)), votes.label] / tied.sum(axis=1)), 0.0)
    return {
        "others_agree": np.bincount(votes.annotator, weights=agree, minlength=votes.n_annotators),
        "others_votes": np.bincount(votes.annotator, weights=seen.astype(np.float64), minlength=votes.n_annotators),
    }


def rule_accuracy(stats: dict, n_classes: int) -> np.ndarray:
    """Each rule's chance of being right where it votes: its agreement with the others,
    with one pseudo-vote per class (a rule never seen beside another gets 1/K, no evidence)."""
    return (stats["others_agree"] + 1.0) / (stats["others_votes"] + n_classes)


def independent_posteriors(votes: Votes, accuracy: np.ndarray) -> np.ndarray:
    """``(n_items, K)`` class probabilities with a uniform prior, each vote right with its
    rule's ``accuracy`` and otherwise any other class alike, rules independent given the
    class (the one-coin model over the votes cast; an abstention says nothing). Gold items
    are certain."""
    k = votes.n_classes
    a = np.clip(np.asarray(accuracy, dtype=np.float64), 1e-6, 1 - 1e-6)[votes.annotator]
    right, wrong = np.log(a), np.log((1 - a) / max(k - 1, 1))
    loglik = np.zeros((votes.n_items, k))
    np.add.at(loglik, votes.item, np.broadcast_to(wrong[:, None], (len(votes), k)))
    np.add.at(loglik, (votes.item, votes.label), right - wrong)
    return with_gold(posterior_from_log(loglik), votes)


# -- Dawid–Skene ----------------------------------------------------------------------------


def posterior_from_log(loglik: np.ndarray) -> np.ndarray:
    """Softmax per row, shifted by the row maximum so nothing underflows.

    Computed class-major: reductions over a few classes per row are slow in numpy's
    row layout and fast across whole rows of a ``(K, n)`` array.
    """
    by_class = np.ascontiguousarray(loglik.T, dtype=np.float64)
    by_class -= by_class.max(axis=0)
    np.exp(by_class, out=by_class)
    by_class /= by_class.sum(axis=0)
    return np.ascontiguousarray(by_class.T)


def _entropy(probas: np.ndarray) -> float:
    p = np.clip(probas, EPS, None)
    return float(on_grid(-(p * np.log(p)).sum(axis=1)).sum())


# The per-item and per-vote terms of the sums EM merges across partitions are rounded to
# multiples of 2**-20 (a millionth) first. Float sums of such numbers are exact while below
# 2**33, so the merged sums, and so every later round, are the same however the items fall
# into partitions: they differed in the last bits, and the confidences written out by up
# to 1e-14 between a run on one partition and a run on twenty.
_GRID = 2.0**20


def on_grid(x) -> np.ndarray:
    return np.round(np.asarray(x, dtype=np.float64) * _GRID) / _GRID


def one_coin_sums(confusion: np.ndarray) -> dict:
    """One-coin's sums (right answers per annotator, answers per true class) out of the
    full model's confusion sums ``[annotator, given, true]``."""
    idx = np.arange(confusion.shape[1])
    return {"right": confusion[:, idx, idx].sum(axis=1), "class_sum_votes": confusion.sum(axis=(0, 1))}


class DawidSkene:
    """Dawid–Skene EM with a confusion matrix per annotator, or one skill (``one_coin``).

    ``errors_[a, l, k]`` is the probability that annotator ``a`` says ``l`` when the truth
    is ``k``; ``priors_`` the class prior; ``skills_`` the expected share of each
    annotator's votes that are right.

    One-coin's posteriors are overconfident where annotators favour a class: a spammer
    who says '1' to 90 % of the items, whatever they are, agrees with the truth ~30 % of
    the time on a 24 % class, and one skill of 0.3 reads each of their '1's as evidence
    for '0' where the answer carries none. On Adult with 1-3 answers per item and 20 %
    such spammers its mean confidence was 0.94 at accuracy 0.76 (Brier 0.19); the full
    model, which gives that spammer the same row for both classes, 0.82 at 0.82 (0.13).
    Without spammers both were calibrated. Smoothing the skill does not help (the
    spammers have answers enough); the full model is the remedy, so this is documented.

    ``smoothing`` is a Dirichlet prior on each column (true class) of a confusion matrix:
    ``smoothing`` pseudo-answers per class on average, half spread evenly over the classes
    (Laplace's rule) and half on the right one, so an annotator is taken as better than
    chance until their answers say otherwise; the M-step is its MAP estimate. Without it
    (0, crowd-kit's estimate) an annotator with one or two answers gets a confusion
    matrix of 0s and 1s, their answer alone makes an item near certain, and on sparse
    crowds the model did worse than majority vote (digits, 1-3 answers per item: 0.55
    against 0.62) with posteriors far above their accuracy. A column's pseudo-answers
    follow its class's share of the items (see :meth:`pseudo_counts`): a fixed
    count per column is best fitted by a column without items, and on a small crowd (4
    annotators, 8 items) or a fixed count in every cell on a sparse one (10 classes, 55
    pseudo-answers against ~9) EM emptied classes until every item was in one.

    ``warm_start`` rounds of the full model are one-coin's (its first rounds, class prior
    held uniform as :meth:`warming_up` says) before the confusion matrices are free.
    From majority vote's shares, a crowd with a 1 % class (binary, 20 % spammers, 10 %
    adversaries, whose noise majority vote reads as 17 % of the items in it) starts
    where the rare class is every item some noisy answers call so: EM crawls from there
    (some 400 rounds smoothed, 1,500 not) and at max_iter 100 labelled 344-866 items
    rare of 89-111. One skill per annotator finds the spammers and adversaries in a few
    rounds, and from there the full model labels 96-105 rare (0.99). Few rounds: run
    to its end, one-coin collapses beside a prolific constant annotator (see
    :meth:`warming_up`), and the full model stayed there. 0: majority vote's start, as
    crowd-kit's.
    """

    def __init__(self, n_classes: int, n_annotators: int, *, one_coin: bool = False, tol: float = 1e-5, max_iter: int = 100,
                 smoothing: float = 0.0, warm_start: int = 0):
        if one_coin and n_classes < 2:
            raise ValueError("one-coin Dawid–Skene needs at least two classes")
        if smoothing < 0:
            raise ValueError("smoothing is a count of pseudo-answers: 0 or more")
        self.n_classes = n_classes
        self.n_annotators = n_annotators
        self.one_coin = one_coin
        self.tol = tol
        self.max_iter = max_iter
        self.smoothing = smoothing
        self.warm_start = 0 if one_coin or n_classes < 2 else warm_start

    def pseudo_counts(self, prior: np.ndarray) -> np.ndarray:
        """The Dirichlet prior's pseudo-answers, ``[given, true]``, the same for every
        annotator: each column's in proportion to the square root of its class's share
        ``prior`` (scaled so the columns average ``smoothing``).

        In proportion to the share itself, a 1 % class's column had 0.02 of the average's
        pseudo-answers, next to none: on a sparse crowd (400 annotators, 1-3 answers per
        item) each annotator's rare column was fitted to the fraction of a rare item they
        saw, the class took whatever items the spammers and adversaries favoured, and EM
        settled with 601 items rare of 89 (0.935; the true confusions and prior label 3,
        0.991). The square root holds the column near "better than chance" a while longer:
        4-41 items rare over four such crowds (0.987-0.991), the dense 1 % crowds 84-98 of
        89-111 (were 96-105), sparse Adult up to 2 points better, dense crowds unchanged."""
        k = self.n_classes
        share = np.sqrt(np.clip(prior, 0.0, None))
        share = share / max(share.mean(), EPS)
        return self.smoothing / 2 * (np.full((k, k), 1.0 / k) + np.eye(k)) * share[None, :]

    # -- the mergeable protocol ---------------------------------------------------------
    def posteriors(self, votes: Votes, state: dict | None) -> np.ndarray:
        """E-step: per item class posteriors; without a state, the majority-vote shares."""
        if state is None:
            return majority_vote(votes)[1]
        table = state["log_errors"].reshape(self.n_annotators * self.n_classes, self.n_classes)
        loglik = votes.incidence @ table + state["log_prior"][None, :]
        return with_gold(posterior_from_log(loglik), votes)

    def stats(self, votes: Votes, state: dict | None) -> dict:
        """E-step with ``state``, then the sums the M-step needs: one product for all of them
        (one-coin's right answers and class totals are sums of the same confusion table)."""
        probas = self.posteriors(votes, state)
        k = self.n_classes
        terms = on_grid(probas)
        confusion = np.asarray(votes.incidence.T @ terms).reshape(self.n_annotators, k, k)
        out = {
            "class_sum": np.ones(len(terms)) @ terms,  # BLAS; numpy's sum over a narrow axis is slow
            "items": float(votes.n_items),
            "votes": votes.counts_per_annotator(),
            "entropy": _entropy(probas),
        }
        if self.one_coin:
            idx = np.arange(k)
            out["right"] = confusion[:, idx, idx].sum(axis=1)
            out["class_sum_votes"] = confusion.sum(axis=(0, 1))
        else:
            out["confusion"] = confusion
        if state is not None and "earlier" in state:
            out.update(movement(self.posteriors(votes, state["earlier"]), probas))
        return out

    def finalize(self, stats: dict, previous: dict | None = None) -> dict:
        """M-step: parameters from the merged sums, and the bound that decides convergence.
        ``previous`` is the state these sums were computed with (None: majority vote's)."""
        n_votes = max(float(stats["votes"].sum()), 1.0)
        prior = stats["class_sum"] / max(stats["items"], 1.0)
        k = self.n_classes
        rounds = 0 if previous is None else previous["round"] + 1
        if self.warming_up(rounds):
            log_prior = np.full(k, -np.log(k))
        else:
            log_prior = np.log(np.clip(prior, EPS, None))
        if self.one_coin or rounds < self.warm_start:
            stats = stats if self.one_coin else {**stats, **one_coin_sums(stats["confusion"])}
            skill = np.where(stats["votes"] > 0, stats["right"] / np.maximum(stats["votes"], 1), 1.0 / k)
            off = (1.0 - skill) / (k - 1)
            errors = np.repeat(off[:, None, None], k, axis=1).repeat(k, axis=2)
            idx = np.arange(k)
            errors[:, idx, idx] = skill[:, None]
            errors = np.clip(errors, EPS, 1 - EPS)
            s, o = np.clip(skill, EPS, 1 - EPS), np.clip(off, EPS, 1 - EPS)
            joint = (stats["right"] * np.log(s) + (stats["votes"] - stats["right"]) * np.log(o)).sum()
            pseudo = None
        else:
            pseudo = self.pseudo_counts(prior)
            counts = stats["confusion"] + pseudo  # the MAP estimate
            errors = np.clip(counts, EPS, None)
            errors = errors / errors.sum(axis=1, keepdims=True)
            joint = float((stats["confusion"] * np.log(errors)).sum())
            idx = np.arange(k)
            right = stats["confusion"][:, idx, idx].sum(axis=1)
            skill = np.where(stats["votes"] > 0, right / np.maximum(stats["votes"], 1), np.nan)
        # an item's class is drawn once: its prior counts once per item (class_sum), not once per
        # answer (crowd-kit's bound, and ours, counted it per answer, and EM's bound then fell:
        # on digits with 60 annotators in 27-32 of 60 rounds)
        data = float(joint + stats["class_sum"] @ log_prior + stats["entropy"])
        log_errors = np.log(errors)
        out = {
            "log_errors": log_errors,
            "log_prior": log_prior,
            "prior": prior,
            "skill": skill,
            "elbo": (data + _prior_term(pseudo, log_errors)) / n_votes,
            "data_bound": data,
            "round": rounds,
        }
        if previous is not None and "data_bound" in previous:
            # both rounds' bounds under this round's Dirichlet prior: the pseudo-answers follow
            # the class prior, so the bound itself is no fixed objective and fell for 100 rounds
            # on a sparse crowd with a 1 % class while EM was still moving items out of it
            before = previous["data_bound"] + _prior_term(pseudo, previous["log_errors"])
            out["elbo_change"] = out["elbo"] - before / n_votes
        earlier = None if previous is None else {"log_errors": previous["log_errors"], "log_prior": previous["log_prior"]}
        return watched(out, previous, stats, self.max_iter, earlier)

    def warming_up(self, rounds: int) -> bool:
        """One-coin holds the class prior uniform in the state from majority vote and the
        first rounds after it. Re-estimated from the start, the prior fed on itself: beside
        a prolific annotator who always answers 0, the first rounds' posteriors raised
        class 0's prior, which raised its posteriors, until every digit was '0' and the
        other annotators mere noise (accuracy 0.10, as crowd-kit's). The skills learnt
        meanwhile keep the good solution, a fixed point EM started from the truth stays
        at; the prior is then free, and imbalanced classes keep their rates."""
        return (self.one_coin or self.warm_start > 0) and rounds < ONE_COIN_UNIFORM_ROUNDS

    def converged(self, old: dict | None, new: dict) -> bool:
        """The bound moved by less than ``tol``, either way. Smoothed, it is no fixed
        objective (the pseudo-answers follow the class prior, which moves each round) and
        may fall for a while before EM settles: stopping at its first fall (crowd-kit's
        rule, right for its unsmoothed EM, whose bound only rises) ended a binary crowd
        beside a prolific constant annotator after 2 rounds, at 0.72 against 0.84 where
        the rounds settle."""
        if old is None or self.warming_up(old["round"]) or old["round"] < self.warm_start:
            return False
        return abs(new.get("elbo_change", new["elbo"] - old["elbo"])) < self.tol

    # -- one batch --------------------------------------------------------------------
    def fit(self, votes: Votes) -> DawidSkene:
        """All rounds on one batch of votes (the distributed stage runs the same rounds)."""
        state = self.finalize(self.stats(votes, None))
        self.elbo_history_, self.elbo_changes_ = [], []
        previous = None
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            new = self.finalize(self.stats(votes, state), state)
            self.n_iter_ += 1
            self.elbo_history_.append(new["elbo"])
            self.elbo_changes_.append(new.get("elbo_change", np.nan))
            done = self.converged(previous, new)
            previous = state = new
            if done:
                break
        self.state_ = state
        self.errors_ = np.exp(state["log_errors"])
        self.priors_ = state["prior"]
        self.skills_ = state["skill"]
        return self

    def predict_proba(self, votes: Votes) -> np.ndarray:
        return self.posteriors(votes, self.state_)

    def predict(self, votes: Votes) -> np.ndarray:
        return most_probable(self.predict_proba(votes))


class Wawa:
    """Worker agreement with aggregate: majority vote, then a vote weighted by each
    annotator's agreement with it. Two rounds: agreement stats, then the weighted vote."""

    def __init__(self, n_annotators: int):
        self.n_annotators = n_annotators

    def stats(self, votes: Votes) -> dict:
        return agreement_stats(votes, majority_vote(votes)[1])

    def finalize(self, stats: dict) -> dict:
        return {"skill": agreement_skill(stats)}

    def fit(self, votes: Votes) -> Wawa:
        self.state_ = self.finalize(self.stats(votes))
        self.skills_ = self.state_["skill"]
        return self

    def predict_proba(self, votes: Votes) -> np.ndarray:
        return majority_vote(votes, self.skills_)[1]


def movement(before: np.ndarray, probas: np.ndarray) -> dict:
    """How the posteriors moved from the state before: labels changed, and the largest
    change of a class's probability. Measured in the last rounds before ``max_iter``
    only (one more E-step each), so a run that reaches it can say what had not
    settled: on a binary crowd with a 1 % class Dawid–Skene's bound still fell by 2e-5
    per answer at round 100 (tol 1e-5, met at round 117) while no label had changed for
    29 rounds; a bare "did not converge" read as "do not trust the labels"."""
    return {"label_changes": float((most_probable(before) != most_probable(probas)).sum()),
            "shift_max": float(np.abs(probas - before).max(initial=0.0))}


def watched(out: dict, previous: dict | None, stats: dict, max_iter: int, earlier: dict | None) -> dict:
    """A new state ``out`` with the bound's last change and, in the last rounds before
    ``max_iter``, the parameters of the state before (``earlier``, for the next round's
    :func:`movement`) and the movement counted so far."""
    if previous is None:
        return out
    out.setdefault("elbo_change", out["elbo"] - previous["elbo"])
    if out["round"] >= max_iter - WATCHED_ROUNDS:
        out["earlier"] = earlier
    if "label_changes" in stats:
        out["watched_rounds"] = previous.get("watched_rounds", 0) + 1
        out["label_changes"] = previous.get("label_changes", 0.0) + stats["label_changes"]
        out["confidence_shift"] = stats["shift_max"]
    return out


def _prior_term(pseudo: np.ndarray | None, log_errors: np.ndarray) -> float:
    """The Dirichlet prior's share of the MAP bound: its pseudo-answers times the log errors."""
    return 0.0 if pseudo is None else float((pseudo[None, :, :] * log_errors).sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Glad:
    """GLAD (Whitehill et al., 2009): annotator ability ``alpha`` and item easiness
    ``beta = exp(b)``; a vote is right with probability ``sigmoid(alpha * beta)``, and a
    wrong vote picks any other class alike.

    Made mergeable: item easiness is local to the item, so each round re-fits it for the
    items of a batch (a few Newton steps from the same start, so the result does not depend
    on the batch), and ``alpha`` moves by one Newton step on summed gradients. Both have
    the Gaussian priors of the paper (mean 1, variance 1; easiness as ``b``), which keeps
    one-answer annotators and one-vote items finite. (Easiness had a prior of its own,
    ``b`` ~ N(0, 1/4): a sparse binary crowd with one annotator who always answered 0 then
    went to 0.31, below majority vote's 0.53, where the paper's prior and crowd-kit get
    0.73-0.80.)

    The class prior stays uniform, as in the paper and crowd-kit. Re-estimated each round
    (as Dawid–Skene does), it fed on itself: with a symmetric error model a class that
    leads the posteriors raises the prior, which raises that class's posteriors, and a
    prolific annotator who always gave one answer, or a crowd of spammers, sent every item
    to one class (0.10 on digits, where a textbook GLAD gets 0.69). ``prior`` in the state
    is the posteriors' class shares, for the report. The uniform prior costs on imbalanced
    classes: on Adult (24 % '>50K') with 1-3 answers per item GLAD labels 32-34 % of the
    items '>50K', and with 2 answers per item scores 0.72 where majority vote, its ties
    given to the first (and commoner) class, scores 0.73. Freed after 3 rounds, the prior
    sent three of eight Adult crowds to '<=50K' alone (0.76) and breast cancer beside a
    prolific constant annotator to one class (0.37); fixed at majority vote's class
    shares it raised Adult to 0.79-0.85 but sent the constant-annotator crowds to one
    class (digits 0.10, breast cancer 0.32-0.37). So it stays uniform. crowd-kit's GLAD,
    which its stopping rule ended after 2 rounds on these crowds (below majority vote),
    agrees with this one when run on (40 rounds: abilities correlate 0.994 on 1,500
    Adult items, accuracy 0.773 against 0.768).
    """

    def __init__(self, n_classes: int, n_annotators: int, *, tol: float = 1e-5, max_iter: int = 100, inner: int = 3, easiness_precision: float = 1.0):
        if n_classes < 2:
            raise ValueError("GLAD needs at least two classes")
        self.n_classes, self.n_annotators = n_classes, n_annotators
        self.tol, self.max_iter, self.inner = tol, max_iter, inner
        self.easiness_precision = easiness_precision

    def _posteriors(self, votes: Votes, alpha: np.ndarray, log_prior: np.ndarray):
        """(posteriors, beta per item, sigmoid per vote) after fitting item easiness."""
        k = self.n_classes
        b = np.ones(votes.n_items)  # log easiness, started at its prior's mean
        a = alpha[votes.annotator]
        onehot_rows = np.arange(len(votes))
        probas = None
        for step in range(self.inner + 1):
            beta = np.exp(b)[votes.item]
            s = np.clip(_sigmoid(a * beta), EPS, 1 - EPS)
            contrib = np.repeat(np.log((1 - s) / (k - 1))[:, None], k, axis=1)
            contrib[onehot_rows, votes.label] = np.log(s)
            probas = with_gold(posterior_from_log(votes.per_item(contrib) + log_prior[None, :]), votes)
            if step == self.inner:
                break
            right = probas[votes.item, votes.label]
            grad = np.bincount(votes.item, a * beta * (right - s), minlength=votes.n_items) - self.easiness_precision * (b - 1.0)
            hess = np.bincount(votes.item, (a * beta) ** 2 * s * (1 - s), minlength=votes.n_items) + self.easiness_precision
            b = b + np.clip(grad / hess, -2.0, 2.0)
        return probas, beta, s

    def posteriors(self, votes: Votes, state: dict | None) -> np.ndarray:
        if state is None:
            return majority_vote(votes)[1]
        return self._posteriors(votes, state["alpha"], state["log_prior"])[0]

    def stats(self, votes: Votes, state: dict | None) -> dict:
        if state is None:
            probas = majority_vote(votes)[1]
            beta = np.ones(len(votes))
            alpha = np.ones(self.n_annotators)
            s = _sigmoid(alpha[votes.annotator] * beta)
        else:
            alpha = state["alpha"]
            probas, beta, s = self._posteriors(votes, alpha, state["log_prior"])
        moved = movement(self.posteriors(votes, state["earlier"]), probas) if state is not None and "earlier" in state else {}
        right = probas[votes.item, votes.label]
        ll = right * np.log(np.clip(s, EPS, None)) + (1 - right) * np.log(np.clip((1 - s) / (self.n_classes - 1), EPS, None))
        return {  # each term on the grid, so the merged sums do not depend on the partitioning (see on_grid)
            "class_sum": on_grid(probas).sum(axis=0),
            "items": float(votes.n_items),
            "votes": votes.counts_per_annotator(),
            "right": np.bincount(votes.annotator, on_grid(right), minlength=self.n_annotators),
            "grad": np.bincount(votes.annotator, on_grid(beta * (right - s)), minlength=self.n_annotators),
            "hess": np.bincount(votes.annotator, on_grid(beta**2 * s * (1 - s)), minlength=self.n_annotators),
            "loglik": float(on_grid(ll).sum()) + _entropy(probas),
            **moved,
        }

    def finalize(self, stats: dict, previous: dict | None = None) -> dict:
        alpha = np.ones(self.n_annotators) if previous is None else previous["alpha"]
        step = (stats["grad"] - (alpha - 1.0)) / (stats["hess"] + 1.0)
        alpha = alpha + np.clip(step, -2.0, 2.0)
        prior = stats["class_sum"] / max(stats["items"], 1.0)
        skill = np.where(stats["votes"] > 0, stats["right"] / np.maximum(stats["votes"], 1), np.nan)
        out = {
            "alpha": alpha,
            "log_prior": np.full(self.n_classes, -np.log(self.n_classes)),
            "prior": prior,
            "skill": skill,
            "elbo": stats["loglik"] / max(float(stats["votes"].sum()), 1.0),
            "round": 0 if previous is None else previous.get("round", 0) + 1,
        }
        earlier = None if previous is None else {"alpha": previous["alpha"], "log_prior": previous["log_prior"]}
        return watched(out, previous, stats, self.max_iter, earlier)

    def converged(self, old: dict | None, new: dict) -> bool:
        return old is not None and abs(new["elbo"] - old["elbo"]) < self.tol

    def fit(self, votes: Votes) -> Glad:
        state = self.finalize(self.stats(votes, None))
        previous = None
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            new = self.finalize(self.stats(votes, state), state)
            self.n_iter_ += 1
            done = self.converged(previous, new)
            previous = state = new
            if done:
                break
        self.state_ = state
        self.alpha_, self.skills_, self.priors_ = state["alpha"], state["skill"], state["prior"]
        return self

    def predict_proba(self, votes: Votes) -> np.ndarray:
        return self.posteriors(votes, self.state_)

    def predict(self, votes: Votes) -> np.ndarray:
        return most_probable(self.predict_proba(votes))
