from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import fast_config
from tests.data import classification_frame
from training import data
from training.errors import TrainingError


def test_reads_csv_and_parquet_alike(tmp_path: Path) -> None:
    frame = classification_frame(50)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    a = data.load_dataset(str(tmp_path / "a.csv"))
    b = data.load_dataset(str(tmp_path / "a.parquet"))
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) == 50


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\x00\xff\xfe garbage", "cannot read|no rows"), (b"a,b\n", "no rows")],
)
def test_unreadable_files_fail_with_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / ("x.parquet" if b"\x00" in content else "x.csv")
    path.write_bytes(content)
    with pytest.raises(TrainingError, match=message):
        data.load_dataset(str(path))


def test_missing_file_and_unknown_demo(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no such file"):
        data.load_dataset(str(tmp_path / "none.csv"))
    with pytest.raises(TrainingError, match="unknown demo"):
        data.load_dataset("demo:nothing")


def test_misspelled_column_suggests_the_right_one() -> None:
    with pytest.raises(TrainingError, match="did you mean 'label'"):
        data.require_columns(classification_frame(20), ["lable"], "target")


def test_task_inference() -> None:
    assert data.infer_task(pd.Series(["a", "b"])) == "classification"
    assert data.infer_task(pd.Series([0, 1, 1, 0])) == "classification"
    assert data.infer_task(pd.Series(np.linspace(0, 1, 100))) == "regression"
    assert data.infer_task(pd.Series(range(100))) == "regression"


def test_junk_in_a_numeric_column_names_the_column() -> None:
    frame = pd.DataFrame({"x": ["1", "2", "oops"], "y": [0, 1, 0]})
    kinds = data.FeatureKinds(numeric=["x"], categorical=[], datetime=[])
    with pytest.raises(TrainingError, match="'x' is numeric but holds 1 non-numeric value.*oops"):
        data.coerce_types(frame, kinds)


def test_time_ordered_split_never_trains_on_the_future() -> None:
    frame = classification_frame(300).sample(frac=1, random_state=1)  # shuffled on purpose
    cfg = fast_config(time_column="when")
    s = data.split(frame, "label", "classification", cfg)
    assert s.x_train["when"].max() < s.x_val["when"].min()
    assert s.x_val["when"].max() < s.x_test["when"].min()
    assert len(s.x_test) == 60


def test_random_split_is_stratified_and_disjoint() -> None:
    frame = classification_frame(400)
    s = data.split(frame, "label", "classification", fast_config())
    assert set(s.x_train.index).isdisjoint(s.x_test.index)
    assert set(s.x_val.index).isdisjoint(s.x_test.index)
    share = (frame["label"] == "yes").mean()
    assert abs((s.y_test == "yes").mean() - share) < 0.03


def test_fingerprint_changes_with_content() -> None:
    frame = classification_frame(30)
    other = frame.copy()
    other.loc[0, "x1"] += 1
    assert data.fingerprint(frame) == data.fingerprint(frame.copy())
    assert data.fingerprint(frame) != data.fingerprint(other)
