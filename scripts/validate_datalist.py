#!/usr/bin/env python
"""Check a datalist for a bundle without training: the checks and messages of training start-up.

    python scripts/validate_datalist.py --bundle ife_multitask /data/ife/datalist.json
    python scripts/validate_datalist.py --bundle oct_fluid_seg /data/oct/datalist.json --decode
    python scripts/validate_datalist.py --task classification datalist.json --sections training validation

``--bundle ife_multitask`` is ``--task classification`` (labels are class names), ``--bundle oct_fluid_seg`` is
``--task segmentation`` (labels are mask paths). The sections checked are ``training``, ``validation`` and, when
the datalist has it, ``testing`` (an empty ``testing`` list is left out: training does not need one), or those
given with ``--sections`` (``--sections training validation`` for a datalist whose ``testing`` list has no labels,
as inference needs none). Whatever is checked, ``training``, ``validation`` and ``testing`` are compared for an
image listed twice (custom_components.core.validation describes every check).

Without ``--decode`` each file's structure is checked from its header (PNG chunk checksums, which catch a
truncated file; JPEG, TIFF and BMP files are always decoded, masks too), as training start-up does; ``--decode``
decodes every pixel, as evaluation does.

Prints a summary per section (entries, entries without a problem, entries with one, and for classification the
entries per class), then every problem, one line per bad entry naming it (``training[3] /data/images/a.png: file
not found``). Exit status 0 when the datalist can be used, 1 on any problem or a datalist that cannot be read,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: the task of each bundle's datalist
BUNDLE_TASKS = {"ife_multitask": "classification", "oct_fluid_seg": "segmentation"}


def _default_sections(datalist: Path) -> list[str]:
    from custom_components.core.datalist import read_datalist_object

    content = read_datalist_object(datalist)
    return ["training", "validation"] + (["testing"] if content.get("testing", []) != [] else [])


def _summary_row(section) -> str:
    if not section.checked:
        return f"{section.name:<12} {section.entries:>8} {'-':>8} {section.bad_entries:>9}  (not checked; repeats only)"
    ok = section.entries - section.bad_entries
    classes = ", ".join(f"{name} {count}" for name, count in section.class_counts.items())
    if section.name == "validation" and section.entries == 0 and not section.problems:
        classes = "(none: the bundles split one from training)"
    return f"{section.name:<12} {section.entries:>8} {ok:>8} {section.bad_entries:>9}  {classes}".rstrip()


def main(argv: list[str] | None = None) -> int:
    """Check the datalist and print the summary and the problems; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--bundle", choices=sorted(BUNDLE_TASKS), help="the bundle the datalist is for")
    kind.add_argument("--task", choices=("classification", "segmentation"), help="the task the datalist is for")
    parser.add_argument("datalist", type=Path, help="the datalist JSON file")
    parser.add_argument("--decode", action="store_true", help="decode every pixel (slower, as evaluation does)")
    parser.add_argument("--sections", nargs="+", metavar="NAME", help="sections to check (default: see above)")
    args = parser.parse_args(argv)
    task = args.task or BUNDLE_TASKS[args.bundle]

    from custom_components.core.datalist import DatalistError
    from custom_components.core.validation import check_datalist
    from custom_components.ife.classes import IFE_CLASSES

    start = time.perf_counter()
    try:
        sections = args.sections or _default_sections(args.datalist)
        # the IFE bundle's nine classes: the one classification datalist the project knows
        class_names = IFE_CLASSES if task == "classification" else None
        report = check_datalist(args.datalist, task, sections, args.decode, class_names)
    except DatalistError as err:  # the file itself: missing, not UTF-8, not JSON, not an object
        print(f"error: {err}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start

    how = "every pixel decoded" if args.decode else "file headers; --decode decodes every pixel"
    print(f"Datalist {report.path}, checked for {task} ({how}) in {seconds:.1f} s")
    header = "classes" if task == "classification" else ""
    print(f"{'section':<12} {'entries':>8} {'OK':>8} {'problems':>9}  {header}".rstrip())
    for section in report.sections:
        print(_summary_row(section))
    problems = report.problems
    if not problems:
        total = sum(s.entries for s in report.sections if s.checked)
        print(f"OK: {total} entries can be used.")
        return 0
    print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}:")
    for problem in problems:
        print(f"  - {problem}")
    print("Training stops on these before the first epoch (on those in testing only when an image repeats one it "
          "trains or validates on); evaluation stops on those in testing.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
