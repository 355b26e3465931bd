# One image for the operator, the router and the simulated engine: `prfaas <command>`.
#
# Reproducible: the base is pinned by digest (BASE; how to update it: README, "The image"), the
# dependencies are exactly requirements.lock (versions and sha256 hashes, `make lock`), installed
# from wheels only (no compiler, no source build), and the project is one wheel on top, with no
# dependency resolution at build time.
#
# BASE may be any image with Python 3.11 and pip on PATH: the tests build on one made from
# Debian's packages (hack/kind/images.sh python), as no registry is reachable there.
ARG BASE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="prfaas-operator" \
      org.opencontainers.image.description="Prefill-as-a-Service on Kubernetes: operator, router, simulated engine" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --require-hashes --no-deps --only-binary=:all: \
      -r /tmp/requirements.lock \
 && pip install --no-cache-dir --no-index --no-deps "/wheels/prfaas_operator-${VERSION}-py3-none-any.whl" \
 && rm -rf /wheels /tmp/requirements.lock \
 && groupadd --system --gid 65532 prfaas \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin prfaas
USER 65532:65532
ENTRYPOINT ["prfaas"]
CMD ["--help"]
