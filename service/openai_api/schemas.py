"""The objects of OpenAI's fine-tuning API, as this facade returns them and as its create request arrives."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FineTuningStatus = Literal[
    "validating_files", "queued", "running", "pausing", "paused", "succeeded", "failed", "cancelled"
]


class FileObject(BaseModel):
    id: str = Field(description="Our dataset id: name it as `training_file` or in `multimodal_files`.")
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = Field(None, description="For status error: the first problems, by line.")


class LinguDistillMethod(BaseModel):
    """`method.lingudistill`: what OpenAI's methods do not have, a teacher, and our hyperparameters."""

    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(description="The original LM: a URI, as a job spec's `teacher`.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="OpenAI's batch_size and learning_rate_multiplier, and any field of the job spec's `method` or "
        "`training` by name (max_steps, kd_weight, temperature, kv_sharing, ...).",
    )
    multimodal_files: list[str] = Field(
        default_factory=list,
        description="Dataset ids of multimodal sources: trained with cross-entropy, not distilled.",
    )
    resources: dict[str, Any] = Field(
        default_factory=dict, description="The job spec's `resources` (queue, gpus, priority, max_runtime_s)."
    )


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["lingudistill"]
    lingudistill: LinguDistillMethod


class Integration(BaseModel):
    """OpenAI's `{type, <type>: {...}}` shape: `{"type": "wandb", "wandb": {"project": ...}}`, and the same for
    mlflow ({experiment, run_name}) and tensorboard ({}). Endpoints and keys are the operator's, never here."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["mlflow", "wandb", "tensorboard"]
    mlflow: dict[str, Any] | None = None
    wandb: dict[str, Any] | None = None
    tensorboard: dict[str, Any] | None = None


class CreateFineTuningJob(BaseModel):
    """`POST /fine_tuning/jobs`. `training_file` is the distilled (language-intensive) source."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The student VLM: a URI, as a job spec's `student`.")
    training_file: str
    method: Method
    suffix: str | None = Field(None, max_length=64, description="Names the job (`ft-<suffix>`).")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[Integration] = Field(default_factory=list, max_length=8)
    validation_file: None = Field(None, description="Not supported: evaluation suites go in a job spec (/v1/jobs).")
    hyperparameters: None = Field(None, description="Deprecated by OpenAI: use method.lingudistill.hyperparameters.")


class Hyperparameters(BaseModel):
    batch_size: int
    learning_rate_multiplier: float
    n_epochs: Literal["auto"] = "auto"


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = Field(None, description="The repaired model's route, once the job succeeded.")
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: FineTuningStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    method: dict[str, Any]


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class CheckpointMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")
    step: float | None = None
    train_loss: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class ErrorBody(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, rate_limit_error "
                      "or server_error")  # fmt: skip
    param: str | None = Field(None, description="The request field at fault, dotted.")
    code: str = Field(description="Our stable error code (the /v1 problem's `code`).")


class ErrorEnvelope(BaseModel):
    """Every error under /openai, in OpenAI's envelope."""

    error: ErrorBody


class ListPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
