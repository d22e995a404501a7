"""Between OpenAI's fine-tuning objects and ours: a create request becomes a JobSpec, our rows become theirs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lingudistill.spec import JobSpec, MethodSpec, TrainingSpec
from service.datasets.schemas import DatasetOut
from service.errors import FieldError, InvalidSpec
from service.jobs.schemas import CheckpointOut, EventOut, JobOut
from service.lifecycle import JobStatus
from service.openai_api.schemas import (
    CheckpointMetrics,
    CreateFineTuningJob,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    FineTuningStatus,
    Hyperparameters,
    Integration,
    JobError,
)

HYPERPARAMETERS = "method.lingudistill.hyperparameters"
STATUSES: dict[JobStatus, FineTuningStatus] = {
    JobStatus.queued: "queued",
    JobStatus.validating: "validating_files",
    JobStatus.running: "running",
    JobStatus.evaluating: "running",  # the final scoring is part of the run to an OpenAI client
    JobStatus.comparing: "running",  # so is the wait for the control arm's lift
    JobStatus.pausing: "pausing",  # OpenAI's own names for the two
    JobStatus.paused: "paused",
    JobStatus.succeeded: "succeeded",
    JobStatus.failed: "failed",
    JobStatus.cancelling: "cancelled",  # cancel answers "cancelled" at once, as OpenAI's does
    JobStatus.cancelled: "cancelled",
}
# Where a JobSpec field came from in the create request, for the `param` of an error.
_PARAMS = {"student": "model", "teacher": "method.lingudistill.teacher", "mixture": "training_file", "name": "suffix",
           "integrations": "integrations", "resources": "method.lingudistill.resources"}  # fmt: skip
_LEVELS = {"info": "info", "warning": "warn", "error": "error"}


def job_spec(request: CreateFineTuningJob) -> JobSpec:
    """The JobSpec a create request means: the training file distilled, each multimodal file with CE only."""
    options = request.method.lingudistill
    method, training = _hyperparameters(options.hyperparameters)
    if request.seed is not None:
        training["seed"] = request.seed
    mixture = [{"name": "training_file", "uri": f"dataset://{request.training_file}", "distill": True}]
    mixture += [
        {"name": f"multimodal_{number}", "uri": f"dataset://{file_id}", "distill": False}
        for number, file_id in enumerate(options.multimodal_files, start=1)
    ]
    body = {
        "name": f"ft-{request.suffix}" if request.suffix else "ft",
        "student": request.model,
        "teacher": options.teacher,
        "mixture": mixture,
        "method": method,
        "training": training,
        "resources": options.resources,
        "metadata": request.metadata or {},
        "integrations": [_integration(item) for item in request.integrations],
    }
    try:
        return JobSpec.model_validate(body)
    except ValidationError as exc:
        errors = [request_field(FieldError(loc=["body", *e["loc"]], msg=e["msg"])) for e in exc.errors()]
        raise InvalidSpec(f"{len(errors)} invalid field(s)", errors=errors) from None


def request_field(error: FieldError) -> FieldError:
    """A field error about the JobSpec, relocated to the create request's field it came from."""
    loc = tuple(error.loc[1:] if error.loc[:1] == ["body"] else error.loc)
    return FieldError(loc=["body", *_param(loc).split(".")], msg=error.msg)


def _integration(item: Integration) -> dict[str, Any]:
    """OpenAI's {type, <type>: {...}} as the spec's integration; W&B's `name` is the spec's `run_name`."""
    options = dict(getattr(item, item.type) or {})
    if item.type == "wandb" and "name" in options:
        options["run_name"] = options.pop("name")
    return {"type": item.type, **options}


def _integration_out(item: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in item.items() if k != "type" and v is not None}
    if item["type"] == "wandb" and "run_name" in options:
        options["name"] = options.pop("run_name")
    return {"type": item["type"], item["type"]: options}


def _hyperparameters(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method, training) fields: OpenAI's names translated, ours by name, "auto" meaning our default."""
    method, training = {}, {}
    for name, value in values.items():
        if value == "auto":
            continue
        if name == "learning_rate_multiplier":
            training.setdefault("lr", _scaled(TrainingSpec, "lr", value))
            training.setdefault("lr_projector", _scaled(TrainingSpec, "lr_projector", value))
        elif name in MethodSpec.model_fields:
            method[name] = value
        elif name in TrainingSpec.model_fields:
            training[name] = value
        else:
            hint = "; jobs are sized in optimiser steps: use max_steps" if name == "n_epochs" else ""
            error = FieldError(
                loc=["body", *f"{HYPERPARAMETERS}.{name}".split(".")], msg=f"unknown hyperparameter{hint}"
            )
            raise InvalidSpec(f"unknown hyperparameter {name!r}{hint}", errors=[error])
    return method, training


def _scaled(model: type[TrainingSpec], field: str, multiplier: Any) -> Any:
    if not isinstance(multiplier, int | float) or multiplier <= 0:
        error = FieldError(
            loc=["body", *HYPERPARAMETERS.split("."), "learning_rate_multiplier"], msg="a positive number"
        )
        raise InvalidSpec("learning_rate_multiplier must be a positive number", errors=[error])
    return model.model_fields[field].default * multiplier


def _param(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] in ("method", "training"):
        return ".".join([HYPERPARAMETERS, *map(str, loc[1:])])
    return _PARAMS.get(str(loc[0]), ".".join(map(str, loc))) if loc else "body"


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def fine_tuning_job(job: JobOut) -> FineTuningJob:
    spec = job.spec
    distilled = next(source for source in spec.mixture if source.distill)
    multimodal = [s.uri.removeprefix("dataset://") for s in spec.mixture if not s.distill]
    error = None
    if job.status == JobStatus.failed:
        error = JobError(code=job.failure_reason or "failed", message=job.failure_message or "the job failed")
    return FineTuningJob(
        id=job.id,
        created_at=_unix(job.created_at) or 0,
        error=error,
        fine_tuned_model=f"/v1/jobs/{job.id}/model" if job.status == JobStatus.succeeded else None,
        finished_at=_unix(job.finished_at),
        hyperparameters=Hyperparameters(
            batch_size=spec.training.batch_size,
            learning_rate_multiplier=spec.training.lr / TrainingSpec.model_fields["lr"].default,
        ),
        model=spec.student,
        organization_id=job.tenant_id,
        seed=spec.training.seed or 0,
        status=STATUSES[job.status],
        training_file=distilled.uri.removeprefix("dataset://"),
        estimated_finish=_estimated_finish(job),
        integrations=[_integration_out(i.model_dump(mode="json")) for i in spec.integrations],
        metadata=job.metadata or None,
        method={
            "type": "lingudistill",
            "lingudistill": {
                "teacher": spec.teacher,
                "hyperparameters": {**spec.method.model_dump(mode="json"), **spec.training.model_dump(mode="json")},
                "multimodal_files": multimodal,
            },
        },
    )


def _estimated_finish(job: JobOut) -> int | None:
    eta = job.progress.eta_s
    return int(job.updated_at.timestamp() + eta) if eta is not None and job.status == JobStatus.running else None


def event(item: EventOut) -> FineTuningJobEvent:
    data = item.data or {}
    level = _LEVELS.get(str(getattr(item, "level", None) or data.get("level") or "info"), "info")
    message = getattr(item, "message", None) or _message(item.type, data)
    return FineTuningJobEvent(
        id=str(item.id),
        created_at=_unix(item.created_at) or 0,
        level=level,  # type: ignore[arg-type]
        message=message,
        data=data,
        type="metrics" if item.type == "evaluation" else "message",
    )


def _message(kind: str, data: dict[str, Any]) -> str:
    """A sentence for an event stored before events carried their own message."""
    if kind == "status":
        return f"status: {data.get('status', '?')}"
    details = ", ".join(f"{key}={value}" for key, value in data.items() if not isinstance(value, dict | list))
    return f"{kind}: {details}" if details else kind


def checkpoint(job_id: str, item: CheckpointOut) -> FineTuningJobCheckpoint:
    loss = item.metrics.get("loss")
    return FineTuningJobCheckpoint(
        id=f"ftckpt_{job_id}_{item.step}",
        created_at=_unix(item.created_at) or 0,
        fine_tuned_model_checkpoint=f"/v1/jobs/{job_id}/checkpoints/{item.step}",
        fine_tuning_job_id=job_id,
        metrics=CheckpointMetrics(step=item.step, train_loss=loss, **_numbers(item.metrics)),
        step_number=item.step,
    )


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and k not in ("step", "loss")}


def file_object(dataset: DatasetOut) -> FileObject:
    details = "; ".join(f"{p.origin}: {p.message}" for p in dataset.problems[:5]) or None
    return FileObject(
        id=dataset.id,
        bytes=dataset.size_bytes,
        created_at=_unix(dataset.created_at) or 0,
        filename=dataset.name,
        purpose="fine-tune",
        status="processed" if dataset.status == "ready" else "error",
        status_details=details,
    )
