"""The user-facing Python API on top of the models: score assets, sample views.

- ``scoring``   ``score`` / ``score_batch``: Reward3D's score of 4-view assets (tensors), and
                ``score_files`` (view folders, mesh files; the ``score`` subcommand)
- ``sampling``  ``sample_views``: 4 views of a prompt from a multi-view prior (the ``sample``
                subcommand), with the oracle's score for a primitives prompt

Like diffusers' pipelines: they compose models (``dreamreward.models``) with the renderer and
the primitives world; nothing below imports them.
"""

from dreamreward.pipelines.sampling import sample_views
from dreamreward.pipelines.scoring import score, score_batch, score_files

__all__ = ["sample_views", "score", "score_batch", "score_files"]
