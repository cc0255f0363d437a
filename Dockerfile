# The messaging-stats-exporter image: the installed package in a slim Python, nothing else.
#
#   docker build -t messaging-stats-exporter .
#   docker run --rm -p 10057:10057 --read-only messaging-stats-exporter --demo
#   docker run --rm -p 10057:10057 --read-only \
#       -v "$PWD/config.yaml:/etc/messaging-stats-exporter/config.yaml:ro" \
#       -v "$PWD/secrets:/etc/messaging-stats-exporter/secrets:ro" messaging-stats-exporter
#
# The exporter is one process and writes nothing to the filesystem: a read-only root needs no tmpfs.
# PYTHON_IMAGE picks the base of both stages: any Debian-based image with Python 3.11+, its venv
# module and a `python` command, such as the official python:3.1x-slim. Where no registry is
# reachable, .ci/build-image makes one with debootstrap and builds this file with podman.
#
# Behind a TLS-inspecting proxy whose CA is not in the base image, give pip that CA (a PEM bundle)
# as the build secret "cabundle" (BuildKit, docker's default builder, or podman/buildah). It is
# mounted for the pip step only and never stored in a layer or the image:
#
#   docker build --secret id=cabundle,src=/etc/ssl/certs/ca-certificates.crt \
#       -t messaging-stats-exporter .
#   podman build --format docker --secret id=cabundle,src=/etc/ssl/certs/ca-certificates.crt \
#       -t messaging-stats-exporter .
#
# Without the secret pip uses the base image's trust store. (podman needs --format docker to keep
# the HEALTHCHECK, which the OCI image format has no field for.)
ARG PYTHON_IMAGE=python:3.12-slim

# ---------------------------------------------------------------- build: a virtualenv with the package
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/messaging-stats-exporter

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# A non-editable install: the virtualenv holds the package and its dependencies, compiled to .pyc
# here (pip's default), so the read-only root filesystem of the final stage is never written to.
# pip itself is then removed from the virtualenv: the final stage installs nothing.
# The optional CA bundle secret (see the top of this file) is pip's trust store when given.
RUN --mount=type=secret,id=cabundle,required=false \
    if [ -s /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && /opt/messaging-stats-exporter/bin/pip install --no-cache-dir . \
    && /opt/messaging-stats-exporter/bin/pip uninstall --yes pip \
    && /opt/messaging-stats-exporter/bin/messaging-stats-exporter --help >/dev/null

# ---------------------------------------------------------------- final: the virtualenv, a user, a config path
FROM ${PYTHON_IMAGE}

ARG EXPORTER_UID=10001
LABEL org.opencontainers.image.title="messaging-stats-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Altcraft, Thulium, Trust.lat and Exolve statistics" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid "${EXPORTER_UID}" exporter \
    && useradd --system --uid "${EXPORTER_UID}" --gid exporter --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin exporter \
    && mkdir -p /etc/messaging-stats-exporter/secrets

COPY --from=build /opt/messaging-stats-exporter /opt/messaging-stats-exporter

# glibc's malloc is left at its defaults: measured in this image (the demo, wrk), a fixed 128 KiB
# mmap threshold cut gzip scrapes from ~20,000 to ~15,000 req/s, and neither it nor
# MALLOC_ARENA_MAX=2 changed the RSS (54-55 MiB) under load, bcrypt thread pool included.
ENV PATH=/opt/messaging-stats-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:10057/healthz

USER ${EXPORTER_UID}:${EXPORTER_UID}
EXPOSE 10057

# No curl in the image: the healthcheck is the image's own Python asking /healthz.
# Set HEALTHCHECK_URL when the exporter listens elsewhere (--listen).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4).status == 200 else 1)"]

ENTRYPOINT ["messaging-stats-exporter"]
CMD ["--config", "/etc/messaging-stats-exporter/config.yaml"]
