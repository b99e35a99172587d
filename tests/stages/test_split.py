import numpy as np
import pandas as pd
import pytest

import dsbuild
from dsbuild.stages.base import StageError
from dsbuild.stages.split import Split, SplitOptions, assign, origin_ids
from dsbuild.testing import run_stage


def _adult(n=6000):
    df = pd.read_csv("dsbuild/io/data/adult.csv.gz", nrows=n)
    return df.assign(id=[f"r{i:05d}" for i in range(len(df))])


def test_shares_in_expectation_and_the_same_at_any_partitioning():
    df = _adult()
    kept, rejected = run_stage(Split(), df, npartitions=3)
    assert rejected.empty and len(kept) == len(df)
    shares = kept["split"].value_counts(normalize=True)
    sd = np.sqrt(0.1 * 0.9 / len(df))
    assert abs(shares["train"] - 0.8) < 5 * np.sqrt(0.16 / len(df)) and abs(shares["test"] - 0.1) < 5 * sd
    again, _ = run_stage(Split(), df.sample(frac=1, random_state=0), npartitions=7)
    assert again.set_index("id")["split"].equals(kept.set_index("id")["split"])
    other_seed, _ = run_stage(Split(), df, npartitions=3, seed=1)
    assert (other_seed["split"] != kept["split"]).mean() > 0.2


def test_copies_follow_their_record_and_groups_stay_whole():
    assert origin_ids(pd.Series(["a.png#aug0", "a.png#aug1#rs2", "p#smote4", "synthesize#syn3", "x#1"])).tolist() == [
        "a.png", "a.png", "p", "synthesize#syn3", "x#1"]
    ids = [f"img{i}" for i in range(300)]
    copies = [f"{i}#aug{k}" for i in ids for k in range(3)]
    split = dict(zip(ids + copies, assign(origin_ids(pd.Series(ids + copies)), {"train": 0.5, "test": 0.5}, 0, "split")))
    assert all(split[c] == split[c.split("#")[0]] for c in copies)

    df = _adult().assign(patient=lambda d: (np.arange(len(d)) // 7).astype(str))
    kept, _ = run_stage(Split(by=["patient"]), df, npartitions=4)
    assert kept.groupby("patient")["split"].nunique().max() == 1
    assert kept["split"].nunique() == 3


def test_rows_missing_their_group_are_split_by_record():
    """All rows without a group were one group: with a third of the patient ids missing,
    that third landed in one split (here train, 30% off its share; at another seed, test)."""
    rng = np.random.default_rng(0)
    patient = pd.array(rng.integers(0, 600, 3000), dtype="Int64")
    patient[rng.random(3000) < 0.3] = pd.NA
    df = pd.DataFrame({"id": [f"r{i}" for i in range(3000)], "patient": patient, "x": rng.random(3000)})
    kept, _ = run_stage(Split(by=["patient"]), df, npartitions=3)
    assert kept.dropna(subset=["patient"]).groupby("patient")["split"].nunique().max() == 1
    without = kept[kept["patient"].isna()]["split"].value_counts(normalize=True)
    assert set(without.index) == {"train", "validation", "test"} and abs(without["test"] - 0.1) < 0.04
    again, _ = run_stage(Split(by=["patient"]), df.sample(frac=1, random_state=1), npartitions=5)
    assert again.set_index("id")["split"].sort_index().equals(kept.set_index("id")["split"].sort_index())


def test_stratified_shares_are_exact_in_every_class_at_any_partitioning():
    """As scikit-learn's stratified split: each class cut at round(share × size)."""
    from dsbuild.stages import Roles

    df = _adult(3001)
    roles = Roles(label="income")
    kept, _ = run_stage(Split(stratify=True), df, npartitions=1, roles=roles)
    table = pd.crosstab(kept["income"], kept["split"])
    for label, n in df["income"].value_counts().items():
        train, validation = round(0.8 * n), round(0.9 * n) - round(0.8 * n)
        assert table.loc[label].to_dict() == {"train": train, "validation": validation, "test": n - train - validation}
    again, _ = run_stage(Split(stratify=True), df.sample(frac=1, random_state=2), npartitions=5, roles=roles)
    assert again.set_index("id")["split"].sort_index().equals(kept.set_index("id")["split"].sort_index())
    with pytest.raises(Exception, match="stratify cuts each class by rows; it cannot keep groups whole"):
        run_stage(Split(stratify=True, by=["race"]), df, roles=roles)
    with pytest.raises(Exception, match="stratify needs the job's label column"):
        run_stage(Split(stratify=True), df)


def test_options_and_warnings():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitOptions(fractions={"train": 0.8, "test": 0.1})
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        SplitOptions(fractions={"train": 1.2, "test": -0.2})
    df = _adult(2000).assign(site=lambda d: np.where(np.arange(len(d)) < 1900, "big", "small"))
    stage = Split(by=["site"])
    kept, _ = run_stage(stage, df)
    counts = kept["split"].value_counts().to_dict()
    (note,) = stage.result_warnings({"metrics": {f"split:{k}": v for k, v in counts.items()}})
    assert "its groups are few or of very different sizes" in note
    with pytest.raises(StageError, match="makes it with action: group"):  # a dedup that dropped its copies names none
        run_stage(Split(by=["duplicate_group"]), df)
    # the source's own split (a benchmark's test set) was overwritten, its test rows shuffled into training
    with pytest.raises(StageError, match="the data already has a column 'split' .*name another with column:"):
        run_stage(Split(), df.assign(split="test"))
    assert run_stage(Split(column="fold"), df.assign(split="test"), npartitions=1)[0]["split"].eq("test").all()

    from dsbuild.stages import StageContext
    from dsbuild.stages.synth import Oversample

    late = Split().bind(StageContext("split", 0))
    (order,) = late.order_warnings([Oversample().bind(StageContext("oversample", 0))], [])
    assert "runs after 'oversample'" in order and "split first, and give 'oversample' where: [{column: split, op: '==', value: train}]" in order
    from dsbuild.stages.fairness import Resample

    train = [{"column": "split", "op": "==", "value": "train"}]
    (later,) = late.order_warnings([], [Resample().bind(StageContext("resample", 0)), Resample(where=train).bind(StageContext("resample2", 0))])
    assert "'resample' runs after 'split' without where, so it fits on the validation and test rows too and changes them" in later
    (added,) = late.order_warnings([], [Oversample().bind(StageContext("oversample", 0))])
    assert "so it fits on the validation and test rows too and adds new rows to them" in added
    from dsbuild.stages.clean import Select

    assert late.order_warnings([], [Select(columns=["age"]).bind(StageContext("select", 0))]) == []  # its where filters
    from dsbuild.stages.fairness import CorrelationRemoverStage

    (fit,) = late.order_warnings([], [CorrelationRemoverStage().bind(StageContext("correlation_remover", 0))])
    assert "without fit_on, so it fits on the validation and test rows too" in fit


def test_a_job_writes_each_rows_split_and_counts_them(client, tmp_path):
    manifest = dsbuild.run({
        "name": "split", "seed": 0, "source": {"format": "sample", "name": "digits", "partitions": 3},
        "columns": {"image": "image", "label": "label"},
        "stages": [{"augment": {"copies": 1, "transforms": ["hflip"]}},
                   {"split": {"fractions": {"train": 0.7, "test": 0.3}}}],  # after: copies still go with their image
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    kept = pd.read_parquet(tmp_path / "out" / "data", columns=["id", "split"])
    parents = kept[~kept["id"].str.contains("#")].set_index("id")["split"]
    copies = kept[kept["id"].str.contains("#aug")]
    assert (copies["split"].to_numpy() == parents.reindex(copies["id"].str.split("#").str[0]).to_numpy()).all()
    metrics = manifest["stages"][2]["metrics"]
    assert metrics["split:train"] + metrics["split:test"] == 2 * 1797 and manifest["warnings"] == []


def test_near_copies_grouped_by_dedup_land_in_one_split(client, tmp_path):
    """near_dedup_images with action group keeps the digits' look-alikes, and split by
    their group puts each cluster whole into one split: no copy trains while its twin tests."""
    manifest = dsbuild.run({
        "name": "split-groups", "seed": 0, "source": {"format": "sample", "name": "digits", "partitions": 3},
        "columns": {"image": "image", "label": "label"},
        "stages": [{"near_dedup_images": {"action": "group"}}, {"split": {"by": ["duplicate_group"]}}],
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    kept = pd.read_parquet(tmp_path / "out" / "data", columns=["id", "duplicate_group", "split"])
    assert len(kept) == 1797 and manifest["warnings"] == []
    sizes = kept.groupby("duplicate_group")["split"].agg(["size", "nunique"])
    assert (sizes["size"] > 1).sum() == manifest["stages"][1]["summary"]["clusters"] > 0
    assert (sizes["nunique"] == 1).all()
