# syntax=docker/dockerfile:1
# The one platform image: predictors (KServe ModelServer), pipeline steps, the Kafka trigger,
# monitoring and the MLflow server. `make image` tags it with the version manifests/base pins.
# BASE: any Debian bookworm image with Python 3.11 as `python` (the official one in CI; `make image`
# makes one from Debian packages where no registry is reachable).
ARG BASE=python:3.11-slim-bookworm

# --- build: resolve nothing, install exactly the lock --------------------------------------
FROM ${BASE} AS build
# Only for builds behind a TLS-inspecting proxy: the CA bundle the build's downloads trust.
ARG SSL_CERT_FILE
ARG PIP_CERT
ARG UV_SYSTEM_CERTS
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
# uv in a throwaway venv: works alike where the system Python is externally managed (PEP 668).
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --quiet uv==0.13.9
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv /opt/uv/bin/uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY feature_specs ./feature_specs
COPY platform_settings ./platform_settings
COPY predictors ./predictors
COPY pipelines ./pipelines
COPY manifests/templates ./manifests/templates
RUN --mount=type=cache,target=/root/.cache/uv /opt/uv/bin/uv sync --frozen --no-dev --no-editable

# --- runtime: the virtualenv on a clean base, no build tools, non-root ----------------------
FROM ${BASE}
RUN if python -m pip --version >/dev/null 2>&1; then python -m pip uninstall --yes --quiet pip setuptools wheel; fi \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /tmp app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    GIT_PYTHON_REFRESH=quiet
WORKDIR /tmp
# GIT_PYTHON_REFRESH: MLflow looks for git to tag runs; there is none here, and that is fine.
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8080
# Every workload names its own command (see manifests/base); this one serves all models.
CMD ["python", "-m", "predictors", "--model_name=all", "--http_port=8080"]
