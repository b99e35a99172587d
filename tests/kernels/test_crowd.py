"""Crowd aggregation kernels against a plain reference, closed-form cases and real labels."""

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dsbuild.kernels.crowd import (
    ONE_COIN_UNIFORM_ROUNDS,
    DawidSkene,
    Glad,
    Votes,
    Wawa,
    agreement_skill,
    gold_stats,
    majority_vote,
    merge_stats,
    most_probable,
    posterior_from_log,
)
from dsbuild.kernels.crowd_simulation import simulate_annotations

EPS = 1e-10


def digits_crowd(n_items=None, n_annotators=50, seed=0, **kw):
    y = load_digits().target
    if n_items is not None:
        y = y[:n_items]
    frame, conf, kind = simulate_annotations(y, n_annotators, np.random.default_rng(seed), **kw)
    votes = Votes(frame["item"], frame["annotator"], frame["label"], len(y), n_annotators, 10)
    return y, votes, kind


def reference_dawid_skene(votes: Votes, iterations: int, one_coin=False):
    """Textbook EM written with loops over dicts: the same model, none of the vectorising."""
    K, A = votes.n_classes, votes.n_annotators
    by_item = {}
    for i, a, l in zip(votes.item, votes.annotator, votes.label):
        by_item.setdefault(int(i), []).append((int(a), int(l)))
    probas = np.zeros((votes.n_items, K))
    for i, answers in by_item.items():
        for _, l in answers:
            probas[i, l] += 1 / len(answers)
    history = []
    prior = errors = None  # set at the end of the first round, used from the second
    for it in range(iterations + 1):
        if it > 0:
            probas = np.zeros((votes.n_items, K))
            for i, answers in by_item.items():
                logp = [math.log(max(prior[k], EPS)) + sum(math.log(errors[a][l][k]) for a, l in answers) for k in range(K)]
                m = max(logp)
                w = [math.exp(x - m) for x in logp]
                probas[i] = np.array(w) / sum(w)
        prior = probas.sum(axis=0) / votes.n_items
        if one_coin and it < ONE_COIN_UNIFORM_ROUNDS:  # one-coin's prior is held uniform at first
            prior = np.full(K, 1 / K)
        counts = np.zeros((A, K, K))
        for i, answers in by_item.items():
            for a, l in answers:
                counts[a, l] += probas[i]
        if one_coin:
            skill = np.array([sum(counts[a, l, l] for l in range(K)) / max(counts[a].sum(), 1) for a in range(A)])
            errors = np.array([[[skill[a] if l == k else (1 - skill[a]) / (K - 1) for k in range(K)] for l in range(K)] for a in range(A)])
            errors = np.clip(errors, EPS, 1 - EPS)
        else:
            errors = np.clip(counts, EPS, None)
            errors = errors / errors.sum(axis=1, keepdims=True)
        if it > 0:
            elbo = sum(  # the prior once per item, each answer's error once per answer
                probas[i, k] * (math.log(max(prior[k], EPS)) + sum(math.log(errors[a][l][k]) for a, l in answers))
                for i, answers in by_item.items() for k in range(K)
            )
            p = np.clip(probas, EPS, None)
            history.append((elbo - (p * np.log(p)).sum()) / len(votes))
    return probas, history


@pytest.mark.parametrize("one_coin", [False, True])
def test_dawid_skene_matches_loop_reference(one_coin):
    y, votes, _ = digits_crowd(n_items=150, n_annotators=12)
    model = DawidSkene(10, 12, one_coin=one_coin, tol=-np.inf, max_iter=4).fit(votes)
    ref_probas, ref_history = reference_dawid_skene(votes, 4, one_coin)
    # the model adds terms rounded to a millionth (crowd.on_grid), the reference exact ones
    np.testing.assert_allclose(model.elbo_history_, ref_history, rtol=1e-6)
    # the model's state is after round 4; its posteriors are round 5, the reference's round 4
    np.testing.assert_allclose(model.posteriors(votes, previous_state(votes, one_coin, 3)), ref_probas, atol=1e-5)


def previous_state(votes, one_coin, rounds):
    model = DawidSkene(10, votes.n_annotators, one_coin=one_coin, tol=-np.inf, max_iter=rounds).fit(votes)
    return model.state_


def _stats_of_two_item_sets(model, votes: Votes, state, share: float, seed: int) -> list[dict]:
    """The model's stats over a random split of the items (as two partitions hold them)."""
    side = np.random.default_rng(seed).random(votes.n_items) < share
    parts = []
    for keep in (side, ~side):
        codes = np.cumsum(keep) - 1
        on = keep[votes.item]
        own = Votes(codes[votes.item[on]], votes.annotator[on], votes.label[on], int(keep.sum()), votes.n_annotators,
                    votes.n_classes)
        parts.append(model.stats(own, state))
    return parts


def test_stats_from_any_split_of_items_merge_to_the_same_model():
    y, votes, _ = digits_crowd(n_items=400, n_annotators=20)
    model = DawidSkene(10, 20)
    state = model.finalize(model.stats(votes, None))
    whole = model.stats(votes, state)
    parts = _stats_of_two_item_sets(model, votes, state, 0.3, seed=1)
    merged = merge_stats(*parts)
    for key in whole:  # equal to the last bit: the terms are on a grid whose sums are exact
        np.testing.assert_array_equal(merged[key], whole[key])


def test_the_last_rounds_movement_merges_to_the_same_from_any_split():
    """Label changes add up, and the largest confidence shift is the largest of the parts'
    (added, it would depend on the partitioning)."""
    y, votes, _ = digits_crowd(n_items=400, n_annotators=20)
    model = DawidSkene(10, 20, max_iter=3)
    state = model.finalize(model.stats(votes, None))
    state = model.finalize(model.stats(votes, state), state)
    assert "earlier" in state
    whole = model.stats(votes, state)
    parts = _stats_of_two_item_sets(model, votes, state, 0.4, seed=2)
    merged = merge_stats(*parts)
    assert merged["shift_max"] == whole["shift_max"] == max(p["shift_max"] for p in parts) > 0
    assert merged["label_changes"] == whole["label_changes"]
    assert "earlier" not in DawidSkene(10, 20, max_iter=50).finalize(whole, state)


def test_dawid_skene_beats_majority_vote_with_spammers_and_adversaries():
    y, votes, kind = digits_crowd(n_annotators=60, spammers=0.25, adversaries=0.1)
    assert (kind == 1).any() and (kind == 2).any()
    mv = (majority_vote(votes)[0] == y).mean()
    ds_model = DawidSkene(10, 60).fit(votes)
    ds = (ds_model.predict(votes) == y).mean()
    one = (DawidSkene(10, 60, one_coin=True).fit(votes).predict(votes) == y).mean()
    assert ds > mv + 0.03, (ds, mv)
    assert one > mv, (one, mv)
    # skills separate the kinds of annotator
    skill = ds_model.skills_
    assert skill[kind == 0].mean() > skill[kind == 1].mean() + 0.3
    assert skill[kind == 2].mean() < 0.3


def test_unanimous_annotators_make_certain_labels():
    items = np.repeat(np.arange(6), 3)
    labels = np.repeat([2, 1, 0, 2, 1, 0], 3)
    votes = Votes(items, np.tile([0, 1, 2], 6), labels, 6, 3, 3)
    model = DawidSkene(3, 3).fit(votes)
    probas = model.predict_proba(votes)
    assert model.predict(votes).tolist() == [2, 1, 0, 2, 1, 0]
    assert probas.max(axis=1).min() > 0.999
    np.testing.assert_allclose(model.skills_, 1.0, atol=1e-6)
    np.testing.assert_allclose(model.priors_, [1 / 3] * 3)


def test_majority_vote_closed_form_and_weights():
    votes = Votes([0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [1, 1, 0, 0, 1], 2, 3, 2)
    labels, probas = majority_vote(votes)
    np.testing.assert_allclose(probas, [[1 / 3, 2 / 3], [0.5, 0.5]])
    assert labels.tolist() == [1, 0]  # tie goes to the first class
    labels, probas = majority_vote(votes, annotator_weight=np.array([3.0, 1.0, 1.0]))
    np.testing.assert_allclose(probas, [[0.2, 0.8], [0.75, 0.25]])
    assert labels.tolist() == [1, 0]


def test_ties_go_only_to_tied_classes_and_follow_the_draw():
    probas = np.tile([0.4, 0.1, 0.4, 0.1], (1000, 1))
    draws = np.random.default_rng(0).random(1000)
    picks = most_probable(probas, draws)
    assert set(picks.tolist()) == {0, 2}
    assert 400 < (picks == 0).sum() < 600
    assert np.array_equal(picks, most_probable(probas, draws))
    assert most_probable(probas).tolist() == [0] * 1000


def test_gold_items_keep_their_label_and_score_annotators():
    gold = np.full(4, -1)
    gold[1] = 0
    votes = Votes([0, 0, 1, 1, 2, 3], [0, 1, 0, 1, 1, 0], [1, 1, 0, 1, 1, 0], 4, 2, 2, gold)
    labels, probas = majority_vote(votes)
    assert labels[1] == 0 and probas[1, 0] == 1.0
    stats = gold_stats(votes)
    assert stats["gold_votes"].tolist() == [1, 1]
    assert stats["gold_right"].tolist() == [1, 0]
    model = DawidSkene(2, 2).fit(votes)
    assert model.predict_proba(votes)[1].tolist() == [1.0, 0.0]


def test_wawa_down_weights_disagreeing_annotators():
    y, votes, kind = digits_crowd(n_annotators=60, spammers=0.25, adversaries=0.1)
    model = Wawa(60).fit(votes)
    assert model.skills_[kind == 0].mean() > model.skills_[kind == 2].mean() + 0.3
    assert (model.predict_proba(votes).argmax(axis=1) == y).mean() >= (majority_vote(votes)[0] == y).mean()
    assert agreement_skill({"agree": np.array([0.0]), "votes": np.array([0.0])}).tolist() == [0.0]


def test_incidence_counts_every_vote_in_any_order():
    """Unsorted items and a repeated answer: each vote adds 1 at (item, annotator * K + label)."""
    votes = Votes([2, 0, 2, 1, 0, 2], [1, 0, 0, 1, 0, 1], [1, 2, 0, 2, 2, 1], 4, 2, 3)
    dense = np.zeros((4, 6))
    for i, a, l in zip(votes.item, votes.annotator, votes.label):
        dense[i, a * 3 + l] += 1
    np.testing.assert_array_equal(votes.incidence.toarray(), dense)
    assert votes.item.dtype == np.int32 and votes.label.dtype == np.int8


def test_posterior_from_log_is_a_stable_softmax():
    from scipy.special import softmax

    loglik = np.array([[0.0, -1.0, -2.0], [-1000.0, -1001.0, -999.0], [700.0, 0.0, 700.0]])
    np.testing.assert_allclose(posterior_from_log(loglik), softmax(loglik, axis=1), rtol=1e-12)


def test_votes_reject_codes_out_of_range():
    with pytest.raises(ValueError, match="label codes"):
        Votes([0], [0], [3], 1, 1, 3)
    with pytest.raises(ValueError, match="annotator codes"):
        Votes([0], [-1], [0], 1, 1, 3)


def test_glad_beats_majority_vote_and_ranks_adversaries_lowest():
    y, votes, kind = digits_crowd(n_annotators=60, spammers=0.25, adversaries=0.1)
    model = Glad(10, 60).fit(votes)
    assert (model.predict(votes) == y).mean() > (majority_vote(votes)[0] == y).mean() + 0.03
    assert model.alpha_[kind == 0].mean() > model.alpha_[kind == 1].mean() > model.alpha_[kind == 2].mean()
    np.testing.assert_allclose(model.predict_proba(votes).sum(axis=1), 1.0)


def test_glad_stats_merge_across_any_split_of_items():
    y, votes, _ = digits_crowd(n_items=400, n_annotators=20)
    model = Glad(10, 20)
    state = model.finalize(model.stats(votes, None))
    whole = model.stats(votes, state)
    merged = merge_stats(*_stats_of_two_item_sets(model, votes, state, 0.5, seed=2))
    for key in whole:
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-9, atol=1e-8)


def crowd_beside_one_constant_annotator(y, n_classes, seed=0, share=0.7):
    """1-3 answers per item from 30 annotators, and a 31st who answers 0 to ``share`` of the items."""
    frame, _, _ = simulate_annotations(y, 30, np.random.default_rng(seed), min_votes=1, max_votes=3)
    always_zero = np.flatnonzero(np.random.default_rng(seed).random(len(y)) < share)
    item = np.concatenate([frame["item"], always_zero])
    annotator = np.concatenate([frame["annotator"], np.full(len(always_zero), 30)])
    label = np.concatenate([frame["label"], np.zeros(len(always_zero), dtype=int)])
    return Votes(item, annotator, label, len(y), 31, n_classes)


def test_glad_does_not_collapse_onto_one_class():
    """With the class prior re-estimated each round GLAD labelled every digit 0 (0.10); a
    textbook GLAD (fixed uniform prior, as crowd-kit's) gets 0.69 there."""
    y = load_digits().target
    votes = crowd_beside_one_constant_annotator(y, 10)
    predicted = Glad(10, 31).fit(votes).predict(votes)
    assert np.bincount(predicted, minlength=10).min() > 100
    assert (predicted == y).mean() > (majority_vote(votes)[0] == y).mean() + 0.2


def test_glad_easiness_has_the_papers_prior():
    """On a binary crowd, with easiness held near 1 (b ~ N(0, 1/4)) GLAD trusted the
    constant annotator and got 0.31, below majority vote; with the paper's prior
    (b ~ N(1, 1)) 0.73, as crowd-kit."""
    from sklearn.datasets import load_breast_cancer

    y = load_breast_cancer().target
    votes = crowd_beside_one_constant_annotator(y, 2)
    assert (Glad(2, 31).fit(votes).predict(votes) == y).mean() > (majority_vote(votes)[0] == y).mean() + 0.1


def test_one_coin_does_not_collapse_onto_the_constant_annotators_class():
    """Beside a prolific annotator who always answers 0, one-coin Dawid–Skene (as
    crowd-kit's) put every digit in '0' (0.10): the class prior, re-estimated from the
    first rounds' posteriors, fed on itself. The good solution is a fixed point too (EM
    started from the truth stays there): held uniform while the skills settle, the prior
    no longer runs away."""
    y = load_digits().target
    for seed, share in ((0, 0.7), (1, 1.0), (2, 0.4)):
        votes = crowd_beside_one_constant_annotator(y, 10, seed, share)
        predicted = DawidSkene(10, 31, one_coin=True).fit(votes).predict(votes)
        assert np.bincount(predicted, minlength=10).max() < 0.5 * len(y), (seed, share)
        assert (predicted == y).mean() > (majority_vote(votes)[0] == y).mean() + 0.15, (seed, share)


def test_smoothed_dawid_skene_does_not_stop_when_its_bound_falls():
    """Smoothed, the bound is no fixed objective (the pseudo-answers follow the class
    prior) and fell in the first rounds beside a prolific constant annotator: stopped at
    its first fall, Dawid–Skene ended after 2 rounds at 0.72; the rounds settle at 0.84."""
    from sklearn.datasets import load_breast_cancer

    y = load_breast_cancer().target
    votes = crowd_beside_one_constant_annotator(y, 2)
    model = DawidSkene(2, 31, smoothing=4).fit(votes)
    assert model.n_iter_ > 10
    assert (model.predict(votes) == y).mean() > 0.8


def test_smoothed_dawid_skene_does_not_over_label_a_rare_class_on_a_sparse_crowd():
    """400 annotators, 1-3 answers per item, 1 % of the items in one class: with each
    confusion column's pseudo-answers in proportion to its class's share, the rare column
    had next to none, took the items the noisy annotators favoured, and EM labelled 601
    items rare of 89 (0.935), where the true confusions and prior label 3 (0.991)."""
    rng = np.random.default_rng(0)
    y = (rng.random(10_000) < 0.01).astype(np.int64)
    ann, _, _ = simulate_annotations(y, 400, rng, min_votes=1, max_votes=3, spammers=0.2, adversaries=0.1)
    votes = Votes(ann["item"].to_numpy(), ann["annotator"].to_numpy(), ann["label"].to_numpy(), len(y), 400, 2)
    labels = DawidSkene(2, 400, smoothing=4, warm_start=5).fit(votes).predict(votes)
    assert labels.sum() < 2 * y.sum(), labels.sum()
    assert (labels == y).mean() > 0.98


def test_independent_posteriors_and_agreement_with_the_other_rules():
    """Three rules on four items: a rule's accuracy counts only the items another rule
    voted on, and a lone vote's posterior is its rule's accuracy (uniform prior)."""
    from dsbuild.kernels.crowd import independent_posteriors, others_agreement_stats, rule_accuracy

    # item 0: rules 0, 1 say 0; item 1: rule 0 says 0, rule 2 says 1; item 2: rule 1 alone; item 3: rules 0,1,2 say 1,1,0
    votes = Votes(np.array([0, 0, 1, 1, 2, 3, 3, 3]), np.array([0, 1, 0, 2, 1, 0, 1, 2]), np.array([0, 0, 0, 1, 0, 1, 1, 0]), 4, 3, 2)
    stats = others_agreement_stats(votes)
    assert stats["others_votes"].tolist() == [3, 2, 2]  # rule 1's lone vote on item 2 is not counted
    assert stats["others_agree"].tolist() == [1.5, 1.5, 0]  # item 3: the others tie one each way, which agrees 1/2
    accuracy = rule_accuracy(stats, 2)
    assert np.allclose(accuracy, [2.5 / 5, 2.5 / 4, 1 / 4])
    p = independent_posteriors(votes, accuracy)
    assert np.allclose(p[2], [accuracy[1], 1 - accuracy[1]])
    odds = (accuracy[0] / (1 - accuracy[0])) * (accuracy[1] / (1 - accuracy[1]))
    assert np.isclose(p[0, 0], odds / (1 + odds))
    halves = [others_agreement_stats(Votes(votes.item[m] - votes.item[m].min(), votes.annotator[m], votes.label[m], 2, 3, 2))
              for m in (votes.item < 2, votes.item >= 2)]
    assert all(np.array_equal(halves[0][k] + halves[1][k], stats[k]) for k in stats)


def test_the_bound_em_reports_rises_every_round():
    """The bound counted an item's class prior once per answer (as crowd-kit's does), so it
    was no bound of the model and fell: crowd-kit's model (no smoothing) in 32 of 60 rounds
    on digits, and the smoothed one on Adult in 55 of 60 rounds, by up to 0.014 per answer,
    so "stops when the bound moves less than tol" stopped or ran on by chance. The prior
    now counts once per item, and the change each round compares both rounds under that
    round's Dirichlet prior (the pseudo-answers follow the class prior): EM is an ascent."""
    y = load_digits().target
    rng = np.random.default_rng(1)
    ann, _, _ = simulate_annotations(y, 60, rng, spammers=0.2, adversaries=0.1)
    votes = Votes(ann["item"].to_numpy(), ann["annotator"].to_numpy(), ann["label"].to_numpy(), len(y), 60, 10)
    plain = DawidSkene(10, 60, tol=1e-9, max_iter=60).fit(votes)
    assert np.diff(plain.elbo_history_).min() > -5e-8  # rounding of the posteriors to the grid
    smoothed = DawidSkene(10, 60, smoothing=4, warm_start=5, tol=1e-9, max_iter=60).fit(votes)
    changes = np.array(smoothed.elbo_changes_[6:])  # after the warm start's one-coin rounds (another model)
    assert len(changes) > 20 and changes.min() > -5e-8
    one_coin = DawidSkene(10, 60, one_coin=True, tol=1e-9, max_iter=60).fit(votes)
    assert np.diff(one_coin.elbo_history_[3:]).min() > -5e-8
