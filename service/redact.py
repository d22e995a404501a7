"""What a tenant is shown of text written by a worker: failure messages and event data name files on the worker
(its temp folders, its Python install, its user's home), which say nothing useful to the tenant and tell an
attacker how the host is laid out. Every view of worker text passes through `redact_paths`, here, once."""

from __future__ import annotations

import re
from typing import Any

# An absolute POSIX path of two or more parts, not inside a URI (s3://b/k, file:///x and https://h/p keep theirs:
# the tenant wrote those), e.g. "/tmp/ld-work/job_1/data/train.jsonl" -> ".../train.jsonl".
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"(),:;]+/)+([^\s/'\"(),:;]*)")


def redact_paths(text: str) -> str:
    return _ABSOLUTE_PATH.sub(lambda m: f".../{m.group(1)}", text)


def redact_data(value: Any) -> Any:
    """`redact_paths` on every string of a JSON value."""
    if isinstance(value, str):
        return redact_paths(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    return value
