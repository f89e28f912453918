"""Where versions published before `core/` existed pickled their fitted transformers: unpickling
them looks the classes up here, so this name stays (new pickles refer to core.transformers)."""

from core.transformers import DatetimeFeatures, QuantileClipper

__all__ = ["DatetimeFeatures", "QuantileClipper"]
