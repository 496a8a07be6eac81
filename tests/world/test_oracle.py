"""Candidates and the oracle: the correct asset ranks first and every failure lowers the score."""

import random

import pytest
import torch

from dreamreward.render.cameras import OrbitCameraSampler, orbit_cameras
from dreamreward.world.candidates import (
    DEFECTS,
    Candidate,
    make_candidates,
    render_candidate,
)
from dreamreward.world.layout import scene_mesh
from dreamreward.world.oracle import annotate, oracle_score, palette_labels, rank, rate
from dreamreward.world.scene import COLORS, Scene, SceneObject
from dreamreward.world.views import default_cameras, render_views

TWO = Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "on top of")
ONE = Scene((SceneObject("cone", "green"),))


@pytest.fixture(scope="module")
def cameras():
    return OrbitCameraSampler(width=48).sample(1, torch.Generator().manual_seed(3)).cameras


def test_candidates_are_varied_and_deterministic():
    a = make_candidates(TWO, "p7", 10, random.Random(1))
    b = make_candidates(TWO, "p7", 10, random.Random(1))
    assert a == b
    assert len(a) == 10 and a[0].defect == "none" and a[0].scene == TWO
    assert len({c.asset_id for c in a}) == 10
    assert {c.defect for c in a} >= {
        "wrong_color",
        "wrong_shape",
        "missing_object",
        "swapped_attributes",
        "wrong_relation",
    }
    assert all(c.defect in DEFECTS for c in a)


def test_single_object_scenes_skip_two_object_failures():
    cands = make_candidates(ONE, "p1", 8, random.Random(0))
    assert len(cands) == 8
    assert not {c.defect for c in cands} & {
        "missing_object",
        "swapped_attributes",
        "wrong_relation",
    }


def test_annotation_ranks_the_correct_asset_alone_first():
    cands = make_candidates(TWO, "p0", 9, random.Random(4))
    ratings, ranks = annotate(cands)
    assert ranks[0] == 1 and ranks.count(1) == 1
    for r in ratings:
        for axis in (r.alignment, r.fidelity, r.consistency):
            assert 1 <= axis <= 6
        assert 1.0 <= r.overall <= 6.0
    assert rate(cands[0]).overall == 6.0


def test_competition_ranks_share_ties():
    from dreamreward.world.oracle import Ratings

    rs = [Ratings(6, 6, 6, o) for o in (5.0, 6.0, 5.0, 3.5)]
    assert rank(rs) == [2, 1, 2, 4]


def test_palette_labels_see_through_shading():
    names = list(COLORS)
    for name, rgb in COLORS.items():
        shaded = torch.tensor(rgb) * 0.5  # the dark side of a lit object
        assert names[int(palette_labels(shaded))] == name, name


@pytest.mark.parametrize("scene", [TWO, ONE], ids=["two", "one"])
def test_correct_asset_scores_highest(scene, cameras):
    cands = make_candidates(scene, "p", 10, random.Random(2))
    scores = {c.asset_id: oracle_score(render_candidate(c, cameras), scene, cameras) for c in cands}
    correct = scores[cands[0].asset_id].total
    assert correct > 0.9
    for c in cands[1:]:
        assert scores[c.asset_id].total < correct - 0.03, (c.defect, c.fidelity_kind)


def _score(defect, cameras, **kwargs):
    from dreamreward.world.candidates import alter_scene

    scene = kwargs.pop("scene", TWO)
    altered = alter_scene(scene, defect, random.Random(0)) if defect != "none" else scene
    cand = Candidate("x", altered, defect if defect != "none" else "none", **kwargs)
    return oracle_score(render_candidate(cand, cameras), scene, cameras)


def test_each_failure_lowers_the_axis_it_should(cameras):
    correct = _score("none", cameras)
    assert correct.total == pytest.approx(1.0)  # the ground truth against itself
    wrong_color = _score("wrong_color", cameras)
    assert wrong_color.color < correct.color - 0.2
    assert wrong_color.binding < correct.binding - 0.3
    assert wrong_color.shape > correct.shape - 0.05  # the geometry is right
    wrong_shape = _score("wrong_shape", cameras)
    assert wrong_shape.shape < correct.shape - 0.05
    swapped = _score("swapped_attributes", cameras)
    assert swapped.binding < correct.binding - 0.4
    assert swapped.shape > correct.shape - 0.05
    assert swapped.relation < 0.5  # the red region sits where the blue one should
    relation = _score("wrong_relation", cameras)
    assert relation.binding < correct.binding - 0.3
    assert relation.relation < correct.relation - 0.3
    missing = _score("missing_object", cameras)
    assert missing.binding < correct.binding - 0.3


@pytest.mark.parametrize("kind", ["blur", "noise", "floaters", "holes", "washed_out"])
def test_fidelity_failures_lower_the_score(kind, cameras):
    correct = _score("none", cameras)
    degraded = oracle_score(
        render_candidate(
            Candidate("x", TWO, "low_fidelity", fidelity_kind=kind, severity=0.8, seed=1), cameras
        ),
        TWO,
        cameras,
    )
    assert degraded.total < correct.total - 0.03


def test_janus_lowers_one_view(cameras):
    other = Scene((SceneObject("torus", "red"), SceneObject("sphere", "blue")), "on top of")
    janus = oracle_score(
        render_candidate(Candidate("x", TWO, "janus", janus_view=2, janus_scene=other), cameras),
        TWO,
        cameras,
    )
    correct = _score("none", cameras)
    assert int(janus.per_view.argmin()) == 2
    assert janus.total < correct.total - 0.03


def test_robust_to_small_shift_and_scale():
    azimuth = torch.tensor([10.0, 100.0, 190.0, 280.0])
    reference = orbit_cameras(15.0, azimuth, 2.2, 45.0, 48)
    from dreamreward.render.mesh import Mesh

    mesh, _ = scene_mesh(TWO)
    shifted = mesh.vertices * 0.9 + torch.tensor([0.0, 0.06, -0.04])
    views = render_views(Mesh(shifted, mesh.faces, mesh.vertex_colors), reference)["rgb"]
    moved = oracle_score(views, TWO, reference)
    wrong = _score("wrong_shape", reference)
    assert moved.total > 0.6
    assert moved.total > wrong.total + 0.2
    # beyond the tolerance the difference counts: the same asset at twice the size fails
    doubled = Mesh(mesh.vertices * 2.0, mesh.faces, mesh.vertex_colors)
    big = oracle_score(render_views(doubled, reference)["rgb"], TWO, reference)
    assert big.total < 0.1


def test_next_to_accepts_either_side():
    cams = default_cameras(64)
    left = Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "next to")
    right = Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "right of")
    assert oracle_score(render_views(scene_mesh(right)[0], cams)["rgb"], left, cams).total > 0.99
    # "left of" names a side: the mirror image is wrong
    named = Scene(left.objects, "left of")
    assert oracle_score(render_views(scene_mesh(right)[0], cams)["rgb"], named, cams).total < 0.5


def test_scores_mean_the_same_at_any_resolution():
    """Views are judged at 64 px: the ground truth scores 1 at 32 and 128 px too, and a flat
    frame scores 0."""
    for size in (32, 128):
        cams = default_cameras(size)
        truth = render_views(scene_mesh(TWO)[0], cams)["rgb"]
        assert oracle_score(truth, TWO, cams).total > 0.95, size
        flat = torch.tensor(COLORS["red"]).expand(4, size, size, 3)
        assert oracle_score(flat, TWO, cams).total < 0.05, size


def test_degeneracy_names_what_is_not_an_asset():
    from dreamreward.world.oracle import degeneracy

    cams = default_cameras(64)
    assert degeneracy(render_views(scene_mesh(TWO)[0], cams)["rgb"]) is None
    assert degeneracy(torch.ones(4, 64, 64, 3)) == "empty"
    assert degeneracy(torch.rand(4, 64, 64, 3, generator=torch.Generator().manual_seed(0))) == (
        "noise"
    )
    flat = torch.tensor(COLORS["blue"]).expand(4, 64, 64, 3)
    assert degeneracy(flat) == "fills the frame"
    judged = oracle_score(flat, TWO, cams)
    assert judged.degenerate == "fills the frame" and judged.total < 0.05


def test_bad_views_raise(cameras):
    with pytest.raises(ValueError, match="views"):
        oracle_score(torch.rand(3, 48, 48, 3), TWO, cameras)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        oracle_score(torch.full((4, 48, 48, 3), 2.0), TWO, cameras)


def test_recognise_object_reads_shape_and_colour() -> None:
    from dreamreward.world.oracle import recognise_object
    from dreamreward.world.prompts import parse_prompt

    cams = default_cameras(32)
    for prompt, shape, color in (
        ("a red cube", "cube", "red"),
        ("a white torus", "torus", "white"),
    ):
        views = render_views(scene_mesh(parse_prompt(prompt))[0], cams)["rgb"]
        seen = recognise_object(views, cams)
        assert (seen.shape, seen.color) == (shape, color)
    # a blue cone is not read as a red cube
    views = render_views(scene_mesh(parse_prompt("a blue cone"))[0], cams)["rgb"]
    seen = recognise_object(views, cams)
    assert (seen.shape, seen.color) == ("cone", "blue")


def test_view_consistency_reads_agreement_and_ignores_degenerate_views() -> None:
    from dreamreward.world.oracle import view_consistency

    cams = default_cameras(64)
    truth = render_views(scene_mesh(TWO)[0], cams)["rgb"]
    assert view_consistency(truth) > 0.8
    janus = truth.clone()
    other = Scene((SceneObject("torus", "yellow"), SceneObject("cone", "green")), "next to")
    janus[2] = render_views(scene_mesh(other)[0], cams[2])["rgb"][0]
    assert view_consistency(janus) < view_consistency(truth) - 0.1
    noise = torch.rand(4, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    assert view_consistency(noise) == 0.0  # four frames of noise agree, and say nothing
