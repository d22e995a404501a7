"""`python -m worker ...` is `lingudistill worker ...` (the embedded `serve` starts workers this way)."""

from worker.cli import worker

if __name__ == "__main__":
    worker()
