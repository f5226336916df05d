"""Inferers: B-scans of any size with a sliding window, volumes slice by slice."""

from .slice_or_window import SliceOrWindowInferer
