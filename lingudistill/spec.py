"""The job spec: one pydantic model shared by the API body, the CLI's YAML and the worker's input.

Defaults live here and nowhere else. `JobSpec.resolved()` writes every default back, including a
generated seed, so the stored spec alone reproduces the run.
"""

from __future__ import annotations

import difflib
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lingudistill.errors import UserInputError

KVSharing = Literal["prompt", "visual", "visual_system", "off"]
KDSources = Literal["selective", "all", "none"]
Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
Precision = Literal["auto", "bf16", "fp32"]
LengthGrouping = Literal["step", "pool", "off"]

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Uri = Annotated[str, Field(min_length=1, max_length=2048)]
NO_NUL = r"^[^\x00]*$"  # labels are stored as JSON text, which cannot hold a NUL character (Postgres jsonb)
LabelKey = Annotated[str, Field(max_length=64, pattern=NO_NUL)]
LabelValue = Annotated[str, Field(max_length=256, pattern=NO_NUL)]


UriRole = Literal["model", "training", "evaluation", "harness"]
SpecPath = tuple[str | int, ...]


class UriField(NamedTuple):
    """One URI the spec names: where (`path` into the spec, e.g. ("mixture", 0, "uri")), what it holds and its label."""

    path: SpecPath
    uri: str
    role: UriRole  # model: student/teacher; training: a mixture source; evaluation: a suite; harness: task YAMLs
    label: str  # for messages: "teacher", "mixture text", "language suite knowledge"


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo in a spec must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class MixtureSource(StrictModel):
    name: Name = Field(description="Short name of the source; per-source losses are reported under it.")
    uri: Uri = Field(
        description="dataset://ID, s3://bucket/key, hf://org/name[@revision][#split], file:///path or a path."
    )
    weight: float = Field(1.0, gt=0, le=1e6, description="Relative sampling weight within the mixture.")
    distill: bool = Field(
        False, description="Language-intensive source: apply the KD term here when kd_sources is 'selective'."
    )
    max_records: int | None = Field(
        None, ge=1, le=10**12, description="Use at most this many records of the source (at most 10^12)."
    )


class MethodSpec(StrictModel):
    kv_sharing: KVSharing = Field(
        "prompt",
        description="prompt: the teacher continues from the student's prompt KV cache (the paper); visual: the "
        "teacher's K/V at image positions are the student's; visual_system: also the text before the first "
        "image; off: the teacher reads the text with image tokens removed (ablation).",
    )
    kd_sources: KDSources = Field(
        "selective",
        description="selective: KD on distill sources only; all: KD everywhere; none: CE only (plain fine-tuning).",
    )
    divergence: Divergence = Field("forward_kl", description="KL(teacher||student), KL(student||teacher) or JSD.")
    jsd_beta: float = Field(0.5, ge=0.0, le=1.0, description="JSD interpolation: 0 is forward KL, 1 reverse KL.")
    temperature: float = Field(1.0, gt=0.0, le=100.0, description="Softmax temperature T; KD is scaled by T^2.")
    kd_weight: float = Field(1.0, ge=0.0, le=1e4, description="Weight of the KD term.")
    ce_weight: float = Field(1.0, ge=0.0, le=1e4, description="Weight of the cross-entropy term.")
    loss_chunk_size: int = Field(
        1024, ge=1, le=1_000_000, description="Response tokens per lm_head/loss chunk; bounds logits memory."
    )
    allow_rope_mismatch: bool = Field(
        False,
        description="Train even when the student's decoder and the teacher rotate keys differently (rope type, "
        "base, scaling or partial rotary factor). The teacher then misreads the student's K/V, so KV sharing is "
        "inexact: validation refuses such a pair unless this is true, and warns when it is.",
    )

    @model_validator(mode="after")
    def _some_loss(self) -> MethodSpec:
        if self.ce_weight == 0 and (self.kd_weight == 0 or self.kd_sources == "none"):
            raise ValueError("the loss is identically zero: set ce_weight > 0 or enable KD with kd_weight > 0")
        return self


class TrainingSpec(StrictModel):
    max_steps: int = Field(4000, ge=1, le=10_000_000, description="Optimiser steps.")
    batch_size: int = Field(8, ge=1, le=4096, description="Examples per micro-batch (per GPU).")
    grad_accum: int = Field(1, ge=1, le=4096, description="Micro-batches per optimiser step.")
    lr: float = Field(1.0e-5, gt=0, le=1.0, description="Peak learning rate of the decoder (and lm_head).")
    lr_projector: float = Field(5.0e-5, gt=0, le=1.0, description="Peak learning rate of the projector.")
    lr_vision: float = Field(1.0e-6, gt=0, le=1.0, description="Peak learning rate of the vision encoder if unfrozen.")
    freeze_vision: bool = Field(True, description="Keep the vision encoder frozen.")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.03, ge=0, le=1.0, description="Fraction of steps of linear warm-up.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1.0, description="Cosine schedule floor, as a fraction of peak.")
    max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="Gradient clipping threshold.")
    max_seq_len: int = Field(2048, ge=8, le=1_000_000, description="Longer examples are truncated (response end).")
    group_by_length: LengthGrouping = Field(
        "step",
        description="Batch records of similar prompt and response lengths together, so less of each micro-batch is "
        "padding (bench/token_efficiency.py). 'step' (default): each optimiser step's records, exactly those the "
        "plain sampler draws, are re-partitioned by length into its grad_accum micro-batches; both losses are means "
        "over the step's tokens, so the step's loss and gradient are unchanged, and with grad_accum 1 it changes "
        "nothing. 'pool': records are regrouped within pools of 64 micro-batches across steps: the most padding "
        "saved, but steps then hold one modality each, so the KD term reaches fewer steps and short-answer sources "
        "weigh more in the gradient. 'off': micro-batches as drawn. true and false, from before the modes, mean "
        "'pool' and 'off'.",
    )
    seed: int | None = Field(None, ge=0, lt=2**31, description="Seed; generated and recorded when missing.")
    checkpoint_every: int = Field(500, ge=1, le=10_000_000, description="Save a resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="Local checkpoints kept; older ones are pruned.")
    precision: Precision = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    compile: bool = Field(False, description="torch.compile the student's decoder.")

    @field_validator("group_by_length", mode="before")
    @classmethod
    def _grouping_from_bool(cls, value: Any) -> Any:
        """Specs stored before the modes said true (the pool grouping) or false."""
        if isinstance(value, bool):
            return "pool" if value else "off"
        return value


class EvalSuite(StrictModel):
    name: Name = Field(description="Suite name as shown in the report.")
    uri: Uri = Field(description="JSONL of {question, choices, answer, image?} or {question, answer, image?}.")
    max_items: int | None = Field(None, ge=1, le=10**12, description="Evaluate at most this many items.")


class GatesSpec(StrictModel):
    min_recovery: float | None = Field(None, ge=-100, le=100, description="Fail if mean language recovery is lower.")
    max_vision_drop: float | None = Field(None, ge=0, le=1, description="Fail if vision average drops by more.")
    min_lift: float | None = Field(
        None,
        ge=-100,
        le=100,
        description="Fail if the lower bound of the 95% interval of the mean-recovery lift over the control arm "
        "is lower. Not applicable (reported, not counted) in a report without a control.",
    )


class HarnessSpec(StrictModel):
    """lm-evaluation-harness tasks, scored as language suites. Needs the `eval` extra (lm-eval) on the worker."""

    tasks: list[Name] = Field(
        min_length=1,
        max_length=64,
        description="Harness task or group names (arc_easy, mmlu, or a task in include_path); one report row each.",
    )
    include_path: Uri | None = Field(
        None, description="A local folder of task YAMLs (a path or file://; relative to the spec's folder)."
    )
    limit: int | None = Field(None, ge=1, le=10**9, description="Score at most this many documents per task.")

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, tasks: list[str]) -> list[str]:
        duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
        if duplicates:
            raise ValueError(f"harness tasks must be unique; repeated: {', '.join(duplicates)}")
        return tasks

    @field_validator("include_path")
    @classmethod
    def _local_folder(cls, uri: str | None) -> str | None:
        if uri is not None and not is_local_uri(uri):
            raise ValueError(f"include_path must be a local folder (a path or file://), not {uri}")
        return uri


class EvaluationSpec(StrictModel):
    language: list[EvalSuite] = Field(default_factory=list, description="Language and knowledge suites.")
    vision: list[EvalSuite] = Field(default_factory=list, description="Vision suites.")
    harness: HarnessSpec | None = Field(
        None, description="lm-evaluation-harness tasks, scored and reported like the language suites."
    )
    every: int | None = Field(
        None, ge=1, le=10_000_000, description="Also evaluate every N steps (None: only at the end)."
    )
    batch_size: int = Field(16, ge=1, le=4096, description="Evaluation batch size.")
    gates: GatesSpec = Field(default_factory=GatesSpec)
    control: bool = Field(
        False,
        description="Also run the same job with kd_sources: none (same data order, steps, seed and evaluation) as "
        "a sibling control job, and report the lift over it (the report's `control` and `lift`; gates.min_lift "
        "counts). The service submits the control with the job and finishes the job once both arms are done; "
        "`lingudistill compare METHOD_DIR CONTROL_DIR` computes the same lift of two finished local runs. Needs a "
        "language suite (or harness task), KD on (kd_sources not none) and ce_weight > 0 (the control's only loss).",
    )

    @model_validator(mode="after")
    def _unique_suite_names(self) -> EvaluationSpec:
        names = [*self.language_suite_names(), *(suite.name for suite in self.vision)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"suite and harness task names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def language_suite_names(self) -> list[str]:
        """The report's language rows, in order: the JSONL suites, then the harness tasks."""
        return [suite.name for suite in self.language] + (list(self.harness.tasks) if self.harness else [])


class ResourcesSpec(StrictModel):
    gpus: int = Field(1, ge=1, le=64, description="GPUs on one node; >1 launches torchrun with FSDP2.")
    queue: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")] = Field(
        "gpu", description="Worker queue (one per GPU kind)."
    )
    priority: int = Field(5, ge=0, le=9, description="Queue priority, 9 is most urgent.")
    max_runtime_s: int | None = Field(
        None, ge=60, le=366 * 86400, description="Hard wall-clock limit of one attempt (at most a year)."
    )


TrackerName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


class MlflowIntegration(StrictModel):
    type: Literal["mlflow"]
    experiment: TrackerName = Field(description="MLflow experiment; created if it does not exist.")
    run_name: TrackerName | None = Field(None, description="Defaults to the job's name.")


class WandbIntegration(StrictModel):
    type: Literal["wandb"]
    project: TrackerName = Field(description="W&B project.")
    entity: TrackerName | None = Field(None, description="W&B entity (team or user); the key's default when unset.")
    run_name: TrackerName | None = Field(None, description="Defaults to the job's name.")


class TensorBoardIntegration(StrictModel):
    type: Literal["tensorboard"]


Integration = Annotated[MlflowIntegration | WandbIntegration | TensorBoardIntegration, Field(discriminator="type")]


class JobSpec(StrictModel):
    name: Name = Field(description="Human-readable job name.")
    student: Uri = Field(description="The adapted VLM to repair: s3://, hf://org/name@revision, file:// or a path.")
    teacher: Uri = Field(description="The original language model the student's decoder came from.")
    mixture: list[MixtureSource] = Field(min_length=1, max_length=64, description="Training data sources.")
    method: MethodSpec = Field(default_factory=MethodSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    metadata: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Free-form labels, filterable in the API."
    )
    integrations: list[Integration] = Field(
        default_factory=list,
        max_length=8,
        description="Experiment trackers that receive the resolved spec, every step's metrics, the evaluation "
        "scores and the report. Their endpoints and credentials come from the operator's settings, never the spec.",
    )

    @field_validator("mixture")
    @classmethod
    def _unique_source_names(cls, sources: list[MixtureSource]) -> list[MixtureSource]:
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"mixture source names must be unique; repeated: {', '.join(duplicates)}")
        return sources

    @model_validator(mode="after")
    def _selective_needs_a_distill_source(self) -> JobSpec:
        if self.method.kd_sources == "selective" and not any(s.distill for s in self.mixture):
            raise ValueError("kd_sources is 'selective' but no mixture source has distill: true")
        return self

    @model_validator(mode="after")
    def _control_is_possible(self) -> JobSpec:
        """The control arm is this job with kd_sources none: it must differ (KD on here), train (CE on) and be
        compared on something (the lift is of the language suites' scores)."""
        if not self.evaluation.control:
            return self
        if self.method.kd_sources == "none":
            raise ValueError("evaluation.control compares KD with no KD, but this job already has kd_sources none")
        if self.method.ce_weight == 0:
            raise ValueError("evaluation.control needs ce_weight > 0: the control arm trains on cross-entropy alone")
        if not self.evaluation.language_suite_names():
            raise ValueError("evaluation.control needs a language suite or harness task: the lift is measured there")
        return self

    def resolved(self) -> JobSpec:
        """A copy with every default written out and a seed generated if none was given."""
        spec = self.model_copy(deep=True)
        if spec.training.seed is None:
            spec.training.seed = secrets.randbelow(2**31)
        return JobSpec.model_validate(spec.model_dump())

    @property
    def seed(self) -> int:
        if self.training.seed is None:
            raise ValueError("the spec is not resolved: call resolved() first")
        return self.training.seed

    def uri_fields(self) -> list[UriField]:
        """Every URI in the spec, the one list: the service's URI policy checks them, the client uploads the local
        data files among them, and relative paths are made absolute through it."""
        fields = [UriField(("student",), self.student, "model", "student")]
        fields.append(UriField(("teacher",), self.teacher, "model", "teacher"))
        for i, source in enumerate(self.mixture):
            fields.append(UriField(("mixture", i, "uri"), source.uri, "training", f"mixture {source.name}"))
        for group in ("language", "vision"):
            for i, suite in enumerate(getattr(self.evaluation, group)):
                label = f"{group} suite {suite.name}"
                fields.append(UriField(("evaluation", group, i, "uri"), suite.uri, "evaluation", label))
        harness = self.evaluation.harness
        if harness is not None and harness.include_path is not None:
            path: SpecPath = ("evaluation", "harness", "include_path")
            fields.append(UriField(path, harness.include_path, "harness", "harness include_path"))
        return fields

    def with_uris(self, uris: Mapping[SpecPath, str]) -> JobSpec:
        """A copy with the URIs at these `uri_fields()` paths replaced."""
        data = self.model_dump()
        for path, uri in uris.items():
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = uri
        return JobSpec.model_validate(data)

    def distills(self, source: MixtureSource) -> bool:
        """Whether the KD term applies to examples from `source`."""
        if self.method.kd_sources == "none" or self.method.kd_weight == 0:
            return False
        return self.method.kd_sources == "all" or source.distill


class SpecError(UserInputError, ValueError):
    """A spec file that cannot be read or parsed; validation errors stay pydantic's ValidationError."""


def load_spec(path: str | Path) -> JobSpec:
    """Load a spec from YAML or JSON. Relative local URIs are taken relative to the spec's folder."""
    path = Path(path)
    data = parse_spec_text(read_spec_text(path), str(path))
    spec = JobSpec.model_validate(data)
    base = path.parent.resolve()
    return spec.with_uris({f.path: str(local_path(f.uri, base)) for f in spec.uri_fields() if is_local_uri(f.uri)})


def read_spec(path: str | Path) -> JobSpec:
    """`load_spec` for a person at a terminal: every problem in one SpecError, each line giving the file, the
    YAML line and column, the field and, for a misspelt field, the closest valid name."""
    try:
        return load_spec(path)
    except ValidationError as exc:
        raise SpecError(explain_validation_error(exc, read_spec_text(Path(path)), str(path))) from exc


def read_spec_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"cannot read spec {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def parse_spec_text(text: str, origin: str = "<spec>") -> Any:
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{origin}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{_yaml_position(exc, origin)}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a spec must be a mapping at the top level")
    return data


def _yaml_position(exc: yaml.YAMLError, origin: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark is not None else origin


def _yaml_problem(exc: yaml.YAMLError) -> str:
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    return ", ".join(p for p in parts if p) or str(exc)


# --- explaining validation errors ---------------------------------------------------------------------------------
def explain_validation_error(exc: ValidationError, text: str | None = None, origin: str = "spec") -> str:
    """One line per error: `origin:line:col: field.path: message`, with the position when `text` (the YAML or
    JSON the spec was read from) locates the field, and "did you mean" for an unknown field."""
    root = _yaml_tree(text)
    problems = sorted(_explain_one(error, root) for error in exc.errors())  # in file order
    lines = [f"{origin}:{line}:{column}: {text}" if line else f"{origin}: {text}" for line, column, text in problems]
    return f"invalid spec {origin}:\n" + "\n".join(f"  {line}" for line in lines)


def _explain_one(error: Any, root: yaml.Node | None) -> tuple[int, int, str]:
    """(line, column, "field: message"), 1-based; line 0 when the file does not locate the field."""
    loc = tuple(error["loc"])
    field = ".".join(str(part) for part in loc) or "(spec)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and loc:
        message = "unknown field" + _did_you_mean(loc)
    if error["type"] == "missing":
        message = "required field is missing"
    mark = _mark_of(root, loc, point_at_key=error["type"] == "extra_forbidden")
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    return line, column, f"{field}: {message}"


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else f"; valid fields: {', '.join(model.model_fields)}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec model found at `loc` (list indices skipped: their element type is the model)."""
    model: type[BaseModel] = JobSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in get_args(annotation) if (found := _model_in(arg)) is not None), None)


def _yaml_tree(text: str | None) -> yaml.Node | None:
    """The YAML node tree, which knows where every value starts (JSON parses as YAML too); None when absent."""
    if text is None:
        return None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _mark_of(root: yaml.Node | None, loc: tuple[Any, ...], *, point_at_key: bool) -> yaml.Mark | None:
    """Where the deepest node of `loc` present in the file starts: the key for an unknown field, else the value."""
    node, mark = root, root.start_mark if root is not None else None
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if pair is None:
                break
            node = pair[1]
            mark = (pair[0] if last and point_at_key else pair[1]).start_mark
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            mark = node.start_mark
        else:
            break
    return mark


def local_input_problems(spec: JobSpec) -> list[str]:
    """Local files and folders the spec names that do not exist, each with its field: checked in a blink, before
    models or data are loaded (or datasets uploaded)."""
    problems = [problem for role in ("student", "teacher") if (problem := _local_model_problem(spec, role))]
    named = [(f"mixture {s.name}", s.uri) for s in spec.mixture]
    named += [
        (f"{group} suite {s.name}", s.uri) for group in ("language", "vision") for s in getattr(spec.evaluation, group)
    ]
    for what, uri in named:
        if is_local_uri(uri) and not local_path(uri).exists():
            problems.append(f"{what}: file not found: {local_path(uri)}")
    return problems


def _local_model_problem(spec: JobSpec, role: str) -> str | None:
    uri = getattr(spec, role)
    if not is_local_uri(uri):
        return None  # s3:// and hf:// are checked where they are fetched
    path = local_path(uri)
    if not path.exists():
        return f"{role}: model not found: {path}"
    if not (path / "config.json").is_file():
        return f"{role}: {path} is not a Hugging Face model folder (no config.json)"
    if not any(path.glob("*.safetensors")):
        return f"{role}: {path} has no .safetensors weights (pickled weights are never loaded)"
    return None


def is_local_uri(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str, base: Path | None = None) -> Path:
    """The filesystem path of a file:// URI or a plain path (relative ones against `base`)."""
    raw = uri.removeprefix("file://")
    path = Path(raw).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path
