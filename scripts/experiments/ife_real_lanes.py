#!/usr/bin/env python
"""The IFE lane finder on real gel scans: lanes against hand marks, the albumin end against hand labels.

Real data: the six-lane IFE gels of the public MP-CADMS repository (``SC_dataset/{CP/Pictures, EP/Pictures,
EP1/IFE_images_crop}/*.png``, 271 scans of several systems: tight crops, frames, printed text, grey or coloured
stain, albumin at the top or the bottom). The images carry no licence, so nothing of them enters this repository:
the results hold numbers only, and the contact sheets that show the scans go to ``--figures-dir`` outside it.

Measured:

- on each hand-marked gel (``--marks``, ``{"gels": [{"image", "size", "lanes": [[x0, y0, x1, y1] x 6] (inclusive
  pixels), "albumin_end"}]}``): ``found`` (:func:`~custom_components.ife.lanes.find_lanes` raised no error),
  ``right`` (every found lane centre within a quarter of the marked lane pitch of the marked centre, in order) or
  ``wrong``; the gel rows' overlap with the marked lanes' rows is reported beside;
- on every gel with a confident albumin end (``--albumin``, CSV ``image, albumin_end, confident``): whether
  :func:`~custom_components.ife.lanes.detect_orientation` (on the lanes found) names the same end;
- on all gels: found or failed, and the failure reasons.

Writes ``ife_real_lanes.json`` and ``ife_real_lanes.md`` into ``--output-dir`` (default the IFE bundle's
``docs/results``) and
``ife_real_lanes_marked.png`` / ``ife_real_lanes_all_<k>.png`` (found lanes in red, marked lanes in green) into
``--figures-dir``.

Usage::

    python scripts/experiments/ife_real_lanes.py --data /path/to/MP-CADMS --figures-dir /tmp/lanes
    (marks and albumin ends default to bundles/ife_multitask/docs/real_gels/)
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

from custom_components.ife.lanes import LaneLayoutError, detect_orientation, find_lanes  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: the hand-marked facts committed beside the IFE docs (coordinates and labels only)
REAL_GELS = REPO / "bundles" / "ife_multitask" / "docs" / "real_gels"
FOLDERS = ("SC_dataset/CP/Pictures", "SC_dataset/EP/Pictures", "SC_dataset/EP1/IFE_images_crop")
#: a found lane centre is right when within this share of the marked lane pitch of the marked centre
CENTRE_TOLERANCE = 0.25
#: contact sheet tile (width, height) in pixels and tiles per row
TILE = (240, 150)
TILES_PER_ROW = 8


def load_gel(path: Path) -> np.ndarray:
    """A scan as a (3, H, W) float32 array, channel first as after MONAI's ``EnsureChannelFirstd``."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)


def natural_key(name: str) -> tuple:
    """Sort ``EP/Pictures/10.png`` after ``EP/Pictures/9.png``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def all_gels(data: Path) -> list[str]:
    """Every gel scan under ``data``'s folders, relative to ``data``."""
    names = [str(p.relative_to(data)) for folder in FOLDERS for p in (data / folder).glob("*.png")]
    return sorted(names, key=natural_key)


def judge(found_centres: list[float], marked: list[list[float]]) -> tuple[bool, float]:
    """Whether every found centre is within :data:`CENTRE_TOLERANCE` of the marked pitch of its marked centre
    (found lanes are in order by construction); and the largest miss as a share of the pitch."""
    marked_centres = np.array([(box[0] + box[2]) / 2 for box in marked])
    pitch = float(np.mean(np.diff(marked_centres)))
    miss = float(np.max(np.abs(np.asarray(found_centres) - marked_centres))) / pitch
    in_order = bool(np.all(np.diff(found_centres) > 0))
    return in_order and miss <= CENTRE_TOLERANCE, miss


def row_overlap(found_rows: tuple[int, int], marked: list[list[float]]) -> float:
    """Intersection over union of the found gel rows with the marked lanes' rows (their union)."""
    top, bottom = min(box[1] for box in marked), max(box[3] for box in marked)
    inter = max(0.0, min(found_rows[1], bottom) - max(found_rows[0], top) + 1)
    union = max(found_rows[1], bottom) - min(found_rows[0], top) + 1
    return inter / union if union > 0 else 0.0


def run_gel(data: Path, name: str) -> dict:
    """find_lanes and detect_orientation on one gel: the layout, or the failure's reason."""
    image = load_gel(data / name)
    row: dict = {"image": name, "size": [int(image.shape[2]), int(image.shape[1])]}
    start = time.perf_counter()
    try:
        layout = find_lanes(image)
        row["orientation"] = detect_orientation(image, layout)
    except LaneLayoutError as err:
        row["error"] = str(err)
        row["seconds"] = round(time.perf_counter() - start, 3)
        return row
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["columns"] = [list(c) for c in layout.columns]
    row["rows"] = list(layout.rows)
    row["confidence"] = round(float(layout.confidence), 3)
    return row


def reason_kind(message: str) -> str:
    """A failure message without its numbers, to count failures by kind."""
    return re.sub(r"[-+]?\d+(\.\d+)?", "#", message).split(":")[0].strip()


def draw_sheet(data: Path, rows: list[dict], marks: dict[str, dict], path: Path) -> None:
    """A contact sheet: each gel with the found lanes (red boxes, gel rows) and the marked lanes (green)."""
    count = len(rows)
    lines = math.ceil(count / TILES_PER_ROW)
    sheet = Image.new("RGB", (TILES_PER_ROW * TILE[0], lines * (TILE[1] + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, row in enumerate(rows):
        gel = Image.open(data / row["image"]).convert("RGB")
        scale = min((TILE[0] - 4) / gel.width, (TILE[1] - 4) / gel.height)
        gel = gel.resize((max(1, round(gel.width * scale)), max(1, round(gel.height * scale))))
        tile = ImageDraw.Draw(gel)
        for box in marks.get(row["image"], {}).get("lanes", []):
            tile.rectangle([v * scale for v in box], outline=(0, 170, 0))
        if "columns" in row:
            for left, right in row["columns"]:
                tile.rectangle([left * scale, row["rows"][0] * scale, (right + 1) * scale, (row["rows"][1] + 1) * scale],
                               outline=(230, 0, 0))  # fmt: skip
        x, y = (index % TILES_PER_ROW) * TILE[0], (index // TILES_PER_ROW) * (TILE[1] + 14)
        sheet.paste(gel, (x + 2, y + 2))
        verdict = row.get("verdict", "failed" if "error" in row else "")
        label = f"{row['image'].split('/')[1]}/{Path(row['image']).name} {verdict}"
        draw.text((x + 2, y + TILE[1]), label, fill=(200, 0, 0) if verdict in ("wrong", "failed") else (0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def read_albumin(path: Path) -> dict[str, str]:
    """Confident albumin ends: image -> ``"top"`` or ``"bottom"``."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {
            r["image"]: r["albumin_end"].strip().lower()
            for r in csv.DictReader(handle)
            if str(r.get("confident", "")).strip().lower() in ("1", "true", "yes", "y")
            and r["albumin_end"].strip().lower() in ("top", "bottom")
        }


def markdown(report: dict) -> str:
    marked, orient, every = report["marked"], report["orientation"], report["all"]
    lines = [
        "# IFE lane finder on real gels (MP-CADMS)",
        "",
        f"Machine: {report['machine']}; {report['date']}.",
        "",
        f"Data: {every['count']} real six-lane IFE scans of the public MP-CADMS repository ({', '.join(FOLDERS)}); "
        f"{marked['count']} of them with hand-marked lane boxes, {orient['count']} with a confident albumin end. "
        "The scans carry no licence: only numbers are kept here.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| marked gels: found | {marked['found']} / {marked['count']} |",
        f"| marked gels: right (every lane centre within {CENTRE_TOLERANCE} of the pitch, in order) "
        f"| {marked['right']} / {marked['count']} ({100 * marked['right_share']:.1f} %) |",
        f"| marked gels: wrong (found but a lane off) | {marked['wrong']} |",
        f"| marked gels: median gel-row overlap (IoU with the marked rows) | {marked['median_row_iou']} |",
        f"| albumin end right (confident labels, lanes found) | {orient['right']} / {orient['judged']} "
        f"({100 * orient['accuracy']:.1f} %; {orient['count'] - orient['judged']} not judged: lanes not found) |",
        f"| all gels: found | {every['found']} / {every['count']} |",
        "",
        "Failures on all gels, by reason:",
        "",
    ]
    lines += [f"- {count} x {reason}" for reason, count in every["failure_reasons"].items()] or ["- none"]
    lines += ["", "Marked gels:", "", "| image | size | verdict | largest miss (pitch) | row IoU | confidence |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for row in marked["gels"]:
        miss = f"{row['miss']:.2f}" if "miss" in row else "-"
        iou = f"{row['row_iou']:.2f}" if "row_iou" in row else "-"
        confidence = row.get("confidence", "-")
        lines.append(f"| {row['image']} | {row['size'][0]}x{row['size'][1]} | {row['verdict']} | {miss} | {iou} | "
                     f"{confidence} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a fetched copy of MP-CADMS (holding SC_dataset/)")
    parser.add_argument("--marks", type=Path, default=REAL_GELS / "mpcadms_lane_marks.json", help="hand-marked lanes")
    parser.add_argument("--albumin", type=Path, default=REAL_GELS / "mpcadms_albumin_end.csv", help="albumin ends")
    parser.add_argument("--output-dir", type=Path, default=REPO / "bundles" / "ife_multitask" / "docs" / "results",
                        help="JSON and markdown")  # fmt: skip
    parser.add_argument("--figures-dir", type=Path, required=True,
                        help="contact sheets (they show the unlicensed scans: keep them outside the repository)")
    args = parser.parse_args(argv)

    names = all_gels(args.data)
    marks = {}
    if args.marks.is_file():
        marks = {g["image"]: g for g in json.loads(args.marks.read_text())["gels"] if len(g.get("lanes", [])) == 6}
    albumin = read_albumin(args.albumin)
    results = {name: run_gel(args.data, name) for name in names}

    marked_rows = []
    for name in sorted(marks, key=natural_key):
        row = dict(results[name]) if name in results else run_gel(args.data, name)
        if "error" in row:
            row["verdict"] = "failed"
        else:
            right, miss = judge([(a + b) / 2 for a, b in row["columns"]], marks[name]["lanes"])  # both inclusive
            row.update(verdict="right" if right else "wrong", miss=round(miss, 3),
                       row_iou=round(row_overlap(tuple(row["rows"]), marks[name]["lanes"]), 3))  # fmt: skip
        results.setdefault(name, row)["verdict"] = row["verdict"]
        marked_rows.append(row)
    verdicts = collections.Counter(r["verdict"] for r in marked_rows)
    ious = [r["row_iou"] for r in marked_rows if "row_iou" in r]

    judged = [(n, end) for n, end in albumin.items() if n in results and "orientation" in results[n]]
    orientation_right = sum(results[n]["orientation"] == f"albumin_{end}" for n, end in judged)
    failures = collections.Counter(reason_kind(r["error"]) for r in results.values() if "error" in r)

    report = {
        "machine": bundle_runs.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "data": {"root": "MP-CADMS SC_dataset", "folders": list(FOLDERS), "count": len(names),
                 "marked": sorted(marks, key=natural_key), "albumin_labels_confident": len(albumin)},  # fmt: skip
        "marked": {
            "count": len(marked_rows),
            "found": verdicts["right"] + verdicts["wrong"],
            "right": verdicts["right"],
            "wrong": verdicts["wrong"],
            "failed": verdicts["failed"],
            "right_share": verdicts["right"] / len(marked_rows) if marked_rows else 0.0,
            "median_row_iou": round(float(np.median(ious)), 3) if ious else None,
            "gels": marked_rows,
        },
        "orientation": {
            "count": len(albumin),
            "judged": len(judged),
            "right": orientation_right,
            "accuracy": orientation_right / len(judged) if judged else 0.0,
            "wrong": sorted((n for n, end in judged if results[n]["orientation"] != f"albumin_{end}"), key=natural_key),
        },
        "all": {
            "count": len(names),
            "found": sum("error" not in r for r in results.values()),
            "failure_reasons": dict(failures.most_common()),
            "gels": [results[n] for n in names],
        },
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "ife_real_lanes.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.output_dir / "ife_real_lanes.md").write_text(markdown(report))
    if marked_rows:
        draw_sheet(args.data, marked_rows, marks, args.figures_dir / "ife_real_lanes_marked.png")
    every = [results[n] for n in names]
    per_sheet = 6 * TILES_PER_ROW
    for k in range(0, len(every), per_sheet):
        draw_sheet(args.data, every[k : k + per_sheet], marks, args.figures_dir / f"ife_real_lanes_all_{k // per_sheet}.png")
    print(markdown(report).split("\nMarked gels:")[0])
    return report


if __name__ == "__main__":
    main()
