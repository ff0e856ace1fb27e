# syntax=docker/dockerfile:1
#
# streamq image: `docker build -t streamq:local .`
#   docker run --rm streamq:local worker          (the default command)
#   docker run --rm streamq:local tail JOB_ID
#   docker run --rm -p 8000:8000 streamq:local simulate --host 0.0.0.0
#
# Both stages use the same base so the virtualenv copied from `build` finds its interpreter
# (/usr/local/bin/python3.11) at the same path in `runtime`.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# build: the locked runtime dependencies (hash-checked), then streamq itself as a wheel.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first: this layer is reused until requirements.lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# The build backend pyproject.toml's [build-system] names (hatchling), pinned and hash-checked
# like the rest, in a virtualenv of its own that the runtime image never sees.
COPY requirements-build.lock ./
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes -r requirements-build.lock

# The package, without dependencies (they are all pinned above), built with that backend
# (--no-build-isolation: nothing unpinned is fetched to build it).
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist . \
    && pip install --no-cache-dir --no-deps /dist/*.whl \
    && streamq --version

# ---------------------------------------------------------------------------------------------
# runtime: the virtualenv only, run as an unprivileged user.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 streamq \
    && useradd --system --uid 10001 --gid streamq --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin streamq

COPY --from=build /opt/venv /opt/venv

# streamq reads an optional ./.env; .dockerignore keeps any local .env out of the image, so
# configuration comes from the container environment (see docker-compose.yml).
WORKDIR /app

USER streamq:streamq

# SIGTERM asks the worker to shut down cleanly; give in-flight jobs time to finish before the
# SIGKILL (`docker stop -t 60`, or stop_grace_period in docker-compose.yml).
STOPSIGNAL SIGTERM

ENTRYPOINT ["streamq"]
CMD ["worker"]
