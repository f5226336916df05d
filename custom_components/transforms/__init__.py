"""Transforms: the IFE call from fused probabilities, OCT Pillow converters, volume axes, geometry crops, noise."""

from .ife import IFECalld
from .oct import BScanLayoutd, ScaleIntensityPerBScand, SeededGaussianNoised, geometry_crops
