"""The input schema written to the manifest: per feature its kind, dtype, range and categories."""

from __future__ import annotations

import pandas as pd

from core.registry import FeatureSchema
from training.data import FeatureKinds

MAX_CATEGORIES_LISTED = 500


def infer_schema(x: pd.DataFrame, kinds: FeatureKinds) -> list[FeatureSchema]:
    """Describe each feature as seen in the training rows."""
    out = []
    for col in kinds.all:
        s = x[col]
        nullable = bool(s.isna().any())
        if col in kinds.numeric:
            vals = s.dropna()
            out.append(
                FeatureSchema(
                    name=col,
                    kind="numeric",
                    dtype="float",
                    nullable=nullable,
                    min=float(vals.min()) if len(vals) else None,
                    max=float(vals.max()) if len(vals) else None,
                )
            )
        elif col in kinds.categorical:
            cats = sorted(map(str, s.dropna().unique()))
            out.append(
                FeatureSchema(
                    name=col,
                    kind="categorical",
                    dtype="string",
                    nullable=nullable,
                    categories=cats if len(cats) <= MAX_CATEGORIES_LISTED else None,
                )
            )
        else:
            out.append(
                FeatureSchema(name=col, kind="datetime", dtype="datetime", nullable=nullable)
            )
    return out
