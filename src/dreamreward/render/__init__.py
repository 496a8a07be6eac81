"""The differentiable renderer, pure PyTorch (Kaolin's API contracts; Kaolin itself on CUDA).

- ``cameras``        perspective cameras, the MVDream 4-view orbit sampler, view labels
- ``rays``           pixel rays (Kaolin conventions), ray/box clipping
- ``encoding``, ``nerf``, ``background``   the implicit volume (NeRF) and what lies behind it
- ``occupancy``, ``compositing``, ``volume``   volume rendering with empty-space skipping
- ``tetgrid``, ``marching_tets``, ``dmtet``    DMTet: SDF on a tet grid -> mesh
- ``rasterizer``, ``mesh_ops``                 mesh rasterization, soft silhouettes, regularisers
- ``mesh``, ``export``, ``metrics``            mesh container/loading, GLB/OBJ/GIF, PSNR/Chamfer/IoU
- ``backend``        the ``auto | torch | kaolin`` switch
"""
