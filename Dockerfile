FROM python:3.11-slim-bookworm AS base
# servewatch images: two targets of one Dockerfile (docs/deploy.md, "Which image holds what").
#   serve (default)  `servewatch serve`: the service, tree models compiled for ONNX Runtime.
#                    docker build -t servewatch:0.1.0 .
#   full             everything: the monitoring, retention, retraining and training jobs.
#                    docker build --target full -t servewatch:0.1.0-full .
# Without access to Docker Hub, scripts/build_base_image.sh builds a stand-in for the base image
# from Debian's packages. The base line stays first: that script reads it.

# ---- dependencies: layers cached until pyproject.toml changes (no sources, an empty README) ---
FROM base AS deps-serve
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml ./
# The base dependency set is serving's; `fast` adds ONNX Runtime. Add `lightgbm`/`xgboost` for
# imported pipelines that end in them: docker build --build-arg SERVE_EXTRAS=fast,xgboost .
# The venv has no pip of its own: the base image's pip installs into it (--python). What the
# wheels ship for their own tests and for compiling against them is removed (test suites, ONNX's
# backend test data, C headers and Cython sources: ~75 MB), the extension modules' symbol
# tables (~38 MB; not in the *.libs folders, whose patched OpenBLAS breaks when stripped), and
# what ONNX Runtime's wheel ships beside its Python API: its C library for programs that link it
# (35 MB; the Python module is linked statically and never loads it) and its model-conversion
# tools (transformers, quantization, tools: 4 MB). The last line checks a session still runs.
# binutils (strip) stays in this build stage: the runtime stages copy only /opt/venv.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && rm -rf /var/lib/apt/lists/*
ARG SERVE_EXTRAS=fast
RUN touch README.md \
    && python -m venv --without-pip /opt/venv \
    && pip --python=/opt/venv/bin/python install "/src[${SERVE_EXTRAS}]" \
    && find /opt/venv -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
    && sp=/opt/venv/lib/python3.11/site-packages \
    && rm -rf "$sp/onnx/backend/test" "$sp"/onnxruntime/capi/libonnxruntime.so.* \
       "$sp/onnxruntime/transformers" "$sp/onnxruntime/quantization" "$sp/onnxruntime/tools" \
    && find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && find /opt/venv -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cpp' \
       -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete \
    && /opt/venv/bin/python -c "import onnxruntime as o; o.InferenceSession" \
    && find /opt/venv -depth -type d -name __pycache__ -exec rm -rf {} +

FROM deps-serve AS deps-full
# Everything (`full`: train, monitor, explain, fast) on top of the serving set.
ARG FULL_EXTRAS=full
RUN pip --python=/opt/venv/bin/python install "/src[${FULL_EXTRAS}]" \
    && find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && find /opt/venv -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cpp' \
       -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete

# ---- the package itself: the only layers a source change rebuilds --------------------------
FROM deps-serve AS build-serve
COPY README.md ./
COPY core ./core
COPY predlog ./predlog
COPY training ./training
COPY service ./service
COPY monitoring ./monitoring
COPY servewatch ./servewatch
RUN pip --python=/opt/venv/bin/python install --no-deps . \
    && find /opt/venv -depth -type d -name __pycache__ -exec rm -rf {} +

FROM deps-full AS build-full
COPY --from=build-serve /src /src
RUN pip --python=/opt/venv/bin/python install --no-deps . \
    && find /opt/venv -depth -type d -name __pycache__ -exec rm -rf {} +

# ---- runtime: no compilers, no pip cache, a non-root user ----------------------------------
FROM base AS runtime
RUN groupadd --system --gid 10001 servewatch \
    && useradd --system --uid 10001 --gid servewatch --no-create-home --shell /usr/sbin/nologin servewatch \
    && mkdir -p /data /models \
    && chown servewatch:servewatch /data
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

FROM runtime AS full
COPY --from=build-full /opt/venv /opt/venv

# The default target (last): the serving image. Monitoring in process needs Evidently (full).
FROM runtime AS serve
ENV SERVEWATCH_MONITOR_INTERVAL=0
COPY --from=build-serve /opt/venv /opt/venv
