"""LinguDistill: recover a VLM's language ability by KV-shared selective distillation from its original LM."""

__version__ = "0.1.0"
