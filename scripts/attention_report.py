#!/usr/bin/env python
"""Does the IFE attention find the band? Score an inference run's attention maps against the band rows: those the
synthetic generator drew, or those marked by hand on real gels.

Reads ``attention_profiles.jsonl`` from one or more IFE ``inference.json`` runs (several: e.g. the held-out folds of
``scripts/cross_validate.py``, each gel answered by the model that did not train on it) and either the
``synthesis.json`` of the synthetic data set they ran on (the generator records every monoclonal band's row and
half-width) or hand marks of real gels (``--marks docs/real_gels/mpcadms_lane_marks.json --images-root``: each
gel's light-chain band row, :func:`custom_components.ife.attention.read_marked_bands`), and writes into
``--output-dir`` (default: the first inference folder):

- ``attention_report.json``: per attention map, the share of gels with a band whose attention peak falls within
  the band (tolerance: half a map row or the band's half-width, whichever is larger), the share the best fixed row
  would reach (the chance level of this data set), the median offset of the peak from the band, the contrast
  (max / mean) of the maps of gels with and without a band, and how many maps are saturated
  (:mod:`custom_components.ife.attention`);
- ``attention_report.png``: the paper's Fig. 3 made quantitative: per map, the mean profile of the gels with a band
  aligned on their band, and the profiles of the gels without one.

Usage::

    python scripts/attention_report.py --inference-dir outputs/demo/ife/inference \\
        --synthesis outputs/demo/ife/data/synthesis.json
    python scripts/attention_report.py --inference-dir CV/fold_*/out_of_fold \\
        --marks bundles/ife_multitask/docs/real_gels/mpcadms_lane_marks.json --images-root /data/mpcadms
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: readable names of the maps that ``inference.json`` records
MAP_NAMES = {
    "attention_severe": "severe (last stage)",
    "attention_mild": "mild (last stage)",
    "attention_shared": "shared (stage 3)",
    "attention": "9-class (last stage)",
}


def _share(value) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inference-dir", type=Path, nargs="+", required=True,
                        help="output_dir of one or more IFE inference.json runs")  # fmt: skip
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--synthesis", type=Path, help="synthesis.json of the synthetic data set")
    truth.add_argument("--marks", type=Path, help="hand marks of real gels (mpcadms_lane_marks.json)")
    parser.add_argument("--images-root", type=Path, help="the folder the marks' image paths are relative to")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: the first inference folder")
    args = parser.parse_args()
    if args.marks is not None and args.images_root is None:
        parser.error("--marks needs --images-root")

    from custom_components.core.atomic import write_json_atomic
    from custom_components.ife.attention import read_marked_bands, report_from_files
    from custom_components.ife.figures import plot_attention_alignment

    output_dir = args.output_dir or args.inference_dir[0]
    output_dir.mkdir(parents=True, exist_ok=True)
    bands = args.synthesis if args.marks is None else read_marked_bands(args.marks, args.images_root)
    report, records = report_from_files([d / "attention_profiles.jsonl" for d in args.inference_dir], bands)
    report["band_rows"] = str(args.synthesis or args.marks)
    report["inference_dirs"] = [str(d) for d in args.inference_dir]
    write_json_atomic(report, output_dir / "attention_report.json")
    figure = output_dir / "attention_report.png"
    plot_attention_alignment({MAP_NAMES.get(k, k): v for k, v in records.items()}, figure)

    print(f"{report['gels']} gels ({report['unmatched']} without band rows in {(args.synthesis or args.marks).name}, "
          "left out)")  # fmt: skip
    print(f"{'map':>22} | rows | with band | peak in band | fixed row | contrast band / none | saturated")
    for key, m in report["maps"].items():
        contrast = "-" if m["contrast_positive"] is None else f"{m['contrast_positive']:.2f}"
        contrast += " / " + ("-" if m["contrast_negative"] is None else f"{m['contrast_negative']:.2f}")
        rows = ",".join(str(r) for r in m["map_rows"])
        print(
            f"{MAP_NAMES.get(key, key):>22} | {rows:>4} | {m['positives']:>9} | {_share(m['peak_in_band_share']):>12} | "
            f"{_share(m['fixed_row_share']):>9} | {contrast:>20} | {m['saturated']:>9}"
        )
    print(f"wrote {output_dir / 'attention_report.json'} and {figure}")


if __name__ == "__main__":
    main()
