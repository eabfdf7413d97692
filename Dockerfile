# One image for both roles of tokenrelay:
#   gateway (default CMD): python -m api.server --host 0.0.0.0 --port 8000 (uvicorn with header limits)
#   worker:                celery -A worker worker --pool threads -l info
# Configuration comes from TOKENRELAY_* environment variables (see tokenrelay/core/settings.py).

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: turn the source tree into a wheel (the runtime image gets no source, no build tools) --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- runtime --
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The server extra (gateway and worker), no test extras; every dependency ships manylinux wheels.
COPY --from=build /wheels /tmp/wheels
RUN wheel="$(ls /tmp/wheels/tokenrelay-*.whl)" \
    && pip install --no-cache-dir "tokenrelay[server] @ file://${wheel}" \
    && rm -rf /tmp/wheels

RUN groupadd --system --gid 10001 tokenrelay \
    && useradd --system --uid 10001 --gid tokenrelay --create-home --home-dir /home/tokenrelay \
       --shell /usr/sbin/nologin tokenrelay
USER tokenrelay
WORKDIR /home/tokenrelay

EXPOSE 8000

# Gateway by default; the worker overrides the command (see docker-compose.yml).
CMD ["python", "-m", "api.server", "--host", "0.0.0.0", "--port", "8000"]
