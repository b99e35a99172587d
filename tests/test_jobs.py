"""Every example job in jobs/ runs as it is, and does what its comment says."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dsbuild

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.yaml"))


@pytest.fixture(scope="module")
def outputs(cluster, tmp_path_factory):
    """Run every job once on the shared cluster (from the repo root, as a user would)."""
    import os

    from distributed import Client

    here = os.getcwd()
    os.chdir(ROOT)
    out = tmp_path_factory.mktemp("jobs")
    manifests = {}
    try:
        with Client(cluster) as client:
            for name in JOBS:
                manifests[name] = dsbuild.run(ROOT / "jobs" / f"{name}.yaml", output=str(out / name), client=client)
    finally:
        os.chdir(here)
    return out, manifests


def kept(outputs, name) -> pd.DataFrame:
    return pd.read_parquet(outputs[0] / name / "data")


@pytest.mark.parametrize("name", JOBS)
def test_job_runs_and_balances(outputs, name):
    manifest = outputs[1][name]
    assert manifest["ledger"]["balanced"]
    assert (outputs[0] / name / "_SUCCESS").exists()


@pytest.mark.parametrize("name", JOBS)
def test_job_warns_about_nothing(outputs, name):
    """An example is a job to copy: a warning about its own settings (clean_adult's IQR
    fences on a column that is mostly 0 marked every gain) teaches the wrong setting."""
    assert outputs[1][name]["warnings"] == []


def test_quickstart_adds_one_copy_per_kept_training_digit(outputs):
    stages = {s["name"]: s for s in outputs[1]["quickstart"]["stages"]}
    assert stages["augment"]["added"] == stages["split"]["metrics"]["split:train"]
    assert stages["sanitize"]["rejected"] > 0
    df = kept(outputs, "quickstart")
    copies = df[df["id"].str.contains("#aug")]
    assert set(copies["split"]) == {"train"} and len(copies) == stages["augment"]["added"]
    originals = df[~df["id"].str.contains("#")]
    shares = pd.crosstab(originals["label"], originals["split"], normalize="index")
    assert ((shares["train"] - 0.8).abs() < 0.01).all()  # stratified: exact in every class
    from dsbuild.report import highlights

    (line,) = [h for h in highlights(outputs[1]["quickstart"]) if h.startswith("split:")]
    assert line.startswith("split: train ") and " · validation " in line and " · test " in line


def test_fairness_weights_make_label_independent_of_sex_in_the_training_split(outputs):
    df = kept(outputs, "fairness_adult")
    train = df[df["split"] == "train"]
    positive = (train["income"] == ">50K").astype(float)
    rates = (positive * train["weight"]).groupby(train["sex"]).sum() / train["weight"].groupby(train["sex"]).sum()
    assert rates.max() - rates.min() < 1e-9
    assert (df.loc[df["split"] != "train", "weight"] == 1.0).all() and len(train) < len(df)
    from dsbuild.report import highlights

    lines = [h for h in highlights(outputs[1]["fairness_adult"]) if h.startswith("reweigh")]
    assert lines and all(h.startswith("reweigh (split == 'train'): disparate impact by ") for h in lines)


def test_clean_adult_says_which_cells_it_filled(outputs):
    """The cleaning stages keep every row: the summary's line is all a reader sees of their work."""
    from dsbuild.report import highlights

    df = kept(outputs, "clean_adult")
    assert df[["workclass", "occupation", "native-country"]].notna().all().all()
    stages = {s["name"]: s for s in outputs[1]["clean_adult"]["stages"]}
    (line,) = [h for h in highlights(outputs[1]["clean_adult"]) if h.startswith("impute:")]
    filled = stages["impute"]["metrics"]["imputed:occupation"]
    assert filled > 0 and f"occupation {int(filled):,}".replace(",", "\u202f") in line


def test_augment_balances_every_class_to_200(outputs):
    counts = kept(outputs, "augment_digits")["label"].value_counts()
    assert sorted(counts.index) == [str(d) for d in range(9)] and (counts == 200).all()


def test_synth_german_balances_and_adds_marked_rows(outputs):
    df = kept(outputs, "synth_german")
    real = df[~df["synthetic"].fillna(False).astype(bool)]
    assert real["credit"].value_counts().to_dict() == {"good": 700, "bad": 700}
    assert int(df["synthetic"].fillna(False).astype(bool).sum()) == 500


def test_crowd_labels_beat_the_noise(outputs):
    df = kept(outputs, "label_digits")
    accuracy = float(np.mean(df["crowd_label"].astype(str) == df["label"].astype(str)))
    assert accuracy > 0.9 and len(df) == 1797
    from dsbuild.report import highlights
    from dsbuild.report.text import num

    summary = outputs[1]["label_digits"]["stages"][-1]["summary"]
    (line,) = [h for h in highlights(outputs[1]["label_digits"]) if h.startswith("aggregate_labels:")]
    assert line == (f"aggregate_labels: dawid_skene over {num(summary['annotations']['used'])} answers by "
                    f"{num(summary['annotators']['count'])} annotators on {num(1797)} items, converged in "
                    f"{summary['rounds']} rounds")


def test_sanitize_breast_cancer_says_what_label_issues_relabelled(outputs):
    """Relabelled rows are kept: the stage table showed nothing of them."""
    from dsbuild.report import highlights
    from dsbuild.report.text import num

    metrics = {s["name"]: s for s in outputs[1]["sanitize_breast_cancer"]["stages"]}["label_issues"]["metrics"]
    (line,) = [h for h in highlights(outputs[1]["sanitize_breast_cancer"]) if h.startswith("label_issues:")]
    assert metrics["relabelled"] > 0
    assert line == f"label_issues: {num(metrics['label_issues'])} label issues found, {num(metrics['relabelled'])} relabelled"
