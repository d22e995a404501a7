"""METHOD.md's identities, checked the same way for every tiny family of identity.FAMILIES.

Family-specific checks (processor layout, collate of tiles, projector/vision split, sliding window, ...) stay in
the test_family_*.py modules; the tiny models are built once per session and shared with them.
"""

from __future__ import annotations

import pytest
import torch

from lingudistill.kv_sharing import KVDonor
from tests.engine.identity import (
    FAMILIES,
    Tiny,
    assert_left_padding_keeps_hidden_states,
    assert_prompt_identity,
    assert_wrong_positions_break_identity,
    causal_token_types,
    images_after_the_prompt,
    kd_of,
    load_pair,
    perturb_decoder,
    train_on,
)

ALL = list(FAMILIES)
EXACT_VISUAL = [name for name, family in FAMILIES.items() if family.visual_modes_exact]
BIDIRECTIONAL_PREFIX = [name for name, family in FAMILIES.items() if not family.visual_modes_exact]
VISUAL_MODES = ["visual", "visual_system"]


@pytest.fixture
def tiny(request, tiny_families) -> Tiny:
    return tiny_families(request.param)


def families(names: list[str]):
    return pytest.mark.parametrize("tiny", names, indirect=True)


@families(ALL)
def test_identical_decoders_give_zero_kd_in_prompt_mode(tiny):
    assert_prompt_identity(*tiny.pair)


@families(ALL)
def test_wrong_teacher_positions_break_the_identity(tiny):
    assert_wrong_positions_break_identity(*tiny.pair)


@families(ALL)
def test_identity_holds_with_images_in_several_user_turns(tiny):
    """Identity 1 when a later user turn holds an image: the teacher's continuation takes the student's K/V at
    those image tokens (PaliGemma lays every image out in its prefix, so there the cache holds them all)."""
    if tiny.student.adapter.name != "paligemma":
        assert images_after_the_prompt(tiny.student, tiny.later_turns) > 0
    assert_prompt_identity(tiny.student, tiny.teacher, tiny.later_turns)
    assert_wrong_positions_break_identity(tiny.student, tiny.teacher, tiny.later_turns)


@families([name for name in ALL if not name.startswith("paligemma")])
def test_later_turn_images_need_the_students_kv(tiny, monkeypatch):
    """Sensitivity of the hand-over after the prompt: a teacher that keeps its own K/V at later image tokens (it
    reads its pad embedding there) is far from the student."""
    monkeypatch.setattr(KVDonor, "__call__", lambda self, module, key, value: (key, value))
    kd, _, _ = kd_of(tiny.student, tiny.teacher, tiny.later_turns, "prompt")
    assert kd > 1e-2, f"KD {kd}: the later-turn hand-over is untested"


@families(EXACT_VISUAL)
@pytest.mark.parametrize("mode", VISUAL_MODES)
def test_visual_modes_with_identical_decoders_give_zero_kd(tiny, mode):
    kd, _, _ = kd_of(*tiny.pair, mode=mode)
    assert kd <= 1e-6


@families(BIDIRECTIONAL_PREFIX)
@pytest.mark.parametrize("mode", VISUAL_MODES)
def test_visual_modes_differ_only_because_of_the_bidirectional_prefix(tiny, mode):
    """Visual modes are not exact for PaliGemma, even with equal decoders.

    The student's prefix tokens (image and text) attend to every prefix token, later ones included; the teacher in
    visual modes runs causally over its own text embeddings and receives the student's K/V only at image positions
    (the text before the first image is empty: images come first). So the teacher's K/V at the text prefix differ
    from the student's and KD > 0. With the student's prefix made causal (token_type_ids 1 everywhere) the same
    hand-over is exact, which shows that nothing else differs.
    """
    adapter = tiny.student.adapter
    kd, _, _ = kd_of(*tiny.pair, mode=mode)
    assert kd > 1e-4
    original = adapter.forward_kwargs
    adapter.forward_kwargs = lambda batch: {**original(batch), "token_type_ids": causal_token_types(batch)}
    try:
        kd_causal, _, _ = kd_of(*tiny.pair, mode=mode)
    finally:
        adapter.forward_kwargs = original
    assert kd_causal <= 1e-6


@families(ALL)
def test_off_mode_differs_because_the_teacher_does_not_see_the_image(tiny):
    kd, _, _ = kd_of(*tiny.pair, mode="off")
    assert kd > 1e-4


@families(ALL)
def test_left_padded_batch_matches_each_example_alone(tiny):
    """Per-row hidden states of the left-padded batch equal those of each example run alone (positions, mask)."""
    assert_left_padding_keeps_hidden_states(tiny.student, tiny.records)


@families(ALL)
def test_perturbed_student_has_positive_kd(tiny):
    """A fresh copy of the saved student, its decoder perturbed: KD against the equal teacher is well above 0."""
    student, teacher = load_pair(tiny.student_dir, tiny.teacher_dir)
    perturb_decoder(student)
    kd, _, _ = kd_of(student, teacher, tiny.records)
    assert kd > 1e-3


@families(ALL)
def test_training_lowers_kd_and_leaves_the_teacher_bitwise_unchanged(tiny):
    """Identities 2 and 3: a perturbed student trained on the KD objective moves towards the teacher, and the
    teacher's weights do not change by a single bit (nor receive a gradient)."""
    student, teacher = load_pair(tiny.student_dir, tiny.teacher_dir)
    perturb_decoder(student)
    teacher_before = {name: tensor.clone() for name, tensor in teacher.model.state_dict().items()}
    kd_before, _, _ = kd_of(student, teacher, tiny.records)
    train_on(student, teacher, tiny.records, steps=8)
    kd_after, _, _ = kd_of(student, teacher, tiny.records)
    assert kd_after < 0.7 * kd_before, (kd_before, kd_after)
    for name, tensor in teacher.model.state_dict().items():
        assert torch.equal(tensor, teacher_before[name]), f"teacher parameter {name} changed"
    assert all(p.grad is None for p in teacher.model.parameters())
