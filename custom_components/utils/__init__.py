"""Utilities with no domain knowledge: files written atomically."""

from .atomic import save_atomic, write_csv_atomic, write_json_atomic
