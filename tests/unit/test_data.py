"""Reading tables, profiling columns, detecting the task, splitting, metrics and preprocessing."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer

from autodl.data.dataset import build_dataset
from autodl.data.load import read_table
from autodl.data.profile import profile_columns
from autodl.data.task import detect_task
from autodl.errors import ConfigError, DataError
from autodl.metrics import DEFAULT_METRIC, SECONDARY, resolve_metric, score_all
from autodl.preprocess import DatetimeFeatures, ToNumbers, build_preprocessor, fit_preprocessor
from autodl.split import holdout_split, make_folds

SMALL = pd.DataFrame(
    {
        "num": [1.5, 2.0, 3.25, 4.0],
        "name": ["alpha", "beta", "gamma", "delta"],
        "label": ["yes", "no", "yes", "no"],
    }
)


def assert_small(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["num", "name", "label"]
    assert frame["num"].tolist() == [1.5, 2.0, 3.25, 4.0]
    assert frame["name"].tolist() == ["alpha", "beta", "gamma", "delta"]
    assert frame["label"].tolist() == ["yes", "no", "yes", "no"]


# --------------------------------------------------------------------------- read_table


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
def test_read_table_sniffs_the_delimiter(sep, tmp_path):
    path = tmp_path / "data.csv"
    SMALL.to_csv(path, sep=sep, index=False)
    assert_small(read_table(path))


def test_read_table_explicit_delimiter(tmp_path):
    path = tmp_path / "data.txt"
    SMALL.to_csv(path, sep=";", index=False)
    assert_small(read_table(path, delimiter=";"))


def test_read_table_gzip(tmp_path):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        SMALL.to_csv(handle, sep=";", index=False)
    assert_small(read_table(path))


def test_read_table_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + SMALL.to_csv(index=False).encode("utf-8"))
    frame = read_table(path)
    assert_small(frame)
    assert frame.columns[0] == "num"  # no '\ufeff' glued to the first name


def test_read_table_utf8_text(tmp_path):
    path = tmp_path / "utf8.csv"
    path.write_text("city,y\nMünchen,1\nZürich,0\nBogotá,1\n", encoding="utf-8")
    assert read_table(path)["city"].tolist() == ["München", "Zürich", "Bogotá"]


def test_read_table_latin1_with_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("city,y\nMünchen,1\nZürich,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="--encoding"):
        read_table(path)
    assert read_table(path, encoding="latin-1")["city"].tolist() == ["München", "Zürich"]


def test_read_table_parquet_round_trip(tmp_path):
    path = tmp_path / "data.parquet"
    frame = SMALL.assign(when=pd.to_datetime(["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01"]))
    frame.to_parquet(path, index=False)
    read = read_table(path)
    assert list(read.columns) == ["num", "name", "label", "when"]
    pd.testing.assert_frame_equal(read, frame, check_dtype=False)


def test_read_table_bad_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="broken.parquet"):
        read_table(path)


@pytest.mark.parametrize("sep", [",", ";"])
def test_read_table_quoted_fields(sep, tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text(
        f'id{sep}note{sep}y\n1{sep}"one{sep} two"{sep}a\n2{sep}"multi\nline"{sep}b\n'
        f'3{sep}"say ""hi"""{sep}a\n4{sep}plain{sep}b\n'
    )
    frame = read_table(path)
    assert list(frame.columns) == ["id", "note", "y"]
    assert frame["note"].tolist() == [f"one{sep} two", "multi\nline", 'say "hi"', "plain"]
    assert frame["y"].tolist() == ["a", "b", "a", "b"]


def test_read_table_columns_are_strings(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("1,2,y\n3,4,a\n5,6,b\n")
    assert list(read_table(path).columns) == ["1", "2", "y"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "empty"), (b"a,b,y\n", "no data rows"), (b"\n\n\n", "blank")],
    ids=["empty", "header_only", "blank_lines"],
)
def test_read_table_empty_inputs(content, needle, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=needle) as info:
        read_table(path)
    assert "bad.csv" in str(info.value)


def test_read_table_missing_and_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="folder"):
        read_table(tmp_path)


# --------------------------------------------------------------------------- profile_columns


def _kinds(frame: pd.DataFrame) -> dict[str, str]:
    return {column.name: column.kind for column in profile_columns(frame).columns}


def test_profile_column_kinds():
    n = 30
    frame = pd.DataFrame(
        {
            "row": np.arange(1, n + 1),  # not an ID-like name, but distinct integers in order
            "passenger_id": np.random.default_rng(0).permutation(n) + 100,
            "comment": [f"this is free text sentence number {i}" for i in range(n)],
            "const": ["same"] * n,
            "colour": ["red", "green", "blue"] * 10,
            "amount": [f"{1000 + i * 37:,}" for i in range(n)],  # "1,000", "1,037", ...
            "day": [f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
            "stamp": [f"2021-03-{1 + i % 28:02d}T{i % 24:02d}:15:00" for i in range(n)],
            "measure": np.random.default_rng(1).normal(size=n),
            "flag": [True, False] * 15,
            "blank": [np.nan] * n,
        }
    )
    kinds = _kinds(frame)
    assert kinds == {
        "row": "id",
        "passenger_id": "id",
        "comment": "text",
        "const": "constant",
        "colour": "categorical",
        "amount": "numeric",
        "day": "datetime",
        "stamp": "datetime",
        "measure": "numeric",
        "flag": "categorical",
        "blank": "empty",
    }
    profile = profile_columns(frame)
    assert profile.used == ["comment", "colour", "amount", "day", "stamp", "measure", "flag"]
    assert {column.name for column in profile.dropped} == {"row", "passenger_id", "const", "blank"}
    assert all(column.reason for column in profile.columns)


def test_profile_shuffled_integers_without_id_name_are_numeric():
    values = np.random.default_rng(0).permutation(40)
    assert _kinds(pd.DataFrame({"count": values, "x": np.arange(40) % 3}))["count"] == "numeric"


def test_profile_camel_case_id_names_are_identifiers():
    values = np.random.default_rng(0).permutation(40) + 1
    kinds = _kinds(
        pd.DataFrame({"PassengerId": values, "customerID": values, "paid": values, "x": values % 3})
    )
    assert kinds["PassengerId"] == "id" and kinds["customerID"] == "id"
    assert kinds["paid"] == "numeric"


def test_profile_missing_values_are_counted():
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, np.nan], "c": ["a", None, "b", "a"]})
    columns = {column.name: column for column in profile_columns(frame).columns}
    assert columns["x"].n_missing == 2 and columns["x"].kind == "numeric"
    assert columns["c"].n_missing == 1 and columns["c"].kind == "categorical"


def test_profile_without_usable_columns_raises():
    with pytest.raises(DataError, match="no usable feature columns"):
        profile_columns(pd.DataFrame({"k": ["same"] * 5, "e": [np.nan] * 5}))


# --------------------------------------------------------------------------- detect_task


def test_detect_task_string_labels_binary():
    info = detect_task(pd.Series(["yes", "no", "no", "yes", None]))
    assert info.kind == "binary"
    assert info.classes == ("no", "yes")
    assert info.is_classification and info.n_classes == 2


def test_detect_task_string_labels_multiclass():
    info = detect_task(pd.Series(["cat", "dog", "bird", "dog"] * 5))
    assert info.kind == "multiclass"
    assert info.classes == ("bird", "cat", "dog")  # labels stay labels


def test_detect_task_floats_regression():
    info = detect_task(pd.Series(np.random.default_rng(0).normal(size=50)))
    assert info.kind == "regression" and info.classes is None and not info.is_classification


def test_detect_task_few_integers_multiclass():
    info = detect_task(pd.Series(np.tile([1, 2, 3], 100)))
    assert info.kind == "multiclass"
    assert info.classes == (1, 2, 3)


def test_detect_task_two_integers_binary():
    assert detect_task(pd.Series([0, 1] * 10)).kind == "binary"


def test_detect_task_many_integers_regression():
    info = detect_task(pd.Series(np.arange(200) % 200 + 1000))
    assert info.kind == "regression"


def test_detect_task_infinite_target_is_regression_without_warning():
    with np.errstate(all="raise"):
        assert detect_task(pd.Series([1.0, 2.0, np.inf, 4.0])).kind == "regression"


def test_detect_task_override():
    labels = pd.Series(["a", "b", "c"] * 5)
    assert detect_task(pd.Series(np.tile([1, 2, 3], 100)), "regression").kind == "regression"
    assert detect_task(pd.Series(["1", "2.5", "3"]), "regression").kind == "regression"
    info = detect_task(pd.Series(np.arange(200)), "multiclass")
    assert info.kind == "multiclass" and info.n_classes == 200
    assert detect_task(labels, "multiclass").reason == "set by --task"
    with pytest.raises(DataError, match="--task regression") as info_error:
        detect_task(labels, "regression")
    assert "'a'" in str(info_error.value)
    with pytest.raises(DataError, match="--task binary"):
        detect_task(labels, "binary")


def test_integers_with_a_value_too_rare_for_a_class_are_a_count_to_regress():
    counts = pd.Series(np.random.default_rng(0).poisson(3.0, size=1500))  # 0..11, 11 in one row
    info = detect_task(counts, min_class_rows=7)
    assert info.kind == "regression"
    assert "too few to be a class" in info.reason
    assert detect_task(pd.Series(np.tile([1, 2, 3], 100)), min_class_rows=7).kind == "multiclass"
    assert detect_task(pd.Series([0] * 50 + [1]), min_class_rows=7).kind == "binary"  # a label pair


def test_a_target_of_amounts_written_as_text_is_regressed_on_the_numbers():
    rng = np.random.default_rng(0)
    amounts = rng.uniform(10, 5000, size=60)
    frame = pd.DataFrame({"x": amounts + rng.normal(size=60), "price": [f"${v:,.2f}" for v in amounts]})
    dataset = build_dataset(frame, target="price", folds=3)
    assert dataset.task.kind == "regression"
    np.testing.assert_allclose(dataset.y, amounts.round(2))


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["1,234", "12,345,678.5", "7"], [1234.0, 12345678.5, 7.0]),
        (["0,346", "-1,303", "12,5"], [0.346, -1.303, 12.5]),  # decimal commas
        (["1.234,5", "3,25", None], [1234.5, 3.25, np.nan]),
        (
            ["$1,234.56", "4.5%", "12 %", "€ 3", "1 234 567", "12 34", "?"],
            [1234.56, 4.5, 12, 3, 1234567, np.nan, np.nan],
        ),
    ],
)
def test_numbers_written_as_text_are_read_with_the_columns_own_convention(cells, expected):
    column = pd.DataFrame({"v": cells})
    read = ToNumbers().fit(column).transform(column)[:, 0]
    np.testing.assert_allclose(read, expected)


def test_a_decimal_comma_column_is_numeric_and_says_so():
    profile = profile_columns(
        pd.DataFrame({"v": [f"{v:.3f}".replace(".", ",") for v in np.linspace(-2, 2, 50)]})
    )
    assert profile.columns[0].kind == "numeric"
    assert "decimal comma" in profile.columns[0].reason


def test_build_dataset_encodes_labels_and_drops_missing_target():
    frame = pd.DataFrame(
        {
            "x": np.arange(40, dtype=float)[::-1] * 0.5,
            "y": ["b", "a"] * 19 + [None, None],
        }
    )
    dataset = build_dataset(frame, target="y", folds=3, test_size=0.2)
    assert dataset.task.classes == ("a", "b")
    assert dataset.n_rows == 38 and dataset.n_missing_target == 2
    assert dataset.y.tolist()[:4] == [1, 0, 1, 0]
    assert dataset.labels(dataset.y[:2]).tolist() == ["b", "a"]


# --------------------------------------------------------------------------- split


@pytest.mark.parametrize("stratify", [True, False])
def test_holdout_is_disjoint_and_complete(stratify):
    y = np.array([0] * 70 + [1] * 30)
    holdout = holdout_split(y, test_size=0.2, stratify=stratify, seed=0)
    assert len(holdout.test) == 20
    assert not set(holdout.dev) & set(holdout.test)
    assert sorted([*holdout.dev, *holdout.test]) == list(range(100))


def test_holdout_stratification_keeps_class_shares():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    holdout = holdout_split(y, test_size=0.2, stratify=True, seed=3)
    assert np.bincount(y[holdout.test]).tolist() == [12, 6, 2]
    assert np.bincount(y[holdout.dev]).tolist() == [48, 24, 8]


def test_holdout_zero_test_size():
    holdout = holdout_split(np.arange(10), test_size=0.0, stratify=False, seed=0)
    assert holdout.dev.tolist() == list(range(10)) and len(holdout.test) == 0


def test_holdout_is_deterministic():
    y = np.arange(50) % 2
    a = holdout_split(y, test_size=0.3, stratify=True, seed=7)
    b = holdout_split(y, test_size=0.3, stratify=True, seed=7)
    assert a.test.tolist() == b.test.tolist()


@pytest.mark.parametrize(("folds", "repeats"), [(5, 1), (3, 2), (4, 3)])
@pytest.mark.parametrize("stratify", [True, False])
def test_folds_cover_every_row_once_per_repeat(folds, repeats, stratify):
    y = np.array([0] * 40 + [1] * 20)
    made = make_folds(y, folds=folds, repeats=repeats, stratify=stratify, seed=0)
    assert len(made) == folds * repeats
    assert [fold.index for fold in made] == list(range(folds * repeats))
    for repeat in range(repeats):
        in_repeat = [fold for fold in made if fold.repeat == repeat]
        assert len(in_repeat) == folds
        validated = np.concatenate([fold.valid for fold in in_repeat])
        assert sorted(validated.tolist()) == list(range(len(y)))
        for fold in in_repeat:
            assert not set(fold.train) & set(fold.valid)
            assert len(fold.train) + len(fold.valid) == len(y)


def test_stratified_folds_keep_class_shares():
    y = np.array([0] * 40 + [1] * 20)
    for fold in make_folds(y, folds=5, repeats=2, stratify=True, seed=1):
        assert np.bincount(y[fold.valid]).tolist() == [8, 4]


def test_repeats_reshuffle():
    y = np.arange(30) % 2
    made = make_folds(y, folds=3, repeats=2, stratify=True, seed=0)
    first = sorted(tuple(sorted(fold.valid)) for fold in made[:3])
    second = sorted(tuple(sorted(fold.valid)) for fold in made[3:])
    assert first != second


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_resolve_metric_defaults(task):
    metric = resolve_metric(task, None)
    assert metric.name == DEFAULT_METRIC[task]


def test_resolve_metric_directions():
    assert resolve_metric("binary", None).direction == "maximize"
    assert resolve_metric("multiclass", None).direction == "minimize"
    assert resolve_metric("regression", "r2").greater_is_better
    assert resolve_metric("regression", "mae").better(0.1, 0.2)
    assert resolve_metric("binary", "accuracy").worst() == -np.inf


@pytest.mark.parametrize(
    ("task", "name"), [("binary", "rmse"), ("regression", "roc_auc"), ("multiclass", "nope")]
)
def test_resolve_metric_wrong_metric(task, name):
    with pytest.raises(ConfigError) as info:
        resolve_metric(task, name)
    message = str(info.value)
    assert f"'{name}'" in message and task in message and "Fix:" in message
    assert DEFAULT_METRIC[task] in message.split("Fix:")[1]


def test_score_all_binary():
    y = np.array([0, 1, 1, 0, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.6, 0.4], [0.8, 0.2]])
    scores = score_all("binary", resolve_metric("binary", None), y, proba)
    assert set(scores) == {"roc_auc", *SECONDARY["binary"]}
    assert scores["roc_auc"] == pytest.approx(1.0)
    assert scores["accuracy"] == pytest.approx(5 / 6)


def test_score_all_multiclass_and_regression():
    y = np.array([0, 1, 2, 2])
    proba = np.eye(3)[[0, 1, 2, 1]] * 0.9 + 0.1 / 3
    scores = score_all("multiclass", resolve_metric("multiclass", "accuracy"), y, proba)
    assert set(scores) == {"accuracy", "balanced_accuracy", "f1"}
    assert scores["accuracy"] == pytest.approx(0.75)

    values = np.array([1.0, 2.0, 3.0, 4.0])
    scores = score_all("regression", resolve_metric("regression", None), values, values + 1)
    assert scores == pytest.approx({"rmse": 1.0, "r2": 0.2, "mae": 1.0})


# --------------------------------------------------------------------------- preprocess


def _mixed_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    x[::7] = np.nan
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    colour[::5] = None
    return pd.DataFrame(
        {
            "x": x,
            "amount": [f"{1000 + i:,}" for i in range(n)],
            "colour": colour,
            "day": [f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
        }
    )


@pytest.mark.parametrize("style", ["dense", "tree"])
def test_build_preprocessor_fits_with_missing_values(style):
    frame = _mixed_frame()
    profile = profile_columns(frame)
    assert profile.names("numeric") == ["x", "amount"]
    assert profile.names("categorical") == ["colour"]
    assert profile.names("datetime") == ["day"]
    transformer = build_preprocessor(profile, style).fit(frame)
    out = transformer.transform(frame)
    assert out.shape[0] == len(frame)
    assert out.dtype.kind == "f"
    if style == "dense":
        assert not np.isnan(out).any()  # imputed
    names = list(transformer.get_feature_names_out())
    assert "day_year" in names and "day_epoch_days" in names
    assert len(names) == out.shape[1]


@pytest.mark.parametrize("style", ["dense", "embedding", "tree"])
def test_fit_preprocessor_transforms_as_a_plain_fit(style, monkeypatch):
    frame = _mixed_frame()
    profile = profile_columns(frame)
    plain = build_preprocessor(profile, style).fit(frame)
    stacked = []
    original = ColumnTransformer._hstack
    monkeypatch.setattr(
        ColumnTransformer, "_hstack", lambda self, Xs, **kw: stacked.append(1) or original(self, Xs, **kw)
    )
    lean = fit_preprocessor(build_preprocessor(profile, style), frame)
    assert not stacked  # the fit never built the output matrix
    assert type(lean) is type(plain) and "_hstack" not in vars(lean)
    np.testing.assert_array_equal(lean.transform(frame), plain.transform(frame))
    assert stacked  # ... which transform still does


@pytest.mark.parametrize("style", ["dense", "tree"])
def test_unseen_category_does_not_raise(style):
    frame = _mixed_frame()
    transformer = build_preprocessor(profile_columns(frame), style).fit(frame)
    new = frame.head(3).copy()
    new["colour"] = ["purple", "never-seen", None]
    new.loc[0, "amount"] = "not a number"
    out = transformer.transform(new)
    assert out.shape == (3, transformer.transform(frame.head(3)).shape[1])


def test_quantile_scaling_spreads_skewed_numbers_and_keeps_indicators_two_valued():
    rng = np.random.default_rng(0)
    amount = rng.lognormal(mean=3.0, sigma=2.0, size=500)  # heavy right tail
    amount[::10] = np.nan
    frame = pd.DataFrame({"amount": amount, "flag": rng.choice([0.0, 1.0], size=500, p=[0.9, 0.1])})
    profile = profile_columns(frame)
    standard = build_preprocessor(profile, "dense").fit_transform(frame)
    quantile = build_preprocessor(profile, "dense", "quantile").fit_transform(frame)
    names = list(build_preprocessor(profile, "dense", "quantile").fit(frame).get_feature_names_out())
    assert names == ["amount", "flag", "missingindicator_amount"]
    assert quantile.shape == standard.shape and not np.isnan(quantile).any()

    # standardized, the middle half of the rows sits in a sliver; quantiles spread it like a normal
    def spread(values):
        return np.subtract(*np.percentile(values, [75, 25]))

    assert spread(standard[:, 0]) < 0.3
    assert 1.1 < spread(quantile[:, 0]) < 1.6  # a standard normal's interquartile range: 1.35
    assert np.isclose(np.median(quantile[~np.isnan(amount), 0]), 0.0, atol=0.1)
    for column in (1, 2):  # a 0/1 flag and the missing-value indicator stay two values, in order
        low, high = np.unique(quantile[:, column])
        assert low < high


def test_build_preprocessor_unknown_numeric_scaling():
    with pytest.raises(ValueError, match="numeric_scaling"):
        build_preprocessor(profile_columns(_mixed_frame()), "dense", "minmax")


def test_build_preprocessor_unknown_style():
    with pytest.raises(ValueError, match="style"):
        build_preprocessor(profile_columns(_mixed_frame()), "wide")


def test_datetime_features_expand_a_date_column():
    dates = pd.DataFrame({"when": ["2021-03-15 10:30:00", "2020-01-01", None]})
    features = DatetimeFeatures().fit(dates)
    out = features.transform(dates)
    assert out.shape == (3, len(DatetimeFeatures.PARTS))
    assert out[0, :5].tolist() == [2021, 3, 15, 0, 10]  # year, month, day, Monday, hour
    assert out[1, :5].tolist() == [2020, 1, 1, 2, 0]
    assert out[1, 5] == (pd.Timestamp("2020-01-01") - pd.Timestamp("1970-01-01")).days
    assert np.isnan(out[2]).all()
    assert list(features.get_feature_names_out()) == [f"when_{part}" for part in DatetimeFeatures.PARTS]


def test_gradient_boosting_splits_only_low_cardinality_columns_as_categories():
    from autodl.data.profile import profile_columns
    from autodl.preprocess import NATIVE_CATEGORY_LEVELS, tree_categorical_mask

    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "few": rng.choice(["a", "b", "c"], size=n),
            "many": rng.choice([f"v{i}" for i in range(NATIVE_CATEGORY_LEVELS + 40)], size=n),
        }
    )
    profile = profile_columns(frame)
    assert [c.kind for c in profile.columns] == ["numeric", "categorical", "categorical"]
    assert tree_categorical_mask(profile) == [False, True, False]


def test_probabilities_of_a_model_on_float32_features_sum_to_one():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from autodl.candidates.base import predict_scores

    frame = _mixed_frame(90)
    y = np.arange(90) % 3
    pipeline = make_pipeline(build_preprocessor(profile_columns(frame), "dense"), LogisticRegression())
    pipeline.fit(frame, y)
    assert pipeline.predict_proba(frame).dtype == np.float32  # the dense features are float32
    scores = predict_scores(pipeline, frame, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=0, atol=1e-12)
