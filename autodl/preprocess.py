"""Unfitted preprocessing per column kind; always fitted inside a training fold only."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, QuantileTransformer, StandardScaler

from autodl.data.numbers import parse_numbers, writes_decimal_comma
from autodl.data.profile import TableProfile

MISSING_LABEL = "__missing__"
MIN_CATEGORY_FREQUENCY = 5
MAX_ONEHOT_CATEGORIES = 32
STYLES = ("dense", "tree", "embedding")
# Most labels a categorical column may have for gradient boosting to split it as categories.
NATIVE_CATEGORY_LEVELS = 32
NUMERIC_SCALINGS = ("standard", "quantile")
# Numbers per free-text column; with 16, titanic's names diluted the forests (CV AUC 0.866 vs 0.881).
TEXT_COMPONENTS = 8
TEXT_VOCABULARY = 20_000  # most frequent words and word pairs kept per column
TEXT_FIT_ROWS = 50_000  # rows a column's vocabulary and components are learned from, at most


class _OneToOne(BaseEstimator, TransformerMixin):
    """A stateless transformer whose output column i is input column i, under the same name."""

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features, dtype=object)


class ToNumbers(_OneToOne):
    """Coerce columns to float: booleans, or numbers written as text ('1,234', '3,5', '$12',
    '4%'); whether a column writes a decimal comma is learned in `fit`."""

    def fit(self, X, y=None):
        frame = pd.DataFrame(X)
        self.n_features_in_ = frame.shape[1]
        self.decimal_comma_ = [
            not pd.api.types.is_numeric_dtype(frame.iloc[:, i]) and writes_decimal_comma(frame.iloc[:, i])
            for i in range(frame.shape[1])
        ]
        return self

    def transform(self, X) -> np.ndarray:
        frame = pd.DataFrame(X)
        return np.column_stack(
            [parse_numbers(frame.iloc[:, i], comma).to_numpy() for i, comma in enumerate(self.decimal_comma_)]
        )


class ToLabels(_OneToOne):
    """Turn every categorical value into a string label; missing values become one label."""

    def transform(self, X) -> np.ndarray:
        frame = pd.DataFrame(X).astype(object)
        return frame.where(frame.notna(), MISSING_LABEL).astype(str).to_numpy(dtype=object)


class DatetimeFeatures(BaseEstimator, TransformerMixin):
    """Expand each datetime column into year, month, day, weekday, hour and days since 1970."""

    PARTS = ("year", "month", "day", "weekday", "hour", "epoch_days")

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(pd.DataFrame(X).columns.astype(str), dtype=object)
        return self

    def transform(self, X) -> np.ndarray:
        frame = pd.DataFrame(X)
        blocks = []
        for i in range(frame.shape[1]):
            stamps = pd.to_datetime(frame.iloc[:, i], errors="coerce", format="mixed")
            if getattr(stamps.dt, "tz", None) is not None:
                stamps = stamps.dt.tz_convert(None)
            epoch = (stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
            parts = [
                stamps.dt.year,
                stamps.dt.month,
                stamps.dt.day,
                stamps.dt.day_of_week,  # Monday=0, as .dt.weekday (deprecated in pandas 3.1)
                stamps.dt.hour,
                epoch,
            ]
            blocks.append(np.column_stack([part.to_numpy(dtype=float, na_value=np.nan) for part in parts]))
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features=None):
        names = input_features if input_features is not None else self.feature_names_in_
        return np.asarray([f"{name}_{part}" for name in names for part in self.PARTS], dtype=object)


class TextComponents(BaseEstimator, TransformerMixin):
    """Each free-text column as TEXT_COMPONENTS numbers: TF-IDF of its words and word pairs,
    reduced by truncated SVD (latent semantic analysis).

    The width is fixed whatever the vocabulary, so that the columns after it keep their
    positions (gradient boosting's categorical mask is positional): components a small
    vocabulary cannot give are zeros. Words must occur in two training rows to count; a column
    with no such word (all missing, say) gives zeros.
    """

    def __init__(self, n_components: int = TEXT_COMPONENTS, random_state: int = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        frame = pd.DataFrame(X)
        self.n_features_in_ = frame.shape[1]
        self.feature_names_in_ = np.asarray(frame.columns.astype(str), dtype=object)
        rows = np.arange(len(frame))
        if len(rows) > TEXT_FIT_ROWS:
            rows = np.sort(
                np.random.default_rng(self.random_state).choice(rows, TEXT_FIT_ROWS, replace=False)
            )
        self.vectorizers_, self.reducers_ = [], []
        for i in range(frame.shape[1]):
            vectorizer = TfidfVectorizer(
                ngram_range=(1, 2),
                min_df=2,
                max_features=TEXT_VOCABULARY,
                sublinear_tf=True,
                dtype=np.float32,
            )
            try:
                weights = vectorizer.fit_transform(_as_text(frame.iloc[rows, i]))
            except ValueError:  # no word in two rows: nothing to learn from this column
                self.vectorizers_.append(None)
                self.reducers_.append(None)
                continue
            width = min(self.n_components, weights.shape[1] - 1, weights.shape[0] - 1)
            reducer = TruncatedSVD(width, random_state=self.random_state).fit(weights) if width >= 1 else None
            self.vectorizers_.append(vectorizer if reducer is not None else None)
            self.reducers_.append(reducer)
        return self

    def transform(self, X) -> np.ndarray:
        frame = pd.DataFrame(X)
        out = np.zeros((len(frame), self.n_components * frame.shape[1]), dtype=np.float32)
        for i, (vectorizer, reducer) in enumerate(zip(self.vectorizers_, self.reducers_, strict=True)):
            if reducer is not None:
                start = i * self.n_components
                components = reducer.transform(vectorizer.transform(_as_text(frame.iloc[:, i])))
                out[:, start : start + components.shape[1]] = components
        return out

    def get_feature_names_out(self, input_features=None):
        names = input_features if input_features is not None else self.feature_names_in_
        return np.asarray(
            [f"{name}_text_{j}" for name in names for j in range(self.n_components)], dtype=object
        )


def _as_text(values: pd.Series) -> list[str]:
    return values.astype(object).where(values.notna(), "").astype(str).tolist()


class ValueCounts(BaseEstimator, TransformerMixin):
    """Each mostly-unique label column as log(1 + how many training rows hold the row's label).

    A label unseen in training counts 1 (the row alone), a missing one 0, so that whether a
    value is present is kept too. The log keeps one very common label from squashing the rest
    once scaled; trees are indifferent to it.
    """

    def fit(self, X, y=None):
        frame = pd.DataFrame(X)
        self.n_features_in_ = frame.shape[1]
        self.feature_names_in_ = np.asarray(frame.columns.astype(str), dtype=object)
        # Plain dicts of label -> count: skops saves them under its allow-list, unlike a Series.
        # A label seen once counts 1, as an unseen one does, so only repeated labels are kept:
        # mostly-unique labels were the whole dict (42k film titles: 0.9 s to save per fold,
        # 0.5 s to load), for the same output.
        self.counts_ = [
            {str(label): int(n) for label, n in frame.iloc[:, i].value_counts(dropna=True).items() if n > 1}
            for i in range(frame.shape[1])
        ]
        return self

    def transform(self, X) -> np.ndarray:
        frame = pd.DataFrame(X)
        out = np.empty((len(frame), frame.shape[1]), dtype=np.float32)
        for i, counts in enumerate(self.counts_):
            values = frame.iloc[:, i].astype(object)
            present = values.notna()
            shared = values.where(present, "").astype(str).map(counts).astype(float).fillna(1.0)
            out[:, i] = np.log1p(shared.where(present, 0.0).to_numpy(dtype=float))
        return out

    def get_feature_names_out(self, input_features=None):
        names = input_features if input_features is not None else self.feature_names_in_
        return np.asarray([f"{name}_log_count" for name in names], dtype=object)


class ShiftCodes(_OneToOne):
    """Ordinal codes + 1, so code 0 means an unseen or unknown category (an embedding row of its own)."""

    def transform(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float32) + np.float32(1.0)


class AsFloat32(_OneToOne):
    """Cast scaled numbers to float32: networks train in float32, linear models accept it, and on
    a million rows the stacked matrix of the "dense" style takes half the memory."""

    def transform(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)


class NormalQuantiles(QuantileTransformer):
    """Each number mapped through its column's training quantiles onto a standard normal.

    Heavy tails and skew (counts, amounts, rates) then no longer squash most rows into a tiny
    range, which networks train badly on; ties (a binary indicator, a spike at zero) keep one
    value. At most one quantile per training row, so small folds give no warning.
    """

    def __init__(self, n_quantiles: int = 1000, subsample: int = 100_000, random_state: int = 0) -> None:
        super().__init__(
            n_quantiles=n_quantiles,
            output_distribution="normal",
            subsample=subsample,
            random_state=random_state,
        )

    def fit(self, X, y=None):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="n_quantiles", category=UserWarning)
            return super().fit(X, y)


def build_preprocessor(
    profile: TableProfile, style: str = "dense", numeric_scaling: str = "standard"
) -> ColumnTransformer:
    """A ColumnTransformer for the modeled columns of `profile`.

    "dense" (neural networks, linear models, kernels): impute, scale numbers, one-hot encode
    (rare and unseen categories grouped); float32 output. "embedding": the same for numbers, categories as
    integer codes placed last (0 = unseen) for embedding layers. "tree": numbers kept with
    their missing values, categories ordinal-encoded, unseen categories as missing. Free text
    becomes TextComponents and mostly-unique labels ValueCounts in every style (scaled, but
    for "tree").
    `numeric_scaling` (not for "tree"): "standard" (zero mean, unit variance) or "quantile"
    (`NormalQuantiles`).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if numeric_scaling not in NUMERIC_SCALINGS:
        raise ValueError(f"numeric_scaling must be one of {NUMERIC_SCALINGS}, got {numeric_scaling!r}")
    if style == "tree":
        numbers, dates, text, frequency = ToNumbers(), DatetimeFeatures(), TextComponents(), ValueCounts()
        labels = make_pipeline(
            ToLabels(),
            OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                min_frequency=MIN_CATEGORY_FREQUENCY,
                max_categories=255,
            ),
        )
    else:
        numbers = make_pipeline(
            ToNumbers(),
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            NormalQuantiles() if numeric_scaling == "quantile" else StandardScaler(),
            AsFloat32(),
        )
        dates = make_pipeline(
            DatetimeFeatures(),
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            AsFloat32(),
        )
        text = make_pipeline(TextComponents(), StandardScaler(), AsFloat32())
        frequency = make_pipeline(ValueCounts(), StandardScaler(), AsFloat32())
        if style == "dense":
            encoder = OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                min_frequency=MIN_CATEGORY_FREQUENCY,
                max_categories=MAX_ONEHOT_CATEGORIES,
                sparse_output=False,
                dtype=np.float32,  # 0/1 exactly; half the memory of the default float64
            )
            labels = make_pipeline(ToLabels(), encoder)
        else:
            encoder = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=MIN_CATEGORY_FREQUENCY
            )
            labels = make_pipeline(ToLabels(), encoder, ShiftCodes())
    transformers = {
        "numeric": numbers,
        "categorical": labels,
        "datetime": dates,
        "text": text,
        "frequency": frequency,
    }
    columns = {kind: profile.names(kind) for kind in transformers}
    # Category codes come last, so an embedding network can split them off the numeric block.
    order = (
        ("numeric", "datetime", "text", "frequency", "categorical")
        if style == "embedding"
        else ("numeric", "categorical", "datetime", "text", "frequency")
    )
    parts = [(kind, transformers[kind], columns[kind]) for kind in order if columns[kind]]
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def fit_preprocessor(preprocessor: ColumnTransformer, features: pd.DataFrame, y=None) -> ColumnTransformer:
    """Fit `preprocessor` without building the output matrix that its `fit` would throw away.

    `ColumnTransformer.fit` is `fit_transform` with the result discarded: on a million rows the
    stacked float64 output alone is gigabytes (fitting one fold's preprocessor on 640k rows of
    the scale benchmark's table peaked 3.2 GB above the table, 2.0 GB without the stacking).
    `_hstack` is the step scikit-learn documents for subclasses to override; shadowing it on the
    instance for this one call keeps the fitted object a plain ColumnTransformer.
    """
    preprocessor._hstack = _no_stacked_output
    try:
        return preprocessor.fit(features, y)
    finally:
        del preprocessor._hstack


def _no_stacked_output(Xs, *, n_samples):
    return None


def category_cardinalities(preprocessor: ColumnTransformer) -> list[int]:
    """For a fitted "embedding" preprocessor: an upper bound of the codes per categorical column."""
    if "categorical" not in preprocessor.named_transformers_:
        return []
    encoder = preprocessor.named_transformers_["categorical"].named_steps["ordinalencoder"]
    return [len(categories) + 1 for categories in encoder.categories_]  # + code 0 for unseen


def tree_categorical_mask(profile: TableProfile) -> list[bool]:
    """Which output columns of the "tree" preprocessor gradient boosting splits as categories.

    Only columns with at most NATIVE_CATEGORY_LEVELS labels: on more, category splits fit noise
    among the rare labels, and the ordinal codes split as numbers generalize better (one
    HistGradientBoosting fit on the quality benchmark's split, test AUC all native -> with this
    limit: lending_club 0.719 -> 0.752, a generated 200k-row table with nine noise categories of
    26-200 labels 0.834 -> 0.841; credit_data and titanic unchanged).
    """
    n_dates = len(DatetimeFeatures.PARTS) * len(profile.names("datetime"))
    n_text = TEXT_COMPONENTS * len(profile.names("text"))
    categorical = [c for c in profile.columns if c.kind == "categorical"]
    return (
        [False] * len(profile.names("numeric"))
        + [c.n_unique <= NATIVE_CATEGORY_LEVELS for c in categorical]
        + [False] * (n_dates + n_text + len(profile.names("frequency")))
    )
