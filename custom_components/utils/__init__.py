"""Utilities with no domain knowledge: files written atomically."""

from .atomic import write_json_atomic
