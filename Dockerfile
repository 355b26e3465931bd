# One image for the operator, the router and the simulated engine: `prfaas <command>`.
# Build stage: turn the project and its dependencies into wheels; runtime: install wheels only.
# BASE: any image with Python 3.11+ and pip on PATH (the tests build on one made from Debian's
# packages, hack/kind/images.sh python, because no registry is reachable there).
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/prfaas_operator-*.whl

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="prfaas-operator" \
      org.opencontainers.image.description="Prefill-as-a-Service on Kubernetes: operator, router, simulated engine" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp/matplotlib
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "prfaas-operator==${VERSION}" \
 && rm -rf /wheels \
 && groupadd --system --gid 65532 prfaas \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin prfaas
USER 65532:65532
ENTRYPOINT ["prfaas"]
CMD ["--help"]
