"""Minimal edits of a prompt: the text side of grounding.

A preference pair fixes the prompt and changes the asset, so it never requires a reward to read
the prompt. A *prompt pair* fixes the asset and changes the prompt: the correct asset of a
scene must score higher under its own prompt (or a paraphrase, a hard positive) than under a
prompt that differs in exactly one thing (a hard negative):

- ``colour``: one object in another colour (one the scene does not use);
- ``shape``: one object in another shape;
- ``swapped colours``: the two objects' colours exchanged;
- ``relation``: a visibly different relation (vertical <-> horizontal: the world's cameras
  turn freely, so one horizontal relation is another seen from elsewhere);
- ``object left out``: a two-object scene described by one of its objects alone (the asset
  shows an object the prompt does not ask for).

Edits that would still describe the asset are never made (swapped colours of two identical
objects side by side is the same asset seen from the other side).
"""

from __future__ import annotations

import math
import random
import zlib

from dreamreward.world.candidates import alter_scene
from dreamreward.world.prompts import describe, is_novel
from dreamreward.world.scene import Scene

EDIT_KINDS: tuple[str, ...] = (
    "colour",
    "shape",
    "swapped colours",
    "relation",
    "object left out",
)
# Prompts from outside the world's vocabulary: a reward that reads the prompt scores any asset
# of the world lower under them than under its own prompt.
OUT_OF_VOCABULARY_PROMPTS: tuple[str, ...] = (
    "a photo of a dog",
    "a bowl of soup on a wooden table",
    "asdf qwerty",
    "a castle on a hill at sunset",
)
_DEFECT_OF_KIND = {
    "colour": "wrong_color",
    "shape": "wrong_shape",
    "swapped colours": "swapped_attributes",
    "relation": "wrong_relation",
    "object left out": "missing_object",
}


def edit_scene(scene: Scene, kind: str, rng: random.Random) -> Scene | None:
    """The scene with one ``kind`` of edit (:data:`EDIT_KINDS`), or ``None`` where the kind
    does not apply (a two-object edit of one object, swapped colours of one colour) or would
    still describe the same asset."""
    if kind not in _DEFECT_OF_KIND:
        raise ValueError(f"unknown edit kind {kind!r}; choose from {EDIT_KINDS}")
    edited = alter_scene(scene, _DEFECT_OF_KIND[kind], rng)
    if edited is None or edited == scene:
        return None
    if kind == "swapped colours" and scene.relation != "on top of":
        a, b = scene.objects
        if (a.shape, a.size) == (b.shape, b.size):
            # two twins side by side with their colours swapped: the same asset seen from the
            # other side (the world's cameras turn freely)
            return None
    return edited


def draw_wording(rng: random.Random) -> int | None:
    """A wording for a prompt and its minimal edits, to pass to :func:`describe_alike`: None
    (the canonical wording) half the time, else a paraphrase seed."""
    return None if rng.random() < 0.5 else rng.getrandbits(32)


def describe_alike(scene: Scene, wording: int | None) -> str:
    """``scene`` in the wording ``wording`` (None: canonical; a seed: the paraphrase
    ``describe(scene, random.Random(seed))``). A scene and its edits described with one wording
    share template, synonyms and relation phrase wherever the edit leaves them, so they differ
    in content rather than in wording."""
    return describe(scene, None if wording is None else random.Random(wording))


def edited_prompts(
    scene: Scene,
    rng: random.Random,
    allow_novel: bool = True,
    paraphrase: bool = True,
    phrasing_seed: int | None = None,
) -> dict[str, str]:
    """One minimally edited prompt per applicable kind.

    Args:
        allow_novel: whether an edit may name a held-out (novel) composition; training prompts
            pass False so no held-out pairing is ever seen in training, not even as a negative.
        paraphrase: phrase each edit with :func:`describe` and ``rng`` (a paraphrase, not always
            the canonical wording); False gives the canonical wording, so an edit differs from
            ``describe(scene)`` in its content alone (what an evaluation should compare).
        phrasing_seed: with ``paraphrase``, phrase every edit with ``random.Random(seed)``, as
            ``describe(scene, random.Random(seed))`` phrases the scene: the same template,
            synonyms and relation phrasing wherever the edit leaves them (a paraphrased
            positive and its negatives then differ in content, not in wording).
    """
    out = {}
    for kind in EDIT_KINDS:
        for _ in range(8):  # a few draws: an edit may land on a held-out composition
            edited = edit_scene(scene, kind, rng)
            if edited is None:
                break
            if allow_novel or not is_novel(edited):
                if not paraphrase:
                    out[kind] = describe(edited)
                elif phrasing_seed is not None:
                    out[kind] = describe_alike(edited, phrasing_seed)
                else:
                    out[kind] = describe(edited, rng)
                break
    return out


def text_side_prompts(scene: Scene, key: str) -> dict[str, str]:
    """The prompts a text-side evaluation scores a correct asset under: ``"own"`` (the scene in
    the canonical wording), one edit per applicable kind in the canonical wording too (they
    differ from ``own`` in content alone) and ``"out of vocabulary"``. Seeded by ``key`` (e.g.
    the asset's prompt), so every model and epoch is judged on the same edits; held-out
    compositions are allowed (nothing here is trained on)."""
    seed = zlib.crc32(key.encode())
    prompts = {"own": describe(scene)}
    prompts |= edited_prompts(scene, random.Random(seed), allow_novel=True, paraphrase=False)
    prompts["out of vocabulary"] = OUT_OF_VOCABULARY_PROMPTS[seed % len(OUT_OF_VOCABULARY_PROMPTS)]
    return prompts


def edit_kind_odds(odds: dict[str, float] | None) -> dict[str, float]:
    """Every edit kind's odds, 1 unless ``odds`` names it (the crossed term's
    ``Reward3DModule(crossed_edit_kinds=...)``: errors name that argument)."""
    odds = dict(odds or {})
    unknown = sorted(set(odds) - set(EDIT_KINDS))
    if unknown:
        raise ValueError(
            f"model.crossed_edit_kinds names unknown edit kinds {unknown}; "
            f"the kinds are {list(EDIT_KINDS)}"
        )
    full = {kind: float(odds.get(kind, 1.0)) for kind in EDIT_KINDS}
    for kind, value in full.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"model.crossed_edit_kinds[{kind!r}] must be a finite number >= 0, got {value}"
            )
    if not any(full.values()):
        raise ValueError("model.crossed_edit_kinds gives every edit kind odds 0")
    return full


def weighted_order(odds: dict[str, float], rng: random.Random) -> list[str]:
    """The kinds with odds > 0 in a random order where each next kind is drawn, among those
    left, with probability proportional to its odds (Efraimidis-Spirakis keys u^(1/w))."""
    keys = {kind: rng.random() ** (1.0 / w) for kind, w in odds.items() if w > 0}
    return sorted(keys, key=keys.__getitem__, reverse=True)
