"""The lm-evaluation-harness adapter: local task YAMLs on tiny models, offline, and the job that reports them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from transformers import LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

from lingudistill.data.records import Record
from lingudistill.evaluation.harness import (
    HarnessUnavailable,
    check_harness,
    evaluate_harness_tasks,
    harness_available,
    harness_model,
)
from lingudistill.evaluation.scoring import Scorer
from lingudistill.evaluation.suites import load_suite
from lingudistill.models.families.llava import LlavaAdapter
from lingudistill.models.loading import load_student, load_teacher
from lingudistill.pipeline import run_job, validate
from lingudistill.spec import EvalSuite, HarnessSpec, JobSpec, SpecError, load_spec
from lingudistill.tiny.common import TINY_TEXT
from lingudistill.tiny.llava import build_llava, llava_config, llava_processor
from lingudistill.tiny.tokenizer import build_tokenizer
from tests.engine.conftest import NUMBERS, tiny_spec, write_tiny_data

needs_harness = pytest.mark.skipif(not harness_available(), reason="lm-evaluation-harness is the `eval` extra")

# The engine renders a question and a choice through the chat template; the harness joins doc_to_text and
# target_delimiter + choice. This template makes the two texts the same ("question choice", no end-of-turn
# token), so both read the same tokens and their scores must agree.
PLAIN_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %} {% endif %}"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %} {% endif %}"
)
SUMS = [
    {"question": f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?", "choices": list(NUMBERS[:6]), "answer": a + b}
    for a in range(3)
    for b in range(3)
]
COLOURS = [
    {"question": "what colour is the big square ?", "choices": ["red", "green", "blue"], "answer": 2},
    {"question": "is the circle left of the square ?", "choices": ["yes", "no"], "answer": 0},
    {"question": "what shape is the small picture ?", "choices": ["square", "circle"], "answer": 1},
    {"question": "what colour is the circle ?", "choices": ["yellow", "red", "green", "blue"], "answer": 0},
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_task(folder: Path, name: str, items: list[dict]) -> Path:
    """A multiple-choice task YAML and its JSONL (also a valid engine suite) in `folder`; returns the JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    task = {
        "task": name,
        "dataset_path": "json",
        # data_files: absolute, the harness resolves them against the working directory; cache_dir: not ~/.cache
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "hf-cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task), encoding="utf-8")
    return data


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tasks tiny_sums and tiny_colours and the group tiny_group of both."""
    folder = tmp_path_factory.mktemp("harness-tasks")
    write_task(folder, "tiny_sums", SUMS)
    write_task(folder, "tiny_colours", COLOURS)
    group = {
        "group": "tiny_group",
        "task": ["tiny_sums", "tiny_colours"],
        "aggregate_metric_list": [{"metric": "acc_norm", "weight_by_size": True}],
    }
    (folder / "tiny_group.yaml").write_text(yaml.safe_dump(group), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def models() -> dict[str, tuple]:
    """(model, adapter, processor) of a tiny LLaVA student and a tiny Llama LM, both with the plain template."""
    tokenizer = build_tokenizer(chat_template=PLAIN_TEMPLATE)
    text = LlamaConfig(
        **TINY_TEXT,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    student = LlavaForConditionalGeneration(llava_config(text, tokenizer)).eval()
    teacher = LlamaForCausalLM(text).eval()
    return {
        "vlm student": (student, LlavaAdapter(), llava_processor(tokenizer)),
        "text LM": (teacher, None, tokenizer),
    }


@needs_harness
@pytest.mark.parametrize("which", ["vlm student", "text LM"])
def test_the_harness_scores_a_local_task_as_the_engine_does(models, tasks, which) -> None:
    model, adapter, processor = models[which]
    tokenizer = getattr(processor, "tokenizer", processor)
    score = evaluate_harness_tasks(["tiny_sums"], model, tokenizer, batch_size=4, include_path=str(tasks))["tiny_sums"]

    assert (score.name, score.kind, score.metric, score.n_items) == ("tiny_sums", "language", "acc_norm", len(SUMS))
    assert 0.0 <= score.score <= 1.0 and score.score == score.metrics["acc_norm"]
    suite = load_suite(EvalSuite(name="sums", uri=str(tasks / "tiny_sums.jsonl")))
    engine = Scorer(model, adapter, processor, batch_size=4).score_multiple_choice(suite)
    assert score.metrics == pytest.approx(engine, abs=1e-12), "same items, same texts, same model: same accuracy"
    hits = Scorer(model, adapter, processor, batch_size=4).multiple_choice_hits(suite)["acc_norm"]
    assert score.items == {str(n): hit for n, hit in enumerate(hits)}, "per document, keyed by the harness's doc_id"


@needs_harness
@pytest.mark.parametrize("which", ["vlm student", "text LM"])
def test_the_harness_reads_the_engines_log_likelihoods(models, which) -> None:
    """Per choice, not just the argmax: the VLM's own text-only forward equals the adapter's decoder path."""
    from lm_eval.api.instance import Instance

    model, adapter, processor = models[which]
    pairs = [(item["question"], f" {choice}") for item in SUMS + COLOURS for choice in item["choices"]]
    lm = harness_model(model, getattr(processor, "tokenizer", processor), batch_size=4)
    requests = [Instance("loglikelihood", {}, pair, n) for n, pair in enumerate(pairs)]
    harness = [loglik for loglik, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    records = [
        Record(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": choice.strip()}]},
            ],
            images=(),
            source="eval",
            origin=f"pair {n}",
        )
        for n, (question, choice) in enumerate(pairs)
    ]
    engine = Scorer(model, adapter, processor, batch_size=4).loglikelihoods(records)
    assert harness == pytest.approx(engine, abs=1e-4)
    assert len(set(round(v, 3) for v in engine)) > len(engine) // 2, "the tiny model tells most choices apart"


@needs_harness
def test_item_counts_follow_the_limit_and_sum_over_a_group(models, tasks) -> None:
    model, _, tokenizer = models["text LM"]
    options = {"batch_size": 4, "include_path": str(tasks), "limit": 3}
    tasks_alone = evaluate_harness_tasks(["tiny_sums", "tiny_colours"], model, tokenizer, **options)
    group = evaluate_harness_tasks(["tiny_group"], model, tokenizer, **options)["tiny_group"]
    assert [score.n_items for score in tasks_alone.values()] == [3, 3]
    assert group.n_items == 6, "3 documents of each of its two tasks"
    assert group.metric == "acc_norm" and set(group.metrics) == {"acc_norm"}, "the group's aggregate"
    assert group.score == pytest.approx((tasks_alone["tiny_sums"].score + tasks_alone["tiny_colours"].score) / 2)
    assert list(group.items or {}) == [f"{task}:{n}" for task in ("tiny_sums", "tiny_colours") for n in range(3)]
    assert list(group.items.values()) == [
        *tasks_alone["tiny_sums"].items.values(),
        *tasks_alone["tiny_colours"].items.values(),
    ]


@needs_harness
def test_the_harness_leaves_the_models_mode_and_tokenizer_alone(models, tasks) -> None:
    model, _, tokenizer = models["text LM"]
    tokenizer.pad_token = None  # HFLM sets one on the tokenizer it is given
    model.train()
    rng = torch.get_rng_state()
    try:
        evaluate_harness_tasks(["tiny_colours"], model, tokenizer, batch_size=2, include_path=str(tasks))
        assert model.training and tokenizer.pad_token is None
        assert torch.equal(torch.get_rng_state(), rng), "the harness must not reseed torch in the middle of training"
    finally:
        tokenizer.pad_token = "<pad>"
        model.eval()


@needs_harness
def test_unknown_tasks_and_missing_folders_are_spec_errors(tasks, tmp_path) -> None:
    with pytest.raises(SpecError, match="not a folder"):
        check_harness(HarnessSpec(tasks=["tiny_sums"], include_path=str(tmp_path / "missing")))
    with pytest.raises(SpecError, match="no task named tiny_typo"):
        check_harness(HarnessSpec(tasks=["tiny_sums", "tiny_typo"], include_path=str(tasks)))
    check_harness(HarnessSpec(tasks=["tiny_sums", "tiny_group"], include_path=f"file://{tasks}"))


def test_a_clear_error_without_the_harness(monkeypatch, tmp_path, tasks) -> None:
    """Not installed: the job fails at validation, before any model loads or anything is written."""
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    assert not harness_available()
    with pytest.raises(HarnessUnavailable, match="pip install"):
        evaluate_harness_tasks(["tiny_sums"], model=None, tokenizer=None, batch_size=1, include_path=str(tasks))
    spec = JobSpec.model_validate(
        {
            **tiny_spec(tmp_path),
            "student": str(tmp_path / "no-student"),
            "teacher": str(tmp_path / "no-teacher"),
            "evaluation": {"harness": {"tasks": ["tiny_sums"], "include_path": str(tasks)}},
        }
    )
    with pytest.raises(HarnessUnavailable, match="lm-evaluation-harness"):
        validate(spec)
    with pytest.raises(HarnessUnavailable):
        run_job(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the spec ---------------------------------------------------------------------------------------------------
def _spec(harness: dict | None, **evaluation) -> dict:
    return {
        "name": "repair",
        "student": "s3://models/student",
        "teacher": "s3://models/teacher",
        "mixture": [{"name": "text", "uri": "text.jsonl", "distill": True}],
        "evaluation": {"harness": harness, **evaluation},
    }


def test_the_spec_names_harness_tasks_strictly() -> None:
    spec = JobSpec.model_validate(_spec({"tasks": ["arc_easy", "mmlu"]}, language=[{"name": "sums", "uri": "s.jsonl"}]))
    assert spec.evaluation.harness == HarnessSpec(tasks=["arc_easy", "mmlu"])
    assert spec.evaluation.language_suite_names() == ["sums", "arc_easy", "mmlu"], "the report's language rows"
    assert JobSpec.model_validate(_spec(None)).evaluation.harness is None, "optional"
    refused = [
        ({"tasks": []}, "at least 1"),
        ({"tasks": ["arc_easy", "arc_easy"]}, "repeated: arc_easy"),
        ({"tasks": ["mmlu_*"]}, "pattern"),
        ({"tasks": ["arc_easy"], "include_path": "s3://bucket/tasks"}, "must be a local folder"),
        ({"tasks": ["arc_easy"], "limit": 0}, "greater than or equal to 1"),
        ({"tasks": ["arc_easy"], "num_fewshot": 5}, "Extra inputs are not permitted"),
    ]
    for harness, message in refused:
        with pytest.raises(ValidationError, match=message):
            JobSpec.model_validate(_spec(harness))
    with pytest.raises(ValidationError, match="names must be unique; repeated: arc"):
        JobSpec.model_validate(_spec({"tasks": ["arc"]}, language=[{"name": "arc", "uri": "arc.jsonl"}]))


def test_a_relative_include_path_is_taken_from_the_spec_folder(tmp_path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_spec({"tasks": ["tiny_sums"], "include_path": "tasks"})))
    assert load_spec(tmp_path / "spec.yaml").evaluation.harness.include_path == str(tmp_path / "tasks")


# --- the job ----------------------------------------------------------------------------------------------------
@needs_harness
def test_the_job_reports_harness_tasks_like_language_suites(tmp_path) -> None:
    build_llava(tmp_path, teacher_matches_student=False)
    write_tiny_data(tmp_path)
    write_task(tmp_path / "harness", "tiny_sums", SUMS)
    spec = tiny_spec(tmp_path, max_steps=2, checkpoint_every=2)
    spec["evaluation"] = {"harness": {"tasks": ["tiny_sums"], "include_path": "harness"}, "every": 1, "batch_size": 4}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    result = run_job(load_spec(tmp_path / "spec.yaml"), out)

    (row,) = result.report["language"]["suites"]
    assert (row["name"], row["metric"], row["n_items"]) == ("tiny_sums", "acc_norm", len(SUMS))

    def harness_score(model, tokenizer) -> float:
        scores = evaluate_harness_tasks(
            ["tiny_sums"], model, tokenizer, batch_size=4, include_path=str(tmp_path / "harness")
        )
        return scores["tiny_sums"].score

    teacher, before, after = (
        load_teacher(str(tmp_path / "teacher")),
        load_student(str(tmp_path / "student")),
        load_student(str(result.train.model_dir)),
    )
    assert row["teacher"] == harness_score(teacher.model, teacher.tokenizer), "the teacher is scored, not the student"
    assert row["before"] == harness_score(before.model, before.processor.tokenizer)
    assert row["after"] == harness_score(after.model, after.processor.tokenizer)
    assert result.report["language"]["applicable_suites"] == (row["recovery"] is not None)
    stored = json.loads((out / "eval_before.json").read_text())
    assert stored["teacher"]["tiny_sums"]["n_items"] == stored["before"]["tiny_sums"]["n_items"] == len(SUMS)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/tiny_sums" in r] == [1], "periodic evaluation; step 2 is the final"
    assert "| tiny_sums | acc_norm | 9 |" in (out / "report.md").read_text()
