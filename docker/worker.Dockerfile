# The GPU worker image: Celery worker + training child on a CUDA PyTorch base whose torch is the project's pin.
# Base pinned to an exact tag; pin the digest too (pytorch/pytorch:<tag>@sha256:...) when you mirror it.
FROM pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LINGUDISTILL_DATA_DIR=/data \
    LINGUDISTILL_WORKER_SCRATCH_DIR=/scratch \
    HF_HOME=/data/hf

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY lingudistill ./lingudistill
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
# torch==2.13.0 is already the base's: pip keeps it (a different base would fail the version check below
# rather than silently download a second, CPU-only torch).
RUN pip install "torch==2.13.0" ".[service]" \
    && cp -r migrations "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/migrations" \
    && python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__" \
    && lingudistill --help > /dev/null

RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data /scratch && chown 10001:10001 /data /scratch
USER 10001:10001
VOLUME ["/data", "/scratch"]

# The worker's own health is its leases (a stuck worker's jobs are re-queued by the sweeper); this checks that
# it can reach its broker. `celery inspect ping` would fail while a job runs: the solo pool answers no control
# messages then.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, redis; redis.Redis.from_url(os.environ['LINGUDISTILL_BROKER_URL'], socket_timeout=5).ping()"]
CMD ["lingudistill", "worker"]
