# placeos-exporter image: a wheel built in a throw-away stage, installed into a venv that is the only
# thing copied into the final stage. Runs as a non-root numeric user and never writes to its root
# filesystem, so it works with `readOnlyRootFilesystem: true` / `docker run --read-only`.
#
#   docker build -t placeos-exporter:0.1.0 .
#   docker run --read-only -p 9864:9864 -e REDIS_URL=redis://redis:6379 placeos-exporter:0.1.0
#
# tests/integration/test_packaging.py runs the build stage's COPY and RUN steps below in a temp dir
# (the venv at $VENV) and serves from the result, and lints this file with hadolint.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV VENV=/opt/placeos-exporter \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel needs: sandbox/, tests/, bench/ never enter the build context's copy.
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
# 1. Build the wheel. pyproject's package find names `exporter*` and `sandbox*`; sandbox/ is not
#    copied above, so the wheel holds only the exporter package.
# 2. Install it with its dependencies into a venv without pip (the base image's pip installs into it).
# 3. The wheel still declares the `placeos-sandbox` console script (pyproject [project.scripts]); its
#    module is absent, so the script would dangle: delete it.
# pip compiles the bytecode at install time, so nothing needs to write __pycache__ at run time.
RUN python -m pip wheel --no-deps --wheel-dir dist . \
    && python -m venv --without-pip "$VENV" \
    && python -m pip --python "$VENV/bin/python" install dist/placeos_exporter-*.whl \
    && rm -f "$VENV/bin/placeos-sandbox" \
    && "$VENV/bin/placeos-exporter" --version

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="placeos-exporter" \
      org.opencontainers.image.description="Prometheus exporter that tells PlaceOS operators which backend failed and what it breaks" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/PlaceOS/placeos-exporter" \
      org.opencontainers.image.documentation="https://github.com/PlaceOS/placeos-exporter/blob/main/docs/deploy.md" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
ENV PATH=/opt/placeos-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PLACEOS_EXPORTER_REVISION="${REVISION}"
# Same path as in the build stage: the venv's scripts and its python symlink are absolute.
COPY --from=build /opt/placeos-exporter /opt/placeos-exporter
USER 65532:65532
EXPOSE 9864
# Liveness only (never touches a backend). Follows PLACEOS_EXPORTER_LISTEN_ADDRESS when the port is
# moved with it; with TLS on (--web.config.file) override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request as u; p=os.environ.get('PLACEOS_EXPORTER_LISTEN_ADDRESS',':9864').rpartition(':')[2]; u.urlopen(f'http://127.0.0.1:{p}/-/healthy',timeout=4)"]
ENTRYPOINT ["placeos-exporter"]
CMD ["serve"]
