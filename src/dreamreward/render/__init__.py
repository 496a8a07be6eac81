"""The differentiable renderer, pure PyTorch (Kaolin's API contracts; Kaolin itself on CUDA).

- ``cameras``        perspective cameras, the MVDream 4-view orbit sampler, view labels
- ``rays``           pixel rays (Kaolin conventions), ray/box clipping
- ``encoding``, ``nerf``, ``background``   the implicit volume (NeRF) and what lies behind it
- ``occupancy``, ``compositing``, ``volume``   volume rendering with empty-space skipping
- ``tetgrid``, ``marching_tets``, ``dmtet``    DMTet: SDF on a tet grid -> mesh
- ``two_stage_asset``  the asset DreamFL and reconstruction optimise: a NeRF, then its DMTet mesh
- ``coverage``, ``rasterizer``, ``soft_silhouette``   which face covers a pixel, differentiable
  interpolation, soft silhouettes
- ``mesh_render``, ``mesh_ops``               mesh -> images in one call, mesh regularisers
- ``mesh``, ``export``, ``metrics``            mesh container/loading, GLB/OBJ/GIF, PSNR/Chamfer/IoU
- ``winding_number``   inside/outside of a mesh (the volume IoU's solid test)
- ``backend``        the ``auto | torch | kaolin`` switch
"""
