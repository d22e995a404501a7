"""The toy world: a miniature of the paper's experiment that builds offline in about a minute on a CPU.

    teacher   a tiny Llama LM trained on a synthetic knowledge world: made-up countries and their capitals,
              and small sums ("what is the capital of vorland ?" -> "the capital of vorland is kema .")
    student   a tiny LLaVA (SigLIP tower, MLP projector) whose decoder and lm_head start as copies of the
              teacher's, then fine-tuned on the multimodal task alone (coloured shapes: "what colour is the
              circle ?" -> "the circle is red .") with a high learning rate, long enough to forget much of
              the knowledge: the degradation the paper starts from
    data/     text.jsonl (the knowledge, language-intensive) and vqa.jsonl + images (multimodal)
    eval/     language.jsonl (multiple choice over the knowledge) and vision.jsonl (multiple choice, images)
    spec.yaml a LinguDistill job over them: KV sharing of the prompt, KD on the text source only

Both training loops here are plain next-token cross-entropy: they make the world, they are not LinguDistill.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image, ImageDraw
from tqdm.auto import tqdm
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from lingudistill.data.records import Record, parse_record
from lingudistill.models.encoding import Encoder, Example, collate
from lingudistill.models.families import adapter_for
from lingudistill.tiny.llava import IMAGE_SIZE, llava_config, llava_processor
from lingudistill.tiny.tokenizer import build_tokenizer

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (235, 210, 30)}
SHAPES = ("square", "circle", "triangle")
N_COUNTRIES = 32
TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 256,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}
# (steps, batch size, peak learning rate of the decoder, of the projector) of the plain loops. As LLaVA is trained:
# first the vision tower (random here) and the projector learn to map images into the frozen decoder (alignment),
# then decoder, projector and vision tower are fine-tuned on the visual task; that stage's high decoder rate makes
# it forget.
TEACHER_TRAINING = (300, 32, 1e-2, 0.0)
ALIGNMENT = (250, 16, 0.0, 5e-3)
DEGRADATION = (200, 16, 1e-2, 1e-3)
# the LinguDistill job of spec.yaml
JOB_TRAINING = {"max_steps": 80, "batch_size": 16, "lr": 5.0e-3, "lr_projector": 1.0e-3, "warmup_ratio": 0.1}


def build_toy_world(folder: Path, *, seed: int = 0, progress: bool = False) -> Path:
    """Build the toy world in `folder` and return the path of its ready job spec, folder/spec.yaml."""
    with _single_thread():
        return _build(Path(folder), seed, progress)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Models this small train several times faster on one thread: synchronising threads costs more than the math."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _build(folder: Path, seed: int, progress: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    world = ToyWorld.make()
    tokenizer = build_tokenizer(world.vocabulary(), image_placeholder="<image>")

    text_records = world.text_records()
    _write_jsonl(folder / "data" / "text.jsonl", text_records)
    _write_jsonl(folder / "data" / "vqa.jsonl", _vqa_records(folder / "data", "images", 240, rng))
    _write_jsonl(folder / "eval" / "language.jsonl", world.language_items(rng))
    _write_jsonl(folder / "eval" / "vision.jsonl", _vision_items(folder / "eval", "images", 48, rng))

    torch.manual_seed(seed)
    teacher = _train_teacher(tokenizer, folder / "data" / "text.jsonl", seed, progress)
    teacher.save_pretrained(folder / "teacher")
    tokenizer.save_pretrained(folder / "teacher")

    student, processor = _student_from_teacher(teacher, tokenizer, seed)
    _degrade(student, processor, folder / "data" / "vqa.jsonl", seed, progress)
    student.save_pretrained(folder / "student")
    processor.save_pretrained(folder / "student")

    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(job_spec(seed), sort_keys=False), encoding="utf-8")
    return spec_path


def job_spec(seed: int) -> dict[str, Any]:
    """The toy world's LinguDistill job, with URIs relative to the spec's folder."""
    return {
        "name": "toy-world",
        "student": "student",
        "teacher": "teacher",
        "mixture": [
            {"name": "text", "uri": "data/text.jsonl", "weight": 0.5, "distill": True},
            {"name": "vqa", "uri": "data/vqa.jsonl", "weight": 0.5, "distill": False},
        ],
        "method": {"kv_sharing": "prompt", "kd_sources": "selective", "divergence": "forward_kl"},
        "training": {**JOB_TRAINING, "max_seq_len": 128, "seed": seed, "checkpoint_every": 1000},
        "evaluation": {
            "language": [{"name": "knowledge", "uri": "eval/language.jsonl"}],
            "vision": [{"name": "shapes", "uri": "eval/vision.jsonl"}],
            "batch_size": 32,
            "gates": {"min_recovery": 0.05, "max_vision_drop": 0.05},
        },
        "resources": {"gpus": 1, "queue": "cpu"},
        "metadata": {"world": "toy"},
    }


# --- the knowledge world ------------------------------------------------------------------------------------------
class ToyWorld:
    """Made-up countries with capitals, and sums of two digits: facts a tiny LM can learn and forget."""

    def __init__(self, capitals: dict[str, str]) -> None:
        self.capitals = capitals

    @classmethod
    def make(cls) -> ToyWorld:
        """The same world for every seed (the seed changes initialisation, data order and images)."""
        rng = random.Random(1234)
        onsets, vowels, codas = "b d f g k l m n p r s t v z".split(), "a e i o u".split(), ["", "n", "r", "l", "s"]
        names: list[str] = []
        while len(names) < 2 * N_COUNTRIES:
            word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(2))
            if word not in names:
                names.append(word)
        countries = [name + "land" for name in names[:N_COUNTRIES]]
        return cls(dict(zip(countries, names[N_COUNTRIES:], strict=True)))

    def sums(self) -> list[tuple[int, int]]:
        return [(a, b) for a in range(10) for b in range(10) if a + b < 10]

    def vocabulary(self) -> list[str]:
        words = (
            "the a is of what capital country its tell me about which plus equals colour shape in picture it "
            "there on white background".split()
        )
        return [*words, *self.capitals, *self.capitals.values(), *NUMBERS, *COLOURS, *SHAPES, ".", "?"]

    def text_records(self) -> list[dict[str, str]]:
        """The knowledge in several phrasings (the teacher's corpus and the job's language source)."""
        records = []
        for country, capital in self.capitals.items():
            records += [
                {
                    "prompt": f"what is the capital of {country} ?",
                    "response": f"the capital of {country} is {capital} .",
                },
                {
                    "prompt": f"tell me about {country} .",
                    "response": f"{country} is a country . its capital is {capital} .",
                },
                {
                    "prompt": f"{capital} is the capital of which country ?",
                    "response": f"{capital} is the capital of {country} .",
                },
            ]
        for a, b in self.sums():
            records.append(
                {"prompt": f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?", "response": _sum_sentence(a, b, a + b)}
            )
        return records

    def language_items(self, rng: random.Random) -> list[dict[str, Any]]:
        """Four-way multiple choice over capitals and sums."""
        items = []
        capitals = list(self.capitals.values())
        for country, capital in self.capitals.items():
            wrong = rng.sample([c for c in capitals if c != capital], 3)
            choices = [f"the capital of {country} is {c} ." for c in [capital, *wrong]]
            rng.shuffle(choices)
            items.append(
                {
                    "question": f"what is the capital of {country} ?",
                    "choices": choices,
                    "answer": f"the capital of {country} is {capital} .",
                }
            )
        for a, b in rng.sample(self.sums(), 32):
            wrong = rng.sample([n for n in range(10) if n != a + b], 3)
            choices = [_sum_sentence(a, b, n) for n in [a + b, *wrong]]
            rng.shuffle(choices)
            items.append(
                {
                    "question": f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?",
                    "choices": choices,
                    "answer": _sum_sentence(a, b, a + b),
                }
            )
        return items


def _sum_sentence(a: int, b: int, total: int) -> str:
    return f"{NUMBERS[a]} plus {NUMBERS[b]} equals {NUMBERS[total]} ."


# --- the visual task ----------------------------------------------------------------------------------------------
def draw_shape(shape: str, colour: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
    size = rng.randint(12, 20)
    x, y = rng.randint(1, IMAGE_SIZE - size - 1), rng.randint(1, IMAGE_SIZE - size - 1)
    box = (x, y, x + size, y + size)
    draw, fill = ImageDraw.Draw(image), COLOURS[colour]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(x + size / 2, y), (x, y + size), (x + size, y + size)], fill=fill)
    return image


def _shapes(folder: Path, subdir: str, count: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """`count` images of random coloured shapes saved under folder/subdir: (relative path, shape, colour)."""
    (folder / subdir).mkdir(parents=True, exist_ok=True)
    drawn = []
    for n in range(count):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        path = f"{subdir}/{n:04d}.png"
        draw_shape(shape, colour, rng).save(folder / path)
        drawn.append((path, shape, colour))
    return drawn


def _vqa_records(folder: Path, subdir: str, count: int, rng: random.Random) -> list[dict[str, Any]]:
    records = []
    for n, (path, shape, colour) in enumerate(_shapes(folder, subdir, count, rng)):
        if n % 2 == 0:
            prompt, response = f"what colour is the {shape} ?", f"the {shape} is {colour} ."
        else:
            prompt, response = "what is in the picture ?", f"a {colour} {shape} on a white background ."
        records.append({"prompt": prompt, "response": response, "images": [path]})
    return records


def _vision_items(folder: Path, subdir: str, count: int, rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for path, shape, colour in _shapes(folder, subdir, count, rng):
        choices = [f"the {shape} is {c} ." for c in COLOURS]
        items.append(
            {
                "question": f"what colour is the {shape} ?",
                "choices": choices,
                "answer": f"the {shape} is {colour} .",
                "image": path,
            }
        )
    return items


# --- models -------------------------------------------------------------------------------------------------------
def _train_teacher(tokenizer: Any, text_path: Path, seed: int, progress: bool) -> LlamaForCausalLM:
    config = LlamaConfig(
        **TEXT_CONFIG,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    teacher = LlamaForCausalLM(config)
    examples = _encode(Encoder(None, tokenizer, 128), text_path, "text")
    steps, batch_size, lr, _ = TEACHER_TRAINING
    fit(
        teacher,
        examples,
        None,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        desc="training the teacher",
    )
    return teacher.eval()


def _student_from_teacher(teacher: LlamaForCausalLM, tokenizer: Any, seed: int) -> tuple[Any, LlavaProcessor]:
    """A tiny LLaVA whose decoder and lm_head are exact copies of the trained teacher's."""
    torch.manual_seed(seed + 1)
    student = LlavaForConditionalGeneration(llava_config(teacher.config, tokenizer, vision_hidden=64))
    student.model.language_model.load_state_dict(teacher.model.state_dict())
    student.lm_head.load_state_dict(teacher.lm_head.state_dict())
    return student, llava_processor(tokenizer)


def _degrade(student: Any, processor: LlavaProcessor, vqa_path: Path, seed: int, progress: bool) -> None:
    """Alignment (vision tower and projector), then multimodal-only fine-tuning of all three with the decoder."""
    adapter = adapter_for(student.config)
    examples = _encode(Encoder(adapter, processor, 128), vqa_path, "vqa")
    for stage, (steps, batch_size, lr, lr_projector) in (("aligning", ALIGNMENT), ("degrading", DEGRADATION)):
        aligning = stage == "aligning"
        # The random vision tower learns with the projector in both stages (as in LLaVA-OneVision's later stages):
        # frozen after alignment against a decoder that has never seen the visual task, its features leave the
        # student's colour answers near chance (0.48 on 4 choices), and "keeping vision" would mean nothing.
        adapter.vision(student).requires_grad_(True)
        adapter.decoder(student).requires_grad_(not aligning)
        adapter.lm_head(student).requires_grad_(not aligning)
        fit(
            student,
            examples,
            adapter,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            lr_projector=lr_projector,
            seed=seed,
            progress=progress,
            desc=f"{stage} the student",
        )
    student.requires_grad_(True)
    student.eval()


def fit(
    model: Any,
    examples: Sequence[Example],
    adapter: Any,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    lr_projector: float | None = None,
    seed: int,
    progress: bool = False,
    desc: str = "training",
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """Plain next-token cross-entropy on the labelled tokens: AdamW, warm-up and cosine decay, clipping at 1."""
    from lingudistill.models.families.base import FamilyAdapter

    collate_adapter = adapter or FamilyAdapter()
    parameters = [p for p in model.parameters() if p.requires_grad]
    # the projector's rate also applies to the vision tower when that trains
    projector = (
        {id(p) for p in [*adapter.projector(model).parameters(), *adapter.vision(model).parameters()]}
        if adapter
        else set()
    )
    groups = [
        {"params": [p for p in parameters if id(p) not in projector], "lr": lr},
        {"params": [p for p in parameters if id(p) in projector], "lr": lr_projector or lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    rng = random.Random(seed)
    order: list[int] = []
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        if len(order) < batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch = collate([examples[i] for i in order[:batch_size]], collate_adapter, pad_token_id=0)
        del order[:batch_size]
        mask = batch["attention_mask"]
        extra = collate_adapter.forward_kwargs(batch) if adapter else {}
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            labels=batch["labels"],
            **extra,
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))


def _encode(encoder: Encoder, path: Path, source: str) -> list[Example]:
    return [encoder.encode(record) for record in _records(path, source)]


def _records(path: Path, source: str) -> list[Record]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        parse_record(json.loads(line), source=source, origin=f"{path}:{n}", base_dir=path.parent)
        for n, line in enumerate(lines, start=1)
    ]


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
