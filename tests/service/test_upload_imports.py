"""Validating an uploaded dataset imports no torch: the first evaluation-suite upload used to import it inside the
request (50 s, issue 15). A fresh interpreter, so nothing imported by other tests hides the import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHECK = """
import sys
from pathlib import Path
from service.datasets.service import validate_file
count, problems = validate_file(Path(sys.argv[1]), sys.argv[2])
assert (count, problems) == (2, []), (count, problems)
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


@pytest.mark.parametrize(
    ("kind", "records"),
    [
        ("evaluation", [{"question": "q", "choices": ["a", "b"], "answer": 1}] * 2),
        ("training", [{"prompt": "q", "response": "a"}] * 2),
    ],
)
def test_validating_an_upload_imports_no_torch(tmp_path, kind, records):
    path = tmp_path / "upload.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = subprocess.run([sys.executable, "-c", CHECK, str(path), kind], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_api_process_imports_no_torch():
    """The API (control arms and sweeps compare stored reports) starts without torch: the comparison reads scores,
    it scores nothing. A regression found when the control arm first imported the engine's comparison."""
    probe = "import sys, service.app; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
