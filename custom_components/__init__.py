"""Shared components of the IFE multi-task and OCT fluid segmentation MONAI bundles, laid out domain first:

- ``core``: what both methods share and that knows no gel and no B-scan (datalists, splits, checks, image files,
  inference inputs, the recipe a checkpoint carries, training state, ONNX, the prediction-writer base).
- ``ife``: the IFE multi-task method, from lanes and labels to calibrated, referable calls.
- ``oct``: OCT fluid segmentation, from vendor files to the fluid report per ETDRS sector.

``core`` imports neither domain, and the two domains never import each other; bundles and scripts depend on this
package, never the other way round.
"""

from importlib import metadata as _metadata

try:  # one home for the version: pyproject.toml, as installed
    __version__ = _metadata.version("custom-components")
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "unknown"
