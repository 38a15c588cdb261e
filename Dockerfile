# One image for every autocanary process: `autocanary api`, `autocanary worker`, `autocanary scheduler`
# (deploy/base runs all three from it). Build: docker build -t REGISTRY/autocanary:TAG .
# Runs as uid 10001 with a read-only root filesystem; only /tmp needs to be writable (an emptyDir).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY rollouts/ rollouts/
COPY policies/ policies/
COPY analyzer/ analyzer/
COPY adapters/ adapters/
COPY workers/ workers/
COPY api/ api/
COPY cli/ cli/
COPY sandbox/ sandbox/
COPY bench/ bench/
# The versions CI tested (constraints.txt), into a virtual environment copied whole below.
RUN python -m venv /opt/autocanary \
 && /opt/autocanary/bin/pip install -c constraints.txt .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/autocanary/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 autocanary \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin autocanary
COPY --from=build /opt/autocanary /opt/autocanary
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["autocanary"]
CMD ["--help"]
