"""Mostly-unique label columns (tickets, cabins) are used as how many rows share each label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autodl.data.dataset import build_dataset
from autodl.data.profile import profile_columns
from autodl.model import _load_skops, dump_skops
from autodl.preprocess import ValueCounts, build_preprocessor, tree_categorical_mask
from tests.cv_harness import baseline_cv


def parties(n_parties: int = 150, seed: int = 0) -> pd.DataFrame:
    """Travellers alone or in parties of 3-4 sharing a ticket; parties survive. A ticket label
    never repeats across parties (so it cannot be learned as a category)."""
    rng = np.random.default_rng(seed)
    rows = []
    for party in range(n_parties):
        size = int(rng.choice([1, 1, 1, 1, 1, 3, 4]))
        for _ in range(size):
            rows.append(
                {"ticket": f"T{party:05d}", "noise": rng.normal(), "survived": "yes" if size >= 3 else "no"}
            )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _kind(values) -> str:
    return profile_columns(pd.DataFrame({"c": values, "x": np.arange(len(values)) % 3})).columns[0].kind


def test_mostly_unique_labels_that_repeat_or_have_gaps_are_used_as_counts():
    distinct = [f"u{i}" for i in range(40)]
    assert _kind(distinct) == "id"  # every value distinct, none missing: nothing to learn
    assert _kind(distinct[:35] + distinct[:5]) == "frequency"
    assert _kind(distinct[:30] + [None] * 10) == "frequency"
    column = profile_columns(pd.DataFrame({"c": distinct[:30] + [None] * 10})).columns[0]
    assert column.used and "10 missing" in column.reason and "share" in column.reason


def test_value_counts_are_training_counts_one_when_unseen_and_zero_when_missing():
    train = pd.DataFrame({"t": ["a", "a", "a", "b", None]})
    counts = ValueCounts().fit(train)
    out = counts.transform(pd.DataFrame({"t": ["a", "b", "new", None]}))
    np.testing.assert_allclose(np.expm1(out[:, 0]), [3, 1, 1, 0], atol=1e-5)
    assert list(counts.get_feature_names_out(["t"])) == ["t_log_count"]
    assert counts.counts_ == [{"a": 3}]  # a label seen once counts as an unseen one: not stored


@pytest.mark.parametrize("style", ["tree", "dense", "embedding"])
def test_a_frequency_column_keeps_its_place_and_saves_under_the_allow_list(style, tmp_path):
    frame = parties().assign(colour=lambda f: np.where(f["noise"] > 0, "red", "blue"))
    dataset = build_dataset(frame, target="survived", task="binary", folds=3, test_size=0.0)
    assert dataset.profile.names("frequency") == ["ticket"]
    preprocessor = build_preprocessor(dataset.profile, style).fit(dataset.features, dataset.y)
    expected = preprocessor.transform(dataset.features.head(20))
    names = list(preprocessor.get_feature_names_out())
    assert "ticket_log_count" in names
    if style == "tree":
        assert expected.shape[1] == len(tree_categorical_mask(dataset.profile))
        assert tree_categorical_mask(dataset.profile)[names.index("colour")]
    if style == "embedding":
        assert names[-1] == "colour"  # category codes stay last for the embedding network
    dump_skops(preprocessor, tmp_path / "preprocess.skops")
    loaded = _load_skops(tmp_path / "preprocess.skops")
    np.testing.assert_allclose(loaded.transform(dataset.features.head(20)), expected)


@pytest.mark.parametrize("name", ["linear", "hist_gradient_boosting"])
def test_a_target_carried_by_how_many_rows_share_a_label_is_learned(name):
    cv = baseline_cv(parties(), "survived", name)
    # A party wholly in one validation fold looks like lone travellers there, hence not ~1.
    assert cv.mean > 0.75  # the noise column alone gives ~0.5
