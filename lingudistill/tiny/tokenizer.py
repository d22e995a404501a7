"""A word-level tokenizer built with `tokenizers`, wrapped as a fast HF tokenizer with a chat template."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

# ChatML, as Qwen and SmolLM use it; image parts become the family's placeholder token.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ image_placeholder }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

BASE_SPECIALS = ("<pad>", "<unk>", "<s>", "<|im_start|>", "<|im_end|>")
# A readable word list beats 60 lines of quoted tokens.
DEFAULT_WORDS = tuple(
    (
        "the a is of and to in what colour shape square circle red green blue yellow big small left right "
        "answer question yes no one two three four five six seven eight nine zero plus minus equals capital "
        "user assistant system image picture shows there it this that"
    ).split()
) + tuple(".,?!:;'-")


def build_tokenizer(
    words: Iterable[str] = DEFAULT_WORDS,
    *,
    image_placeholder: str = "<image>",
    extra_specials: Iterable[str] = (),
    chat_template: str = CHATML_TEMPLATE,
    vocab_size: int | None = None,
    appended_specials: Iterable[str] = (),
) -> PreTrainedTokenizerFast:
    """A fast tokenizer whose vocabulary is the special tokens, then `words`, padded to `vocab_size`, then
    `appended_specials` (tokens a VLM appends to its LM's tokenizer; the placeholder's may be among them).

    An empty image_placeholder builds a text-only tokenizer (a teacher's) whose template drops image parts.
    """
    appended = list(dict.fromkeys(appended_specials))
    placeholder = _split_placeholder(image_placeholder) if image_placeholder else []
    leading = [t for t in dict.fromkeys([*BASE_SPECIALS, *placeholder, *extra_specials]) if t not in appended]
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*leading, *words]))}
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} tokens needed")
        vocab.update({f"<extra_{i}>": i for i in range(len(vocab), vocab_size)})
    vocab.update({token: len(vocab) + i for i, token in enumerate(appended)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = [*leading, *appended]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=[t for t in specials if t not in ("<pad>", "<unk>", "<s>", "<|im_end|>")],
    )
    tokenizer.chat_template = chat_template.replace("{{ image_placeholder }}", image_placeholder)
    return tokenizer


def build_tokenizer_pair(
    words: Iterable[str] = DEFAULT_WORDS,
    *,
    image_placeholder: str,
    student_only: Iterable[str],
    extra_specials: Iterable[str] = (),
    chat_template: str = CHATML_TEMPLATE,
    teacher_vocab_size: int | None = None,
) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """(student, teacher) tokenizers in a real VLM's relation to its LM: the student's is the teacher's with the
    image placeholder's tokens and the `student_only` ones (row/column markers ...) appended after every teacher id."""
    words = tuple(words)
    common = dict(extra_specials=tuple(extra_specials), chat_template=chat_template, vocab_size=teacher_vocab_size)
    teacher = build_tokenizer(words, image_placeholder="", **common)  # type: ignore[arg-type]
    student = build_tokenizer(
        words,
        image_placeholder=image_placeholder,
        appended_specials=(*_split_placeholder(image_placeholder), *student_only),
        **common,  # type: ignore[arg-type]
    )
    return student, teacher


def _split_placeholder(placeholder: str) -> list[str]:
    """'<|vision_start|><|image_pad|><|vision_end|>' -> its three special tokens."""
    return [f"<{part}" if not part.startswith("<") else part for part in placeholder.replace("><", ">\0<").split("\0")]
