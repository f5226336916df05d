# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""scripts/experiments/mpcadms_datalist.py on a stand-in of MP-CADMS's layout: three spreadsheets, numbered PNGs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "experiments" / "mpcadms_datalist.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("mpcadms_datalist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repository(root: Path, rows: dict[str, list[tuple]]) -> Path:
    for source, (sheet_file, folder) in {
        "CP": ("CP/CP_IFE_label.xlsx", "CP/Pictures"), "EP": ("EP/EP_IFE_NP.xlsx", "EP/Pictures"),
        "EP1": ("EP1/EP1_IFE_NP.xlsx", "EP1/IFE_images_crop"),
    }.items():  # fmt: skip
        (root / "SC_dataset" / folder).mkdir(parents=True)
        book = openpyxl.Workbook()
        book.active.append(["Revised Number", "Label"])
        for number, label in rows.get(source, []):
            book.active.append([number, label])
            Image.fromarray(np.full((20, 30), 200, np.uint8)).save(root / "SC_dataset" / folder / f"{number}.png")
        book.save(root / "SC_dataset" / sheet_file)
    return root


def test_labels_become_the_bundle_classes_and_groups_are_kept(script, tmp_path):
    repo = _repository(tmp_path / "repo", {"CP": [(1, "IgGκ"), ("2", "λ")], "EP": [(64, "Negative"), (65, "Negative")],
                                            "EP1": [(3, "IgMλ")]})  # fmt: skip
    assert script.main([str(repo), str(tmp_path / "out" / "datalist.json")]) == 0
    entries = json.loads((tmp_path / "out" / "datalist.json").read_text())["training"]
    by_name = {Path(e["image"]).relative_to(repo).as_posix(): e for e in entries}
    assert {k: v["label"] for k, v in by_name.items()} == {
        "SC_dataset/CP/Pictures/1.png": "IgG-kappa", "SC_dataset/CP/Pictures/2.png": "lambda",
        "SC_dataset/EP/Pictures/64.png": "Negative", "SC_dataset/EP/Pictures/65.png": "Negative",
        "SC_dataset/EP1/IFE_images_crop/3.png": "IgM-lambda",
    }  # fmt: skip
    # EP/64 and EP/65 are the same gel twice in the real set: the committed groups keep them together
    assert by_name["SC_dataset/EP/Pictures/64.png"]["group"] == by_name["SC_dataset/EP/Pictures/65.png"]["group"]
    assert by_name["SC_dataset/CP/Pictures/1.png"]["group"] != by_name["SC_dataset/CP/Pictures/2.png"]["group"]


def test_an_unknown_label_or_a_missing_image_is_named(script, tmp_path):
    repo = _repository(tmp_path / "a", {"CP": [(1, "IgDκ")]})
    with pytest.raises(ValueError, match=r"CP/CP_IFE_label.xlsx row 2: label 'IgDκ'"):
        script.read_labels(repo / "SC_dataset")
    repo = _repository(tmp_path / "b", {"EP": [(7, "κ")]})
    (repo / "SC_dataset" / "EP" / "Pictures" / "7.png").unlink()
    with pytest.raises(ValueError, match=r"EP/EP_IFE_NP.xlsx row 2: .*7.png does not exist"):
        script.read_labels(repo / "SC_dataset")
