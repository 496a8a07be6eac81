"""DMTet geometry: a learnable SDF and vertex deformation on a tetrahedral grid.

The mesh-stage representation of Magic3D / threestudio's ``TetrahedraSDFGrid``, used for the
second (mesh refinement) stage of DreamReward. The grid is our procedural Kuhn grid
(:func:`~dreamreward.render.tetgrid.kuhn_tet_grid`) instead of threestudio's pre-computed tet
files; the surface comes from :func:`~dreamreward.render.marching_tets.marching_tetrahedra`.

Sign convention: ``sdf`` is a signed distance, **negative inside**, so extracted faces are
counter-clockwise seen from outside (:class:`~dreamreward.render.mesh.Mesh`'s convention).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dreamreward.render.backend import BACKENDS, Backend
from dreamreward.render.marching_tets import marching_tetrahedra
from dreamreward.render.mesh import Mesh
from dreamreward.render.tetgrid import kuhn_tet_grid


class DMTetGeometry(nn.Module):
    """Learnable SDF (V,) and deformation (V, 3) on a Kuhn tet grid filling ``[-radius, radius]³``.

    Grid vertex ``v`` sits at ``grid_vertices[v] + deformation_scale * cell_size *
    tanh(deformation[v])``: tanh bounds the offset per axis. A Kuhn tet's smallest height is
    ``cell_size / sqrt(2)``, so large bounds (threestudio uses a whole cell; the default here is
    half a cell) let neighbouring vertices that move towards each other invert a tet, which
    flips the winding of the faces cut from it; smaller values are safer.

    Only the two parameters are in the ``state_dict``; the grid is rebuilt from
    ``grid_resolution`` and ``radius`` (non-persistent buffers), so a checkpoint holds
    ``4 (n + 1)³`` floats.

    Args:
        grid_resolution: cubes per axis ``n``; the grid has ``(n + 1)³`` vertices, ``6 n³`` tets.
        radius: half-size of the grid's cube (the surface must stay inside it to be closed).
        deformation_scale: largest vertex offset per axis, in cells (>= 0; 0 disables it).
        backend: marching tets backend, ``"auto"`` | ``"torch"`` | ``"kaolin"``.
        init_radius: the SDF starts as a sphere of this radius (default ``radius / 2``), so a
            fresh module already has a surface; see :meth:`initialize_from_density` and
            :meth:`initialize_from_sdf` for other starts.
    """

    grid_vertices: Tensor
    tets: Tensor

    def __init__(
        self,
        grid_resolution: int = 32,
        radius: float = 1.0,
        deformation_scale: float = 0.5,
        backend: Backend = "auto",
        init_radius: float | None = None,
    ) -> None:
        super().__init__()
        if radius <= 0:
            raise ValueError(f"radius must be positive, got {radius}")
        if deformation_scale < 0:
            raise ValueError(f"deformation_scale must be >= 0, got {deformation_scale}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        init_radius = radius / 2 if init_radius is None else init_radius
        if not 0 < init_radius < radius:
            raise ValueError(f"init_radius must be in (0, radius={radius}), got {init_radius}")
        self.grid_resolution = grid_resolution
        self.radius = radius
        self.deformation_scale = deformation_scale
        self.backend = backend

        vertices, tets = kuhn_tet_grid(grid_resolution, -radius, radius)
        self.register_buffer("grid_vertices", vertices, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.sdf = nn.Parameter(vertices.norm(dim=-1) - init_radius)
        self.deformation = nn.Parameter(torch.zeros_like(vertices))

    def extra_repr(self) -> str:
        return (
            f"grid_resolution={self.grid_resolution}, radius={self.radius}, "
            f"deformation_scale={self.deformation_scale}, backend={self.backend!r}, "
            f"vertices={self.grid_vertices.shape[0]}, tets={self.tets.shape[0]}"
        )

    @property
    def cell_size(self) -> float:
        """Edge length of one grid cube."""
        return 2.0 * self.radius / self.grid_resolution

    def deformed_vertices(self) -> Tensor:
        """(V, 3) grid vertex positions after the bounded deformation."""
        offset = torch.tanh(self.deformation) * (self.deformation_scale * self.cell_size)
        return self.grid_vertices + offset

    def extract_mesh(self) -> Mesh:
        """The zero level set of ``sdf`` as a mesh, differentiable w.r.t. sdf and deformation.

        Raises:
            RuntimeError: the SDF has no sign change on the grid (the mesh would be empty).
        """
        verts, faces = marching_tetrahedra(
            self.deformed_vertices()[None], self.tets, self.sdf[None], backend=self.backend
        )
        if faces[0].shape[0] == 0:
            with torch.no_grad():
                state = "positive" if bool((self.sdf > 0).all()) else "negative or zero"
            raise RuntimeError(
                f"DMTet has no surface crossing: all {self.sdf.shape[0]} SDF values are {state}; "
                "re-initialise it (initialize_from_density / initialize_from_sdf) or lower "
                "the SDF learning rate"
            )
        return Mesh(verts[0], faces[0])

    def forward(self) -> Mesh:
        """Same as :meth:`extract_mesh`."""
        return self.extract_mesh()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _evaluate(self, fn: Callable[[Tensor], Tensor], chunk_size: int, name: str) -> Tensor:
        """``fn`` at the (deformed) grid vertices, in chunks -> (V,) in the sdf's dtype."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        points = self.deformed_vertices()
        values = []
        for chunk in points.split(chunk_size):
            out = torch.as_tensor(fn(chunk))
            if out.shape not in ((chunk.shape[0],), (chunk.shape[0], 1)):
                raise ValueError(
                    f"{name} must map points (P, 3) to (P,) values, got {tuple(out.shape)} "
                    f"for P={chunk.shape[0]}"
                )
            values.append(out.reshape(-1).to(self.sdf))
        result = torch.cat(values)
        if bool(torch.isnan(result).any()):
            raise ValueError(f"{name} returned NaN at some grid vertices")
        return result

    @torch.no_grad()
    def initialize_from_sdf(
        self,
        sdf_fn: Callable[[Tensor], Tensor],
        chunk_size: int = 65536,
        reset_deformation: bool = True,
    ) -> None:
        """Set ``sdf`` to ``sdf_fn`` (points (P, 3) -> (P,), negative inside) at the vertices.

        With ``reset_deformation`` the deformation is zeroed first (as after threestudio's
        ``create_from``); otherwise ``sdf_fn`` is evaluated at the current deformed vertices.
        """
        if reset_deformation:
            self.deformation.zero_()
        self.sdf.copy_(self._evaluate(sdf_fn, chunk_size, "sdf_fn"))

    @torch.no_grad()
    def initialize_from_density(
        self,
        density_fn: Callable[[Tensor], Tensor],
        threshold: float,
        chunk_size: int = 65536,
        normalize: bool = True,
        reset_deformation: bool = True,
    ) -> None:
        """Initialise from a density field such as the coarse NeRF (threestudio ``create_from``).

        ``sdf = clamp((threshold - density) / threshold, -1, 1)``: the zero level set is the
        density level ``threshold`` and dense regions are inside (negative). Dividing by
        ``threshold`` keeps densities in ``[0, 2 threshold]`` unclamped, so the linear
        zero-crossing interpolation still sees the field's slope; ``normalize=False`` gives
        threestudio's exact ``clamp(threshold - density, -1, 1)``.

        Args:
            density_fn: points (P, 3) -> (P,) (or (P, 1)) non-negative densities.
            threshold: iso-level of the surface (> 0).
            chunk_size: points per ``density_fn`` call.
            normalize: divide by ``threshold`` before clamping (see above).
            reset_deformation: zero the deformation first (else evaluate at deformed vertices).
        """
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if reset_deformation:
            self.deformation.zero_()
        density = self._evaluate(density_fn, chunk_size, "density_fn")
        level = threshold - density
        if normalize:
            level = level / threshold
        self.sdf.copy_(level.clamp(-1.0, 1.0))
