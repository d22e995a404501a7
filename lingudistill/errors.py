"""Whose fault a failure is, decided once: the CLI's exit code and the worker's failure reason both come from here.

Every error that means "the job's input is wrong" (spec, models, data, evaluation set-up) derives from
`UserInputError`. Retrying such a job cannot help, so the worker fails it at once as `bad_input`; anything else
is the machine's problem (`infrastructure`, retried) or memory (`out_of_memory`).
This module imports nothing heavy: the supervisor, which never loads torch, reads FailureKind too.
"""

from __future__ import annotations

import sys
from enum import StrEnum

from pydantic import ValidationError


class UserInputError(Exception):
    """The job's input is at fault; the message tells the user what to change."""


class FailureKind(StrEnum):
    """Why a training child failed; the values are the service's FailureReason values."""

    bad_input = "bad_input"
    out_of_memory = "out_of_memory"
    infrastructure = "infrastructure"


# Errors of other libraries that mean the same as UserInputError: a spec that fails its checks (pydantic), and a
# path the spec names that does not exist.
FOREIGN_USER_ERRORS: tuple[type[BaseException], ...] = (ValidationError, FileNotFoundError)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, (UserInputError, *FOREIGN_USER_ERRORS))


def classify(exc: BaseException) -> FailureKind:
    if is_user_error(exc):
        return FailureKind.bad_input
    if isinstance(exc, MemoryError) or _is_cuda_oom(exc):
        return FailureKind.out_of_memory
    return FailureKind.infrastructure


def _is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never imported here: an OOM can only come from a process that loaded it
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)
