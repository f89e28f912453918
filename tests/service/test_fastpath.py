"""The numpy replay of the preprocessing gives exactly the pipeline's output, or is not used."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier

from service.fastpath import FastPreprocessor
from tests.data import classification_frame
from training.config import Preprocessing
from training.data import FeatureKinds
from training.pipeline import build_pipeline

KINDS = FeatureKinds(numeric=["x1", "x2"], categorical=["color", "group"], datetime=[])


def fitted(est, family: str, prep: Preprocessing | None = None, **kw):  # type: ignore[no-untyped-def]
    frame = classification_frame(300)
    pipe = build_pipeline(KINDS, est, family=family, prep=prep or Preprocessing(), **kw)
    return pipe.fit(frame[KINDS.all], frame["label"]), frame


def awkward_columns(frame):  # type: ignore[no-untyped-def]
    rows = frame[KINDS.all].head(40).astype(object)
    cols = {c: [None if v != v else v for v in rows[c]] for c in KINDS.all}
    cols["color"][0] = "purple"  # unseen
    cols["color"][1] = None  # missing category
    cols["x1"][2] = None  # missing number
    cols["x2"][3] = 1e9  # beyond the clipping bounds
    return cols


@pytest.mark.parametrize("scaler", ["standard", "robust", "minmax", "none"])
@pytest.mark.parametrize("clip", [(0.01, 0.99), None])
def test_linear_one_hot_replay_is_exact(scaler: str, clip: tuple[float, float] | None) -> None:
    pipe, frame = fitted(
        SGDClassifier(loss="log_loss", random_state=0),
        "linear",
        Preprocessing(clip_quantiles=clip, max_categories=2),
        scaler=scaler,
    )
    fast = FastPreprocessor.from_pipeline(pipe)
    assert fast is not None
    cols = awkward_columns(frame)
    import pandas as pd

    expected = pipe.steps[0][1].transform(pd.DataFrame(cols).astype({"x1": float, "x2": float}))
    np.testing.assert_allclose(fast.transform(cols), expected, rtol=0, atol=1e-12)


def test_tree_ordinal_replay_is_exact() -> None:
    pipe, frame = fitted(HistGradientBoostingClassifier(max_iter=5), "hgb")
    fast = FastPreprocessor.from_pipeline(pipe)
    assert fast is not None
    cols = awkward_columns(frame)
    import pandas as pd

    expected = pipe.steps[0][1].transform(pd.DataFrame(cols).astype({"x1": float, "x2": float}))
    np.testing.assert_allclose(fast.transform(cols), expected, rtol=0, atol=1e-12)


def test_unsupported_preprocessing_keeps_the_pipeline() -> None:
    with_interactions, _ = fitted(SGDClassifier(random_state=0), "linear", interactions=True)
    assert FastPreprocessor.from_pipeline(with_interactions) is None
    with_pca, _ = fitted(SGDClassifier(random_state=0), "linear", pca=2)
    assert FastPreprocessor.from_pipeline(with_pca) is None
    frame = classification_frame(100)
    kinds = FeatureKinds(numeric=["x1"], categorical=["color"], datetime=["when"])
    dated = build_pipeline(
        kinds, SGDClassifier(random_state=0), family="linear", prep=Preprocessing()
    ).fit(frame[kinds.all], frame["label"])
    assert FastPreprocessor.from_pipeline(dated) is None
