"""Scoring a model on evaluation suites.

Multiple choice, as lm-evaluation-harness scores it: each choice is the assistant turn after the question
(and image), and its log-likelihood is the sum of the log-probabilities of the assistant tokens (the tokens
that carry labels in training, so the end-of-turn token is included: a choice is scored as a complete answer).
    acc       1 if argmax_i loglik_i is the answer
    acc_norm  1 if argmax_i loglik_i / len(choice_i in characters) is the answer (the harness's acc_norm)
Ties go to the lowest choice index, so a model that cannot tell the choices apart is right only when the
answer happens to be listed first, and the result never depends on floating-point luck or sort stability.
Primary metric: acc_norm, as the harness reports ARC and HellaSwag.

Short answers: greedy generation of at most `max_new_tokens`, compared with the reference by normalised exact
match (lower case, punctuation and the articles a/an/the removed, whitespace collapsed: SQuAD's
`normalize_answer`). Primary metric: exact_match.

Every suite also keeps its per-item scores on the primary metric (1 or 0 per item, by the item's key: its `id`
or its index), so that two runs on the same items can be compared item by item (lift.py's paired bootstrap).

Log-probabilities are computed only at label positions: the decoder's last hidden states are gathered at the
rows that predict a label, and only those rows go through lm_head, in chunks.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from lingudistill.data.records import Record
from lingudistill.evaluation.scores import SuiteKind, SuiteScore
from lingudistill.evaluation.suites import EvalItem, item_keys, load_suite, suite_format
from lingudistill.models.encoding import IGNORE, Encoder, Example
from lingudistill.models.families.base import FamilyAdapter
from lingudistill.spec import EvalSuite

PRIMARY_METRIC = {"multiple_choice": "acc_norm", "short_answer": "exact_match"}
DEFAULT_MAX_NEW_TOKENS = 16
_LM_HEAD_CHUNK_ROWS = 4096


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def pick_choice(scores: Sequence[float]) -> int:
    """The index of the highest score; ties go to the lowest index."""
    best = 0
    for index, value in enumerate(scores):
        if value > scores[best]:
            best = index
    return best


class Scorer:
    """Log-likelihoods and greedy answers of one model, batched on the model's device.

    `adapter` is the student's family adapter, or None for a text-only LM whose `processor` is its tokenizer.
    """

    def __init__(
        self,
        model: Any,
        adapter: FamilyAdapter | None,
        processor: Any,
        *,
        batch_size: int = 16,
        max_seq_len: int | None = None,
        progress: bool = False,
    ) -> None:
        self.model, self.adapter, self.batch_size, self.progress = model, adapter, batch_size, progress
        self.encoder = Encoder(adapter, processor, max_seq_len or _context_length(model, adapter))
        self.tokenizer = self.encoder.tokenizer
        self._collate_adapter = adapter or FamilyAdapter()
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # --- the two primitives ---------------------------------------------------------------------------------
    def loglikelihoods(self, records: Sequence[Record], desc: str = "scoring") -> list[float]:
        """Sum of log p(assistant tokens | everything before them), one per record."""
        examples = [self.encoder.encode(record) for record in records]
        results = [0.0] * len(examples)
        with _inference(self.model):
            for batch_index in self._batches(examples, desc):
                batch = self._collate([examples[i] for i in batch_index])
                for i, value in zip(batch_index, self._label_logprob_sums(batch), strict=True):
                    results[i] = value
        return results

    def generate(self, records: Sequence[Record], max_new_tokens: int, desc: str = "generating") -> list[str]:
        """Greedy completions of each record's prompt (its turns before the last assistant turn)."""
        examples = [self.encoder.encode(record) for record in records]
        prompts = [_prompt_only(example) for example in examples]
        answers = [""] * len(prompts)
        with _inference(self.model):
            for batch_index in self._batches(prompts, desc):
                batch = self._left_padded([prompts[i] for i in batch_index])
                for i, text in zip(batch_index, self._greedy(batch, max_new_tokens), strict=True):
                    answers[i] = text
        return answers

    # --- scoring suites ---------------------------------------------------------------------------------------
    def score_multiple_choice(self, items: Sequence[EvalItem], desc: str = "scoring") -> dict[str, float]:
        return _means(self.multiple_choice_hits(items, desc))

    def multiple_choice_hits(self, items: Sequence[EvalItem], desc: str = "scoring") -> dict[str, list[float]]:
        """{"acc": [1.0 or 0.0 per item], "acc_norm": [...]}, in item order."""
        records, owners = [], []
        for n, item in enumerate(items):
            assert item.choices is not None
            for choice in item.choices:
                records.append(_record(item, choice))
                owners.append(n)
        logliks = self.loglikelihoods(records, desc)
        per_item: list[list[float]] = [[] for _ in items]
        for n, value in zip(owners, logliks, strict=True):
            per_item[n].append(value)
        hits: dict[str, list[float]] = {"acc": [], "acc_norm": []}
        for item, scores in zip(items, per_item, strict=True):
            assert item.choices is not None
            normalised = [s / max(len(c), 1) for s, c in zip(scores, item.choices, strict=True)]
            hits["acc"].append(float(pick_choice(scores) == item.answer))
            hits["acc_norm"].append(float(pick_choice(normalised) == item.answer))
        return hits

    def score_short_answer(
        self, items: Sequence[EvalItem], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, desc: str = "generating"
    ) -> dict[str, float]:
        return _means(self.short_answer_hits(items, max_new_tokens, desc))

    def short_answer_hits(
        self, items: Sequence[EvalItem], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, desc: str = "generating"
    ) -> dict[str, list[float]]:
        """{"exact_match": [1.0 or 0.0 per item]}, in item order."""
        answers = self.generate([_record(item, str(item.answer)) for item in items], max_new_tokens, desc)
        return {
            "exact_match": [float(exact_match(a, str(item.answer))) for a, item in zip(answers, items, strict=True)]
        }

    def score_suite(
        self, suite: EvalSuite, kind: SuiteKind, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> SuiteScore:
        items = load_suite(suite)
        form = suite_format(items) or "multiple_choice"
        metric = PRIMARY_METRIC[form]
        if not items:
            return SuiteScore(suite.name, kind, metric, None, {}, 0)
        if form == "multiple_choice":
            hits = self.multiple_choice_hits(items, desc=suite.name)
        else:
            hits = self.short_answer_hits(items, max_new_tokens, desc=suite.name)
        metrics = _means(hits)
        per_item = dict(zip(item_keys(items), hits[metric], strict=True))
        return SuiteScore(suite.name, kind, metric, metrics[metric], metrics, len(items), per_item)

    # --- internals --------------------------------------------------------------------------------------------
    def _batches(self, examples: Sequence[Example], desc: str):  # type: ignore[no-untyped-def]
        """Indices in batches of similar length (less padding); results are put back in input order."""
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        yield from tqdm(chunks, desc=desc, disable=not self.progress, leave=False, unit="batch")

    def _collate(self, examples: list[Example]) -> dict[str, Any]:
        from lingudistill.models.encoding import collate

        return _to_device(collate(examples, self._collate_adapter, self.pad_token_id), self.model.device)

    def _left_padded(self, prompts: list[Example]) -> dict[str, Any]:
        length = max(len(p.input_ids) for p in prompts)
        input_ids = torch.full((len(prompts), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        mm_types = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            n = len(prompt.input_ids)
            input_ids[row, length - n :], mask[row, length - n :] = prompt.input_ids, 1
            mm_types[row, length - n :] = prompt.mm_token_type_ids
        batch = {"input_ids": input_ids, "attention_mask": mask, "mm_token_type_ids": mm_types}
        batch.update(self._collate_adapter.collate_images([p.images for p in prompts]))
        return _to_device(batch, self.model.device)

    def _label_logprob_sums(self, batch: dict[str, Any]) -> list[float]:
        hidden = self._hidden_states(batch)
        targets = batch["labels"][:, 1:]
        rows, positions = (targets != IGNORE).nonzero(as_tuple=True)
        selected, labels = hidden[rows, positions], targets[rows, positions]
        head = self.adapter.lm_head(self.model) if self.adapter else self.model.get_output_embeddings()
        softcap = getattr(self._text_config(), "final_logit_softcapping", None)
        token_logprobs = []
        for start in range(0, len(labels), _LM_HEAD_CHUNK_ROWS):
            logits = head(selected[start : start + _LM_HEAD_CHUNK_ROWS]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            logprobs = torch.log_softmax(logits, dim=-1)
            token_logprobs.append(logprobs.gather(-1, labels[start : start + _LM_HEAD_CHUNK_ROWS, None]).squeeze(-1))
        sums = torch.zeros(batch["input_ids"].shape[0], dtype=torch.float64, device=hidden.device)
        sums.index_add_(0, rows, torch.cat(token_logprobs).double())
        return sums.tolist()

    def _hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.adapter is None:
            mask = batch["attention_mask"]
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            base, extra = self.model.base_model, {}
        else:
            positions = self.adapter.position_ids(self.model, batch)
            base, extra = self.adapter.base_forward(self.model), self.adapter.forward_kwargs(batch)
        out = base(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=positions,
            use_cache=False,
            **extra,
        )
        return out.last_hidden_state

    def _greedy(self, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
        extra = self.adapter.forward_kwargs(batch) if self.adapter else {}
        stop = _stop_token_ids(self.model, self.tokenizer)
        output = self.model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad_token_id,
            eos_token_id=stop,
            **extra,
        )
        texts = []
        for row in output[:, batch["input_ids"].shape[1] :].tolist():
            cut = next((i for i, token in enumerate(row) if token in stop), len(row))
            texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return texts

    def _text_config(self) -> Any:
        return self.adapter.text_config(self.model) if self.adapter else self.model.config


def evaluate_suites(
    suites: list[EvalSuite],
    kind: SuiteKind,
    model: Any,
    adapter: FamilyAdapter | None,
    processor_or_tokenizer: Any,
    *,
    batch_size: int,
    progress: bool = False,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> dict[str, SuiteScore]:
    """Score `model` on each suite: {suite name: SuiteScore}. The model's train/eval mode is restored after."""
    scorer = Scorer(model, adapter, processor_or_tokenizer, batch_size=batch_size, progress=progress)
    return {suite.name: scorer.score_suite(suite, kind, max_new_tokens) for suite in suites}


# --- helpers ------------------------------------------------------------------------------------------------------
def _means(hits: dict[str, list[float]]) -> dict[str, float]:
    return {metric: sum(values) / len(values) for metric, values in hits.items()}


def _record(item: EvalItem, answer: str) -> Record:
    user: list[dict] = [{"type": "image"}] if item.image is not None else []
    user.append({"type": "text", "text": item.question})
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    images = (item.image,) if item.image is not None else ()
    return Record(messages=messages, images=images, source="eval", origin=item.origin)


def _prompt_only(example: Example) -> Example:
    p = example.prompt_length
    return Example(example.input_ids[:p], example.labels[:p], example.mm_token_type_ids[:p], example.images)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(ids) if isinstance(ids, list | tuple) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def _context_length(model: Any, adapter: FamilyAdapter | None) -> int:
    config = adapter.text_config(model) if adapter else model.config
    length = getattr(config, "max_position_embeddings", None)
    return int(length) if isinstance(length, int) and length > 0 else 1_000_000


class _inference:
    """no_grad and eval mode for the duration; the model's previous mode comes back after."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = bool(self.model.training)
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)
