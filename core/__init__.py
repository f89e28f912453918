"""The ground floor every other package may import, importing none of them: the registry and its
typed manifest, the metric contract, label types, the prediction-log row types, the fitted parts
that pickles refer to, model loading and explanations, and the root of the error hierarchy."""

__all__ = [
    "decision",
    "deep",
    "digits",
    "ecosystem",
    "errors",
    "explain",
    "fair",
    "features",
    "labels",
    "lgbm",
    "metrics",
    "missing",
    "registry",
    "rows",
    "transformers",
    "xgb",
]
