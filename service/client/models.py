"""The client's own models: what the API returns as free-form JSON (the report), and errors.

Every other response model is the service's own schema (service.*.schemas), re-exported by service.client.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from service.schemas import FieldError, Problem


class Gate(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    threshold: float | None = None
    value: float | None = None
    passed: bool
    note: str | None = None


class Report(BaseModel):
    """The recovery report (lingudistill.evaluation.report); only the verdict fields are typed."""

    model_config = ConfigDict(extra="allow")
    name: str
    passed: bool
    gates: list[Gate] = []

    @property
    def raw(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class LinguDistillError(Exception):
    """Base of every error the client raises."""


class ApiError(LinguDistillError):
    """The server answered with an error: the RFC 9457 problem document, typed."""

    def __init__(self, status: int, problem: Problem | None, body: str = "", headers: httpx.Headers | None = None):
        self.status = status
        self.problem = problem
        self.code = problem.code if problem else f"http_{status}"
        self.title = problem.title if problem else httpx.codes.get_reason_phrase(status)
        self.detail = problem.detail if problem else (body[:500] or None)
        self.errors: list[FieldError] = list(problem.errors or []) if problem else []
        self.headers = headers or httpx.Headers()
        super().__init__(str(self))

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        response.read()
        try:
            problem = Problem.model_validate_json(response.content)
        except ValidationError:
            problem = None
        return cls(response.status_code, problem, response.text, response.headers)

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.detail or self.title}"
        for error in self.errors:
            text += f"\n  {'.'.join(str(p) for p in error.loc)}: {error.msg}"
        return text


class ApiConnectionError(LinguDistillError):
    """The server could not be reached (after the retries)."""


class ChecksumMismatch(LinguDistillError):
    """A downloaded file's sha256 differs from the manifest."""
