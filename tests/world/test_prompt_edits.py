"""Minimal prompt edits: each parses, differs from the scene in exactly the named way, never
names a held-out composition when told not to, and never still describes the asset."""

from __future__ import annotations

import random

import pytest

from dreamreward.world.prompt_edits import EDIT_KINDS, edit_scene, edited_prompts
from dreamreward.world.prompts import describe, is_novel, parse_prompt, sample_scene
from dreamreward.world.scene import Scene, SceneObject


def _differences(a: Scene, b: Scene) -> set[str]:
    out = set()
    if a.relation != b.relation:
        out.add("relation")
    for x, y in zip(a.objects, b.objects, strict=False):
        if x.color != y.color:
            out.add("color")
        if x.shape != y.shape:
            out.add("shape")
    return out


def test_each_edit_changes_exactly_one_thing():
    rng = random.Random(0)
    for _ in range(60):
        scene = sample_scene(rng)
        for kind in EDIT_KINDS:
            edited = edit_scene(scene, kind, rng)
            if edited is None:  # only a two-object edit of one object, or a swap that is none
                two_object_kind = kind in ("swapped colours", "relation", "object left out")
                assert two_object_kind, (kind, scene)
                assert scene.num_objects == 1 or kind == "swapped colours", (kind, scene)
                continue
            assert edited != scene
            if kind == "object left out":
                assert edited.num_objects == 1 and edited.objects[0] in scene.objects
            elif kind == "relation":
                assert _differences(scene, edited) == {"relation"}
            elif kind == "colour":
                assert _differences(scene, edited) == {"color"}
            elif kind == "shape":
                assert _differences(scene, edited) == {"shape"}
            else:  # swapped colours: both colours move, shapes stay
                assert _differences(scene, edited) == {"color"}
                assert [o.color for o in edited.objects] == [o.color for o in scene.objects][::-1]


def test_edited_prompts_parse_to_the_edited_scene_and_respect_the_split():
    rng = random.Random(1)
    for _ in range(80):
        scene = sample_scene(rng, split="train")
        for kind, prompt in edited_prompts(scene, rng, allow_novel=False).items():
            edited = parse_prompt(prompt)
            assert edited != scene, (kind, prompt)
            assert not is_novel(edited), (kind, prompt)
    assert set(edited_prompts(sample_scene(random.Random(2), 2), random.Random(0))) >= {
        "colour",
        "shape",
        "relation",
        "object left out",
    }


def test_no_edit_that_still_describes_the_asset():
    """Two identical cones side by side with their colours swapped are the same asset seen
    from the other side (the world's cameras turn freely): not an edit. Stacked, they are."""
    for relation in ("next to", "left of", "behind"):
        twins = Scene((SceneObject("cone", "red"), SceneObject("cone", "blue")), relation)
        assert edit_scene(twins, "swapped colours", random.Random(0)) is None, relation
    stacked = Scene(twins.objects, "on top of")
    assert edit_scene(stacked, "swapped colours", random.Random(0)) is not None
    one_colour = Scene((SceneObject("cone", "red"), SceneObject("cube", "red")), "on top of")
    assert edit_scene(one_colour, "swapped colours", random.Random(0)) is None
    with pytest.raises(ValueError, match="unknown edit kind"):
        edit_scene(twins, "size", random.Random(0))


def test_canonical_edits_differ_from_the_prompt_in_content_alone():
    """paraphrase=False: the canonical wording, as describe(scene) gives the true prompt, so an
    evaluation compares content and not phrasing."""
    from dreamreward.world.prompts import describe

    scene = Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "on top of")
    for kind, prompt in edited_prompts(scene, random.Random(3), paraphrase=False).items():
        assert prompt == describe(parse_prompt(prompt)), kind
        assert prompt != describe(scene), kind


def test_text_side_prompts_are_canonical_and_seeded_by_the_key():
    """The evaluation's prompt set: the own prompt and every edit in the canonical wording, an
    out-of-vocabulary prompt, the same set for the same key."""
    from dreamreward.world.prompt_edits import OUT_OF_VOCABULARY_PROMPTS, text_side_prompts

    scene = Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "on top of")
    prompts = text_side_prompts(scene, "a red cube on top of a blue sphere")
    assert prompts["own"] == describe(scene)
    assert prompts["out of vocabulary"] in OUT_OF_VOCABULARY_PROMPTS
    edits = {k: v for k, v in prompts.items() if k not in ("own", "out of vocabulary")}
    assert set(edits) == set(EDIT_KINDS)
    assert all(describe(parse_prompt(v)) == v for v in edits.values())  # canonical wording
    assert text_side_prompts(scene, "a red cube on top of a blue sphere") == prompts


def _differs_in_one_word(prompt: str, words: list[str]) -> bool:
    mine = prompt.split()
    return len(mine) == len(words) and sum(a != b for a, b in zip(mine, words, strict=True)) == 1


def test_a_phrasing_seed_gives_the_edits_the_scene_s_paraphrase():
    """With ``phrasing_seed`` an edit keeps the paraphrase of ``describe(scene, Random(seed))``
    (template, synonyms, relation phrase) wherever it can: a colour or shape edit then differs
    from the paraphrased prompt in one word; without it the two wordings are independent."""
    rng = random.Random(3)
    matched = independent = total = 0
    for _ in range(60):
        scene = sample_scene(rng, num_objects=2, split="train")
        seed = rng.getrandbits(32)
        own = describe(scene, random.Random(seed)).split()
        shared = edited_prompts(scene, random.Random(seed + 1), phrasing_seed=seed)
        loose = edited_prompts(scene, random.Random(seed + 1))
        for kind in ("colour", "shape"):
            if kind not in shared:
                continue
            total += 1
            matched += _differs_in_one_word(shared[kind], own)
            independent += _differs_in_one_word(loose[kind], own)
            assert parse_prompt(shared[kind]) != scene  # the content changed
    assert total > 80
    # (a synonym list of another length shifts the later draws: 79% here, 3 in 4 or more)
    assert matched / total >= 0.75 and independent / total < 0.3
