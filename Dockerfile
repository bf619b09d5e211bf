# syntax=docker/dockerfile:1
#
# Crescendo's two images, one file (DESIGN.md §1); BuildKit (Docker >= 23's default builder):
#   docker build --target operator -t crescendo/operator:0.1.0 .   # kopf operator, no torch
#   docker build --target trainer  -t crescendo/trainer:0.1.0 .    # torchrun + CUDA torch
# The project wheel is built once, in `builder`; the runtime stages bind-mount it for one RUN
# (RUN --mount), so neither image carries the source tree, build tools or the wheel file.
# tests/docker/test_dockerfile.py checks this file (hadolint and the rules below).

# The builder's and the operator's Python (pyproject: requires-python >= 3.11).
ARG PYTHON_IMAGE=python:3.12.15-slim-bookworm
# The trainer's base: torch with CUDA. Its torch version MUST match constraints.txt's pin
# (torch==2.13.0): the trainer's pip install runs under both and fails on a mismatch.
# cuda12.6 needs the oldest driver (>= 560) and covers Volta to Hopper; Blackwell GPUs need a
# cuda13.x tag (e.g. pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime, driver >= 580).
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
# pyproject's [project].version (a test keeps them equal): it names the wheel and the label.
ARG CRESCENDO_VERSION=0.1.0
# OCI labels; pass the repository URL and the licence (SPDX) when publishing.
ARG IMAGE_SOURCE=""
ARG IMAGE_LICENSES=NOASSERTION

# ---------------------------------------------------------------------------------------------
# builder: the pure-Python wheel (py3-none-any), plus the constraints every install goes through.
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY spec/ spec/
COPY operator/ operator/
COPY trainer/ trainer/
# Pinned build tools, no build isolation: the wheels are built with exactly these. Besides the
# project, python-etcd (the `trainer` extra's etcd-v2 rendezvous client; 0.4.5 is its last
# release) is published as an sdist only: its wheel is built here too, so that both runtime
# installs can be --only-binary=:all: (no build step, no unpinned build tools pulled at install).
RUN pip install --no-cache-dir --disable-pip-version-check pip==26.3 setuptools==84.2.1 \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist \
        . python-etcd==0.4.5 \
    && cp constraints.txt /dist/constraints.txt

# ---------------------------------------------------------------------------------------------
# datasets: Debian's Fashion-MNIST (crescendo_trainer.datasets reads
# /usr/share/datasets/fashion-mnist, where this package installs it). Architecture-independent
# files; apt runs here so that the trainer image has no apt lists and no apt step of its own.
# The version pin is Debian bookworm's (the PYTHON_IMAGE suite): update it with the suite.
FROM ${PYTHON_IMAGE} AS datasets
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------
# operator: `crescendo operator` (kopf). The `operator` extra only: no torch, no numpy.
# Runs with a read-only root filesystem: bytecode is compiled by pip at install time, nothing
# else is written, and HOME points at /tmp (the chart mounts an emptyDir there).
FROM ${PYTHON_IMAGE} AS operator
ARG CRESCENDO_VERSION
ARG IMAGE_SOURCE
ARG IMAGE_LICENSES
LABEL org.opencontainers.image.title="crescendo-operator" \
      org.opencontainers.image.description="Crescendo's kopf operator for AdaptiveBatchJobs" \
      org.opencontainers.image.version="${CRESCENDO_VERSION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.licenses="${IMAGE_LICENSES}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# `crescendo crd` imports the CLI and the spec model: a broken install fails the build here.
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        -c /dist/constraints.txt "/dist/crescendo-${CRESCENDO_VERSION}-py3-none-any.whl[operator]" \
    && crescendo crd > /dev/null \
    && groupadd --system --gid 10001 crescendo \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin crescendo
USER 10001:10001
# 8080: the operator's /metrics (CRESCENDO_OPERATOR_METRICS_PORT); 8081: kopf's /healthz probe.
EXPOSE 8080 8081
ENTRYPOINT ["crescendo", "operator"]
CMD ["--liveness=http://0.0.0.0:8081/healthz"]

# ---------------------------------------------------------------------------------------------
# trainer: `torchrun ... -m crescendo_trainer`. The operator's worker pods set `command:` to a
# full `torchrun` line (crescendo_operator.builders.torchrun_command), so `torchrun` must be on
# PATH; this image's ENTRYPOINT/CMD are for `docker run` and for jobs without the operator.
FROM ${TORCH_IMAGE} AS trainer
ARG CRESCENDO_VERSION
ARG IMAGE_SOURCE
ARG IMAGE_LICENSES
LABEL org.opencontainers.image.title="crescendo-trainer" \
      org.opencontainers.image.description="Crescendo's elastic PyTorch trainer (torchrun)" \
      org.opencontainers.image.version="${CRESCENDO_VERSION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.licenses="${IMAGE_LICENSES}"
# HOME and the parsed-data-set cache are writable by the worker pods' user (builders.py's
# RUN_AS_USER, 1000) and, through group 0, by an arbitrary uid (OpenShift-style).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/crescendo \
    CRESCENDO_DATA_CACHE=/home/crescendo/.cache/crescendo/datasets
COPY --from=datasets /usr/share/datasets/fashion-mnist /usr/share/datasets/fashion-mnist
# The base's CUDA torch must survive the install. A constraints file generated here from the
# installed distribution (torch==<its exact version, e.g. 2.13.0+cu126>) lets pip add the
# `trainer` extra's other packages but never replace torch (or, through torch's own exact
# pins, its CUDA libraries); constraints.txt (torch==2.13.0) on top fails the build when the
# base's torch is another release. --no-deps was the alternative, but it would leave the
# extra's dependencies to a hand-kept list. PIP_BREAK_SYSTEM_PACKAGES: the base's Python is
# the system one (PEP 668), which is where its own torch lives too.
# uid 1000 may already exist (Ubuntu 24.04 bases have `ubuntu`): only create it when missing.
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    python3 -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' \
        > /tmp/base-torch.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
        --disable-pip-version-check --only-binary=:all: --find-links /dist \
        -c /dist/constraints.txt -c /tmp/base-torch.txt \
        "/dist/crescendo-${CRESCENDO_VERSION}-py3-none-any.whl[trainer]" \
    && rm /tmp/base-torch.txt \
    && torchrun --help > /dev/null \
    && python3 -m crescendo_trainer --help > /dev/null \
    && (getent passwd 1000 > /dev/null \
        || useradd --uid 1000 --gid 0 --no-create-home --home-dir /home/crescendo \
            --shell /usr/sbin/nologin crescendo) \
    && mkdir -p "${CRESCENDO_DATA_CACHE}" \
    && chown -R 1000:0 /home/crescendo \
    && chmod -R g=u /home/crescendo
WORKDIR /home/crescendo
# The worked example of a user's own script (manifests/examples/user-script.yaml runs it).
COPY --chown=1000:0 examples/ examples/
USER 1000
# 9400: the trainer's /metrics (spec.metrics.port); 29400: the c10d rendezvous on worker-0.
EXPOSE 9400 29400
ENTRYPOINT ["torchrun"]
# One process, standalone rendezvous; replace the whole CMD for more, e.g.
#   docker run --gpus all IMAGE --standalone --nproc-per-node=gpu -m crescendo_trainer \
#     --config /job.yaml
CMD ["--standalone", "--nproc-per-node=1", "-m", "crescendo_trainer"]
