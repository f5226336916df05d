"""Utilities with no domain knowledge: files written atomically, ignite handlers attached once, the machine."""

from .atomic import save_atomic, write_csv_atomic, write_json_atomic, write_text_atomic
from .events import attach_once, every_n_iterations
from .machine import cpu_name
