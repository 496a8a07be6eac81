"""Prompt grammar: canonical phrasing, paraphrases, parsing, errors, the novel-composition split."""

from __future__ import annotations

import random
import re

import pytest

from dreamreward.world.prompts import (
    COLOR_SYNONYMS,
    NOVEL_COLOR_SHAPE,
    NOVEL_SHAPE_PAIRS,
    SHAPE_SYNONYMS,
    SIZE_SYNONYMS,
    describe,
    is_novel,
    parse_prompt,
    sample_scene,
)
from dreamreward.world.scene import COLORS, SHAPES, Scene, SceneObject

RED_CUBE = Scene((SceneObject("cube", "red"),))
STACK = Scene(
    (SceneObject("sphere", "blue", "large"), SceneObject("cube", "green", "small")), "on top of"
)


def test_canonical_phrasing() -> None:
    assert describe(RED_CUBE) == "a red cube"
    assert describe(STACK) == "a large blue sphere on top of a small green cube"
    assert describe(Scene((SceneObject("torus", "orange", "small"),))) == "a small orange torus"
    assert describe(Scene((SceneObject("torus", "orange"),))) == "an orange torus"
    left = Scene((SceneObject("cone", "pink"), SceneObject("cylinder", "black")), "left of")
    assert describe(left) == "a pink cone to the left of a black cylinder"


def test_round_trip_canonical_and_paraphrases() -> None:
    rng = random.Random(0)
    paraphrases = set()
    for _ in range(400):
        scene = sample_scene(rng, split="any")
        assert parse_prompt(describe(scene)) == scene
        for _ in range(3):
            text = describe(scene, rng)
            paraphrases.add(text)
            assert parse_prompt(text) == scene, text
            assert parse_prompt(text.upper()) == scene, text
    # Paraphrases really vary: synonyms and templates show up.
    joined = " ".join(paraphrases)
    for word in ("crimson", "ball", "donut", "resting on", "beside", "3D model of", ", 3D render"):
        assert word in joined


def test_paraphrase_vocabulary_is_unambiguous() -> None:
    seen: dict[str, str] = {}
    tables = [(COLOR_SYNONYMS, COLORS), (SHAPE_SYNONYMS, SHAPES), (SIZE_SYNONYMS, ())]
    for synonyms, canonical in tables:
        for name in {*synonyms, *canonical}:
            for word in (name, *synonyms.get(name, ())):
                assert word not in seen, f"{word!r} names both {seen[word]} and {name}"
                seen[word] = name


@pytest.mark.parametrize(
    ("text", "scene"),
    [
        ("A Crimson Ball, 3D render, front view.", Scene((SceneObject("sphere", "red"),))),
        ("the snow white doughnut", Scene((SceneObject("torus", "white"),))),
        ("a 3D model of a big red-colored box", Scene((SceneObject("cube", "red", "large"),))),
        ("a  red   cube", RED_CUBE),
        (
            "a small green cube under a large blue sphere",
            STACK,  # "under" swaps the objects into "on top of"
        ),
        (
            "a large blue ball sitting on a tiny emerald block, high quality",
            STACK,
        ),
        (
            "a red cube and a blue sphere",
            Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "next to"),
        ),
    ],
)
def test_parse_is_tolerant(text: str, scene: Scene) -> None:
    assert parse_prompt(text) == scene


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a red hexagon", "unknown word(s) ['hexagon']"),
        ("a shiny red cube", "unknown word(s) ['shiny']"),
        ("a red thing", "unknown word(s) ['thing']"),
        ("red", "found 1 colour word(s) ['red'] and 0 shape word(s)"),
        ("", "no colour or shape word"),
        ("a red cube on top of", "relation 'on top of' needs a second object"),
        ("a red cube a blue ball", "two objects need a relation"),
        ("a cube red", "not in the expected order"),
        ("a red cube, a blue ball", "scene words in several parts"),
    ],
)
def test_parse_errors_name_text_and_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as info:
        parse_prompt(text)
    assert repr(text) in str(info.value)


def test_held_out_sets_are_balanced_vocabulary() -> None:
    assert len(NOVEL_COLOR_SHAPE) == len(set(NOVEL_COLOR_SHAPE)) == 10
    assert sorted(c for c, _ in NOVEL_COLOR_SHAPE) == sorted(COLORS)  # each colour once
    for shape in SHAPES:
        assert sum(s == shape for _, s in NOVEL_COLOR_SHAPE) == 2
    assert all(a in SHAPES and b in SHAPES and a != b for a, b in NOVEL_SHAPE_PAIRS)


def test_is_novel() -> None:
    assert not is_novel(RED_CUBE)
    assert is_novel(Scene((SceneObject("cylinder", "red"),)))
    pair = Scene((SceneObject("cone", "red"), SceneObject("cube", "blue")), "behind")
    assert is_novel(pair)  # held-out shape pair (cube, cone), in either order
    assert is_novel(Scene((pair.objects[1], pair.objects[0]), "next to"))
    assert not is_novel(
        Scene((SceneObject("cone", "red"), SceneObject("sphere", "blue")), "behind")
    )


def test_split_disjointness_and_sampling() -> None:
    rng = random.Random(7)
    train = [sample_scene(rng, split="train") for _ in range(400)]
    novel = [sample_scene(rng, split="novel") for _ in range(400)]
    assert not any(is_novel(s) for s in train)
    assert all(is_novel(s) for s in novel)
    assert {s.num_objects for s in train} == {1, 2} == {s.num_objects for s in novel}
    assert all(s.objects[0].color != s.objects[1].color for s in train if s.num_objects == 2)
    # Novel scenes show both kinds of held-out composition.
    assert any(not any((o.color, o.shape) in NOVEL_COLOR_SHAPE for o in s.objects) for s in novel)
    assert all(sample_scene(rng, 1).num_objects == 1 for _ in range(20))
    # Seeded: the same RNG state gives the same scenes.
    a = [sample_scene(random.Random(5), 2) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    with pytest.raises(ValueError, match="split"):
        sample_scene(rng, split="test")


def test_a_tail_that_asks_for_more_than_the_scene_is_refused() -> None:
    """Style tags pass; a clause asking for something else is not judged as the shorter prompt."""
    red_cube = parse_prompt("a red cube")
    for tagged in ("a red cube, 3D render", "a red cube, front view", "a red cube, high-quality"):
        assert parse_prompt(tagged) == red_cube
    for extra in (
        "a red cube on top of a blue sphere, with a dog on top",
        "a red cube, in a forest",
    ):
        with pytest.raises(ValueError, match="neither part of the scene nor a style tag"):
            parse_prompt(extra)
