"""Tiny random models and tokenizers, saved with save_pretrained and loaded back through the real loading path.

Tests and the toy world use them because nothing can be fetched from a model hub here. Each family module
builds a student VLM folder and a matching teacher LM folder; `make_teacher_from_student` copies the
student's decoder and lm_head into the teacher, which is what METHOD.md's identity 1 needs.
"""

from lingudistill.tiny.tokenizer import CHATML_TEMPLATE, build_tokenizer

__all__ = ["CHATML_TEMPLATE", "build_tokenizer"]
