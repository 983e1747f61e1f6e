# waterwatch service image (worker, notifier, dev): multi-stage, non-root.
#   docker build -t waterwatch .        (docker-compose.yml builds it too)
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# a C compiler: setup.py compiles the SLA core with mypyc (without one the core stays pure Python)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY waterwatch ./waterwatch
COPY streams ./streams
COPY notifiers ./notifiers
# every dependency as a wheel, so the runtime stage needs no compiler and no network;
# then say whether the waterwatch wheel holds the compiled core
RUN pip wheel --wheel-dir /wheels . \
 && python -c "import glob, zipfile; w = glob.glob('/wheels/waterwatch-*.whl')[0]; \
print('SLA core compiled:', any(n.endswith('.so') for n in zipfile.ZipFile(w).namelist()), w)"

FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    WATERWATCH_CONFIG=/app/config \
    WATERWATCH_METRICS_PORT=9464
RUN useradd --create-home --uid 10001 --user-group waterwatch
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY --chown=waterwatch:waterwatch config ./config
COPY --chown=waterwatch:waterwatch examples ./examples
COPY --chown=waterwatch:waterwatch schemas ./schemas
COPY --chown=waterwatch:waterwatch templates ./templates
# local state (RocksDB tables): a volume in docker-compose.yml, owned by the service user
RUN mkdir -p /app/.waterwatch && chown waterwatch:waterwatch /app/.waterwatch
VOLUME ["/app/.waterwatch"]
USER waterwatch
# 6066: /healthz (loopback only); 9464: /metrics (the notifier uses 9465). The image runs
# several commands, so each service's healthcheck is in docker-compose.yml.
EXPOSE 9464
ENTRYPOINT ["waterwatch"]
CMD ["--help"]
