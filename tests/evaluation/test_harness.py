"""The optional lm-evaluation-harness adapter: only when the package is installed."""

from __future__ import annotations

import pytest

from lingudistill.evaluation.harness import HarnessUnavailable, evaluate_harness_tasks, harness_available


def test_a_clear_error_without_the_harness() -> None:
    if harness_available():
        pytest.skip("lm-evaluation-harness is installed")
    with pytest.raises(HarnessUnavailable, match="pip install lm-eval"):
        evaluate_harness_tasks(["arc_easy"], model=None, tokenizer=None, batch_size=1)


def test_the_harness_runs_on_a_tiny_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("lm_eval")
    pytest.skip("needs a local lm-evaluation-harness task with its data; none is available offline")
