"""Datalist reading, validation before training, splits, the synthetic default and inference input scanning."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from custom_components.ife.synthetic import synthesize_ife_dataset
from custom_components.core import (
    DatalistError,
    list_images,
    load_datalist,
    median_aspect,
    prepare_dataset,
    scan_inputs,
    stratified_kfold,
    stratified_split,
    training_and_validation,
)
from custom_components.core.validation import check_datalist, validate_datalist
from custom_components.ife.classes import IFE_CLASSES


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


def _corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return str(path)


def test_load_datalist_resolves_relative_paths_and_keeps_class_names(tmp_path):
    classification = {"training": [{"image": "images/a.png", "label": "kappa"}], "testing": [{"image": "images/c.png"}]}
    (tmp_path / "gels.json").write_text(json.dumps(classification))
    assert load_datalist(tmp_path / "gels.json", "training") == [{"image": str(tmp_path / "images/a.png"), "label": "kappa"}]
    assert load_datalist(tmp_path / "gels.json", "testing") == [{"image": str(tmp_path / "images/c.png")}]
    assert load_datalist(tmp_path / "gels.json", "validation") == []
    segmentation = {"training": [{"image": "images/b.png", "label": "masks/b.png"}, {"image": "/abs/x.png", "label": "m.png"}]}
    (tmp_path / "scans.json").write_text(json.dumps(segmentation))
    train = load_datalist(tmp_path / "scans.json", "training")
    assert train[0] == {"image": str(tmp_path / "images/b.png"), "label": str(tmp_path / "masks/b.png")}
    assert train[1] == {"image": "/abs/x.png", "label": str(tmp_path / "m.png")}


def test_load_datalist_keeps_a_class_name_that_is_also_a_folder(tmp_path, monkeypatch):
    # images sorted into one folder per class, the datalist beside them, read from a relative path
    (tmp_path / "kappa").mkdir()
    entry = {"image": "kappa/001.png", "label": "kappa", "group": "kappa"}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [entry], "test": []}))
    monkeypatch.chdir(tmp_path)
    assert load_datalist("datalist.json", "training") == [
        {"image": str(tmp_path / "kappa" / "001.png"), "label": "kappa", "group": "kappa"}
    ]
    assert load_datalist("datalist.json", "test") == []  # an empty list, where MONAI's reader fails


def test_training_and_validation_uses_the_given_list_or_splits_training(tmp_path):
    entries = [{"image": f"{i}.png", "label": "Negative" if i % 3 else "kappa"} for i in range(30)]
    (tmp_path / "split.json").write_text(json.dumps({"training": entries}))
    train, val = training_and_validation(tmp_path / "split.json", 0.2, seed=1)
    assert len(train) + len(val) == 30 and Counter(e["label"] for e in val) == {"Negative": 4, "kappa": 2}
    (tmp_path / "given.json").write_text(json.dumps({"training": entries[:25], "validation": entries[25:]}))
    train, val = training_and_validation(tmp_path / "given.json")
    assert [e["image"] for e in val] == [str(tmp_path / f"{i}.png") for i in range(25, 30)] and len(train) == 25


def test_training_and_validation_keeps_each_group_on_one_side(tmp_path):
    # ten eyes of four B-scans each, fluid in some: no eye on both sides, about a fifth of the eyes in validation
    entries = [{"image": f"{eye}_{k}.png", "label": "fluid" if (eye + k) % 3 else "dry", "group": f"eye{eye}"}
               for eye in range(10) for k in range(4)]  # fmt: skip
    (tmp_path / "grouped.json").write_text(json.dumps({"training": entries}))
    train, val = training_and_validation(tmp_path / "grouped.json", 0.2, seed=0)
    assert len(train) + len(val) == 40 and not {e["group"] for e in train} & {e["group"] for e in val}
    assert len({e["group"] for e in val}) == 2
    # one entry per group (the synthetic OCT default): the plain stratified split, as without groups
    singletons = [dict(e, group=e["image"]) for e in entries]
    (tmp_path / "singletons.json").write_text(json.dumps({"training": singletons}))
    (tmp_path / "plain.json").write_text(json.dumps({"training": [{k: v for k, v in e.items() if k != "group"} for e in entries]}))
    split = training_and_validation(tmp_path / "singletons.json", 0.2, seed=0)
    plain = training_and_validation(tmp_path / "plain.json", 0.2, seed=0)
    assert [[e["image"] for e in side] for side in split] == [[e["image"] for e in side] for side in plain]


def test_load_datalist_errors_name_the_problem(tmp_path):
    with pytest.raises(DatalistError, match="not found"):
        load_datalist(tmp_path / "missing.json", "training")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatalistError, match=r"not valid JSON: Expecting property name .*line 1 column 2"):
        load_datalist(tmp_path / "bad.json", "training")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DatalistError, match="must hold an object with lists such as 'training', got list"):
        load_datalist(tmp_path / "list.json", "training")
    (tmp_path / "noimage.json").write_text(json.dumps({"training": [{"label": "kappa"}]}))
    with pytest.raises(DatalistError, match=r"training\[0\].*'image'"):
        load_datalist(tmp_path / "noimage.json", "training")
    (tmp_path / "bare.json").write_text(json.dumps({"testing": ["c.png"]}))
    with pytest.raises(DatalistError, match=r"testing\[0\]: must be an object with an 'image' key, got 'c.png'"):
        load_datalist(tmp_path / "bare.json", "testing")
    for section in ({"image": "a.png"}, {}, None, "a.png"):  # an empty object or null is no empty list either
        (tmp_path / "notlist.json").write_text(json.dumps({"training": section}))
        with pytest.raises(DatalistError, match="'training' must be a list of entries, got"):
            load_datalist(tmp_path / "notlist.json", "training")


def test_load_datalist_names_every_unreadable_entry_at_once(tmp_path):
    items = [{"image": "a.png"}, "b.png", {"image": 3}, {"image": ["c.png", "d.png"]}, {"image": " "}]
    (tmp_path / "d.json").write_text(json.dumps({"training": items}))
    with pytest.raises(DatalistError) as err:
        load_datalist(tmp_path / "d.json", "training")
    assert str(err.value).startswith(f"datalist {tmp_path / 'd.json'}: 4 of 5 entries of 'training' cannot be read")
    assert err.value.problems == [
        "training[1]: must be an object with an 'image' key, got 'b.png'",
        "training[2]: 'image' must be the path of one file, got 3",
        "training[3]: 'image' must be the path of one file, got ['c.png', 'd.png']",
        "training[4]: 'image' must be the path of one file, got ' '",
    ]


def test_a_datalist_must_be_utf8_without_byte_order_mark(tmp_path):
    content = json.dumps({"training": [{"image": "gél.png", "label": "kappa"}]}, ensure_ascii=False)
    (tmp_path / "utf8.json").write_text(content, encoding="utf-8")
    assert load_datalist(tmp_path / "utf8.json", "training")[0]["image"] == str(tmp_path / "gél.png")
    (tmp_path / "latin1.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(DatalistError, match=r"latin1.json is not UTF-8 text \(byte 0xe9 at offset 26\): save it as UTF-8"):
        load_datalist(tmp_path / "latin1.json", "training")
    (tmp_path / "utf16.json").write_bytes(content.encode("utf-16"))  # Windows' "Unicode"
    with pytest.raises(DatalistError, match="is not UTF-8 text"):
        load_datalist(tmp_path / "utf16.json", "training")
    (tmp_path / "bom.json").write_bytes(content.encode("utf-8-sig"))
    with pytest.raises(DatalistError, match="starts with a UTF-8 byte-order mark: save it as UTF-8 without BOM"):
        load_datalist(tmp_path / "bom.json", "training")


def test_absolute_and_dotdot_paths_work_when_the_files_exist(tmp_path):
    # the datalist in one folder, images beside it, above it (through "..") and elsewhere (absolute)
    lists, elsewhere = tmp_path / "lists", tmp_path / "elsewhere"
    beside = _png(lists / "images" / "a.png", np.zeros((8, 8, 3)))
    above = _png(tmp_path / "shared" / "b.png", np.zeros((8, 8, 3)))
    absolute = _png(elsewhere / "c.png", np.zeros((8, 8, 3)))
    entries = [
        {"image": "images/a.png", "label": "kappa"},
        {"image": "../shared/b.png", "label": "lambda"},
        {"image": absolute, "label": "Negative"},
        {"image": "./images/../../shared/../elsewhere/c.png", "label": "Negative"},  # c.png again
    ]
    (lists / "datalist.json").write_text(json.dumps({"training": entries[:3]}))
    assert [e["image"] for e in load_datalist(lists / "datalist.json", "training")] == [beside, above, absolute]
    assert validate_datalist(lists / "datalist.json", "classification", class_names=IFE_CLASSES) == str(lists / "datalist.json")
    # written two ways, one file is still one image: the repeat is found
    (lists / "datalist.json").write_text(json.dumps({"training": entries}))
    with pytest.raises(DatalistError) as err:
        validate_datalist(lists / "datalist.json", "classification", class_names=IFE_CLASSES)
    assert err.value.problems == [f"training[3] {absolute}: same image as training[2]"]


def _gels(folder, names):
    return {name: _png(folder / f"{name}.png", np.zeros((8, 12, 3))) for name in names}


def test_validate_datalist_names_section_index_and_image_of_every_problem(tmp_path):
    _gels(tmp_path / "images", "abcdefg")
    training = [
        {"image": "images/a.png", "label": "kappa"},
        {"image": "images/missing.png", "label": "lambda"},
        {"image": "images/b.png", "label": "IgD-kappa"},
        {"image": "images/a.png", "label": "kappa"},  # twice in training
        {"image": "images/c.png", "label": 3},  # an index into the class names
        {"image": "images/d.png"},
    ]
    validation = [{"image": "images/c.png", "label": "IgG-kappa"}, {"image": "images/e.png", "label": "Negative"}]
    testing = [{"image": "images/f.png", "label": "Negative"}, {"image": "images/a.png", "label": "kappa"},
               {"image": "images/e.png", "label": "Negative"}, {"image": "images/f.png", "label": "Negative"}]  # fmt: skip
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": training, "validation": validation, "testing": testing}))
    image = str(tmp_path / "images") + "/{}.png"
    with pytest.raises(DatalistError) as err:
        validate_datalist(datalist, "classification", class_names=IFE_CLASSES)
    assert err.value.problems == [
        f"training[1] {image.format('missing')}: file not found",
        f"training[2] {image.format('b')}: unknown label 'IgD-kappa' (valid: {', '.join(IFE_CLASSES)})",
        f"training[3] {image.format('a')}: same image as training[0]",
        f"training[5] {image.format('d')}: no 'label' (one of {', '.join(IFE_CLASSES)})",
        f"validation[0] {image.format('c')}: also in training[4]: validating on a training image inflates the score "
        "that picks the best checkpoint",
        # training start-up stops on a training image in testing too, though it does not check testing's files
        f"testing[1] {image.format('a')}: also in training[0]: testing on a training image inflates the test results",
        f"testing[2] {image.format('e')}: also in validation[1]: testing on an image that picked the checkpoint "
        "inflates the test results",
    ]
    message = str(err.value)
    header = f"datalist {datalist}: 7 problems for classification (sections checked: training, validation):"
    assert message.startswith(header)
    assert all(f"\n  - {line}" in message for line in err.value.problems)
    # evaluation checks testing: the leakage again, and testing's own repeat, not training's
    with pytest.raises(DatalistError) as err:
        validate_datalist(datalist, "classification", class_names=IFE_CLASSES, sections=["testing"], decode=True)
    assert [line.split(":")[0] for line in err.value.problems] == [
        f"testing[1] {image.format('a')}", f"testing[2] {image.format('e')}", f"testing[3] {image.format('f')}"
    ]
    assert err.value.problems[2].endswith("same image as testing[0]")


def test_check_datalist_counts_entries_and_classes_per_section(tmp_path):
    _gels(tmp_path, "abcd")
    training = [{"image": "a.png", "label": "kappa"}, {"image": "b.png", "label": 0}]
    training.append({"image": "x.png", "label": "kappa"})
    testing = [{"image": "c.png", "label": "lambda"}]
    (tmp_path / "d.json").write_text(json.dumps({"training": training, "testing": testing}))
    report = check_datalist(tmp_path / "d.json", "classification", ["training", "validation", "testing"], class_names=IFE_CLASSES)
    rows = [(s.name, s.entries, s.checked, s.bad_entries, s.class_counts) for s in report.sections]
    assert rows == [
        ("training", 3, True, 1, {"Negative": 1, "kappa": 2}),  # the missing file is counted with its class
        ("validation", 0, True, 0, {}),  # missing: the bundles split one from training
        ("testing", 1, True, 0, {"lambda": 1}),
    ]
    assert report.problems == [f"training[2] {tmp_path / 'x.png'}: file not found"]


def test_empty_and_missing_sections(tmp_path):
    _gels(tmp_path, "a")
    datalist = tmp_path / "d.json"
    datalist.write_text(json.dumps({"train": [{"image": "a.png", "label": "kappa"}], "validation": [], "testing": []}))
    with pytest.raises(DatalistError) as err:
        validate_datalist(datalist, "classification", class_names=IFE_CLASSES)
    lists = "'train' (1), 'validation' (0), 'testing' (0)"  # a misspelt section shows up here
    assert err.value.problems == [f"'training' is missing or empty (the datalist's lists: {lists})"]
    datalist.write_text(json.dumps({"training": [{"image": "a.png", "label": "kappa"}], "validation": [], "testing": []}))
    assert validate_datalist(datalist, "classification", class_names=IFE_CLASSES) == str(datalist)  # no validation: split from training
    with pytest.raises(DatalistError, match=r"'testing' is missing or empty"):
        validate_datalist(datalist, "classification", class_names=IFE_CLASSES, sections="testing")  # nothing to evaluate
    datalist.write_text(json.dumps({"training": [{"image": "a.png", "label": "kappa"}], "validation": {}}))
    with pytest.raises(DatalistError) as err:
        validate_datalist(datalist, "classification", class_names=IFE_CLASSES)
    assert err.value.problems == ["'validation' must be a list of entries, got dict"]
    with pytest.raises(ValueError, match="task must be one of classification, segmentation"):
        check_datalist(datalist, "detection")


def test_validate_datalist_lists_fifty_problems_and_says_where_to_see_them_all(tmp_path):
    entries = [{"image": f"{i}.png", "label": "kappa"} for i in range(60)]
    (tmp_path / "d.json").write_text(json.dumps({"training": entries}))
    with pytest.raises(DatalistError) as err:
        validate_datalist(tmp_path / "d.json", "classification", class_names=IFE_CLASSES)
    assert len(err.value.problems) == 60 and str(err.value).count("\n  - ") == 50
    command = f"python scripts/validate_datalist.py --task classification {tmp_path / 'd.json'}"
    assert str(err.value).endswith(f"  ... and 10 more ({command} lists them all)")


def test_validate_datalist_for_segmentation_allows_a_shared_mask(tmp_path):
    for name in "abc":
        _png(tmp_path / "images" / f"{name}.png", np.zeros((10, 12)))
    empty = _png(tmp_path / "masks" / "empty.png", np.zeros((10, 12)))  # every scan without fluid
    small = _png(tmp_path / "masks" / "small.png", np.zeros((10, 11)))
    training = [{"image": f"images/{n}.png", "label": "masks/empty.png"} for n in "ab"]
    training += [{"image": "images/c.png", "label": "kappa"}, {"image": "images/c.png", "label": "masks/small.png"}]
    (tmp_path / "d.json").write_text(json.dumps({"training": training}))
    with pytest.raises(DatalistError) as err:
        validate_datalist(tmp_path / "d.json", "segmentation")
    image = str(tmp_path / "images" / "c.png")
    assert err.value.problems == [
        # a class name among mask paths (joined to the datalist's folder as they are)
        f"training[2] {image}: label '{tmp_path / 'kappa'}' is not the path of a mask image "
        "(.png, .jpg, .jpeg, .tif, .tiff, .bmp, .gif)",
        f"training[3] {image}: label {small}: mask size (10, 11) differs from image size (10, 12); "
        "same image as training[2]",
    ]
    (tmp_path / "d.json").write_text(json.dumps({"training": training[:2]}))
    assert validate_datalist(tmp_path / "d.json", "segmentation") and empty


def _training_datalist(folder, entries) -> Path:
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": entries}))
    return path


def test_classification_validation_reports_every_bad_entry(tmp_path):
    good = _png(tmp_path / "good.png", np.zeros((8, 8, 3)))
    entries = [
        {"image": good, "label": "IgG-kappa"},
        {"image": str(tmp_path / "missing.png"), "label": "kappa"},
        {"image": _corrupt(tmp_path / "corrupt.png"), "label": "lambda"},
        {"image": _png(tmp_path / "other.png", np.zeros((8, 8, 3))), "label": "IgD-kappa"},
    ]
    with pytest.raises(DatalistError) as err:
        validate_datalist(_training_datalist(tmp_path, entries), "classification", class_names=IFE_CLASSES)
    message = str(err.value)
    assert "3 problems for classification" in message
    assert "training[1] " in message and "missing.png: file not found" in message
    assert "corrupt.png: unreadable image" in message
    assert "unknown label 'IgD-kappa'" in message and "IgM-lambda" in message  # lists the valid names
    assert err.value.problems[-1].startswith("training[3] ")
    assert validate_datalist(_training_datalist(tmp_path, entries[:1]), "classification", class_names=IFE_CLASSES)


def test_segmentation_validation_checks_size_and_mask_values(tmp_path):
    image, other, third = (_png(tmp_path / f"img{i}.png", np.zeros((10, 12))) for i in range(3))
    good_mask = _png(tmp_path / "good.png", np.eye(10, 12) * 255)
    small_mask = _png(tmp_path / "small.png", np.zeros((10, 11)))
    odd_mask = _png(tmp_path / "odd.png", np.full((10, 12), 7))
    entries = [
        {"image": image, "label": good_mask},
        {"image": other, "label": small_mask},
        {"image": third, "label": odd_mask},
        {"image": str(tmp_path / "nope.png"), "label": good_mask},
    ]
    with pytest.raises(DatalistError) as err:
        validate_datalist(_training_datalist(tmp_path, entries), "segmentation")
    message = str(err.value)
    assert "3 problems for segmentation" in message
    assert f"training[1] {other}: label {small_mask}: mask size (10, 11) differs from image size (10, 12)" in message
    assert "odd.png: mask values must be {0, 1} or {0, 255} (binary), or within {0, 1, 2, 3} (fluid types), found 7" in message
    assert "nope.png: file not found" in message
    ones = _png(tmp_path / "ones.png", np.eye(10, 12))
    empty = _png(tmp_path / "empty.png", np.zeros((10, 12)))  # a scan without fluid
    fine = [{"image": image, "label": ones}, {"image": other, "label": empty}]
    assert validate_datalist(_training_datalist(tmp_path, fine), "segmentation")
    twice = [{"image": image, "label": ones}, {"image": image, "label": empty}]
    with pytest.raises(DatalistError, match=r"training\[1\] .*img0.png: same image as training\[0\]"):
        validate_datalist(_training_datalist(tmp_path, twice), "segmentation")
    mixed = _png(tmp_path / "mixed.png", np.eye(10, 12) * 255 + np.eye(10, 12, 1))
    with pytest.raises(DatalistError, match="found 0, 1, 255"):
        validate_datalist(_training_datalist(tmp_path, [{"image": image, "label": mixed}]), "segmentation")


def test_stratified_split_keeps_rare_classes_on_both_sides_and_is_deterministic():
    entries = [{"image": f"{i}.png", "label": "Negative"} for i in range(40)]
    entries += [{"image": f"k{i}.png", "label": "kappa"} for i in range(2)]
    train, val = stratified_split(entries, 0.2, seed=1)
    assert len(train) + len(val) == 42 and not {e["image"] for e in train} & {e["image"] for e in val}
    assert Counter(e["label"] for e in val) == {"Negative": 8, "kappa": 1}
    assert stratified_split(entries, 0.2, seed=1) == (train, val)
    assert stratified_split(entries, 0.2, seed=2) != (train, val)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(entries, 1.5)


def test_stratified_split_covers_every_class_with_two_or_more_entries():
    sizes = {"Negative": 70, "IgG-kappa": 11, "IgG-lambda": 7, "IgA-kappa": 4, "kappa": 2, "lambda": 1}
    entries = [{"image": f"{name}{i}.png", "label": name} for name, n in sizes.items() for i in range(n)]
    for seed in range(5):
        train, val = stratified_split(entries, 0.1, seed=seed)
        train_counts, val_counts = Counter(e["label"] for e in train), Counter(e["label"] for e in val)
        assert train_counts + val_counts == Counter(sizes)
        for name, n in sizes.items():
            assert train_counts[name] >= 1
            assert val_counts[name] == (0 if n < 2 else max(1, round(n * 0.1))), (seed, name)


def test_stratified_kfold_holds_out_every_entry_once():
    entries = [{"image": f"{i}.png", "label": "a" if i < 10 else "b"} for i in range(15)]
    folds = stratified_kfold(entries, folds=5, seed=0, key="label")
    held = [e["image"] for _, out in folds for e in out]
    assert sorted(held) == sorted(e["image"] for e in entries)
    assert all(len(train) + len(out) == 15 for train, out in folds)
    assert all(Counter(e["label"] for e in out) == {"a": 2, "b": 1} for _, out in folds)
    with pytest.raises(ValueError, match="folds"):
        stratified_kfold(entries, folds=1)


def test_stratified_kfold_uneven_and_small_groups():
    # 11 a, 6 b and 2 c: c is too small to reach every fold, so it joins the largest group
    labels = ["a"] * 11 + ["b"] * 6 + ["c"] * 2
    entries = [{"image": f"{i}.png", "label": label} for i, label in enumerate(labels)]
    folds = stratified_kfold(entries, folds=5, seed=3, key="label")
    held = [e["image"] for _, out in folds for e in out]
    assert sorted(held) == sorted(e["image"] for e in entries)  # every entry held out exactly once
    sizes = [len(out) for _, out in folds]
    assert sum(sizes) == 19 and max(sizes) - min(sizes) <= 2  # each of the two groups adds at most one
    assert all(Counter(e["label"] for e in out)["b"] >= 1 for _, out in folds)
    for train, out in folds:  # each side keeps the original order
        assert [e["image"] for e in train] == [e["image"] for e in entries if e not in out]


def test_prepare_dataset_writes_the_synthetic_default_once_and_never_touches_user_data(tmp_path):
    target = tmp_path / "data"
    path = prepare_dataset(target, synthesize_ife_dataset, synthetic_count=12, seed=0, image_size=(48, 72))
    assert path == str(target / "datalist.json")
    content = json.loads((target / "datalist.json").read_text())
    assert sum(len(v) for v in content.values()) == 12
    stamp = (target / "datalist.json").stat().st_mtime_ns
    assert prepare_dataset(target, synthesize_ife_dataset, synthetic_count=99) == path  # existing datalist used untouched
    assert (target / "datalist.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging folder left behind

    user = tmp_path / "user"
    _png(user / "scan.png", np.zeros((4, 4)))
    with pytest.raises(DatalistError, match="has files but no datalist.json"):
        prepare_dataset(user, synthesize_ife_dataset)
    with pytest.raises(TypeError, match="synthesize must be a data set generator"):
        prepare_dataset(tmp_path / "other", "ife")  # the generator itself, not a name


def test_scan_inputs_skips_and_reports_unreadable_files(tmp_path):
    for name in ("b.png", "a.png", "sub/c.jpg"):
        _png(tmp_path / "in" / name, np.zeros((8, 8, 3)))
    _corrupt(tmp_path / "in" / "broken.png")
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    report = tmp_path / "out" / "skipped.csv"
    entries = scan_inputs(tmp_path / "in", skipped_report=report)
    assert [e["image"].split("/in/")[1] for e in entries] == ["a.png", "b.png", "sub/c.jpg"]
    rows = report.read_text().splitlines()
    assert rows[0] == "image,error" and len(rows) == 2 and "broken.png" in rows[1]
    assert scan_inputs(tmp_path / "in" / "a.png") == [{"image": str((tmp_path / "in" / "a.png").resolve())}]
    with pytest.raises(DatalistError, match="not found"):
        scan_inputs(tmp_path / "nowhere")
    with pytest.raises(DatalistError, match="no images"):
        scan_inputs(tmp_path / "out", extensions=(".png",))


def test_scan_inputs_checks_pixels_so_a_truncated_png_is_skipped(tmp_path):
    _png(tmp_path / "in" / "whole.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
    data = (tmp_path / "in" / "whole.png").read_bytes()
    (tmp_path / "in" / "cut.png").write_bytes(data[: len(data) // 2])  # valid header, half the pixels
    entries = scan_inputs(tmp_path / "in")
    assert [e["image"].rsplit("/", 1)[1] for e in entries] == ["whole.png"]


def test_scan_inputs_reads_a_datalist_section_and_names_the_sections_when_it_is_empty(tmp_path):
    _png(tmp_path / "images" / "a.png", np.zeros((8, 10, 3)))
    _corrupt(tmp_path / "images" / "bad.png")
    datalist = {"training": [{"image": "images/a.png", "label": "kappa"}],
                "testing": [{"image": "images/bad.png"}, {"image": "images/a.png", "label": "Negative"}]}  # fmt: skip
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    report = tmp_path / "skipped.csv"
    entries = scan_inputs(tmp_path / "datalist.json", skipped_report=report)
    assert entries == [{"image": str(tmp_path / "images" / "a.png"), "label": "Negative"}]  # labels kept
    assert "bad.png" in report.read_text()
    expected = r"no entries in 'validation'; its lists: 'training' \(1\), 'testing' \(2\)"
    with pytest.raises(DatalistError, match=expected):
        scan_inputs(tmp_path / "datalist.json", section="validation")


def _bad_inputs(folder):
    """A truncated JPEG, a zero-byte PNG, a text file named .png, a 4D NIfTI and a NIfTI with an empty axis."""
    _png(folder / "whole.jpg", np.random.default_rng(0).integers(0, 255, (40, 40, 3)))
    data = (folder / "whole.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 2), np.float32), np.eye(4)), folder / "series.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 0, 3), np.float32), np.eye(4)), folder / "hollow.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 1), np.float32), np.eye(4)), folder / "volume.nii.gz")


def test_scan_inputs_screens_every_entry_the_same_way_and_says_why(tmp_path):
    _bad_inputs(tmp_path / "in")
    report = tmp_path / "skipped.csv"
    entries = scan_inputs(tmp_path / "in", skipped_report=report)
    assert sorted(e["image"].rsplit("/", 1)[1] for e in entries) == ["volume.nii.gz", "whole.jpg"]
    with open(report, newline="") as f:
        reasons = {os.path.basename(r["image"]): r["error"] for r in csv.DictReader(f)}
    assert reasons["cut.jpg"].startswith("unreadable image")
    assert reasons["zero.png"] == "empty file (0 bytes)"
    assert reasons["text.png"].startswith("unreadable image (UnidentifiedImageError")
    assert reasons["series.nii.gz"] == "expected a 2D B-scan or a 3D volume, got a 4D array of shape (8, 8, 3, 2)"
    assert reasons["hollow.nii.gz"].startswith("image has no pixels")
    # a bundle that reads no NIfTI: a folder is searched for its types only; a file given by name is screened
    gels = scan_inputs(tmp_path / "in", extensions=(".jpg", ".png"))
    assert [e["image"].rsplit("/", 1)[1] for e in gels] == ["whole.jpg"]
    with pytest.raises(DatalistError, match=r"no usable input is left(.|\n)*volume.nii.gz: unsupported file type '.nii.gz'"):
        scan_inputs(tmp_path / "in" / "volume.nii.gz", extensions=(".jpg", ".png"))


def test_scan_inputs_strict_makes_any_skip_an_error_after_listing_it(tmp_path):
    _bad_inputs(tmp_path / "in")
    report = tmp_path / "skipped.csv"
    with pytest.raises(DatalistError) as err:
        scan_inputs(tmp_path / "in", skipped_report=report, strict=True)
    message = str(err.value)
    assert message.startswith("strict mode stops on any unusable input: 5 of 7 inference inputs cannot be used")
    assert "zero.png: empty file (0 bytes)" in message and "cut.jpg" in message
    assert len(report.read_text().splitlines()) == 6  # the CSV is written before the error
    good = tmp_path / "in" / "whole.jpg"
    assert scan_inputs(good, strict=True) == [{"image": str(good.resolve())}]


def test_median_aspect_reads_headers(tmp_path):
    entries = [{"image": _png(tmp_path / f"{i}.png", np.zeros((h, w)))} for i, (h, w) in enumerate([(40, 80), (50, 100), (90, 90)])]
    assert median_aspect(entries) == 0.5
    assert median_aspect(entries + [{"image": str(tmp_path / "missing.png")}]) == 0.5  # unreadable: left out
    assert median_aspect([]) is None


def test_list_images_is_recursive_sorted_and_case_insensitive(tmp_path):
    for name in ("b.PNG", "a.png", "deep/c.nii.gz", "deep/d.txt", "e.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = [p[len(str(tmp_path.resolve())) + 1 :] for p in list_images(tmp_path)]
    assert names == ["a.png", "b.PNG", "deep/c.nii.gz", "e.jpeg"]
    assert [p.rsplit("/", 1)[1] for p in list_images(tmp_path, extensions=(".png",))] == ["a.png", "b.PNG"]
    assert list_images(tmp_path / "deep" / "d.txt") == [str((tmp_path / "deep" / "d.txt").resolve())]
    with pytest.raises(DatalistError, match="not found"):
        list_images(tmp_path / "missing")
