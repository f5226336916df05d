#!/usr/bin/env python
"""The change of retinal fluid between two OCT scans of one eye, per ETDRS sector, from two fluid reports.

    python scripts/fluid_change.py outputs/reports/visit1_fluid_report.csv outputs/reports/visit2_fluid_report.csv
    python scripts/fluid_change.py A.csv B.csv --output change.csv

Each CSV is the per-volume report that ``bundles/oct_fluid_seg`` inference writes with ``fluid_report`` on
(``reports/<name>_fluid_report.csv``). The two are put in time order by their scan dates (in the order given when a
date is missing), must be of the same eye (same laterality, both known), and the change per region is printed:
volume before and after in nL, the change in nL and in percent of before (empty where there was no fluid before,
or where a spacing is unknown and so no nL exist). ``--output`` also writes it as a CSV
(``custom_components.oct.fluid_report.change_columns``). Reports of a model with fluid types (IRF, SRF, PED) give
each type's change too, below the total's; a report with types cannot be compared with one without (the error names
both scans).

Exit status 0 on success, 1 when the reports cannot be compared or read (the message says why), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cell(value, digits: int = 2, signed: bool = False) -> str:
    """A number with ``digits`` decimals (and its sign when ``signed``); ``-`` for a missing value."""
    if value is None or value == "":
        return "-"
    return f"{float(value):{'+' if signed else ''}.{digits}f}"


def _region_lines(rows: list[dict], prefix: str = "") -> list[str]:
    """One aligned line per region of the change of all fluid, or of one type (``prefix`` ``"IRF_"``)."""
    lines = []
    for row in rows:
        before, after = row[f"{prefix}volume_nl_before"], row[f"{prefix}volume_nl_after"]
        change, percent = row[f"{prefix}change_nl"], row[f"{prefix}change_percent"]
        lines.append(
            f"{row['sector']:<7}{_cell(before):>12}{_cell(after):>12}"
            f"{_cell(change, 2, True):>12}{_cell(percent, 1, True):>10}  {row['region']}"
        )
    return lines


def format_table(rows: list[dict]) -> str:
    """The change table as aligned text, one line per region: all fluid, then each fluid type's when the reports
    have types."""
    from custom_components.oct.fluid_types import FLUID_TYPE_NAMES, FLUID_TYPES

    if not rows:
        return "(no region in common)"
    first = rows[0]
    header = f"{'sector':<7}{'before nL':>12}{'after nL':>12}{'change nL':>12}{'change %':>10}  region"
    lines = [
        f"before: {first['image_before']} ({first['scan_date_before'] or 'date unknown'})",
        f"after:  {first['image_after']} ({first['scan_date_after'] or 'date unknown'})",
        header,
        *_region_lines(rows),
    ]
    for fluid in [t for t in FLUID_TYPES if f"{t}_change_nl" in first]:  # the reports' types, if any
        lines += ["", f"{FLUID_TYPE_NAMES[fluid]} ({fluid}) alone:", header, *_region_lines(rows, f"{fluid}_")]
    notes = sorted({row["note"] for row in rows if row["note"]})
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Compare two fluid reports; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_a", type=Path, help="fluid report CSV of one scan")
    parser.add_argument("report_b", type=Path, help="fluid report CSV of the other scan of the same eye")
    parser.add_argument("--output", type=Path, default=None, help="also write the change table as this CSV")
    args = parser.parse_args(argv)

    from custom_components.core.atomic import write_csv_atomic
    from custom_components.oct.fluid_report import (
        ChangeTableError,
        change_columns,
        change_table,
        read_report_csv,
        report_fluid_classes,
    )

    try:
        report_a = read_report_csv(args.report_a)
        rows = change_table(report_a, read_report_csv(args.report_b))
    except (ChangeTableError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(rows))
    if args.output is not None:
        columns = change_columns(report_fluid_classes(report_a))  # both reports have the same classes
        write_csv_atomic(args.output, columns, [{k: "" if v is None else v for k, v in r.items()} for r in rows])
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
