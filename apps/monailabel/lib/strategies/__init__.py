"""Active-learning strategies of the app: which unlabelled image to label next, by the served model's uncertainty.

- :class:`~lib.strategies.ife_least_certain.IFELeastCertain` (``ife_least_certain``): IFE gels, least certain
  calibrated call first, the refer-to-expert gels before all;
- :class:`~lib.strategies.oct_entropy.OCTEntropy` (``oct_entropy``): OCT B-scans or volumes, highest mean fluid
  entropy inside the retina first.

Both score through the app's infer tasks and keep their scores per image file and model version
(:mod:`lib.strategies.cache`). The scoring itself is in :mod:`lib.strategies.scores`.
"""
