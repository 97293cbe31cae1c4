# syntax=docker/dockerfile:1
# One image for every service: `weathertweets serve gateway|ingest|archiver|counter`, `up`,
# `stack`, and `locust` (the Locust job). Runs as a non-root user on a read-only root file
# system; only /tmp must be writable (an emptyDir in Kubernetes).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM node:20.18.1-bookworm-slim AS assets
WORKDIR /assets
COPY tools/assets/package.json tools/assets/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/weathertweets
COPY pyproject.toml README.md build_protos.py ./
COPY requirements/image.txt ./requirements/image.txt
COPY tools/install-image.sh ./tools/install-image.sh
COPY src ./src
# The dashboard's world map (CC BY 4.0), vendored at build time, never committed.
COPY --from=assets /assets/node_modules/@svg-maps/world/world.svg src/weathertweets/static/vendor/world.svg
COPY --from=assets /assets/node_modules/@svg-maps/world/LICENSE.md src/weathertweets/static/vendor/world-LICENSE.md
# The locked runtime (hashes checked), then the project: the same script the tests run.
RUN tools/install-image.sh /opt/weathertweets \
 && /opt/weathertweets/bin/python -m compileall -q /opt/weathertweets
COPY locustfile.py /opt/weathertweets/share/locustfile.py

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="weathertweets" \
      org.opencontainers.image.description="Weather Tweets: gateway, ingest, archiver, counter" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 weathertweets \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin weathertweets
COPY --from=build /opt/weathertweets /opt/weathertweets
ENV PATH=/opt/weathertweets/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    WT_HOST=0.0.0.0 \
    WT_DATA_DIR=/tmp/weathertweets \
    WT_LOCUST_DATA=/data/data.json
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 50051 8000 8001 8002
ENTRYPOINT ["weathertweets"]
CMD ["up"]
