"""Atomic writing: a reader sees the old file or the new one, never half of one, and no temporary file is left."""

from __future__ import annotations

import csv
import json
import os

import pytest

from custom_components.core.atomic import (
    read_json_file,
    save_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_save_atomic_temporary_file_beside_the_target_with_its_ending(tmp_path):
    seen = []

    def save(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("new")

    target = tmp_path / "sub" / "mask.nii.gz"  # the folder is created
    save_atomic(target, save)
    assert target.read_text() == "new" and os.listdir(tmp_path / "sub") == ["mask.nii.gz"]
    folder, name = os.path.split(seen[0])
    assert folder == str(tmp_path / "sub") and name.startswith(".mask.nii.gz.") and name.endswith(".tmp.nii.gz")


def test_save_atomic_failure_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_atomic(target, broken)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]
    with pytest.raises(ValueError, match="must name a file"):
        save_atomic(str(tmp_path) + os.sep, broken)
    with pytest.raises(TypeError):  # not JSON: the old file stays
        write_json_atomic({"x": object()}, target)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]


def test_write_json_and_csv_atomic(tmp_path):
    write_json_atomic({"a": [1, None]}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, None]}
    assert (tmp_path / "m.json").read_text().endswith("}\n")

    write_csv_atomic(tmp_path / "t.csv", ["image", "dice"], [{"image": "a.png", "dice": 0.5}, {"image": "b.png"}])
    with open(tmp_path / "t.csv", newline="") as f:
        assert list(csv.reader(f)) == [["image", "dice"], ["a.png", "0.5"], ["b.png", ""]]
    with pytest.raises(ValueError, match="iou"):
        write_csv_atomic(tmp_path / "t.csv", ["image", "dice"], [{"image": "a", "iou": 1}])
    assert (tmp_path / "t.csv").read_text().startswith("image,dice")  # the failed write left it as it was
    assert sorted(os.listdir(tmp_path)) == ["m.json", "t.csv"]


def test_write_text_atomic_and_json_indentation(tmp_path):
    write_text_atomic("| a |\n", tmp_path / "report" / "table.md")  # the folder is created
    assert (tmp_path / "report" / "table.md").read_text() == "| a |\n"
    write_json_atomic({"a": [1]}, tmp_path / "one.json", indent=1)
    assert (tmp_path / "one.json").read_text() == '{\n "a": [\n  1\n ]\n}\n'
    write_json_atomic({"a": [1]}, tmp_path / "flat.json", indent=None)
    assert (tmp_path / "flat.json").read_text() == '{"a": [1]}\n'
    assert sorted(os.listdir(tmp_path)) == ["flat.json", "one.json", "report"]
    assert os.listdir(tmp_path / "report") == ["table.md"]


def test_read_json_file_round_trip_absent_and_broken(tmp_path):
    class RecordError(ValueError):
        pass

    path = tmp_path / "record.json"
    assert read_json_file(path, "test record") is None  # no file: nothing recorded
    write_json_atomic({"a": [1, 2]}, path)
    assert read_json_file(path, "test record") == {"a": [1, 2]}
    path.write_text("{broken")
    with pytest.raises(RecordError, match=r"record.json: unreadable test record \(Expecting"):
        read_json_file(path, "test record", RecordError)
