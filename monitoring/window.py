"""The windows a run looks at, read with bounded memory: logged predictions by their ingest time,
and labels by the time they were paired with their prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, cast

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import sqlalchemy as sa

from predlog.store import (
    LoggedRow,
    PredictionStore,
    WindowQuery,
    feedback,
    labelled,
    met_between,
    predictions,
)

JsonScalar = str | int | float | bool | None
"""A logged prediction or label: a JSON value of the version's label type (or a number)."""


@dataclass
class Window:
    inputs: pd.DataFrame
    predictions: list[JsonScalar]
    probabilities: npt.NDArray[np.float64] | None
    """Rows x classes in the order asked for; None for regressors or when a row has none."""
    labels: list[JsonScalar]
    """Feedback labels (None: no feedback); as class text when classes were given."""
    start: float | None
    end: float | None
    total_rows: int
    until: float | None = None
    """The ingest time the window reaches: the next window starts after it."""

    @property
    def rows(self) -> int:
        return len(self.predictions)


def _rows(model: str, version: int, since: float | None, until: float | None) -> WindowQuery:
    """Rows of the version that reached the store in (since, until]: by ingest time, not by
    prediction time, so a row that arrives late still falls into a later window."""
    return WindowQuery(model, version, since, until, clock="ingested", labelled=False)


def count(
    store: PredictionStore, model: str, version: int, since: float | None, until: float | None
) -> int:
    return store.count_window(_rows(model, version, since, until))


def settling(
    store: PredictionStore, model: str, version: int, until: float
) -> tuple[int, float | None]:
    """Rows of the version ingested after `until` (inside the settle window), and the newest
    one's ingest time."""
    return store.window_size(_rows(model, version, until, None))


def read_window(
    store: PredictionStore,
    *,
    model: str,
    version: int,
    since: float | None,
    last: int | None,
    cap: int,
    classes: list[str] | None,
    until: float | None = None,
) -> Window:
    """Rows of `model` v`version` ingested after `since` up to `until` (or the newest `last`),
    at most `cap` of them, with the labels they have now.

    Over the cap, rows are sampled in the database by the random low bits of their ids (not by
    their time: every row of the window can be drawn), so the same window always gives the same
    sample and memory never holds more than `cap` rows (`PredictionStore.read_log_window`).
    """
    rows = _rows(model, version, since, until)
    total = store.count_window(rows)
    if last is not None:
        total = min(total, last)
        logged = store.read_log_window(rows, cap=min(cap, last))
    else:
        logged = store.read_log_window(rows, cap=cap, sample_over=total)
    return _window(logged, classes, total, until, inputs=True)


def read_labels(
    store: PredictionStore,
    *,
    model: str,
    version: int,
    since: float | None,
    until: float | None,
    cap: int,
    classes: list[str] | None,
) -> Window:
    """The version's labelled predictions whose label met its prediction in (since, until],
    whenever the prediction itself was made or judged: a label that arrives days after its
    prediction's window ran is judged by the run that sees it, against that prediction's
    version. Sampled by id bits over `cap` like `read_window`; `inputs` is left empty."""
    labels = WindowQuery(model, version, since, until, clock="met")
    total = store.count_window(labels)
    logged = store.read_log_window(labels, cap=cap, sample_over=total, inputs=False)
    return _window(logged, classes, total, until, inputs=False)


def _window(
    logged: list[LoggedRow],
    classes: list[str] | None,
    total: int,
    until: float | None,
    *,
    inputs: bool,
) -> Window:
    """The rows read, parsed: inputs (with `inputs`), predictions, probabilities in `classes`'
    order, labels."""
    times, rows, preds, probs, labels = [], [], [], [], []
    for r in logged:
        times.append(r["created_at"])
        if inputs:
            rows.append(orjson.loads(r["inputs"]))
        preds.append(orjson.loads(r["prediction"]))
        probs.append(orjson.loads(r["probabilities"]) if r["probabilities"] else None)
        labels.append(orjson.loads(r["label"]) if r["label"] is not None else None)
    proba = None
    if classes is not None and probs and all(p is not None for p in probs):
        proba = np.array(
            [[(p or {}).get(c, 0.0) for c in classes] for p in probs], dtype=np.float64
        )
    return Window(
        inputs=pd.DataFrame.from_records(rows) if rows else pd.DataFrame(),
        predictions=preds,
        probabilities=proba,
        labels=[str(lab) if lab is not None and classes is not None else lab for lab in labels],
        start=min(times) if times else None,
        end=max(times) if times else None,
        total_rows=total,
        until=until,
    )


class ShadowRow(TypedDict):
    """A shadow answer beside the production answer it shadowed; JSON text as logged."""

    shadow_version: int
    shadow_prediction: str
    shadow_probabilities: str | None
    production_version: int
    production_prediction: str
    production_probabilities: str | None
    label: str | None
    """The production row's feedback label, if any."""


def read_shadow(
    store: PredictionStore,
    *,
    model: str,
    since: float | None,
    cap: int,
    until: float | None = None,
    labels_met: bool = False,
) -> list[ShadowRow]:
    """Shadow rows joined to the production prediction they shadowed (and its label): those
    ingested in (since, until], or with `labels_met` those whose label met the production
    prediction in (since, until] (the labels window: a late label is read by the run that sees
    it, whenever the rows were ingested)."""
    prod = predictions.alias("prod")
    shadow = predictions.alias("shadow")
    j = shadow.join(
        labelled(prod, inner=labels_met),
        sa.and_(prod.c.id == shadow.c.ref_id, prod.c.model == shadow.c.model),
    )
    cond = [shadow.c.model == model, shadow.c.shadow.is_(True)]
    if labels_met:
        branches = met_between(since, until, prod)
        cond.append(sa.or_(*(sa.and_(sa.true(), *b) for b in branches)))
    else:
        if since is not None:
            cond.append(shadow.c.ingested_at > since)
        if until is not None:
            cond.append(shadow.c.ingested_at <= until)
    stmt = (
        sa.select(
            shadow.c.version.label("shadow_version"),
            shadow.c.prediction.label("shadow_prediction"),
            shadow.c.probabilities.label("shadow_probabilities"),
            prod.c.version.label("production_version"),
            prod.c.prediction.label("production_prediction"),
            prod.c.probabilities.label("production_probabilities"),
            feedback.c.label,
        )
        .select_from(j)
        .where(*cond)
        .order_by(shadow.c.created_at.desc())
        .limit(cap)
    )
    with store.engine.connect() as conn:
        return [cast(ShadowRow, dict(r._mapping)) for r in conn.execute(stmt)]
