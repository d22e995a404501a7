"""Loading students, teachers and processors from URIs through one path: from_pretrained on safetensors.

file:// and plain paths load in place; s3:// folders are fetched into a content-addressed cache first;
hf://org/name@revision goes to from_pretrained with that revision (online only). Pickled weights are refused
(use_safetensors=True) and remote code is never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer, PreTrainedModel

from lingudistill import uris
from lingudistill.errors import UserInputError
from lingudistill.models.families import FamilyAdapter, adapter_for


class ModelLoadError(UserInputError, ValueError):
    """A model URI that cannot be loaded safely, with the reason."""


@dataclass(frozen=True)
class ModelSource:
    """Where from_pretrained should look: a local folder, or a hub repo and revision."""

    location: str
    revision: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"revision": self.revision} if self.revision else {}


def resolve(uri: str) -> ModelSource:
    if uri.startswith("hf://"):
        repo_id, revision, _ = uris.parse_hf_uri(uri)
        return ModelSource(repo_id, revision)
    try:
        path = uris.fetch(uri)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model not found: {uri}") from exc
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{uri} is not a Hugging Face model folder: {path / 'config.json'} is missing")
    _require_safetensors(uri, path)
    return ModelSource(str(path))


def _require_safetensors(uri: str, path: Path) -> None:
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        detail = f" (found pickled weights {', '.join(pickled)}, which are refused)" if pickled else ""
        raise ModelLoadError(f"{uri} has no .safetensors weights{detail}")


def _config(source: ModelSource, uri: str) -> Any:
    try:
        return AutoConfig.from_pretrained(source.location, trust_remote_code=False, **source.kwargs())
    except ValueError as exc:  # an architecture that exists only as remote code
        raise ModelLoadError(
            f"{uri}: cannot load its config without remote code, which is never trusted: {exc}"
        ) from exc


@dataclass
class Student:
    model: PreTrainedModel
    adapter: FamilyAdapter
    processor: Any
    source: ModelSource


def load_student(uri: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Student:
    source = resolve(uri)
    adapter = adapter_for(_config(source, uri))
    model = AutoModelForImageTextToText.from_pretrained(
        source.location, dtype=dtype, trust_remote_code=False, use_safetensors=True, **source.kwargs()
    ).to(device)
    processor = adapter.load_processor(source.location, **source.kwargs())
    return Student(model, adapter, processor, source)


@dataclass
class Teacher:
    model: PreTrainedModel
    tokenizer: Any
    source: ModelSource


def load_teacher(uri: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Teacher:
    """The frozen teacher: eval mode, no gradient, ever."""
    source = resolve(uri)
    _config(source, uri)
    model = AutoModelForCausalLM.from_pretrained(
        source.location, dtype=dtype, trust_remote_code=False, use_safetensors=True, **source.kwargs()
    ).to(device)
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=False, **source.kwargs())
    return Teacher(model, tokenizer, source)


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
