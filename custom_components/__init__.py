"""Shared components of the IFE multi-task and OCT fluid segmentation MONAI bundles.

Sub-packages, each with one job:

- ``networks``: horizontal attention, the multi-task and baseline IFE ResNet18s, the 2D TransUNet.
- ``losses``: the IFE attention regularisers and objective, the OCT fluid segmentation losses.
- ``metrics``: the IFE classification metrics of the paper (accuracy, macro F1, FNR, M1/M3-Acc), the OCT false
  fluid rate.
- ``transforms``: IFE label decomposition and fusion, OCT volume axes and geometry crops, image screening and
  loading helpers MONAI lacks.
- ``inferers``: B-scans of any size and OCT volumes at the geometry the network was trained at.
- ``data``: datalist reading and validation, inference input listing, synthetic IFE gels and OCT B-scans.
- ``handlers``: ignite handlers that write figures, CSVs and JSON reports.
- ``visualize``: the figures and overlays the handlers write (IFE attention profiles and confusion matrices, OCT
  fluid overlays with MONAI's ``blend_images``).
- ``bundle``: checkpoints that carry the recipe of their network (written, read, checked, loaded).

Networks and losses know nothing of files or handlers; bundles and scripts depend on this package,
never the other way round.
"""

__version__ = "0.1.0"
