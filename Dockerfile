# waterwatch service image: multi-stage, non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY waterwatch ./waterwatch
COPY streams ./streams
COPY notifiers ./notifiers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 waterwatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=waterwatch config ./config
COPY --chown=waterwatch examples ./examples
COPY --chown=waterwatch schemas ./schemas
USER waterwatch
ENV WATERWATCH_CONFIG=/app/config
ENTRYPOINT ["waterwatch"]
CMD ["--help"]
