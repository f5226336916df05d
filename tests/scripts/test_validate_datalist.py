"""scripts/validate_datalist.py: the script's ``main()`` in this process, on small datalists of tiny PNGs.

Each test reads the exit status and what the script prints: the summary row per section, one line per bad entry
naming its section, index and image, and the lines training start-up would raise (the same function, the same
words).
"""

from __future__ import annotations

import importlib.util
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from custom_components.ife.classes import IFE_CLASSES
from custom_components.core.datalist import DatalistError
from custom_components.core.validation import validate_datalist

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "validate_datalist.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("validate_datalist_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(path: Path, shape=(8, 12, 3), value=0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return str(path)


def _write(folder: Path, datalist) -> Path:
    path = folder / "datalist.json"
    path.write_text(datalist if isinstance(datalist, str) else json.dumps(datalist))
    return path


def _run(script, capsys, *args) -> tuple[int, list[str], str]:
    code = script.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def _row(lines: list[str], section: str) -> list[str]:
    """The summary row of a section, split on white space."""
    return next(line.split() for line in lines if line.split()[:1] == [section])


def _problems(lines: list[str]) -> list[str]:
    return [line[4:] for line in lines if line.startswith("  - ")]


def test_a_good_ife_datalist_passes_with_counts_per_class(script, capsys, tmp_path):
    for name in "abcd":
        _png(tmp_path / "images" / f"{name}.png")
    outside = _png(tmp_path.parent / f"{tmp_path.name}_elsewhere" / "e.png")
    training = [{"image": "images/a.png", "label": "kappa"}, {"image": "images/b.png", "label": "kappa"},
                {"image": f"../{tmp_path.name}/images/c.png", "label": "Negative"}, {"image": outside, "label": 0}]  # fmt: skip
    testing = [{"image": "images/d.png", "label": "lambda"}]
    datalist = _write(tmp_path, {"name": "gels", "training": training, "testing": testing})  # "name": not a list
    code, lines, err = _run(script, capsys, "--bundle", "ife_multitask", datalist)
    assert code == 0 and not err
    assert lines[0].startswith(f"Datalist {datalist}, checked for classification (file headers;")
    assert lines[1].split() == ["section", "entries", "OK", "problems", "classes"]
    assert _row(lines, "training") == ["training", "4", "4", "0", "Negative", "2,", "kappa", "2"]
    assert " ".join(_row(lines, "validation")) == "validation 0 0 0 (none: the bundles split one from training)"
    assert _row(lines, "testing") == ["testing", "1", "1", "0", "lambda", "1"]
    assert lines[-1] == "OK: 5 entries can be used."


def test_every_bad_entry_is_one_line_naming_it_and_training_stops_on_the_same_lines(script, capsys, tmp_path):
    for name in "abcde":
        _png(tmp_path / "images" / f"{name}.png")
    training = [
        {"image": "images/a.png", "label": "kappa"},
        {"image": "images/missing.png", "label": "kappa"},
        {"image": "images/b.png", "label": "IgG-banana"},
        {"image": "images/a.png", "label": "kappa"},
    ]
    validation = [{"image": "images/b.png", "label": "lambda"}, {"image": "images/c.png", "label": "lambda"}]
    testing = [{"image": "images/c.png", "label": "lambda"}, {"image": "images/d.png", "label": "lambda"}]
    datalist = _write(tmp_path, {"training": training, "validation": validation, "testing": testing})
    code, lines, _ = _run(script, capsys, "--task", "classification", datalist)
    assert code == 1
    assert _row(lines, "training")[:4] == ["training", "4", "1", "3"]
    assert _row(lines, "validation")[:4] == ["validation", "2", "1", "1"]
    assert _row(lines, "testing")[:4] == ["testing", "2", "1", "1"]
    image = str(tmp_path / "images") + "/{}.png"
    problems = _problems(lines)
    assert [p.split(": ")[0] for p in problems] == [
        f"training[1] {image.format('missing')}",
        f"training[2] {image.format('b')}",
        f"training[3] {image.format('a')}",
        f"validation[0] {image.format('b')}",
        f"testing[0] {image.format('c')}",
    ]
    assert problems[0].endswith(": file not found") and "unknown label 'IgG-banana'" in problems[1]
    assert problems[2].endswith(": same image as training[0]")
    assert "also in training[2]: validating on a training image" in problems[3]
    assert "also in validation[1]: testing on an image that picked the checkpoint" in problems[4]
    assert "5 problems:" in lines and lines[-1].startswith("Training stops on these before the first epoch")
    # training start-up (training and validation checked) raises the same lines, word for word
    with pytest.raises(DatalistError) as err:
        validate_datalist(datalist, "classification", class_names=IFE_CLASSES)
    assert err.value.problems == problems
    # training alone: validation is only compared with it, testing (which repeats validation only) not at all
    code, lines, _ = _run(script, capsys, "--task", "classification", datalist, "--sections", "training")
    assert code == 1 and _problems(lines) == problems[:4]
    assert " ".join(_row(lines, "validation")) == "validation 2 - 1 (not checked; repeats only)"
    assert not any(line.startswith("testing") for line in lines)


def test_oct_datalist_masks(script, capsys, tmp_path):
    for name in "abc":
        _png(tmp_path / "images" / f"{name}.png", (10, 12))
    _png(tmp_path / "masks" / "none.png", (10, 12))  # one all-zero mask for every scan without fluid
    _png(tmp_path / "masks" / "gray.png", (10, 12), value=128)
    training = [{"image": f"images/{n}.png", "label": "masks/none.png"} for n in "ab"]
    testing = [{"image": "images/c.png", "label": "masks/gray.png"}]
    datalist = _write(tmp_path, {"training": training, "testing": testing})
    code, lines, _ = _run(script, capsys, "--bundle", "oct_fluid_seg", datalist)
    assert code == 1 and lines[1].split() == ["section", "entries", "OK", "problems"]
    assert _row(lines, "training") == ["training", "2", "2", "0"]
    assert _problems(lines) == [
        f"testing[0] {tmp_path / 'images' / 'c.png'}: label {tmp_path / 'masks' / 'gray.png'}: mask values must be "
        "{0, 1} or {0, 255} (binary), or within {0, 1, 2, 3} (fluid types), found 128"
    ]
    # a testing list that is not ready (inference needs no mask) is left out with --sections
    code, lines, _ = _run(script, capsys, "--bundle", "oct_fluid_seg", datalist, "--sections", "training", "validation")
    assert code == 0 and lines[-1] == "OK: 2 entries can be used."
    assert not any(line.startswith("testing") for line in lines)


def _png_with_bad_pixel_data(path: Path) -> str:
    """A PNG whose compressed pixels are garbage under valid chunk checksums: the header check passes it, decoding
    does not."""
    _png(path)
    data = path.read_bytes()
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    garbage = bytes(range(7, 7 + length))
    chunk = struct.pack(">I", length) + b"IDAT" + garbage + struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
    path.write_bytes(data[:start] + chunk + data[start + 12 + length :])
    return str(path)


def test_decode_finds_what_the_header_check_cannot(script, capsys, tmp_path):
    bad = _png_with_bad_pixel_data(tmp_path / "images" / "a.png")
    datalist = _write(tmp_path, {"training": [{"image": "images/a.png", "label": "kappa"}]})
    code, lines, _ = _run(script, capsys, "--bundle", "ife_multitask", datalist)
    assert code == 0 and "(file headers; --decode decodes every pixel)" in lines[0]
    code, lines, _ = _run(script, capsys, "--bundle", "ife_multitask", datalist, "--decode")
    assert code == 1 and "(every pixel decoded)" in lines[0]
    assert [p.split(": ")[:2] for p in _problems(lines)] == [[f"training[0] {bad}", "unreadable image (OSError"]]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b'{"training": [{"image": "g\xe9l.png"}]}', "is not UTF-8 text (byte 0xe9 at offset 26): save it as UTF-8."),
        (b'\xef\xbb\xbf{"training": []}', "starts with a UTF-8 byte-order mark: save it as UTF-8 without BOM."),
        ('[{"image": "a.png"}]', "must hold an object with lists such as 'training', got list."),
        (None, "not found."),
    ],
)
def test_a_datalist_that_cannot_be_read_is_one_error(script, capsys, tmp_path, content, expected):
    datalist = tmp_path / "datalist.json"
    if isinstance(content, bytes):
        datalist.write_bytes(content)
    elif content is not None:
        datalist.write_text(content)
    code, lines, err = _run(script, capsys, "--task", "segmentation", datalist)
    assert code == 1 and not lines
    assert err == f"error: datalist {datalist} {expected}\n"


@pytest.mark.parametrize(
    "datalist, expected",
    [
        ({"training": []}, ["'training' is missing or empty (the datalist's lists: 'training' (0))"]),
        ({"train": [{"image": "a.png"}]}, ["'training' is missing or empty (the datalist's lists: 'train' (1))"]),
        ({"training": {"image": "a.png"}}, ["'training' must be a list of entries, got dict"]),
        ({"training": [{"image": "a.png", "label": "kappa"}], "testing": {}},
         ["'testing' must be a list of entries, got dict"]),
        ({"training": [{"image": "a.png", "label": "kappa"}], "testing": None},
         ["'testing' must be a list of entries, got NoneType"]),
        ({"training": ["a.png", {"label": "kappa"}]},
         ["training[0]: must be an object with an 'image' key, got 'a.png'",
          "training[1]: must be an object with an 'image' key, got {'label': 'kappa'}"]),
    ],
)  # fmt: skip
def test_sections_that_cannot_be_used(script, capsys, tmp_path, datalist, expected):
    _png(tmp_path / "a.png")
    code, lines, _ = _run(script, capsys, "--task", "classification", _write(tmp_path, datalist))
    assert code == 1 and _problems(lines) == expected


def test_an_empty_testing_list_is_left_out(script, capsys, tmp_path):
    _png(tmp_path / "a.png")
    datalist = _write(tmp_path, {"training": [{"image": "a.png", "label": "kappa"}], "testing": []})
    code, lines, _ = _run(script, capsys, "--task", "classification", datalist)
    assert code == 0 and [line.split()[0] for line in lines[2:-1]] == ["training", "validation"]
    code, lines, _ = _run(script, capsys, "--task", "classification", datalist, "--sections", "testing")
    assert code == 1
    assert _problems(lines) == ["'testing' is missing or empty (the datalist's lists: 'training' (1), 'testing' (0))"]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "one of the arguments --bundle --task is required"),
        (["--bundle", "ife_multitask", "--task", "classification"], "not allowed with argument"),
        (["--bundle", "xray"], "invalid choice: 'xray'"),
    ],
)
def test_usage_errors(script, capsys, tmp_path, args, message):
    with pytest.raises(SystemExit) as exit_info:
        script.main([*args, str(tmp_path / "datalist.json")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
