"""An OpenAI-compatible fine-tuning API over our jobs and datasets, under /openai/v1.

The official `openai` Python package, pointed at `<base>/openai/v1` with one of our API keys, works unchanged:
files.create (a dataset), fine_tuning.jobs.create / retrieve / list / cancel / list_events and
jobs.checkpoints.list. The facade only translates: the job, its tenant isolation, Idempotency-Key, quotas and
scheduling are the /v1 service's own.
"""
