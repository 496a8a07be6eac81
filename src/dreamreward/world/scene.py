"""The vocabulary of the primitives world and its scene description.

A scene holds one or two objects. Each object is a primitive shape with a named colour and a
size; two objects stand in a spatial relation. Scenes are plain frozen dataclasses: hashable,
comparable, and serialisable with :meth:`Scene.to_dict` / :meth:`Scene.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SHAPES: tuple[str, ...] = ("sphere", "cube", "cone", "cylinder", "torus")

# Named colours (sRGB in [0, 1]); chosen to be mutually distinguishable by hue or lightness.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.30, 0.85),
    "purple": (0.50, 0.18, 0.70),
    "pink": (0.95, 0.45, 0.70),
    "brown": (0.50, 0.30, 0.12),
    "white": (0.92, 0.92, 0.92),
    "black": (0.10, 0.10, 0.10),
}

# Relative scale of an object's bounding radius.
SIZES: dict[str, float] = {"small": 0.7, "medium": 1.0, "large": 1.3}

# Relations of object 0 to object 1 ("a red cube on top of a blue sphere": 0 = cube).
RELATIONS: tuple[str, ...] = (
    "on top of",
    "next to",
    "left of",
    "right of",
    "in front of",
    "behind",
)


@dataclass(frozen=True)
class SceneObject:
    """One primitive.

    Attributes:
        shape: one of :data:`SHAPES`.
        color: one of :data:`COLORS`.
        size: one of :data:`SIZES`.
    """

    shape: str
    color: str
    size: str = "medium"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose from {SHAPES}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; choose from {tuple(COLORS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose from {tuple(SIZES)}")


@dataclass(frozen=True)
class Scene:
    """One or two objects; with two, ``relation`` says where objects[0] is w.r.t. objects[1].

    Attributes:
        objects: 1 or 2 :class:`SceneObject`.
        relation: one of :data:`RELATIONS` when there are two objects, else ``None``.
    """

    objects: tuple[SceneObject, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if len(self.objects) not in (1, 2):
            raise ValueError(f"a scene has 1 or 2 objects, got {len(self.objects)}")
        if len(self.objects) == 2 and self.relation not in RELATIONS:
            raise ValueError(f"two objects need a relation from {RELATIONS}, got {self.relation!r}")
        if len(self.objects) == 1 and self.relation is not None:
            raise ValueError("a single-object scene has no relation")

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    def with_objects(self, *objects: SceneObject, relation: str | None = None) -> Scene:
        rel = relation if relation is not None else (self.relation if len(objects) == 2 else None)
        return replace(self, objects=tuple(objects), relation=rel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [{"shape": o.shape, "color": o.color, "size": o.size} for o in self.objects],
            "relation": self.relation,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Scene:
        objects = tuple(SceneObject(**o) for o in data["objects"])
        return Scene(objects, data.get("relation"))
