"""Figures and overlays written by the handlers: IFE attention profiles and confusion matrices, OCT fluid overlays.

Pure functions of arrays and paths: no engine, no handler state. OCT overlays are drawn with MONAI's
``monai.visualize.blend_images``; IFE figures with matplotlib's Agg canvas (no pyplot state, safe in threads).
"""

from .ife import (
    attention_profile,
    plot_attention_alignment,
    plot_attention_figure,
    plot_confusion_matrix,
    plot_coverage_accuracy,
    plot_reliability_diagram,
)
from .oct import overlay_image
