"""The toy world: its artefacts load, the evaluated knowledge is held out from the recovery text, and the
LinguDistill job on it recovers language while keeping vision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from lingudistill.cli import main
from lingudistill.data.sources import validate_sources
from lingudistill.evaluation import load_suite
from lingudistill.models.compat import check_compatibility
from lingudistill.models.loading import load_student, load_teacher
from lingudistill.spec import load_spec
from lingudistill.toy import ToyWorld, build_toy_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_world(tmp_path_factory.mktemp("toy"), seed=0)


def test_the_toy_world_artefacts_load(world: Path) -> None:
    folder = world.parent
    assert world == folder / "spec.yaml"
    for name in ("teacher", "student", "data/text.jsonl", "data/vqa.jsonl", "eval/language.jsonl", "eval/vision.jsonl"):
        assert (folder / name).exists(), name
    AutoModelForCausalLM.from_pretrained(folder / "teacher")
    AutoTokenizer.from_pretrained(folder / "teacher")
    AutoModelForImageTextToText.from_pretrained(folder / "student")
    AutoProcessor.from_pretrained(folder / "student")
    check_compatibility(load_student(str(folder / "student")), load_teacher(str(folder / "teacher")))

    spec = load_spec(world)
    assert spec.method.kv_sharing == "prompt" and spec.method.kd_sources == "selective"
    assert {s.name: s.distill for s in spec.mixture} == {"text": True, "vqa": False}
    assert spec.evaluation.gates.min_recovery and spec.evaluation.gates.min_recovery > 0
    report = validate_sources(spec.mixture)
    assert report.ok and report.counts["text"] > 100 and report.counts["vqa"] > 100
    language = load_suite(spec.evaluation.language[0])
    vision = load_suite(spec.evaluation.vision[0])
    assert language and all(item.image is None for item in language)
    assert vision and all(item.image is not None for item in vision)


def test_no_evaluated_fact_appears_in_the_recovery_text(world: Path) -> None:
    folder = world.parent
    recovery_text = " ".join(
        f"{row['prompt']} {row['response']}"
        for row in map(json.loads, (folder / "data" / "text.jsonl").read_text().splitlines())
    ).split()
    words = set(recovery_text)
    evaluated = [json.loads(line) for line in (folder / "eval" / "language.jsonl").read_text().splitlines()]
    toy = ToyWorld.make()
    for item in evaluated:
        assert item["question"] not in " ".join(recovery_text), item["question"]
        answer = item["answer"].split()
        if answer[:3] == ["the", "capital", "of"]:  # "the capital of <country> is <capital> ."
            country, capital = answer[3], answer[5]
            assert toy.capitals[country] == capital
            assert capital not in words, f"the held-out capital {capital} appears in the recovery text"
        else:  # "<a> plus <b> equals <sum> ."
            assert " ".join(answer[:3]) not in " ".join(recovery_text), item["answer"]
    taught = [json.loads(line) for line in (folder / "eval" / "taught.jsonl").read_text().splitlines()]
    assert len(evaluated) >= 50 and len(taught) >= 50
    assert all(item["answer"].split()[-2] in words for item in taught), "the taught suite is stated by the text"


def test_the_job_recovers_language_and_keeps_vision(world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", str(world), "--output", str(tmp_path / "job")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "job" / "report.json").read_text())
    language, vision = report["language"], report["vision"]
    print("\n".join(line for line in result.output.splitlines() if ":" in line))
    assert language["average"]["teacher"] > language["average"]["before"] + 0.2, "the student must start degraded"
    assert vision["average"]["before"] >= 0.9, "the student must see the images (chance is 0.25): vision to keep"
    assert language["mean_recovery"] > 0
    assert language["average"]["after"] > language["average"]["before"]
    assert {gate["name"]: gate["passed"] for gate in report["gates"]} == {"min_recovery": True, "max_vision_drop": True}
    assert report["passed"] is True
    assert vision["drop"] <= 0.05
    assert list((tmp_path / "job" / "checkpoints").iterdir()), "a finished toy job has a checkpoint to list"
