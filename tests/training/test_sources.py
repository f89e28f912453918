"""Training data read where it lives: a real PostgreSQL table or query, a real hive-partitioned
Parquet dataset folder of many files (training/sources.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from core.registry import Registry
from predlog.store import normalise_url
from tests.conftest import fast_config
from tests.data import classification_frame
from tests.service.conftest import pg_url  # noqa: F401  (the fixture)
from training import sources
from training.config import SourceOptions
from training.errors import TrainingError
from training.train import run_training

STRATIFIED = {"by": "label", "floor": sources.STRATUM_FLOOR, "topped_up": {}}
"""What the manifest records of a sample stratified by `label` that no class was short in."""


def _table(url: str, frame: pd.DataFrame, name: str = "rides") -> None:
    engine = sa.create_engine(normalise_url(url))
    frame.to_sql(name, engine, index=False)
    engine.dispose()


def _sql(url: str, statement: str) -> None:
    engine = sa.create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """3000 rows in a hive-partitioned folder: part=0/1/2, each file of 15 row groups."""
    frame = classification_frame(3000, seed=3)
    frame["part"] = np.arange(len(frame)) % 3
    folder = tmp_path / "rides"
    frame.to_parquet(folder, partition_cols=["part"], row_group_size=200)
    return folder


def test_table_read_whole_and_sampled_in_the_source(pg_url: str) -> None:  # noqa: F811
    frame = classification_frame(3000, seed=1)
    _table(pg_url, frame)
    whole = sources.load(pg_url, SourceOptions(table="rides"), seed=1)
    assert len(whole.frame) == 3000
    assert whole.frame["x1"].dtype == np.float64 and whole.frame["label"].dtype == object
    assert whole.record["rows_in_source"] == 3000 and "sampled_in_source" not in whole.record
    a = sources.load(pg_url, SourceOptions(table="rides", max_rows=500), seed=1)
    b = sources.load(pg_url, SourceOptions(table="rides", max_rows=500), seed=1)
    c = sources.load(pg_url, SourceOptions(table="rides", max_rows=500), seed=2)
    assert len(a.frame) == 500 and a.record["sampled_in_source"] == {"rows": 500, "seed": 1}
    pd.testing.assert_frame_equal(a.frame, b.frame)  # the same seed, the same rows
    assert set(a.frame["x1"]) != set(c.frame["x1"])
    assert set(a.frame["x1"]) <= set(frame["x1"])
    # spread over the table, not its first rows
    assert a.frame["when"].max() > frame["when"].iloc[2500]


def test_query_is_sampled_by_a_keyed_hash(pg_url: str) -> None:  # noqa: F811
    frame = classification_frame(2000, seed=2)
    _table(pg_url, frame)
    query = "SELECT x1, x2, color, label FROM rides WHERE color <> 'red';"
    opts = SourceOptions(query=query, max_rows=300)
    got = sources.load(pg_url, opts, seed=7)
    assert len(got.frame) == 300 and list(got.frame.columns) == ["x1", "x2", "color", "label"]
    assert "red" not in set(got.frame["color"])
    assert got.record["query"] == query
    assert got.record["rows_in_source"] == int((frame["color"] != "red").sum())
    again = sources.search_sample(pg_url, SourceOptions(query=query), 300, seed=7, held=0.36)
    assert again is not None
    pd.testing.assert_frame_equal(got.frame, again.frame)
    assert sources.search_sample(pg_url, SourceOptions(query=query), 10**6, 7, held=0.36) is None


def test_parquet_dataset_folder_whole_and_by_row_groups(dataset: Path) -> None:
    whole = sources.load(str(dataset), SourceOptions(), seed=0)
    assert len(whole.frame) == 3000
    assert sorted(whole.frame["part"].unique().tolist()) == [0, 1, 2]  # the hive key, a column
    assert whole.record["files"] == 3 and len(whole.record["fingerprint"]) == 64
    a = sources.load(str(dataset), SourceOptions(max_rows=400), seed=0)
    b = sources.load(str(dataset), SourceOptions(max_rows=400), seed=0)
    assert len(a.frame) == 400 and a.record["rows_read"] == 400
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.frame["part"].nunique() > 1  # row groups from more than one file
    # a file added changes the dataset's fingerprint
    extra = dataset / "part=3"
    extra.mkdir()
    classification_frame(10).assign().to_parquet(extra / "more.parquet", index=False)
    assert (
        sources.load(str(dataset), SourceOptions(), 0).record["fingerprint"]
        != (whole.record["fingerprint"])
    )


def test_a_run_on_a_table_records_the_query_not_the_data(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    _table(pg_url, classification_frame(600, seed=4))
    # trust auth ignores the password, in the user part or as a parameter
    url = pg_url.replace("postgres@", "postgres:secret@") + "&password=secret"
    query = "SELECT * FROM rides WHERE x2 IS NOT NULL"
    cfg = fast_config(name="sql", data=url, target="label", source={"query": query})
    result = run_training(cfg, Registry(tmp_path / "reg"))
    read = result.manifest["data"]["read"]
    assert read["kind"] == "postgresql" and read["query"] == query
    assert read["rows_read"] == result.manifest["data"]["rows"] > 500
    text = (tmp_path / "reg" / "sql" / "1" / "manifest.json").read_text()
    assert "secret" not in text
    assert result.manifest["config"]["source"]["query"] == query


def test_a_run_on_a_sampled_parquet_dataset(dataset: Path, tmp_path: Path) -> None:
    cfg = fast_config(name="pq", data=str(dataset), target="label", source={"max_rows": 1000})
    result = run_training(cfg, Registry(tmp_path / "reg"))
    d = result.manifest["data"]
    assert d["rows"] == 1000 and d["read"]["rows_in_source"] == 3000
    assert d["read"]["path"] == str(dataset) and d["read"]["sampled_in_source"]["rows"] == 1000
    split = d["split"]
    assert split["train"] + split["validation"] + split["test"] == 1000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"query": "SELEC * FROM rides"}, "query fails.*SyntaxError"),
        ({"table": "nowhere"}, "no such table"),
        ({"query": "SELECT * FROM nowhere"}, "no such table"),
        ({"query": "SELECT * FROM rides WHERE false"}, "no rows"),
        ({"query": "DELETE FROM rides RETURNING *"}, "query fails"),
        ({"query": "SELECT nextval('ids') AS n, x1 FROM rides"}, "read-only transaction"),
        ({"query": "SELECT x1, ('{\"a\": 1}')::jsonb AS j FROM rides"}, "column 'j' holds dict"),
        ({}, "exactly one of source.query"),
        ({"query": "SELECT 1", "table": "rides"}, "exactly one of source.query"),
        ({"table": "rides; drop table x"}, "not a table name"),
        ({"table": "rides", "memory_bytes": 100_000}, "source.max_rows.*search.max_rows"),
    ],
)
def test_unhappy_sources_fail_with_one_clear_line(
    pg_url: str,  # noqa: F811
    options: dict[str, object],
    message: str,
) -> None:
    _table(pg_url, classification_frame(400, seed=5))
    _sql(pg_url, "CREATE SEQUENCE ids")
    with pytest.raises(TrainingError, match=message):
        sources.load(pg_url, SourceOptions.model_validate(options), seed=0)
    assert sources.load(pg_url, SourceOptions(table="rides"), 0).record["rows_read"] == 400


def test_too_large_names_the_row_limit_that_fits(dataset: Path) -> None:
    width = sources.row_bytes(sources.ParquetDataset(dataset).head(1000))
    room = int(width * sources.WORKING_COPIES * 1200) + 1
    with pytest.raises(TrainingError) as info:
        sources.load(str(dataset), SourceOptions(memory_bytes=room), 0)
    assert "source.max_rows" in str(info.value) and "at most 1,200" in str(info.value)
    assert "search.max_rows" in str(info.value)
    fits = sources.load(str(dataset), SourceOptions(memory_bytes=room, max_rows=1200), 0)
    assert len(fits.frame) == 1200


def test_wrong_column_types_fail_naming_the_column(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    frame = classification_frame(400, seed=6)
    frame["x2"] = frame["x2"].astype(str).where(frame.index % 7 != 0, "n/a")
    _table(pg_url, frame)
    cfg = fast_config(
        data=pg_url, target="label", source={"table": "rides"}, features={"numeric": ["x1", "x2"]}
    )
    with pytest.raises(TrainingError, match="column 'x2' is numeric but holds"):
        run_training(cfg, Registry(tmp_path / "reg"))


def test_options_for_other_data_and_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="apply to a postgresql:// --data only"):
        sources.load(str(tmp_path), SourceOptions(query="SELECT 1"), 0)
    with pytest.raises(TrainingError, match="no Parquet files"):
        sources.load(str(tmp_path), SourceOptions(), 0)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(TrainingError, match="Parquet"):
        sources.load(str(tmp_path), SourceOptions(), 0)


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        (
            "postgresql://u:p%40ss@db.example:5433/x?sslmode=require",
            "postgresql://u@db.example:5433/x?sslmode=require",
        ),
        ("postgresql://u@h/x", "postgresql://u@h/x"),
        (
            "postgresql://h/x?user=u&password=secret&sslmode=require",
            "postgresql://h/x?user=u&sslmode=require",
        ),
        ("postgresql://u:p@[::1]:5432/db", "postgresql://u@[::1]:5432/db"),
        ("postgres://u:p@[2001:db8::7]/db?password=x", "postgres://u@[2001:db8::7]/db"),
    ],
)
def test_password_is_taken_out_of_a_url(url: str, recorded: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    assert sources.without_password(url) == recorded
    parsed = conninfo_to_dict(recorded)  # libpq still reads it (a retrain connects with it)
    assert "password" not in parsed and parsed["dbname"] == conninfo_to_dict(url)["dbname"]


def test_the_cli_takes_a_query_and_refuses_it_for_a_file(clf_csv: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from servewatch.cli import app

    args = ["train", "--data", str(clf_csv), "--target", "label", "--query", "SELECT 1"]
    res = CliRunner().invoke(app, [*args, "--registry", str(tmp_path)])
    assert res.exit_code == 2 and "apply to a postgresql:// --data only" in res.output


def test_a_query_is_one_statement_that_cannot_write(pg_url: str) -> None:  # noqa: F811
    """A `;` then COMMIT would end the read-only transaction and run what follows."""
    _table(pg_url, classification_frame(50, seed=8), "victim")
    injected = "SELECT 1 AS a) AS q; COMMIT; DELETE FROM victim; SELECT (1"
    plain = "SELECT 1 AS a; COMMIT; DELETE FROM victim"  # a `;` inside the subquery
    for query, message in ((injected, r"source.query \(--query\) must be one SQL"), (plain, ";")):
        with pytest.raises(TrainingError, match=message):
            sources.load(pg_url, SourceOptions(query=query), 0)
    assert sources.load(pg_url, SourceOptions(table="victim"), 0).record["rows_read"] == 50


def test_a_query_with_percent_signs_and_a_trailing_comment(pg_url: str) -> None:  # noqa: F811
    frame = classification_frame(1500, seed=9)
    _table(pg_url, frame)
    query = (
        "SELECT x1, color, label FROM rides WHERE color LIKE 'r%' AND length(label) % 1 = 0 -- red"
    )
    red = int((frame["color"] == "red").sum())
    whole = sources.load(pg_url, SourceOptions(query=query), 0)
    assert len(whole.frame) == red and set(whole.frame["color"]) == {"red"}
    some = sources.load(pg_url, SourceOptions(query=query, max_rows=100), 0)
    assert len(some.frame) == 100 and set(some.frame["color"]) == {"red"}


def test_tables_named_as_sql_does_and_views_sampled(pg_url: str) -> None:  # noqa: F811
    _table(pg_url, classification_frame(2400, seed=10))
    _sql(pg_url, "CREATE VIEW Red_Rides AS SELECT * FROM rides WHERE color = 'red'")
    _sql(pg_url, "CREATE MATERIALIZED VIEW blue AS SELECT * FROM rides WHERE color = 'blue'")
    assert sources.load(pg_url, SourceOptions(table="RIDES"), 0).record["rows_read"] == 2400
    view = sources.load(pg_url, SourceOptions(table="Red_Rides", max_rows=100), 1)
    again = sources.load(pg_url, SourceOptions(table="red_rides", max_rows=100), 1)
    assert len(view.frame) == 100 and set(view.frame["color"]) == {"red"}
    pd.testing.assert_frame_equal(view.frame, again.frame)
    blue = sources.load(pg_url, SourceOptions(table="Blue", max_rows=100), 1)
    assert len(blue.frame) == 100 and set(blue.frame["color"]) == {"blue"}
    with pytest.raises(TrainingError, match="not a table name"):
        sources.load(pg_url, SourceOptions(table="rides\n"), 0)


def test_fingerprints_hash_the_rows_read_not_a_second_reading(
    pg_url: str,  # noqa: F811
) -> None:
    """PostgreSQL returns rows in no set order: a table updated (even to the same values)
    between two readings returns them in another, so the rows read once are the ones hashed."""
    from training import fingerprints
    from training.config import TrainConfig
    from training.prepare import prepare, quiet

    _table(pg_url, classification_frame(600, seed=11))
    cfg = TrainConfig.model_validate(
        fast_config(data=pg_url, target="label", source={"table": "rides"})
    )
    prepared = prepare(cfg, quiet)
    _sql(pg_url, "UPDATE rides SET x1 = x1 WHERE x2 > 0")  # moves those rows to the heap's end
    raw, rows = fingerprints.of_run(prepared)
    assert raw is prepared.raw
    pd.testing.assert_series_equal(raw["x1"], prepared.frame["x1"])
    columns = [*prepared.features, prepared.target]
    train = prepared.raw.loc[prepared.splits.x_train.index]
    assert sorted(rows.of("train")) == sorted(fingerprints.hashes(train, columns))


def test_a_parquet_sample_never_holds_a_whole_row_group(tmp_path: Path) -> None:
    """One file, one row group of 2,000,000 rows (48 MB): sampling 1,000 streams the group
    (pyarrow's peak, some 10 MB of pages and buffers, does not grow with the group)."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "big"
    folder.mkdir()
    n = 2_000_000
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.random(n), "b": rng.random(n), "c": np.arange(n)})
    pq.write_table(table, folder / "one.parquet", row_group_size=n)
    code = (
        "import sys, pyarrow as pa; from training.sources import ParquetDataset;"
        f"f = ParquetDataset(__import__('pathlib').Path({str(folder)!r})).sample(1000, 3);"
        "assert len(f) == 1000 and f['c'].is_unique, f;"
        "print(pa.default_memory_pool().max_memory())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak = int(out.stdout.split()[-1])
    assert peak < table.nbytes / 3, (peak, table.nbytes)


@pytest.mark.parametrize("where", ["parquet", "table"])
def test_the_search_runs_on_rows_drawn_in_the_source_none_of_them_held_out(
    where: str, dataset: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The search's rows are drawn in the source and prepared first; the final fit then reads
    every row, the search's pinned to train: no validation or test row was seen by the search."""
    import math

    from training import data
    from training.train import train_candidate

    data_at, source = str(dataset), {}
    if where == "table":
        data_at, source = request.getfixturevalue("pg_url"), {"table": "rides"}
        _table(data_at, classification_frame(3000, seed=3))
    search = {"method": "random", "trials": 2, "max_rows": 300}
    cfg = fast_config(name="s", data=data_at, target="label", source=source, search=search)
    candidate = train_candidate(cfg, Registry(tmp_path / "reg"))
    keep = (1 - cfg.split.test_size) * (1 - cfg.split.validation_size)
    sample = sources.search_sample(
        data_at, cfg.source, math.ceil(300 / keep), cfg.seed, held=1 - keep
    )
    assert sample is not None and len(sample.frame) < 3000
    body = candidate.manifest.body()
    read = body["data"]["read"]
    n = len(sample.frame)
    assert read["rows_read"] == 3000 and read["search_sample"] == {
        "rows": n,
        "in_train": n,
        "stratified": STRATIFIED,
    }
    assert body["model"]["search"]["rows"] <= 300
    prepared, splits = candidate.prepared, candidate.prepared.splits
    keys = set(data.row_keys(sample.frame))
    held = prepared.raw.loc[[*splits.x_val.index, *splits.x_test.index]]
    assert not keys & set(data.row_keys(held))  # a proper hold-out
    assert keys <= set(data.row_keys(prepared.raw.loc[splits.x_train.index]))


def test_no_sample_in_the_source_where_the_search_needs_the_rows_read_whole(dataset: Path) -> None:
    """A time column (the search takes the latest rows), a budget (its reserve is sized on every
    row), svm (skipped on large data) or a source no bigger than the search's share: no sample."""
    from training.prepare import quiet, search_rows

    base = {"name": "s", "data": str(dataset), "target": "label"}
    search = {"method": "random", "trials": 2, "max_rows": 300}
    sampled = search_rows(fast_config(**base, search=search), quiet)
    assert sampled is not None and len(sampled.splits.x_train) <= 300
    for extra in (
        {"search": search, "time_column": "when"},
        {"search": {**search, "budget_seconds": 60}},
        {"search": search, "models": ["linear", "svm"]},
        {"search": {**search, "max_rows": 2000}},
    ):
        assert search_rows(fast_config(**{**base, **extra}), quiet) is None, extra


def _source(
    where: str, frame: pd.DataFrame, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[str, dict[str, str]]:
    """`frame` written as a Parquet dataset or a PostgreSQL table: (data, source options)."""
    if where == "table":
        url = request.getfixturevalue("pg_url")
        _table(url, frame)
        return url, {"table": "rides"}
    return _parquet(frame, tmp_path / "rides"), {}


def _parquet(frame: pd.DataFrame, folder: Path) -> str:
    """`frame` as a hive-partitioned Parquet dataset in `folder` (part=0/1/2, row groups of 200)."""
    frame = frame.assign(part=np.arange(len(frame)) % 3)
    frame.to_parquet(folder, partition_cols=["part"], row_group_size=200)
    return str(folder)


@pytest.mark.parametrize("where", ["parquet", "table"])
def test_a_sample_whose_bool_column_drew_no_null_is_found_and_kept_out_of_the_hold_out(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A bool column with one NULL reads as object in the whole read, as bool in a sample that
    drew no NULL: the sample's rows are still found (each value keyed, not each dtype), all
    pinned to train, none in validation or test (checked on x1, unique per row)."""
    import math

    from training.train import train_candidate

    frame = classification_frame(3000, seed=3)
    frame["flag"] = pd.Series(frame["x1"] > 0, dtype=object)
    frame.loc[0, "flag"] = None
    data_at, source = _source(where, frame, tmp_path, request)
    search = {"method": "random", "trials": 2, "max_rows": 300}
    cfg = fast_config(name="s", data=data_at, target="label", source=source, search=search)
    keep = (1 - cfg.split.test_size) * (1 - cfg.split.validation_size)
    sample = sources.search_sample(
        data_at, cfg.source, math.ceil(300 / keep), cfg.seed, held=1 - keep
    )
    assert sample is not None and sample.frame["flag"].dtype == bool  # it drew no NULL
    candidate = train_candidate(cfg, Registry(tmp_path / "reg"))
    assert candidate.prepared.raw["flag"].dtype == object
    n = len(sample.frame)
    assert candidate.manifest.body()["data"]["read"]["search_sample"] == {
        "rows": n,
        "in_train": n,
        "stratified": STRATIFIED,
    }
    splits = candidate.prepared.splits
    held = set(splits.x_val["x1"]) | set(splits.x_test["x1"])
    assert not set(sample.frame["x1"]) & held
    assert set(sample.frame["x1"]) <= set(splits.x_train["x1"])


def test_a_sample_not_found_among_the_rows_read_is_not_used_and_the_search_runs_again(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Rows of the sample gone by the whole read (deleted in between): nothing is pinned, the
    manifest says why, and the search runs again on every row read (fail closed)."""
    from training.prepare import Prepared, Progress, sample_pinned
    from training.selection import Selection, search
    from training.train import train_candidate

    _table(pg_url, classification_frame(3000, seed=3))
    cfg = fast_config(
        name="s",
        data=pg_url,
        target="label",
        source={"table": "rides"},
        search={"method": "random", "trials": 2, "max_rows": 300},
    )
    searched: list[int] = []

    def select(rows: Prepared, say: Progress, started: float) -> Selection:
        if not searched:  # the sample's search: three of its rows deleted meanwhile
            gone = ", ".join(repr(float(v)) for v in rows.raw["x1"].iloc[:3])
            _sql(pg_url, f"DELETE FROM rides WHERE x1 IN ({gone})")
        searched.append(len(rows.frame))
        return search(rows, say, started)

    said: list[str] = []
    candidate = train_candidate(cfg, Registry(tmp_path / "reg"), said.append, select=select)
    assert searched[1] == 2997 and searched[0] < 1000  # the sample's search, then every row's
    taken = candidate.manifest.body()["data"]["read"]["search_sample"]
    assert taken["found"] == taken["rows"] - 3 and "among the rows read" in taken["not_used"]
    assert not sample_pinned(candidate.prepared)
    assert any("sample is not used" in line for line in said)


def test_a_source_under_the_samples_hold_out_share_is_searched_whole_and_trains(
    dataset: Path, tmp_path: Path
) -> None:
    """3,000 rows with search.max_rows 1,500 (a sample of 2,344, every one pinned to train):
    the other 656 cannot hold validation and test (1,080), so no sample is drawn and the run
    trains on every row read, as before the sample; 1,100 (1,719 drawn) still leaves room."""
    from training.train import train_candidate

    search = {"method": "random", "trials": 2, "max_rows": 1500}
    cfg = fast_config(name="s", data=str(dataset), target="label", search=search)
    assert sources.search_sample(str(dataset), cfg.source, 2344, 0, held=0.36) is None
    assert sources.search_sample(str(dataset), cfg.source, 1719, 0, held=0.36) is not None
    candidate = train_candidate(cfg, Registry(tmp_path / "reg"))
    read = candidate.manifest.body()["data"]["read"]
    assert read["rows_read"] == 3000 and "search_sample" not in read
    assert len(candidate.prepared.splits.x_test) == 600


@pytest.mark.parametrize("where", ["parquet", "table"])
def test_a_rare_class_the_sample_misses_or_underfills_searches_every_row(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A third class of 6 rows in 3,000 (the whole read passes the gate): the ~470-row sample
    holds none of it (binary, roc_auc) or too few for the gate; the source's class counts show
    it, so the sample is not used and the search runs on every row, with 3 classes and
    accuracy, as the final fit."""
    from training.prepare import quiet, search_rows
    from training.train import train_candidate

    frame = classification_frame(3000, seed=3)
    frame.loc[frame.index[::500], "label"] = "maybe"
    data_at, source = _source(where, frame, tmp_path, request)
    search = {"method": "random", "trials": 2, "max_rows": 300}
    cfg = fast_config(name="s", data=data_at, target="label", source=source, search=search)
    said: list[str] = []
    assert search_rows(cfg, said.append) is None
    assert any("sample is not used" in line for line in said), said
    candidate = train_candidate(cfg, Registry(tmp_path / "reg"), quiet)
    assert candidate.prepared.classes == ["maybe", "no", "yes"]
    assert candidate.prepared.metric == "accuracy"
    assert "search_sample" not in candidate.manifest.body()["data"]["read"]


def test_a_class_the_sample_missed_makes_the_search_run_on_every_row(tmp_path: Path) -> None:
    """A third class of 6 rows, none of them among the Parquet sample's rows (drawn by
    position, whatever the rows hold): the sample is binary (roc_auc) while every row has 3
    classes; the source's class counts show it, so the search runs on every row (accuracy)."""
    import math

    from training.prepare import search_rows
    from training.train import train_candidate

    frame = classification_frame(3000, seed=3)
    data_at = _parquet(frame, tmp_path / "first")
    search = {"method": "random", "trials": 2, "max_rows": 300}
    cfg = fast_config(name="s", data=data_at, target="label", search=search)
    keep = (1 - cfg.split.test_size) * (1 - cfg.split.validation_size)
    drawn = sources.search_sample(
        data_at, cfg.source, math.ceil(300 / keep), cfg.seed, held=1 - keep
    )
    assert drawn is not None
    outside = frame.index[~frame["x1"].isin(drawn.frame["x1"])][::400][:6]
    frame.loc[outside, "label"] = "maybe"
    data_at = _parquet(frame, tmp_path / "again")
    said: list[str] = []
    assert search_rows(cfg.model_copy(update={"data": data_at}), said.append) is None
    # stratified, the sample holds the one row of it the hold-out can spare: too few for the gate
    assert any("sample is not used" in line and "'maybe'" in line for line in said), said
    candidate = train_candidate(cfg.model_copy(update={"data": data_at}), Registry(tmp_path / "r"))
    assert candidate.prepared.classes == ["maybe", "no", "yes"]
    assert candidate.prepared.metric == "accuracy"


def _rare_class_outside_the_sample(
    where: str, tmp_path: Path, request: pytest.FixtureRequest, rare: int = 60
) -> tuple[str, dict[str, str], pd.DataFrame]:
    """3,000 rows with a third class `maybe` of `rare` rows, none of which the unstratified
    sample of the search's 469 rows draws (rows relabelled until it draws none: a table's keyed
    hash covers the label): (data, source options, frame)."""
    frame = classification_frame(3000, seed=3)
    labels = frame["label"].copy()
    for attempt in range(20):
        if where == "table" and attempt:
            _sql(request.getfixturevalue("pg_url"), "DROP TABLE rides")
        folder = tmp_path / f"rides{attempt}"
        folder.mkdir()
        data_at, source = _source(where, frame, folder, request)
        drawn = sources.open_source(data_at, SourceOptions(**source)).sample(469, 42)
        inside = frame["x1"].isin(drawn["x1"])
        chosen = frame["label"] == "maybe"
        if chosen.sum() == rare and not (chosen & inside).any():
            return data_at, source, frame
        frame.loc[chosen & inside, "label"] = labels[chosen & inside]
        free = frame.index[~inside & (frame["label"] != "maybe")]
        more = rare - int((frame["label"] == "maybe").sum())
        frame.loc[free[::17][:more], "label"] = "maybe"
    raise AssertionError("no labelling kept the rare class out of the sample")


@pytest.mark.parametrize("where", ["parquet", "table"])
def test_a_rare_class_the_unstratified_sample_loses_is_drawn_to_its_floor(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """60 rows of a third class (2%), none among the rows the sample draws unstratified: the
    search's sample is stratified by the target, so that class is drawn on its own in the
    source to its floor (30 rows: under its train share, 38), the sample stands for every row
    (3 classes, accuracy) and the search runs on it; the manifest records it. Before, the
    sample missed the class and the search ran on every row."""
    from training.prepare import search_rows
    from training.train import train_candidate

    data_at, source, frame = _rare_class_outside_the_sample(where, tmp_path, request)
    search = {"method": "random", "trials": 2, "max_rows": 300}
    cfg = fast_config(name="s", data=data_at, target="label", source=source, search=search)
    assert cfg.seed == 42  # the unstratified draw above used it
    said: list[str] = []
    sample = search_rows(cfg, said.append)
    assert sample is not None, said
    assert sample.classes == ["maybe", "no", "yes"] and sample.metric == "accuracy"
    assert (sample.raw["label"] == "maybe").sum() == sources.STRATUM_FLOOR
    topped = {"by": "label", "floor": sources.STRATUM_FLOOR, "topped_up": {"maybe": 30}}
    assert sample.source["sampled_in_source"]["stratified"] == topped
    candidate = train_candidate(cfg, Registry(tmp_path / "reg"))
    taken = candidate.manifest.body()["data"]["read"]["search_sample"]
    assert taken == {"rows": len(sample.raw), "in_train": len(sample.raw), "stratified": topped}
    splits = candidate.prepared.splits
    held = set(splits.x_val["x1"]) | set(splits.x_test["x1"])
    assert not set(sample.raw["x1"]) & held  # the class's other 30 rows hold validation, test
    rare_x = set(frame.loc[frame["label"] == "maybe", "x1"])
    assert rare_x & held


class _Classes:
    """A Source whose classes can each be drawn alone, or (fail) none."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.asked = fail, []

    def stratum(self, column: str, value: object, n: int, seed: int) -> pd.DataFrame:
        self.asked.append((value, n))
        if self.fail:
            raise TrainingError("the query fails (UndefinedFunction: operator does not exist)")
        return pd.DataFrame({column: [value] * n})


def test_a_sample_is_not_stratified_where_it_cannot_be_and_says_why() -> None:
    """Too many classes under their floor (one query each), a class that cannot be drawn alone,
    a sample without the target: the sample as drawn, and the reason."""
    frame = pd.DataFrame({"y": ["a"] * 100})
    many = pd.Series([1000] + [40] * (sources.MAX_TOPPED + 1))
    many.index = ["a"] + [f"c{i}" for i in range(sources.MAX_TOPPED + 1)]
    got, record = sources.stratify(_Classes(), frame, "y", many, seed=0, share=0.1, held=0.36)
    assert got is frame and record["by"] is None and "more than 50" in record["why"]
    few = pd.Series([1000, 40], index=["a", "b"])
    failing = _Classes(fail=True)
    got, record = sources.stratify(failing, frame, "y", few, seed=0, share=0.1, held=0.36)
    assert got is frame and "class 'b' cannot be drawn alone" in record["why"]
    assert failing.asked == [("b", 25)]  # its floor, 30, is over its train share: 40 x 0.64
    got, record = sources.stratify(_Classes(), frame, "z", few, seed=0, share=0.1, held=0.36)
    assert got is frame and record == {"by": None, "why": "the sample has no column 'z'"}
    got, record = sources.stratify(_Classes(), frame, "y", few, seed=0, share=0.1, held=0.36)
    assert record["topped_up"] == {"b": 25} and (got["y"] == "b").sum() == 25


def test_a_regression_sample_is_not_stratified_and_says_why(dataset: Path) -> None:
    from training.prepare import search_rows

    search = {"method": "random", "trials": 2, "max_rows": 300}
    cfg = fast_config(name="s", data=str(dataset), target="x1", task="regression", search=search)
    said: list[str] = []
    sample = search_rows(cfg, said.append)
    assert sample is not None, said
    stratified = sample.source["sampled_in_source"]["stratified"]
    assert stratified == {"by": None, "why": "the task is regression"}


@pytest.mark.parametrize("where", ["parquet", "table"])
@pytest.mark.parametrize(
    ("column", "value"), [("code", 7), ("code", 7.0), ("flag", True)], ids=["int", "float", "bool"]
)
def test_a_class_of_an_integer_or_boolean_target_is_drawn_alone(
    where: str, column: str, value: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Stratification's draw of one class (`Source.stratum`) on integer and boolean targets, the
    value as a whole read types it (a NULL elsewhere makes an int column float): that class's
    rows only, as many as asked."""
    frame = classification_frame(600, seed=1)
    rare = np.arange(len(frame)) % 40 == 0
    frame = frame.assign(code=np.where(rare, 7, 3), flag=rare)
    data_at, source = _source(where, frame, tmp_path, request)
    drawn = sources.open_source(data_at, SourceOptions(**source)).stratum(column, value, 10, 1)
    assert len(drawn) == 10 and set(drawn[column].tolist()) == {value}
