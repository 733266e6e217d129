"""Free-text columns are modeled: their words reach the models, inside each training fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autodl.data.dataset import build_dataset
from autodl.model import _load_skops, dump_skops
from autodl.preprocess import TEXT_COMPONENTS, TextComponents, build_preprocessor, tree_categorical_mask
from tests.cv_harness import baseline_cv

GOOD, BAD, FILLER = (
    ["great", "excellent", "lovely"],
    ["awful", "broken", "poor"],
    ["the", "item", "was", "quite"],
)


def reviews(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """The target is in the review's words only; the number is noise."""
    rng = np.random.default_rng(seed)
    liked = rng.random(n) < 0.5
    text = [
        " ".join(rng.choice(FILLER, 3).tolist() + rng.choice(GOOD if y else BAD, 2).tolist() + [f"ref{i}"])
        for i, y in enumerate(liked)
    ]
    return pd.DataFrame({"review": text, "noise": rng.normal(size=n), "liked": np.where(liked, "yes", "no")})


def test_a_text_column_is_profiled_as_used_text():
    dataset = build_dataset(reviews(), target="liked", task="binary", folds=3, test_size=0.0)
    review = next(c for c in dataset.profile.columns if c.name == "review")
    assert review.kind == "text" and review.used
    assert "word" in review.reason


@pytest.mark.parametrize("name", ["linear", "hist_gradient_boosting"])
def test_a_target_carried_by_words_alone_is_learned(name):
    cv = baseline_cv(reviews(), "liked", name)
    assert cv.mean > 0.95  # the number alone gives ~0.5


def test_the_text_block_has_a_fixed_width_whatever_the_vocabulary():
    tiny = pd.DataFrame({"a": ["red fox", "red fox", "blue cat", "blue cat", None], "b": [None] * 5})
    out = TextComponents().fit(tiny).transform(tiny)
    assert out.shape == (5, 2 * TEXT_COMPONENTS)
    assert np.all(np.isfinite(out))
    assert not out[:, TEXT_COMPONENTS:].any()  # an all-missing column gives zeros
    unseen = TextComponents().fit(tiny).transform(pd.DataFrame({"a": ["green owl"], "b": ["x y z"]}))
    assert unseen.shape == (1, 2 * TEXT_COMPONENTS) and np.all(np.isfinite(unseen))


@pytest.mark.parametrize("style", ["tree", "dense", "embedding"])
def test_a_fitted_text_preprocessor_saves_and_loads_under_the_allow_list(style, tmp_path):
    dataset = build_dataset(reviews(), target="liked", task="binary", folds=3, test_size=0.0)
    preprocessor = build_preprocessor(dataset.profile, style).fit(dataset.features, dataset.y)
    expected = preprocessor.transform(dataset.features.head(20))
    if style == "tree":
        assert expected.shape[1] == len(tree_categorical_mask(dataset.profile))
    dump_skops(preprocessor, tmp_path / "preprocess.skops")
    loaded = _load_skops(tmp_path / "preprocess.skops")
    np.testing.assert_allclose(loaded.transform(dataset.features.head(20)), expected)
