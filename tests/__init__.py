"""The suite. One OpenMP thread per process, set before anything imports scikit-learn: the suite
runs servers, trainings and benchmarks' peers side by side on small machines, where OpenMP's
spinning threads (HistGradientBoosting's) oversubscribe the cores, as the service's own image does
(OMP_NUM_THREADS=1 in the Dockerfile)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
