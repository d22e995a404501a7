# The API image: FastAPI + the engine's spec and CLI, CPU-only torch (the API never trains).
# Base pinned to an exact patch tag; pin the digest too (python:3.11.13-slim-bookworm@sha256:...) when you
# mirror it into your registry: `docker buildx imagetools inspect python:3.11.13-slim-bookworm` prints it.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LINGUDISTILL_DATA_DIR=/data \
    HF_HOME=/data/hf

WORKDIR /app
# torch first, with its exact pin and from the CPU index: the default wheel would pull ~3 GB of CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY lingudistill ./lingudistill
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN pip install ".[service]" \
    # service.db looks for migrations/ beside the installed packages, which a wheel does not ship.
    && cp -r migrations "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/migrations" \
    && lingudistill --help > /dev/null

RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Migrations first (idempotent), then the API; compose runs the same two steps.
CMD ["sh", "-c", "lingudistill db upgrade && exec lingudistill serve --host 0.0.0.0 --port 8000 --no-migrate"]
