"""Resumable checkpoints: HF-format student weights plus the training state, marked complete by a manifest.

Layout of one checkpoint, DIR/checkpoints/step-000500/:
    model.safetensors, config.json, ...   the student, save_pretrained (safetensors only)
    training_state.pt                      optimiser, scheduler, RNG and data-cursor state: tensors and plain
                                           Python values only, so torch.load(weights_only=True) reads it
    manifest.json                          written last: sha256 of every other file; no manifest, no checkpoint
A multi-GPU run (lingudistill.distributed) writes the same folder, except that the optimiser state is not in
training_state.pt but, with the model's, in dcp/ (torch.distributed.checkpoint), which reshards on load.
A checkpoint is written into a temporary folder and renamed into place, so a crash never leaves a half one
under a real name, and resume only ever picks a folder whose manifest verifies.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

# torch is imported inside the functions that need it: the worker's Celery process uses the layout helpers
# here and must never import torch (nor initialise CUDA).
MANIFEST = "manifest.json"
TRAINING_STATE = "training_state.pt"


class CheckpointError(RuntimeError):
    pass


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / checkpoint_name(step)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int) -> dict[str, Any]:
    files = {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"step": step, "files": files, "bytes": sum((folder / f).stat().st_size for f in files)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def verify(folder: Path) -> dict[str, Any] | None:
    """The manifest if every listed file is present with its sha256, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return manifest


def save(
    root: Path, step: int, save_model: Any, training_state: dict[str, Any], keep: int
) -> tuple[Path, dict[str, Any]]:
    """Write checkpoint `step` under root atomically; prune all but the newest `keep` complete ones."""
    import torch

    final = checkpoint_dir(root, step)
    staging = root / f".tmp-{final.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_model(staging)
    torch.save(training_state, staging / TRAINING_STATE)
    manifest = write_manifest(staging, step)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    prune(root, keep)
    return final, manifest


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders with a manifest, oldest first (cheap: manifests are not re-hashed here)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MANIFEST).is_file())


def latest_valid(root: Path) -> Path | None:
    """The newest checkpoint whose files match its manifest; corrupt or partial ones are skipped."""
    for folder in reversed(complete_checkpoints(root)):
        if verify(folder) is not None:
            return folder
    return None


def prune(root: Path, keep: int) -> None:
    for folder in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def load_training_state(folder: Path) -> dict[str, Any]:
    import torch

    # weights_only: a checkpoint from storage is untrusted input, and pickle would run its code.
    try:
        return torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors carry many types; all mean the same to the user
        raise CheckpointError(f"{folder / TRAINING_STATE} is not a loadable training state: {exc}") from exc


def rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
