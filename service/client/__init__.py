"""The Python client of the LinguDistill API and the `lingudistill submit` / `jobs` / `sweep` commands.

Responses are the service's own schemas, re-exported here so callers need one import.
"""

from service.client.client import LinguDistillClient, RetryPolicy
from service.client.models import ApiConnectionError, ApiError, ChecksumMismatch, Gate, LinguDistillError, Report
from service.datasets.schemas import DatasetOut, DatasetPage
from service.jobs.schemas import CheckpointList, CheckpointOut, EventOut, EventPage, JobOut, JobPage, MetricsOut
from service.lifecycle import JobStatus
from service.schemas import FieldError, Problem
from service.sweeps.schemas import SweepOut, SweepPage, SweepReport
from service.webhooks.schemas import DeliveryOut, DeliveryPage, WebhookCreated, WebhookOut, WebhookPage

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "CheckpointList",
    "CheckpointOut",
    "ChecksumMismatch",
    "DatasetOut",
    "DatasetPage",
    "DeliveryOut",
    "DeliveryPage",
    "EventOut",
    "EventPage",
    "FieldError",
    "Gate",
    "JobOut",
    "JobPage",
    "JobStatus",
    "LinguDistillClient",
    "LinguDistillError",
    "MetricsOut",
    "Problem",
    "Report",
    "RetryPolicy",
    "SweepOut",
    "SweepPage",
    "SweepReport",
    "WebhookCreated",
    "WebhookOut",
    "WebhookPage",
]
