# servewatch: the prediction service (and the monitoring CronJob) in one image.
# Build: docker build -t servewatch:0.1.0 .     Run: see docs/deploy.md

# ---- build stage: install the package into a virtual environment ---------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY training ./training
COPY service ./service
COPY monitoring ./monitoring
COPY servewatch ./servewatch
# The package with the extras a production service wants (not editable, no dev extra): `fast`
# serves tree models compiled for ONNX Runtime, `explain` gives them exact TreeSHAP explanations.
# Add `lightgbm`/`xgboost` for imported pipelines that end in them, `deep` for the deep family:
#   docker build --build-arg EXTRAS=fast,explain,xgboost -t servewatch .
ARG EXTRAS=fast,explain
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[${EXTRAS}]" \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# ---- runtime stage: no compilers, no pip cache, a non-root user ----------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 servewatch \
    && useradd --system --uid 10001 --gid servewatch --no-create-home --shell /usr/sbin/nologin servewatch \
    && mkdir -p /data /models \
    && chown servewatch:servewatch /data
COPY --from=build /opt/venv /opt/venv
# Configuration is only SERVEWATCH_ variables; these are the container's defaults.
#  /models    the registry, mounted read-only
#  /data      the SQLite log, the spool and the monitoring reports (a volume)
#  /tmp       writable tmpfs: Prometheus multiprocess files, matplotlib cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVEWATCH_REGISTRY=/models \
    SERVEWATCH_HOST=0.0.0.0 \
    SERVEWATCH_PORT=8000 \
    SERVEWATCH_WORKERS=2 \
    SERVEWATCH_DATABASE_URL=sqlite:////data/servewatch.db \
    SERVEWATCH_SPOOL_DIR=/data/spool \
    SERVEWATCH_MONITOR_REPORTS_DIR=/data/reports \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    MPLCONFIGDIR=/tmp/matplotlib \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1
WORKDIR /data
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["servewatch", "serve"]
