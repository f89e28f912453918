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


def with_copies(n: int = 400, share: float = 0.25, seed: int = 0) -> pd.DataFrame:
    """classification_frame with `share` of its rows a copy of another row (the issue's 25%)."""
    frame = classification_frame(n, seed).drop(columns="when")
    rng = np.random.default_rng(seed)
    copies = frame.iloc[rng.choice(n, int(n * share), replace=False)]
    return pd.concat([frame, copies], ignore_index=True).sample(frac=1.0, random_state=seed)


def key(x: pd.DataFrame) -> set[int]:
    return set(pd.util.hash_pandas_object(x, index=False))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_copies_are_kept_on_one_side_of_the_split(task: str) -> None:
    """Rows identical in every column but the target never straddle train, validation and test
    (before, 40% of the test rows had a copy in train + validation); stratification holds."""
    frame = with_copies()
    target = "label"
    if task == "regression":
        frame["label"] = frame["x1"] * 2.0
    s = data.split(frame, target, task, fast_config())
    assert s.copies == 200
    assert key(s.x_test).isdisjoint(key(s.x_train) | key(s.x_val))
    assert key(s.x_val).isdisjoint(key(s.x_train))
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == len(frame)
    assert abs(len(s.x_test) / len(frame) - 0.2) < 0.03
    if task == "classification":
        share = (frame["label"] == "yes").mean()
        assert abs((s.y_test == "yes").mean() - share) < 0.05


def test_copies_are_kept_together_in_a_time_ordered_split() -> None:
    """Twenty rows a timestamp (as flights share their hour), half of them copied: the cuts fall
    inside a timestamp, between a row and its copy, unless copies go together."""
    frame = classification_frame(300)
    frame["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(300) // 20, "h")
    frame = pd.concat([frame, frame.iloc[::2]], ignore_index=True).sample(frac=1, random_state=2)
    s = data.split(frame, "label", "classification", fast_config(time_column="when"))
    assert s.copies == 300
    assert key(s.x_test).isdisjoint(key(s.x_train) | key(s.x_val))
    assert key(s.x_val).isdisjoint(key(s.x_train))
    assert s.x_train["when"].max() <= s.x_val["when"].min()
    assert s.x_val["when"].max() <= s.x_test["when"].min()


def test_keeping_copies_together_can_be_turned_off_and_natural_repeats_are_split() -> None:
    frame = with_copies()
    cfg = fast_config()
    off = cfg.model_copy(
        update={"split": cfg.split.model_copy(update={"keep_copies_together": False})}
    )
    s = data.split(frame, "label", "classification", off)
    assert s.copies == 0 and not key(s.x_test).isdisjoint(key(s.x_train))
    # two binary columns: four distinct rows, each repeated ~100 times, split like any rows
    rng = np.random.default_rng(0)
    few = pd.DataFrame({"a": rng.integers(0, 2, 400), "b": rng.choice(["p", "q"], 400)})
    few["label"] = rng.choice(["yes", "no"], 400)
    s = data.split(few, "label", "classification", fast_config())
    assert s.copies == 0 and len(s.x_test) == 80


@pytest.mark.parametrize(
    ("task", "ordered"), [("classification", False), ("regression", False), ("regression", True)]
)
def test_cv_folds_keep_copies_in_one_fold(task: str, ordered: bool) -> None:
    from training.search import make_cv

    frame = with_copies(300)
    x, y = frame[["x1", "x2", "color"]], frame["label"]
    cv = make_cv(task, 3, ordered, 0)
    folds = list(cv.split(x, y))
    assert len(folds) == cv.get_n_splits(x, y) == 3
    for tr, te in folds:
        assert key(x.iloc[te]).isdisjoint(key(x.iloc[tr]))
        if not ordered:
            assert len(tr) + len(te) == len(x)


def dayfirst_csv(tmp_path: Path, bad: str | None = None) -> Path:
    """classification_frame with its time column written day first (25/01/2024 10:00)."""
    frame = classification_frame(300)
    frame["when"] = frame["when"].dt.strftime("%d/%m/%Y %H:%M")
    if bad is not None:
        frame.loc[7, "when"] = bad
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def test_day_first_times_are_detected_and_the_split_stays_in_time_order(tmp_path: Path) -> None:
    """Read month first (as before), 02/01 was February and 13/01 NaT, sorted last: the test rows
    were not the newest. Read day first (detected: a finding says so), the order holds."""
    from training.prepare import prepare, quiet

    cfg = fast_config(data=str(dayfirst_csv(tmp_path)), target="label", time_column="when")
    prepared = prepare(cfg, quiet)
    s = prepared.splits
    assert prepared.frame["when"].notna().all()
    assert s.x_train["when"].max() < s.x_val["when"].min() <= s.x_val["when"].max()
    assert s.x_val["when"].max() < s.x_test["when"].min()
    assert s.x_test["when"].max() == pd.Timestamp("2024-01-13 11:00")
    assert ("time_dayfirst", "when") in {(f.rule, f.column) for f in prepared.report.findings}
    told = prepare(cfg.model_copy(update={"time_format": "%d/%m/%Y %H:%M"}), quiet)
    assert told.frame["when"].equals(prepared.frame["when"])
    assert "time_dayfirst" not in {f.rule for f in told.report.findings}


def test_unreadable_times_fail_a_time_ordered_run_naming_column_count_and_example(
    tmp_path: Path,
) -> None:
    from training.prepare import prepare, quiet

    cfg = fast_config(data=str(dayfirst_csv(tmp_path, "not a date")), target="label")
    cfg = cfg.model_copy(update={"time_column": "when"})
    with pytest.raises(TrainingError, match="time column 'when': 1 of 300 .*'not a date'"):
        prepare(cfg, quiet)
    told = cfg.model_copy(update={"time_format": "%m/%d/%Y %H:%M"})  # the wrong way round
    with pytest.raises(TrainingError, match="time column 'when': 13 of 300 .*%m/%d/%Y"):
        prepare(told, quiet)
    frame = classification_frame(300)
    frame.loc[[3, 9], "when"] = pd.NaT
    frame.to_csv(tmp_path / "m.csv", index=False)
    missing = cfg.model_copy(update={"data": str(tmp_path / "m.csv")})
    with pytest.raises(TrainingError, match="'when' is missing in 2 of 300 rows"):
        prepare(missing, quiet)
    as_feature = missing.model_copy(
        update={"features": missing.features.model_copy(update={"datetime": ["when"]})}
    )
    with pytest.raises(TrainingError, match="'when' is missing in 2 of 300 rows"):
        prepare(as_feature, quiet)


def test_pinned_rows_stay_in_train_and_the_split_is_unchanged_without_them() -> None:
    """The search's sample (pinned) never lands in validation or test; no pin: today's split."""
    frame = classification_frame(600).drop(columns=["when"])
    cfg = fast_config(data="x.csv", target="label")
    plain = data.split(frame, "label", "classification", cfg)
    same = data.split(frame, "label", "classification", cfg, np.zeros(len(frame), dtype=bool))
    for a, b in zip(
        (plain.x_train, plain.x_val, plain.x_test),
        (same.x_train, same.x_val, same.x_test),
        strict=True,
    ):
        assert sorted(a.index) == sorted(b.index)
    pinned = np.zeros(len(frame), dtype=bool)
    pinned[plain.x_test.index[:40]] = True  # rows that were test rows
    moved = data.split(frame, "label", "classification", cfg, pinned)
    assert set(frame.index[pinned]) <= set(moved.x_train.index)
    assert not set(frame.index[pinned]) & (set(moved.x_val.index) | set(moved.x_test.index))
    assert len(moved.x_test) == len(plain.x_test)  # the same share, drawn from the other rows


def test_row_keys_match_a_row_whatever_dtype_its_read_gave_each_column() -> None:
    """Two reads of one source type a column by what they hold (a bool column with a NULL reads
    as object, an int column with one as float, a chunk of NULLs as object of None): each value
    is keyed, not each dtype, so a row keys the same in both; distinct rows keep distinct keys."""
    import decimal

    full = pd.DataFrame(
        {
            "flag": pd.Series([True, False, None, True], dtype=object),
            "n": [1.0, 2.0, np.nan, 4.0],
            "d": [decimal.Decimal("1.5"), decimal.Decimal("2"), None, decimal.Decimal("-3")],
            "t": ["x", "y", None, "1"],
            "gap": pd.Series([None, None, None, None], dtype=object),
        }
    )
    sample = pd.DataFrame(  # rows 0, 1 and 3 read on their own: no NULL among them
        {
            "flag": [True, False, True],
            "n": np.array([1, 2, 4], dtype=np.int64),
            "d": [1.5, 2.0, -3.0],
            "t": ["x", "y", "1"],
            "gap": [np.nan, pd.NA, pd.NaT],
        }
    )
    keys = data.row_keys(full)
    assert list(data.row_keys(sample)) == list(keys[[0, 1, 3]])
    assert len(set(keys)) == 4
    nulls = pd.DataFrame({"v": pd.Series([None, np.nan, pd.NA, pd.NaT], dtype=object)})
    assert len(set(data.row_keys(nulls))) == 1  # one null, whatever its spelling
    as_text = pd.DataFrame({"flag": ["True", "1"]})  # text is not the number it spells
    assert not set(data.row_keys(as_text)) & set(data.row_keys(full[["flag"]]))
    assert list(data.row_keys(full.iloc[::-1, ::-1])) == list(keys[::-1])  # column order
