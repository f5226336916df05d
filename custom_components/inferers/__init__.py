"""Inferers: B-scans of any size and OCT volumes at the pixel scale the network was trained at."""

from .bscan import BScanGeometry, BScanInferer
