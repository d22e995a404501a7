"""The toy world: a miniature of the paper's experiment that builds offline in about a minute on a CPU.

    teacher   a tiny Llama LM pretrained on a synthetic knowledge world: made-up countries and their capitals,
              and small sums ("what is the capital of vorland ?" -> "the capital of vorland is kema .")
    student   a tiny LLaVA (SigLIP tower, MLP projector) whose decoder and lm_head start as copies of the
              teacher's, then fine-tuned on the multimodal task alone (coloured shapes: "what colour is the
              circle ?" -> "the circle is red .") with a high learning rate, long enough to forget much of
              the knowledge: the degradation the paper starts from
    data/     text.jsonl (the recovery text, language-intensive) and vqa.jsonl + images (multimodal)
    eval/     language.jsonl (multiple choice over the held-out knowledge), vision.jsonl (multiple choice, images)
              and taught.jsonl (the same questions over the facts the recovery text states; not in the spec)
    spec.yaml a LinguDistill job over them: KV sharing of the prompt, KD on the text source only

Held out: the teacher's pretraining corpus holds every fact; the facts are split once, and the recovery text
(data/text.jsonl) states only the taught half. The evaluated half (eval/language.jsonl) appears nowhere in the
job's data: neither a held-out capital's name nor a held-out sum's question. A job can win those facts back
only through what the student still holds, or through the teacher.

Both training loops here are plain next-token cross-entropy: they make the world, they are not LinguDistill.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration, LlavaProcessor

from lingudistill.models.encoding import Encoder
from lingudistill.models.families import adapter_for
from lingudistill.tiny.llava import IMAGE_SIZE, llava_config, llava_processor
from lingudistill.tiny.tokenizer import build_tokenizer
from lingudistill.worlds import shapes
from lingudistill.worlds.training import encode_rows, fit, read_jsonl, threads, write_jsonl

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
N_COUNTRIES = 64
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
TEACHER_TRAINING = (500, 32, 1e-2, 0.0)
ALIGNMENT = (250, 16, 0.0, 5e-3)
DEGRADATION = (200, 16, 1e-2, 1e-3)
# the LinguDistill job of spec.yaml; it checkpoints twice, so a finished job has checkpoints to list
JOB_TRAINING = {"max_steps": 80, "batch_size": 16, "lr": 5.0e-3, "lr_projector": 1.0e-3, "warmup_ratio": 0.1}
CHECKPOINT_EVERY = 40


def build_toy_world(folder: Path, *, seed: int = 0, progress: bool = False) -> Path:
    """Build the toy world in `folder` and return the path of its ready job spec, folder/spec.yaml."""
    with threads(1):
        return _build(Path(folder), seed, progress)


def _build(folder: Path, seed: int, progress: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    world = ToyWorld.make()
    tokenizer = build_tokenizer(world.vocabulary(), image_placeholder="<image>")

    write_jsonl(folder / "data" / "text.jsonl", world.text_records(held_out=False))
    write_jsonl(folder / "data" / "vqa.jsonl", shapes.vqa_records(folder / "data", "images", 240, rng, IMAGE_SIZE))
    write_jsonl(folder / "eval" / "language.jsonl", world.language_items(rng, held_out=True))
    write_jsonl(folder / "eval" / "taught.jsonl", world.language_items(rng, held_out=False))
    write_jsonl(folder / "eval" / "vision.jsonl", shapes.vision_items(folder / "eval", "images", 48, rng, IMAGE_SIZE))

    torch.manual_seed(seed)
    teacher = _pretrain_teacher(tokenizer, world.pretraining_records(), seed, progress)
    teacher.save_pretrained(folder / "teacher")
    tokenizer.save_pretrained(folder / "teacher")

    student, processor = _student_from_teacher(teacher, tokenizer, seed)
    _degrade(student, processor, folder / "data", seed, progress)
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
        "training": {**JOB_TRAINING, "max_seq_len": 128, "seed": seed, "checkpoint_every": CHECKPOINT_EVERY},
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
    """Made-up countries with capitals, and sums of two digits: facts a tiny LM can learn and forget.

    Every fact belongs to one half, fixed for all seeds: taught (stated by the recovery text) or held out
    (evaluated, stated only in the teacher's pretraining corpus).
    """

    def __init__(self, capitals: dict[str, str], held_out_countries: set[str], held_out_sums: set[tuple[int, int]]):
        self.capitals, self.held_out_countries, self.held_out_sums = capitals, held_out_countries, held_out_sums

    @classmethod
    def make(cls) -> ToyWorld:
        """The same world and split for every seed (the seed changes initialisation, data order and images)."""
        rng = random.Random(1234)
        onsets, vowels, codas = "b d f g k l m n p r s t v z".split(), "a e i o u".split(), ["", "n", "r", "l", "s"]
        names: list[str] = []
        while len(names) < 2 * N_COUNTRIES:
            word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(2))
            if word not in names:
                names.append(word)
        countries = [name + "land" for name in names[:N_COUNTRIES]]
        sums = [(a, b) for a in range(10) for b in range(10) if a + b < 10]
        return cls(
            dict(zip(countries, names[N_COUNTRIES:], strict=True)),
            set(rng.sample(countries, N_COUNTRIES // 2)),
            set(rng.sample(sums, len(sums) // 2)),
        )

    def sums(self) -> list[tuple[int, int]]:
        return [(a, b) for a in range(10) for b in range(10) if a + b < 10]

    def vocabulary(self) -> list[str]:
        words = "the is of capital country its tell me about which plus equals it there".split()
        return [*words, *shapes.WORDS, *self.capitals, *self.capitals.values(), *NUMBERS, ".", "?"]

    def pretraining_records(self) -> list[dict[str, str]]:
        """The teacher's corpus: every fact, and the words of the visual task (an LM knows what "red" means)."""
        return self.text_records(held_out=True) + self.text_records(held_out=False) + shapes.text_records()

    def text_records(self, *, held_out: bool) -> list[dict[str, str]]:
        """The facts of one half in several phrasings; the taught half is the job's recovery text."""
        records = []
        for country, capital in self.capitals.items():
            if (country in self.held_out_countries) != held_out:
                continue
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
            if ((a, b) in self.held_out_sums) == held_out:
                records.append({"prompt": _sum_question(a, b), "response": _sum_sentence(a, b, a + b)})
        return records

    def language_items(self, rng: random.Random, *, held_out: bool) -> list[dict[str, Any]]:
        """Four-way multiple choice over the capitals and sums of one half; distractors come from the same half."""
        items = []
        countries = [c for c in self.capitals if (c in self.held_out_countries) == held_out]
        capitals = [self.capitals[c] for c in countries]
        for country in countries:
            capital = self.capitals[country]
            wrong = rng.sample([c for c in capitals if c != capital], 3)
            items.append(_choice_item(f"what is the capital of {country} ?", capital, wrong, rng, country))
        for a, b in (s for s in self.sums() if (s in self.held_out_sums) == held_out):
            wrong = rng.sample([n for n in range(10) if n != a + b], 3)
            choices = [_sum_sentence(a, b, n) for n in [a + b, *wrong]]
            rng.shuffle(choices)
            items.append({"question": _sum_question(a, b), "choices": choices, "answer": _sum_sentence(a, b, a + b)})
        return items


def _choice_item(question: str, capital: str, wrong: list[str], rng: random.Random, country: str) -> dict[str, Any]:
    choices = [f"the capital of {country} is {c} ." for c in [capital, *wrong]]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": f"the capital of {country} is {capital} ."}


def _sum_question(a: int, b: int) -> str:
    return f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?"


def _sum_sentence(a: int, b: int, total: int) -> str:
    return f"{NUMBERS[a]} plus {NUMBERS[b]} equals {NUMBERS[total]} ."


# --- models -------------------------------------------------------------------------------------------------------
def _pretrain_teacher(tokenizer: Any, corpus: list[dict[str, str]], seed: int, progress: bool) -> LlamaForCausalLM:
    config = LlamaConfig(
        **TEXT_CONFIG,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    teacher = LlamaForCausalLM(config)
    examples = encode_rows(Encoder(None, tokenizer, 128), corpus, "pretraining", Path("."))
    steps, batch_size, lr, _ = TEACHER_TRAINING
    fit(teacher, examples, None, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
        desc="pretraining the teacher")  # fmt: skip
    return teacher


def _student_from_teacher(teacher: LlamaForCausalLM, tokenizer: Any, seed: int) -> tuple[Any, LlavaProcessor]:
    """A tiny LLaVA whose decoder and lm_head are exact copies of the trained teacher's."""
    torch.manual_seed(seed + 1)
    student = LlavaForConditionalGeneration(llava_config(teacher.config, tokenizer, vision_hidden=64))
    student.model.language_model.load_state_dict(teacher.model.state_dict())
    student.lm_head.load_state_dict(teacher.lm_head.state_dict())
    return student, llava_processor(tokenizer)


def _degrade(student: Any, processor: LlavaProcessor, data: Path, seed: int, progress: bool) -> None:
    """Alignment (vision tower and projector), then multimodal-only fine-tuning of all three with the decoder."""
    adapter = adapter_for(student.config)
    examples = encode_rows(Encoder(adapter, processor, 128), read_jsonl(data / "vqa.jsonl"), "vqa", data)
    for stage, (steps, batch_size, lr, lr_projector) in (("aligning", ALIGNMENT), ("degrading", DEGRADATION)):
        aligning = stage == "aligning"
        # The random vision tower learns with the projector in both stages (as in LLaVA-OneVision's later stages):
        # frozen after alignment against a decoder that has never seen the visual task, its features leave the
        # student's colour answers near chance (0.48 on 4 choices), and "keeping vision" would mean nothing.
        adapter.vision(student).requires_grad_(True)
        adapter.decoder(student).requires_grad_(not aligning)
        adapter.lm_head(student).requires_grad_(not aligning)
        fit(student, examples, adapter, steps=steps, batch_size=batch_size, lr=lr, lr_projector=lr_projector,
            seed=seed, progress=progress, desc=f"{stage} the student")  # fmt: skip
    student.requires_grad_(True)
