# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""A bundle datalist of the 271 real IFE gels of MP-CADMS, from a fetched copy of its repository.

MP-CADMS (GitHub ``ThuXiaoming06/MP-CADMS``) ships ``SC_dataset/`` with three spreadsheets (columns
``Revised Number, Label``) naming the gels ``<number>.png`` of their folder. This script reads them (openpyxl),
maps the labels to the bundle's nine classes and writes a datalist whose entries carry the near-duplicate group of
``bundles/ife_multitask/docs/real_gels/mpcadms_groups.csv``, so that splits and folds keep duplicates together.
The images stay where they are (no licence: never copy them into this repository); the datalist names them by
absolute path.

Usage::

    python scripts/experiments/mpcadms_datalist.py /path/to/MP-CADMS /data/mpcadms/datalist.json
    python -m monai.bundle run --config_file bundles/ife_multitask/configs/train.json \\
        --bundle_root bundles/ife_multitask --dataset_dir /data/mpcadms

Every gel goes to ``training`` (the bundle splits a validation set from it; ``scripts/cross_validate.py`` makes
folds) unless ``--testing-fraction`` holds some back, stratified by class and grouped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GROUPS = REPO / "bundles" / "ife_multitask" / "docs" / "real_gels" / "mpcadms_groups.csv"
#: the spreadsheet of each source folder and the folder of its gels, under SC_dataset/
SOURCES = {
    "CP": ("CP/CP_IFE_label.xlsx", "CP/Pictures"),
    "EP": ("EP/EP_IFE_NP.xlsx", "EP/Pictures"),
    "EP1": ("EP1/EP1_IFE_NP.xlsx", "EP1/IFE_images_crop"),
}
#: the spreadsheets' labels -> the bundle's class names (custom_components.ife.classes.IFE_CLASSES)
LABELS = {
    "Negative": "Negative", "κ": "kappa", "λ": "lambda",
    "IgGκ": "IgG-kappa", "IgGλ": "IgG-lambda", "IgAκ": "IgA-kappa", "IgAλ": "IgA-lambda",
    "IgMκ": "IgM-kappa", "IgMλ": "IgM-lambda",
}  # fmt: skip


def read_labels(sc_dataset: Path) -> list[dict]:
    """One entry per spreadsheet row: ``{"image": absolute path, "label": class name, "source": folder}``.

    Raises:
        ValueError: on a label outside the nine or a row whose image is missing, naming the spreadsheet and row.
    """
    import openpyxl  # only this script reads spreadsheets

    entries = []
    for source, (sheet_file, folder) in SOURCES.items():
        sheet = openpyxl.load_workbook(sc_dataset / sheet_file, read_only=True).active
        rows = sheet.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(rows)]
        number_col, label_col = header.index("Revised Number"), header.index("Label")
        for row_number, row in enumerate(rows, start=2):
            if row[number_col] is None:
                continue
            number, label = str(row[number_col]).strip(), str(row[label_col]).strip()
            number = number[:-2] if number.endswith(".0") else number  # numbers stored as floats
            if label not in LABELS:
                raise ValueError(f"{sheet_file} row {row_number}: label {label!r} is not one of {sorted(LABELS)}.")
            image = sc_dataset / folder / f"{number}.png"
            if not image.is_file():
                raise ValueError(f"{sheet_file} row {row_number}: {image} does not exist.")
            entries.append({"image": str(image), "label": LABELS[label], "source": source})
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, help="a fetched copy of MP-CADMS (holding SC_dataset/)")
    parser.add_argument("datalist", type=Path, help="the datalist JSON to write")
    parser.add_argument("--testing-fraction", type=float, default=0.0, help="gels held back as testing (grouped)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the testing split")
    args = parser.parse_args(argv)

    from custom_components.core.atomic import write_json_atomic
    from custom_components.core.splits import stratified_group_split

    entries = read_labels(args.repository / "SC_dataset")
    with open(GROUPS, newline="", encoding="utf-8") as handle:
        groups = {row["image"]: row["group"] for row in csv.DictReader(handle)}
    for entry in entries:
        key = Path(entry["image"]).relative_to(args.repository).as_posix()
        entry["group"] = groups.get(key, key)
    training, testing = entries, []
    if args.testing_fraction > 0:
        training, testing = stratified_group_split(entries, args.testing_fraction, args.seed, key="label")
    args.datalist.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"training": training, "validation": [], "testing": testing}, args.datalist, indent=1)
    print(f"{args.datalist}: {len(training)} training and {len(testing)} testing gels from {len(SOURCES)} sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
