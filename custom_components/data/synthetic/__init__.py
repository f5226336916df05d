"""Synthetic IFE gels and OCT B-scans: the embedded default data of both bundles and of the tests."""

from .ife import render_gel, synthesize_ife_dataset
from .oct import render_bscan, synthesize_oct_dataset
from .prepare import prepare_dataset
