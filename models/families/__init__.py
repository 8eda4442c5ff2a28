"""Held-out manipulation families for cross-manipulation evaluation only.

The demo detector trains on real faces and self-blends (:mod:`models.manipulate`);
a detector is judged on what it never saw. Each family here stands for a
different real deepfake technique and leaves that technique's own evidence:

- ``graphics_swap`` (FaceSwap-style) and ``neural_render`` (DeepFakes/FaceShifter-style)
  put a donor's face on the target (:mod:`models.families.swaps`);
- ``expression_reenact`` (Face2Face/NeuralTextures-style) and ``attribute_inpaint``
  (attribute-editing GANs) change the target's own face (:mod:`models.families.edits`).

Both build on the face mesh of :mod:`models.families.mesh` and the soft masks and
colour transfer of :mod:`models.families.compositing`;
:mod:`models.families.registry` looks a family up by the name a manifest's
``manipulation`` column holds. This file imports none of them.

Nothing used for training may import this package (a test checks it). Images are
uint8 ``HxWx3`` RGB, landmarks the five MTCNN points in ``(x, y)`` pixels, and
every random choice comes from the caller's ``np.random.Generator``. Geometric
amounts are fractions of the face size (the side of the ArcFace crop the
landmarks fill, about the face height). The package shares no code with the
training manipulations.
"""
