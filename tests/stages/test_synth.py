"""oversample and synthesize: new rows that do not depend on the partitioning."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import ks_2samp
from sklearn.datasets import load_breast_cancer

import dsbuild
from dsbuild.stages.base import Roles
from dsbuild.stages.synth import Oversample, Synthesize
from dsbuild.testing import run_stage


def parquet_bytes(frame):
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    frame = x.iloc[:, :6].copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["label"] = y.map({0: "malignant", 1: "benign"}).astype(str)
    frame.insert(0, "id", [f"r{i:03d}" for i in range(len(frame))])
    return frame


@pytest.fixture(scope="module")
def adult():
    frame = pd.read_csv(Path(dsbuild.__file__).parent / "io" / "data" / "adult.csv.gz").head(6000)
    frame.insert(0, "id", [f"a{i:05d}" for i in range(len(frame))])
    return frame


def test_oversample_balances_classes_with_interpolated_rows(cancer):
    kept, _ = run_stage(Oversample(), cancer, npartitions=2, roles=Roles(label="label"))
    counts = kept["label"].value_counts()
    assert counts["malignant"] == counts["benign"] == (cancer["label"] == "benign").sum()
    new = kept[kept["id"].str.contains("#smote")]
    assert (new["label"] == "malignant").all()
    features = [c for c in cancer.columns if c not in ("id", "label")]
    mal = cancer.loc[cancer["label"] == "malignant", features]
    assert (new[features].min() >= mal.min() - 1e-9).all() and (new[features].max() <= mal.max() + 1e-9).all()


def test_oversample_where_grows_the_training_rows_only(cancer):
    split = cancer.assign(split=np.where(np.arange(len(cancer)) % 5 == 0, "test", "train"))
    kept, _ = run_stage(Oversample(where=[{"column": "split", "op": "==", "value": "train"}]), split, roles=Roles(label="label"))
    train = kept[kept["split"] == "train"]["label"].value_counts()
    assert train["malignant"] == train["benign"] == ((split["split"] == "train") & (split["label"] == "benign")).sum()
    assert not kept[kept["split"] == "test"]["id"].str.contains("#").any()


def test_synthesize_where_fits_on_the_training_rows_and_makes_training_rows(adult):
    split = adult.assign(split=np.where(np.arange(len(adult)) % 5 == 0, "test", "train"))
    split.loc[split["split"] == "test", "age"] = 120  # the test rows, told apart
    kept, _ = run_stage(Synthesize(rows=400, where=[{"column": "split", "op": "==", "value": "train"}]), split)
    synthetic = kept[kept["synthetic"].astype(bool)]
    assert len(synthetic) == 400 and set(synthetic["split"]) == {"train"}
    assert synthetic["age"].max() <= split.loc[split["split"] == "train", "age"].max()


def test_oversample_leaves_out_a_feature_no_row_has_and_warns_when_a_class_cannot_grow(cancer):
    """An empty export column made every row unusable: no row was made, without a word."""
    empty = cancer.assign(notes_score=np.nan)
    stage = Oversample()
    kept, _ = run_stage(stage, empty, roles=Roles(label="label"))
    new = kept[kept["id"].str.contains("#smote")]
    assert len(new) == sum(stage.summary()["new_rows"].values()) > 0 and new["notes_score"].isna().all()
    planned = sum(stage.summary()["new_rows"].values())
    (note,) = stage.result_warnings({"metrics": {"synthetic": 3}, "in": len(cancer)})
    assert f"made 3 of the {planned:,} rows it planned" in note
    assert stage.result_warnings({"metrics": {"synthetic": planned}, "in": len(cancer)}) == []


def test_oversample_makes_no_rows_for_a_class_missing_every_feature_and_warns():
    """A class whose rows all lack every feature failed the run in scikit-learn's
    NearestNeighbors ("Found array with 0 feature(s)"), naming no class."""
    frame = pd.DataFrame({"id": [f"r{i:02d}" for i in range(20)], "x": [1.0 + i for i in range(15)] + [np.nan] * 5,
                          "y": ["a"] * 15 + ["b"] * 5})
    stage = Oversample(k_neighbors=2)
    kept, _ = run_stage(stage, frame, roles=Roles(label="y"))
    assert kept["y"].value_counts().to_dict() == {"a": 15, "b": 5}
    (note,) = stage.result_warnings({"metrics": {"synthetic": 0}, "in": 20})
    assert "made 0 of the 10 rows it planned" in note


def test_oversample_says_which_class_of_one_row_it_cannot_grow_and_takes_classes_as_the_label_is():
    """A class of one row was left as it was without a word; ``classes: [1]`` for an integer
    label was refused (it had to be written "1")."""
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(13)], "f": np.arange(13.0), "y": [0] * 10 + [1, 1, 2]})
    stage = Oversample(classes=[1, 2], k_neighbors=1)
    kept, _ = run_stage(stage, frame, roles=Roles(label="y"))
    assert kept["y"].value_counts().to_dict() == {0: 10, 1: 10, 2: 1}
    (note,) = stage.result_warnings({"metrics": {"synthetic": 8}, "in": 13})
    assert "left class '2' as it is: a class of one row has no neighbour" in note


def test_oversample_takes_a_class_as_a_number_of_a_label_of_floats():
    """A pandas label with a missing value is float: classes: [1] named no class (they
    read 1.0), so the stage grew nothing (and then refused the class as unknown)."""
    frame = pd.DataFrame({"id": [f"r{i:02d}" for i in range(24)], "f": np.arange(24.0),
                          "y": [0.0] * 16 + [1.0] * 6 + [2.0, np.nan]})
    kept, _ = run_stage(Oversample(classes=[1], k_neighbors=2), frame, roles=Roles(label="y"))
    assert kept["y"].value_counts().to_dict() == {0.0: 16, 1.0: 16, 2.0: 1} and kept["y"].isna().sum() == 1


def test_oversample_refuses_a_class_it_cannot_grow_as_asked(cancer):
    """A typo in classes, or a ratio below a named class's own, added no row without a word."""
    from dsbuild.stages import StageError

    with pytest.raises(StageError, match=r"classes: 'malignnat' is not a class of 'label'.*did you mean 'malignant'"):
        run_stage(Oversample(classes=["malignnat"]), cancer, roles=Roles(label="label"))
    with pytest.raises(StageError, match=r"class 'malignant' has 212 rows, more than ratio 0.5 × the largest class \(357\) = 178.*"
                                         r"raise ratio to at least 0.594"):
        run_stage(Oversample(classes=["malignant"], ratio=0.5), cancer, roles=Roles(label="label"))


def test_oversample_warns_when_it_plans_no_rows_or_fewer_neighbours_than_asked(cancer):
    """A continuous label (every value a class of one row), a ratio every class passes, and a
    class smaller than k_neighbors (whose rows were made towards fewer neighbours) ran
    without a word."""
    continuous = cancer.assign(label=cancer["mean_radius"] + np.arange(len(cancer)) * 1e-6)
    stage = Oversample()
    run_stage(stage, continuous, roles=Roles(label="label"))
    assert stage.result_warnings({"metrics": {}, "in": len(cancer)}) == [
        "stage 'oversample' made no rows: each of its 569 classes has one row: oversample is for a class label, not a continuous one"]
    stage = Oversample(ratio=0.5)
    run_stage(stage, cancer, roles=Roles(label="label"))
    (note,) = stage.result_warnings({"metrics": {}, "in": len(cancer)})
    assert "made no rows: every class it grows already has ratio 0.5 × the largest class (357) rows or more" in note
    stage = Oversample(k_neighbors=8)
    tiny = pd.concat([cancer[cancer["label"] == "benign"], cancer[cancer["label"] == "malignant"].head(4)])
    run_stage(stage, tiny, roles=Roles(label="label"))
    (note,) = stage.result_warnings({"metrics": {"synthetic": 353}, "in": len(tiny)})
    assert "class 'malignant' has 4 rows, too few for k_neighbors=8" in note


def test_synthesize_on_no_rows_makes_none_and_says_so(adult):
    """Every row rejected before it: numpy failed on an empty correlation matrix."""
    stage = Synthesize(rows=50)
    kept, _ = run_stage(stage, adult.iloc[:0])
    assert kept.empty
    (note,) = stage.result_warnings({"metrics": {}, "in": 0})
    assert "made none of its 50 rows: no row reached it to model" in note


@pytest.mark.parametrize("stage", [Oversample, lambda where: Synthesize(rows=50, where=where)], ids=["oversample", "synthesize"])
def test_a_where_that_names_no_row_is_an_error(cancer, stage):
    """A typo in where's value: oversample added nothing without a word, synthesize failed
    in numpy's eigenvalue routine."""
    from dsbuild.stages import StageError

    split = cancer.assign(split="train")
    with pytest.raises(StageError, match=r"where \(split == 'Train'\) matched none of the rows"):
        run_stage(stage(where=[{"column": "split", "op": "==", "value": "Train"}]), split, roles=Roles(label="label"))


def test_oversample_keeps_a_boolean_feature_boolean(cancer):
    """A boolean named in columns.features failed the run with pandas' "Need to pass
    bool-like values": an interpolated 0.37 was cast to the column's nullable boolean."""
    flagged = cancer.assign(large=pd.array(cancer["mean_radius"] > 15, dtype="boolean"))
    kept, _ = run_stage(Oversample(), flagged, roles=Roles(label="label", features=("mean_radius", "mean_texture", "large")))
    new = kept[kept["id"].str.contains("#smote")]
    assert len(new) == 145 and new["large"].dtype == "boolean" and set(new["large"]) == {True, False}


def test_oversample_says_a_text_feature_is_copied_not_interpolated(cancer):
    """A text column in columns.features was coerced to missing and left out without a word."""
    sized = cancer.assign(size=np.where(cancer["mean_radius"] > 15, "large", "small"))
    stage = Oversample()
    roles = Roles(label="label", features=("mean_radius", "mean_texture", "size"))
    kept, _ = run_stage(stage, sized, roles=roles)
    assert stage.column_warnings(sized) == ["stage 'oversample': feature column 'size' is not a number (str): neighbours are "
                                            "found without it, and each new row copies it from the row it is grown from"]
    new = kept[kept["id"].str.contains("#smote")]
    parents = sized.set_index("id").loc[new["id"].str.split("#").str[0], "size"].to_numpy()
    assert len(new) == 145 and (new["size"].to_numpy() == parents).all()


def test_oversample_same_bytes_for_any_partitioning(cancer, client):
    a, _ = run_stage(Oversample(k_neighbors=3), cancer, npartitions=1, roles=Roles(label="label"))
    b, _ = run_stage(Oversample(k_neighbors=3), cancer, npartitions=3, roles=Roles(label="label"))
    assert parquet_bytes(a) == parquet_bytes(b)


def test_oversample_spreads_its_new_rows_over_partitions(cancer):
    """A class and its new rows meet in one partition: with many new rows that partition
    held most of the output (1.7 M of 2 M rows at scale). The new rows now move to
    partitions of their own, about the others' size; the rows are the same."""
    import dask.dataframe as dd

    from dsbuild.stages.base import ADDED, StageContext
    from dsbuild.stages.shapes import Shapes

    stage = Oversample(k_neighbors=3).bind(StageContext("oversample", 0, Roles(label="label")))
    frame = dd.from_pandas(cancer, npartitions=8, sort=False)
    stage.check(frame._meta)
    out = stage.build(frame, Shapes())
    sizes = out.map_partitions(lambda p: pd.Series([len(p), int(p[ADDED].sum())])).compute().to_numpy().reshape(-1, 2)
    assert sizes[:, 1].sum() == 145 and (sizes[:, 1] > 0).sum() == 3  # 145 new rows, ~71 a partition: 3 partitions
    biggest = sizes[:, 0].argmax()  # the malignant class's (212 rows) and its share of the others: no new row
    assert sizes[biggest, 1] == 0 and sizes[biggest, 0] < 212 + 145
    one, _ = run_stage(Oversample(k_neighbors=3), cancer, npartitions=1, roles=Roles(label="label"))
    eight, _ = run_stage(Oversample(k_neighbors=3), cancer, npartitions=8, roles=Roles(label="label"))
    assert parquet_bytes(one) == parquet_bytes(eight)


def test_synthesize_adds_marked_rows_like_the_data(adult):
    kept, _ = run_stage(Synthesize(rows=6000), adult, npartitions=3)
    synthetic = kept[kept["synthetic"]]
    assert len(synthetic) == 6000 and not kept.loc[~kept["synthetic"], "id"].str.contains("#syn").any()
    for c in ("age", "hours-per-week", "education-num"):
        assert ks_2samp(adult[c], synthetic[c]).statistic < 0.05
    assert synthetic["age"].dtype == adult["age"].dtype
    gap = (adult["sex"].value_counts(normalize=True) - synthetic["sex"].value_counts(normalize=True)).abs().max()
    assert gap < 0.03


def test_synthesize_leaves_a_column_with_no_values_empty(adult):
    """A column no row fills (an empty export field) crashed the sampler: it had no
    quantiles to draw from. Its new rows are missing, as all of its old ones are."""
    frame = adult.head(2000).assign(empty=np.nan, empty_text=pd.Series([None] * 2000, dtype=object))
    kept, _ = run_stage(Synthesize(rows=500), frame, npartitions=3)
    new = kept[kept["synthetic"]]
    assert len(new) == 500 and new["empty"].isna().all() and new["empty_text"].isna().all()
    assert ks_2samp(frame["age"], new["age"]).statistic < 0.1


def test_synthesize_says_which_column_it_left_out_for_too_many_categories(adult):
    """A text column past max_categories (or a decimal price, modelled as categories) got
    missing values in every new row, said only in the manifest's summary."""
    frame = adult.head(600).assign(code=[f"c{i}" for i in range(600)])
    stage = Synthesize(rows=50, max_categories=500)
    kept, _ = run_stage(stage, frame)
    assert kept.loc[kept["synthetic"], "code"].isna().all()
    (note,) = stage.result_warnings({"metrics": {}, "in": 600})
    assert "left column 'code' out of the model: its 600 distinct values are more than max_categories (500)" in note


def test_synthesize_warns_that_new_rows_copy_a_column_of_one_value_a_row(adult):
    """An e-mail column (one value a row, fewer than max_categories) was modelled as
    categories: every new row carried a real person's address, without a word."""
    frame = adult.head(300).assign(email=[f"person{i}@example.org" for i in range(300)])
    stage = Synthesize(rows=50)
    kept, _ = run_stage(stage, frame)
    assert kept.loc[kept["synthetic"], "email"].isin(frame["email"]).all()
    (note,) = stage.result_warnings({"metrics": {}, "in": 300})
    assert "column 'email' has a value of its own in every row" in note and "leave it out with the option columns" in note


def test_synthesize_models_times_as_numbers():
    """Timestamps (zoned or not, numpy or Arrow) are modelled like numbers: new rows get times with the
    data's distribution and its correlation with other columns, in the column's type.
    They were left out, and every new row's time was missing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=3000)
    start = pd.Timestamp("2024-03-01", tz="Europe/Paris")
    frame = pd.DataFrame({
        "id": [f"t{i:04d}" for i in range(len(x))],
        "x": x,
        "when": (start + pd.to_timedelta(np.round(3600 * (x + rng.normal(scale=0.2, size=len(x))), 3), unit="s")).astype("datetime64[ms, Europe/Paris]"),
        "naive": pd.Timestamp("2001-01-01") + pd.to_timedelta(rng.integers(0, 86400 * 365, len(x)), unit="s"),
    })
    frame["arrow"] = frame["naive"].astype(pd.ArrowDtype(pa.timestamp("us")))
    kept, _ = run_stage(Synthesize(rows=3000), frame, npartitions=3)
    new = kept[kept["synthetic"]]
    assert len(new) == 3000
    for c in ("when", "naive", "arrow"):
        assert new[c].notna().all() and new[c].dtype == frame[c].dtype
        assert ks_2samp(frame[c].astype("int64"), new[c].astype("int64")).statistic < 0.05
    seconds = (new["when"] - start).dt.total_seconds()
    assert np.corrcoef(new["x"], seconds)[0, 1] > 0.9


def test_synthesize_same_bytes_for_any_partitioning(adult):
    small = adult.head(2000)
    one, _ = run_stage(Synthesize(rows=2500), small, npartitions=1)
    three, _ = run_stage(Synthesize(rows=2500), small, npartitions=3)
    assert parquet_bytes(one) == parquet_bytes(three)


def test_synthesize_spreads_many_new_rows_over_partitions(adult, monkeypatch):
    """A million rows asked of a table in one partition were all made by one task, in one
    worker's memory; each partition now adds at most BLOCKS_PER_PARTITION blocks."""
    import dask.dataframe as dd

    from dsbuild.stages import synth
    from dsbuild.stages.base import StageContext
    from dsbuild.stages.shapes import Shapes

    monkeypatch.setattr(synth, "BLOCKS_PER_PARTITION", 2, raising=False)  # raising: absent before the fix
    small = adult.head(300)
    stage = Synthesize(rows=5000)
    stage.bind(StageContext("synthesize", 0, Roles()))
    frame = dd.from_pandas(small, npartitions=1, sort=False)
    stage.check(frame._meta)
    out = stage.build(frame, Shapes())
    assert out.map_partitions(lambda p: int(p["synthetic"].sum())).compute().tolist() == [2048, 1928, 1024]
    one, _ = run_stage(Synthesize(rows=5000), small, npartitions=1)
    five, _ = run_stage(Synthesize(rows=5000), small, npartitions=5)
    assert len(one) == 5300 and parquet_bytes(one) == parquet_bytes(five)


def test_synthesize_samples_values_of_each_column_type(client, tmp_path):
    """Parquet booleans, dates, lists and dictionary columns (each file with its own
    categories) are modelled as categories, counted by their text: new rows got that text
    (a date or list column then failed to write) and a category the emitting partition
    lacked became missing."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    for k, cats in enumerate([["a", "b"], ["c"], ["a"]]):
        n = 200
        pq.write_table(pa.table({
            "x": [float(i % 13) for i in range(n)],
            "flag": pa.array([None if i % 5 == 0 else i % 2 == 0 for i in range(n)]),
            "day": [datetime.date(2020, 1, 1 + i % 4) for i in range(n)],
            "emb": pa.array([[float(i % 3), 1.0] for i in range(n)], pa.list_(pa.float32())),
            "cat": pa.array([cats[i % len(cats)] for i in range(n)]).dictionary_encode(),
        }), tmp_path / "in" / f"p{k}.parquet")
    dsbuild.run({
        "name": "synth-types", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "in")},
        "stages": [{"synthesize": {"rows": 300}}], "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    out = pq.read_table(tmp_path / "out" / "data")
    new = out.filter(out.column("synthetic")).to_pydict()
    assert len(new["id"]) == 300
    assert set(new["cat"]) == {"a", "b", "c"} and new["cat"].count("c") > 30
    assert {type(v) for v in new["flag"]} == {bool, type(None)}
    assert set(new["day"]) <= {datetime.date(2020, 1, d) for d in range(1, 5)}
    assert {tuple(v) for v in new["emb"]} <= {(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)}


def test_synthesize_keeps_the_marks_an_earlier_synthesize_set_and_refuses_a_column_of_the_users(adult):
    """A second synthesize (or data an earlier run made) set every row it found to not
    synthetic, and a column of the user's named ``synthetic`` was overwritten with marks."""
    from dsbuild.stages import StageError

    small = adult.head(1000)
    once, _ = run_stage(Synthesize(rows=100), small)
    twice, _ = run_stage(Synthesize(rows=100), once, name="synthesize#2")
    assert twice["synthetic"].sum() == twice["id"].str.contains("#syn").sum() == 200
    with pytest.raises(StageError, match="column 'synthetic' .* name another column for the marks with the option marker"):
        run_stage(Synthesize(rows=100), small.assign(synthetic="no"))


def test_the_index_to_csv_wrote_is_neither_grown_from_nor_modelled(tmp_path):
    """oversample left the index to_csv writes ('Unnamed: 0') out of its default features
    without a word, and synthesize modelled it: its new rows drew row numbers from a copula
    that tied them to the label of rows sorted by class."""
    from dsbuild.pipeline import validate_against_source

    data = load_breast_cancer(as_frame=True).frame.sort_values("target", kind="stable").reset_index(drop=True)
    data.to_csv(tmp_path / "cancer.csv")
    job = {"name": "c", "source": {"format": "csv", "path": str(tmp_path / "cancer.csv")}, "columns": {"label": "target"},
           "stages": [{"oversample": {}}, {"synthesize": {"rows": 50}}], "sink": {"path": str(tmp_path / "out")}}
    notes = [n for n in validate_against_source(dsbuild.job(**job)) if "'Unnamed: 0'" in n]
    assert [n.split(":")[0] for n in notes] == ["columns.features", "stage 'synthesize'"]  # said once for the readers
    assert "(read by 'oversample')" in notes[0] and "new rows leave it missing" in notes[1]
    with_sanitize = {**job, "stages": [{"oversample": {}}, {"sanitize": {}}]}
    notes = [n for n in validate_against_source(dsbuild.job(**with_sanitize)) if "'Unnamed: 0'" in n]
    assert len(notes) == 1 and "(read by 'oversample', 'sanitize')" in notes[0]
    frame = pd.read_csv(tmp_path / "cancer.csv").astype({"Unnamed: 0": "Int64"}).assign(id=lambda f: [f"r{i:03d}" for i in range(len(f))])
    kept, _ = run_stage(Synthesize(rows=50), frame, npartitions=2, roles=Roles(label="target"))
    new = kept[kept["synthetic"].fillna(False).astype(bool)]
    assert len(new) == 50 and new["Unnamed: 0"].isna().all() and new["mean radius"].notna().all()
    kept, _ = run_stage(Synthesize(rows=50, columns=["Unnamed: 0", "mean radius"]), frame, npartitions=2, roles=Roles(label="target"))
    assert kept.loc[kept["synthetic"].fillna(False).astype(bool), "Unnamed: 0"].notna().all()  # named, it is modelled


@pytest.fixture(scope="module")
def german():
    frame = pd.read_csv(Path(dsbuild.__file__).parent / "io" / "data" / "german_credit.csv.gz")
    frame.insert(0, "id", [f"g{i:04d}" for i in range(len(frame))])
    return frame


def test_synthesize_keeps_the_labels_links_to_categories(german):
    """One copula placed each category on the unit interval by its frequency and kept only
    monotone links, so German credit's status told the new rows' label little: P(status |
    credit) was off by 0.11 (credit_history 0.13), and a model trained on 700 rows' synthetic
    copies scored AUC 0.75 on the other 300 real rows, against 0.81 trained on the 700. With
    columns.label the copula is fitted per class: off by 0.02, AUC 0.79."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, test = german.iloc[:700], german.iloc[700:]
    kept, _ = run_stage(Synthesize(rows=4000), train, npartitions=3, roles=Roles(label="credit"))
    new = kept[kept["synthetic"]]
    assert abs((new["credit"] == "bad").mean() - (train["credit"] == "bad").mean()) < 0.03
    for c in ("status", "credit_history", "savings"):
        real = pd.crosstab(train[c], train["credit"], normalize="columns")
        made = pd.crosstab(new[c], new["credit"], normalize="columns").reindex_like(real).fillna(0)
        assert (real - made).abs().to_numpy().max() < 0.05, c

    features = [c for c in german.columns if c not in ("id", "credit")]
    numeric = [c for c in features if pd.api.types.is_integer_dtype(german[c])]

    def auc(rows):
        model = make_pipeline(make_column_transformer((StandardScaler(), numeric), (OneHotEncoder(handle_unknown="ignore"), [c for c in features if c not in numeric])),
                              LogisticRegression(max_iter=2000))
        model.fit(rows[features], rows["credit"] == "good")
        return roc_auc_score(test["credit"] == "good", model.predict_proba(test[features])[:, 1])

    assert auc(new) > auc(train) - 0.03


def test_synthesize_by_class_draws_rows_without_a_label_and_pools_a_continuous_label(german):
    """Rows whose label is missing are a class of their own, drawn in their share; a label
    of more than MAX_CLASSES values (a price) is modelled as one more column, as before."""
    from dsbuild.kernels.copula import MAX_CLASSES, ClassCopula, GaussianCopula

    holed = german.assign(credit=german["credit"].where(np.arange(len(german)) % 5 != 0))
    stage = Synthesize(rows=3000)
    kept, _ = run_stage(stage, holed, npartitions=3, roles=Roles(label="credit"))
    new = kept[kept["synthetic"]]
    assert isinstance(stage.copula_, ClassCopula) and stage.summary()["classes"]["null"]["rows"] == 200
    assert abs(new["credit"].isna().mean() - 0.2) < 0.03 and set(new["credit"].dropna()) == {"good", "bad"}
    assert german["amount"].nunique() > MAX_CLASSES
    stage = Synthesize(rows=500)
    kept, _ = run_stage(stage, german, npartitions=3, roles=Roles(label="amount"))
    assert isinstance(stage.copula_, GaussianCopula) and "by_class" not in stage.summary()
    assert kept.loc[kept["synthetic"], "amount"].nunique() > 100
    one, _ = run_stage(Synthesize(rows=1500), holed, npartitions=1, roles=Roles(label="credit"))
    four, _ = run_stage(Synthesize(rows=1500), holed, npartitions=4, roles=Roles(label="credit"))
    assert parquet_bytes(one) == parquet_bytes(four)


def test_oversample_finds_neighbours_in_standard_units_and_makes_rows_in_the_datas(german):
    """oversample found neighbours in raw units: on German credit, amount (DM) decided them
    alone, and a row and its neighbours were 11 years apart in age on average (0.97 standard
    deviation; 4 years, 0.36, after scaling). Each new row now lies between its row and one of its 5
    nearest class-mates in units of each feature's spread over the rows with a class, as a
    StandardScaler before imbalanced-learn's SMOTE; scale: false keeps the raw units."""
    from sklearn.neighbors import NearestNeighbors

    features = ["duration", "amount", "installment_rate", "age", "existing_credits"]
    frame = german[["id", *features, "credit"]].astype({c: float for c in features})  # floats: no rounding
    std = frame[features].std(ddof=0).to_numpy()
    bad = frame[frame["credit"] == "bad"].set_index("id")
    for scale, units in ((True, std), (False, np.ones(len(features)))):
        stage = Oversample(k_neighbors=5, scale=scale)
        kept, _ = run_stage(stage, frame, npartitions=3, roles=Roles(label="credit", features=features))
        new = kept[kept["id"].str.contains("#smote")]
        x = bad[features].to_numpy() / units
        neighbours = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x, return_distance=False)[:, 1:]
        parents = bad.index.get_indexer(new["id"].str.split("#").str[0])
        made = new[features].to_numpy() / units
        for row, p in zip(made, parents):
            ends = x[neighbours[p]] - x[p]
            t = np.clip((ends @ (row - x[p])) / np.einsum("ij,ij->i", ends, ends), 0, 1)
            assert np.linalg.norm(x[p] + t[:, None] * ends - row, axis=1).min() < 1e-6 * np.linalg.norm(row)
        if scale:
            assert np.allclose(list(stage.summary()["scale"].values()), std, rtol=1e-6)
        else:
            assert stage.summary()["scale"] is None


def test_synthesize_keeps_links_between_categories_without_the_label():
    """A copula places each category by its frequency, so links between two category
    columns that are not monotone in that order were mostly lost, with or without the
    label's copula per class: Adult's education × occupation (Cramér's V 0.20) came out
    0.05, marital-status × relationship (0.49) 0.13, relationship × sex (0.65) 0.31. The
    strongest links now draw a category from its linked category's rows."""
    from scipy.stats.contingency import association

    adult = pd.read_csv(Path(dsbuild.__file__).parent / "io" / "data" / "adult.csv.gz", nrows=12000)
    adult.insert(0, "id", [f"a{i:05d}" for i in range(len(adult))])
    stage = Synthesize(rows=12000)
    kept, _ = run_stage(stage, adult, npartitions=3, roles=Roles(label="income"))
    new = kept[kept["synthetic"]]

    def v(frame, a, b):
        return association(pd.crosstab(frame[a].astype(str), frame[b].astype(str)).to_numpy(), method="cramer")

    for a, b in (("education", "occupation"), ("marital-status", "relationship"), ("relationship", "sex")):
        assert abs(v(new, a, b) - v(adult, a, b)) < 0.04, (a, b)
    assert abs(v(new, "relationship", "income") - v(adult, "relationship", "income")) < 0.03  # the label's, per class
    links = stage.summary()["classes"][">50K"]["category_links"]
    assert {(link["from"], link["to"]) for link in links} & {("marital-status", "relationship"), ("relationship", "marital-status")}
    real = pd.crosstab(adult["education"], adult["occupation"], normalize="index")
    made = pd.crosstab(new["education"], new["occupation"], normalize="index").reindex_like(real).fillna(0)
    common = adult["education"].value_counts()[lambda n: n >= 500].index
    assert (real.loc[common] - made.loc[common]).abs().to_numpy().max() < 0.06
