"""Shared components of the IFE multi-task and OCT fluid segmentation MONAI bundles.

One module and sub-packages, each with one job:

- ``ife_classes``: the IFE label algebra (nine classes <-> severe/mild, fusion, the call rule); imports no MONAI.
- ``networks``: horizontal attention, the multi-task and baseline IFE ResNet18s, the 2D TransUNet.
- ``losses``: the IFE multi-task objective with its attention regularisers, the OCT fluid segmentation losses.
- ``metrics``: the IFE classification metrics of the paper (accuracy, macro F1, FNR, M1/M3-Acc), the OCT false
  fluid rate.
- ``transforms``: the IFE call, OCT Pillow converters, volume axes, per-B-scan scaling, geometry crops and noise.
- ``inferers``: B-scans of any size and OCT volumes at the geometry the network was trained at.
- ``data``: image files, datalist reading, checks before training, splits, inference inputs, the synthetic default.
- ``handlers``: ignite handlers that write predictions, figures, CSVs and JSON reports, and training helpers.
- ``visualize``: the figures and overlays the handlers write (IFE attention profiles and confusion matrices, OCT
  fluid overlays with MONAI's ``blend_images``).
- ``bundle``: checkpoints that carry the recipe of their network; the ``monai.bundle run`` command lines of scripts.
- ``utils``: files written atomically.

Networks and losses know nothing of files or handlers; bundles and scripts depend on this package,
never the other way round.
"""

from importlib import metadata as _metadata

try:  # one home for the version: pyproject.toml, as installed
    __version__ = _metadata.version("custom-components")
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "unknown"
