# The messaging-stats-exporter image: the installed package in a slim Python, nothing else.
#
#   docker build -t messaging-stats-exporter .
#   docker run --rm -p 10057:10057 --read-only messaging-stats-exporter --demo
#   docker run --rm -p 10057:10057 --read-only \
#       -v "$PWD/exporter-config:/etc/messaging-stats-exporter:ro" messaging-stats-exporter
#
# The mounted directory holds config.yaml (start from deploy/container/config.yaml) and secrets/;
# the README's "Container" section is the whole recipe. A directory, not the single file: an edit
# that replaces the file (sed -i, most editors) is seen through it on the next SIGHUP.
# The exporter is one process and writes nothing to the filesystem: a read-only root needs no tmpfs.
# PYTHON_IMAGE picks the base of both stages: any Debian-based image with Python 3.11+, its venv
# module and a `python` command, such as the official python:3.1x-slim. Where no registry is
# reachable, `bash .ci/build-image` makes one with debootstrap and builds this file with podman.
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
    PYTHONUNBUFFERED=1

USER ${EXPORTER_UID}:${EXPORTER_UID}
EXPOSE 10057

# No curl in the image: the exporter asks its own /healthz, at the config's web.listen_address,
# over TLS when given the web config file (run with --web.config.file: give it to --health-cmd too).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["messaging-stats-exporter", "--health-check", "--config", "/etc/messaging-stats-exporter/config.yaml"]

ENTRYPOINT ["messaging-stats-exporter"]
CMD ["--config", "/etc/messaging-stats-exporter/config.yaml"]
