"""Run FLAML's AutoML on a CSV (inside FLAML's own venv): bench.quality's same-budget peer.

Usage: python flaml_run.py TRAIN.csv TEST.csv TARGET TASK METRIC BUDGET SEED OUT.csv
Writes the test rows' class probabilities (columns in class order) or predicted values to OUT,
and prints one JSON line: the best estimator, its config and the seconds spent.
"""

import json
import sys
import time

import pandas as pd
from flaml import AutoML

train_csv, test_csv, target, task, metric, budget, seed, out_csv = sys.argv[1:9]
train = pd.read_csv(train_csv)
test = pd.read_csv(test_csv)
y = train.pop(target)
test = test.drop(columns=[target])
for col in train.columns:
    if train[col].dtype == object:
        train[col] = train[col].astype("category")
        test[col] = pd.Categorical(test[col], categories=train[col].cat.categories)
if task == "classification":
    y = y.astype(str)
automl = AutoML()
started = time.monotonic()
automl.fit(
    train,
    y,
    task=task,
    metric=metric,
    time_budget=float(budget),
    seed=int(seed),
    verbose=0,
    n_jobs=1,  # as servewatch's search here: one thread per model (bench.quality)
)
seconds = time.monotonic() - started
if task == "classification":
    proba = automl.predict_proba(test)
    pd.DataFrame(proba, columns=[str(c) for c in automl.classes_]).to_csv(out_csv, index=False)
else:
    pd.DataFrame({"value": automl.predict(test)}).to_csv(out_csv, index=False)
print(json.dumps({"best": automl.best_estimator, "seconds": seconds}))
