"""The prompt grammar of the primitives world: describe, paraphrase, parse, sample, split.

Grammar (case-insensitive)::

    prompt   := [template-prefix] scene [", " anything-without-scene-words]*
    scene    := object [relation object]
    object   := [article] [size] colour ["-coloured"] shape       (size may also follow colour)
    relation := [verb] relation-phrase                          (e.g. "sitting" + "on")

``describe(scene)`` gives the canonical phrasing ("a large blue sphere on top of a small green
cube"; the size word is omitted for medium); ``describe(scene, rng)`` a paraphrase drawn from
the synonym tables below, whose meaning :func:`parse_prompt` recovers exactly. The parser also
takes a few phrasings :func:`describe` never emits, for prompts typed by users: "on"/"atop"
(on top of), "under"/"below"/"beneath" (on top of with the objects swapped), "and"/"with"
(next to), "the"/"one" as articles, and comma-separated style tags made of
:data:`STYLE_WORDS` alone (", 3D render", ", front view", ", high quality"). Any other tail
(", with a dog on top") is refused: the prompt asks for more than the scene.

The **novel-composition split** holds out :data:`NOVEL_COLOR_SHAPE` (10 of the 50 colour-shape
pairs: each colour once, each shape twice, so every colour and shape is still seen in training)
and :data:`NOVEL_SHAPE_PAIRS` (3 of the 15 unordered shape pairs, in either order and any
relation). :func:`is_novel` flags a scene that contains any of them; ``sample_scene(split=
"train")`` never yields one and ``split="novel"`` always does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from dreamreward.world.scene import COLORS, RELATIONS, SHAPES, SIZES, Scene, SceneObject

# --------------------------------------------------------------------------- vocabulary
# Synonyms keep the meaning unambiguous: no word names two colours, shapes or sizes.
COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "orange": ("tangerine",),
    "yellow": ("golden",),
    "green": ("emerald",),
    "blue": ("azure", "cobalt"),
    "purple": ("violet",),
    "pink": ("rose",),
    "brown": ("chocolate",),
    "white": ("snow-white", "ivory"),
    "black": ("jet-black", "ebony"),
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sphere": ("ball", "orb"),
    "cube": ("box", "block"),
    "cone": (),
    "cylinder": ("drum", "can"),
    "torus": ("donut", "doughnut", "ring"),
}
# Size words; "medium" is silent in the canonical phrasing.
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("little", "tiny"),
    "medium": ("medium-sized",),
    "large": ("big", "huge"),
}
# Relation phrasings describe() may emit; the first is canonical.
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "on top of": ("on top of", "resting on", "sitting on", "stacked on", "atop"),
    "next to": ("next to", "beside", "alongside", "sitting next to"),
    "left of": ("to the left of", "on the left of", "placed to the left of"),
    "right of": ("to the right of", "on the right of", "placed to the right of"),
    "in front of": ("in front of", "placed in front of"),
    "behind": ("behind", "placed behind"),
}
# Extra phrasings the parser accepts (user input); (relation, objects swapped).
_PARSE_ONLY_RELATIONS: dict[str, tuple[str, bool]] = {
    "on": ("on top of", False),
    "upon": ("on top of", False),
    "above": ("on top of", False),
    "left of": ("left of", False),
    "right of": ("right of", False),
    "under": ("on top of", True),
    "below": ("on top of", True),
    "beneath": ("on top of", True),
    "underneath": ("on top of", True),
    "and": ("next to", False),
    "with": ("next to", False),
    "by": ("next to", False),
}
# Optional verbs before a relation phrase ("a red cube *sitting* on a blue ball").
_RELATION_VERBS = (
    "which is",
    "that is",
    "is",
    "sitting",
    "resting",
    "standing",
    "placed",
    "stacked",
    "lying",
    "located",
    "positioned",
    "set",
)
# Emitted templates around the scene phrase.
TEMPLATES: tuple[str, ...] = (
    "{}",
    "{}",
    "a 3D model of {}",
    "a 3D render of {}",
    "{}, 3D render",
    "{}, 3D asset",
)
# Words a comma-separated style tag may consist of: a tail made of other words asks for
# something the scene does not describe.
STYLE_WORDS: frozenset[str] = frozenset(
    [
        "3d",
        "render",
        "rendering",
        "rendered",
        "asset",
        "model",
        "object",
        "photo",
        "picture",
        "image",
        "front",
        "side",
        "back",
        "overhead",
        "top",
        "view",
        "high",
        "quality",
        "highly",
        "detailed",
        "hd",
        "4k",
        "8k",
        "photorealistic",
        "realistic",
        "studio",
        "lighting",
        "centered",
        "isolated",
        "simple",
        "clean",
    ]
)
_ARTICLES = ("a", "an", "the", "one")
_PREFIX_RE = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?:3d\s+)?(?:model|render|rendering|asset|object|photo|picture|image)"
    r"\s+of\s+"
)

# --------------------------------------------------------------------------- novel split
NOVEL_COLOR_SHAPE: tuple[tuple[str, str], ...] = (
    ("red", "cylinder"),
    ("orange", "torus"),
    ("yellow", "cube"),
    ("green", "cone"),
    ("blue", "torus"),
    ("purple", "sphere"),
    ("pink", "cube"),
    ("brown", "cone"),
    ("white", "cylinder"),
    ("black", "sphere"),
)
# Unordered: a scene with these two shapes (either one first, any relation) is novel.
NOVEL_SHAPE_PAIRS: tuple[tuple[str, str], ...] = (
    ("sphere", "cylinder"),
    ("cube", "cone"),
    ("cone", "torus"),
)
SPLITS: tuple[str, ...] = ("train", "novel", "any")
_NOVEL_COLOR_SHAPE = frozenset(NOVEL_COLOR_SHAPE)
_NOVEL_SHAPE_PAIRS = frozenset(frozenset(p) for p in NOVEL_SHAPE_PAIRS)


def is_novel(scene: Scene) -> bool:
    """True if the scene holds a held-out colour-shape pair or a held-out pair of shapes."""
    if any((o.color, o.shape) in _NOVEL_COLOR_SHAPE for o in scene.objects):
        return True
    shapes = frozenset(o.shape for o in scene.objects)
    return scene.num_objects == 2 and shapes in _NOVEL_SHAPE_PAIRS


# --------------------------------------------------------------------------- describe
def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _describe_object(obj: SceneObject, rng: random.Random | None) -> str:
    if rng is None:
        words = [] if obj.size == "medium" else [obj.size]
        words += [obj.color, obj.shape]
    else:
        words = []
        if obj.size != "medium" or rng.random() < 0.15:
            options = (obj.size, *SIZE_SYNONYMS[obj.size])
            if obj.size == "medium":
                options = SIZE_SYNONYMS["medium"]
            words.append(rng.choice(options))
        words.append(rng.choice((obj.color, *COLOR_SYNONYMS[obj.color])))
        words.append(rng.choice((obj.shape, *SHAPE_SYNONYMS[obj.shape])))
    return f"{_article(words[0])} {' '.join(words)}"


def describe(scene: Scene, rng: random.Random | None = None) -> str:
    """A prompt for ``scene``.

    Args:
        scene: the scene.
        rng: None for the canonical phrasing ("a red cube", "a large blue sphere on top of a
            small green cube"); a seeded RNG for a paraphrase (synonyms, relation phrasings,
            templates such as "a 3D model of ..." or "..., 3D render").

    Returns:
        The prompt; ``parse_prompt(describe(scene, rng)) == scene`` always holds.
    """
    parts = [_describe_object(scene.objects[0], rng)]
    if scene.num_objects == 2:
        assert scene.relation is not None
        phrases = RELATION_PHRASES[scene.relation]
        parts.append(phrases[0] if rng is None else rng.choice(phrases))
        parts.append(_describe_object(scene.objects[1], rng))
    text = " ".join(parts)
    return text if rng is None else rng.choice(TEMPLATES).format(text)


# --------------------------------------------------------------------------- parse
def _phrase_regex(phrase: str) -> str:
    """Regex of one phrase: spaces match any whitespace, hyphens a hyphen, a space or nothing."""
    words = [re.escape(w) for w in phrase.split(" ")]
    return r"\s+".join(w.replace(r"\-", r"[-\s]?") for w in words)


def _alternation(words: Iterable[str]) -> str:
    """Regex alternation of ``words``, longest first so a longer phrase wins."""
    return "|".join(_phrase_regex(w) for w in sorted(words, key=len, reverse=True))


def _key(phrase: str) -> str:
    """Lookup key of a matched word: "snow white", "snow-white" and "snowwhite" agree."""
    return re.sub(r"[-\s]", "", phrase)


def _word_table(canonical: tuple[str, ...], synonyms: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Every word (canonical name and synonyms) -> its canonical name."""
    table: dict[str, str] = {}
    for name in canonical:
        for word in (name, *synonyms.get(name, ())):
            table[word] = name
    return table


_COLOR_WORDS = _word_table(tuple(COLORS), COLOR_SYNONYMS)
_SHAPE_WORDS = _word_table(SHAPES, SHAPE_SYNONYMS)
_SIZE_WORDS = {
    **_word_table(tuple(SIZES), SIZE_SYNONYMS),
    "mid-sized": "medium",
    "small-sized": "small",
    "large-sized": "large",
}
_RELATION_WORDS: dict[str, tuple[str, bool]] = {
    phrase: (rel, False) for rel, phrases in RELATION_PHRASES.items() for phrase in phrases
}
_RELATION_WORDS.update(_PARSE_ONLY_RELATIONS)
assert set(RELATIONS) == set(RELATION_PHRASES), "every relation needs phrasings"


_COLOR_LOOKUP = {_key(k): v for k, v in _COLOR_WORDS.items()}
_SHAPE_LOOKUP = {_key(k): v for k, v in _SHAPE_WORDS.items()}
_SIZE_LOOKUP = {_key(k): v for k, v in _SIZE_WORDS.items()}
_RELATION_LOOKUP = {_key(k): v for k, v in _RELATION_WORDS.items()}


def _object_pattern(i: int) -> str:
    size = _alternation(_SIZE_WORDS)
    return (
        rf"(?:(?:{_alternation(_ARTICLES)})\s+)?"
        rf"(?:(?P<size{i}a>{size})\s+)?"
        rf"(?P<color{i}>{_alternation(_COLOR_WORDS)})(?:[- ]?colou?red)?\s+"
        rf"(?:(?P<size{i}b>{size})\s+)?"
        rf"(?P<shape{i}>{_alternation(_SHAPE_WORDS)})"
    )


_RELATION_PATTERN = (
    rf"(?:(?:{_alternation(_RELATION_VERBS)})\s+)?(?P<relation>{_alternation(_RELATION_WORDS)})"
)
_SCENE_RE = re.compile(rf"{_object_pattern(0)}(?:\s+{_RELATION_PATTERN}\s+{_object_pattern(1)})?")
_GRAMMAR = "'[a] [size] <colour> <shape> [<relation> [a] [size] <colour> <shape>]'"
_SCENE_WORD_RE = re.compile(rf"\b(?:{_alternation(_COLOR_WORDS)}|{_alternation(_SHAPE_WORDS)})\b")
_KNOWN_WORDS = frozenset(
    w
    for phrase in [
        *_COLOR_WORDS,
        *_SHAPE_WORDS,
        *_SIZE_WORDS,
        *_RELATION_WORDS,
        *_RELATION_VERBS,
        *_ARTICLES,
        "coloured colored",
    ]
    for w in re.split(r"[- ]", phrase)
)


def _match_object(match: re.Match[str], i: int) -> SceneObject:
    size = match.group(f"size{i}a") or match.group(f"size{i}b")
    return SceneObject(
        shape=_SHAPE_LOOKUP[_key(match.group(f"shape{i}"))],
        color=_COLOR_LOOKUP[_key(match.group(f"color{i}"))],
        size=_SIZE_LOOKUP[_key(size)] if size else "medium",
    )


def _diagnose(core: str) -> str:
    """Why ``core`` does not match the grammar, in words."""
    unknown = [w for w in re.findall(r"[a-z0-9]+", core) if w not in _KNOWN_WORDS]
    if unknown:
        return f"unknown word(s) {unknown}"
    colors = re.findall(rf"\b(?:{_alternation(_COLOR_WORDS)})\b", core)
    shapes = re.findall(rf"\b(?:{_alternation(_SHAPE_WORDS)})\b", core)
    if len(colors) not in (1, 2) or len(colors) != len(shapes):
        return (
            f"found {len(colors)} colour word(s) {colors} and {len(shapes)} shape word(s) "
            f"{shapes}; each of 1 or 2 objects needs exactly one colour and one shape"
        )
    relations = re.findall(rf"\b(?:{_alternation(_RELATION_WORDS)})\b", core)
    if len(colors) == 1 and relations:
        return f"relation {relations[0]!r} needs a second object"
    if len(colors) == 2 and not relations:
        return f"two objects need a relation between them, one of {RELATIONS}"
    return "the words are known but not in the expected order"


def parse_prompt(text: str) -> Scene:
    """The scene a prompt describes; the inverse of :func:`describe` for all its outputs.

    Args:
        text: a prompt, e.g. "A 3D model of a crimson ball resting on a big cobalt box".

    Returns:
        The :class:`Scene`.

    Raises:
        ValueError: naming the text and what could not be parsed (unknown words, missing colour
            or shape, bad word order).
    """
    if not isinstance(text, str):
        raise ValueError(f"prompt must be a string, got {type(text).__name__}")
    norm = " ".join(text.lower().replace("\u2019", "'").split()).strip(" .!")
    # Comma-separated parts without colour or shape words are style tags (", 3D render").
    parts = [p.strip(" .!") for p in norm.split(",")]
    scene_parts = [p for p in parts if _SCENE_WORD_RE.search(p)]
    if len(scene_parts) != 1:
        what = "no colour or shape word" if not scene_parts else "scene words in several parts"
        raise ValueError(
            f"cannot parse prompt {text!r}: {what}; expected {_GRAMMAR} with colours "
            f"{tuple(COLORS)} and shapes {SHAPES} (or their synonyms)"
        )
    for part in parts:
        if part not in scene_parts and not set(part.replace("-", " ").split()) <= STYLE_WORDS:
            raise ValueError(
                f"cannot parse prompt {text!r}: {part!r} is neither part of the scene nor a style "
                f"tag (words such as 3D render, front view, high quality); the primitives world "
                "describes scenes of one or two objects, nothing more"
            )
    core = scene_parts[0]
    while (prefix := _PREFIX_RE.match(core)) is not None:
        core = core[prefix.end() :]
    match = _SCENE_RE.fullmatch(core)
    if match is None:
        raise ValueError(
            f"cannot parse prompt {text!r}: {_diagnose(core)} in {core!r}; expected {_GRAMMAR}"
        )
    first = _match_object(match, 0)
    if match.group("relation") is None:
        return Scene((first,))
    relation, swapped = _RELATION_LOOKUP[_key(match.group("relation"))]
    second = _match_object(match, 1)
    objects = (second, first) if swapped else (first, second)
    return Scene(objects, relation)


# --------------------------------------------------------------------------- sampling
def _random_scene(rng: random.Random, num_objects: int) -> Scene:
    sizes = tuple(SIZES)
    colors = rng.sample(tuple(COLORS), num_objects)  # two objects never share a colour
    objects = tuple(SceneObject(rng.choice(SHAPES), color, rng.choice(sizes)) for color in colors)
    relation = rng.choice(RELATIONS) if num_objects == 2 else None
    return Scene(objects, relation)


def ground_truth_scene(text: str) -> Scene | None:
    """The scene a primitives-world prompt describes, or ``None`` for free text: what every
    place that judges by the oracle "when the prompt has a ground truth" asks."""
    try:
        return parse_prompt(text)
    except ValueError:
        return None


def sample_scene(rng: random.Random, num_objects: int | None = None, split: str = "train") -> Scene:
    """Draw a random scene (uniform shapes, sizes, relations; distinct colours).

    Args:
        rng: a seeded ``random.Random`` (the result depends only on its state).
        num_objects: 1, 2 or None (either, with equal probability).
        split: ``"train"`` (never :func:`is_novel`), ``"novel"`` (always novel) or ``"any"``.

    Returns:
        The scene (rejection-sampled: about 5 draws per novel one-object scene, fewer
        otherwise).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_objects not in (None, 1, 2):
        raise ValueError(f"num_objects must be 1, 2 or None, got {num_objects!r}")
    n = num_objects or rng.choice((1, 2))
    while True:
        scene = _random_scene(rng, n)
        if split == "any" or is_novel(scene) == (split == "novel"):
            return scene
