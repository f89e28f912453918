import numpy as np
import pandas as pd
from sklearn.utils.estimator_checks import parametrize_with_checks

from core.transformers import DatetimeFeatures, QuantileClipper


@parametrize_with_checks([QuantileClipper()])
def test_sklearn_contract(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def test_clipper_bounds_come_from_the_fit_data_only() -> None:
    train = np.arange(101, dtype=float).reshape(-1, 1)
    clip = QuantileClipper(lower=0.1, upper=0.9).fit(train)
    out = clip.transform(np.array([[-1000.0], [50.0], [1000.0], [np.nan]]))
    assert out[0, 0] == 10.0 and out[1, 0] == 50.0 and out[2, 0] == 90.0
    assert np.isnan(out[3, 0])


def test_datetime_parts_and_unparseable_values() -> None:
    frame = pd.DataFrame({"t": ["2024-03-05T14:30:00", "not a date"]})
    out = DatetimeFeatures().fit(frame).transform(frame)
    assert out[0].tolist() == [3.0, 1.0, 14.5]
    assert np.isnan(out[1]).all()
