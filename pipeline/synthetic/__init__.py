"""Synthetic media made from scikit-image's face photos: no download, byte-identical for a seed.

- :mod:`~pipeline.synthetic.samples`: the small labelled sample archive (``deepfake-scan samples``);
- :mod:`~pipeline.synthetic.trainset`: the identity-split training set of the demo checkpoint;
- :mod:`~pipeline.synthetic.crossset`: the cross-manipulation set of held-out identities and
  held-out manipulation families, for evaluation only.

All three film the faces of :mod:`~pipeline.synthetic.portraits` with
:mod:`~pipeline.synthetic.filming`. This package imports none of them here, so
importing the training set's generator never loads the held-out families.
"""
