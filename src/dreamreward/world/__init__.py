"""The primitives world: procedural scenes of primitive shapes with a known oracle.

- ``scene``      the vocabulary (shapes, colours, sizes, relations) and the Scene dataclasses
- ``shapes``     closed, outward-oriented primitive meshes
- ``layout``     a Scene -> one coloured Mesh (placement per relation)
- ``views``      shaded 4-view renders of scenes and assets
- ``prompts``    the prompt grammar, paraphrases and the novel-composition split
- ``candidates`` generator-failure candidates per prompt
- ``oracle``     the oracle annotator (ratings, rankings) and the oracle score of any asset
"""
