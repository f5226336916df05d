#!/usr/bin/env python
"""Does the IFE attention find the band? Score an inference run's attention maps against the synthetic generator's
band rows.

Reads ``attention_profiles.jsonl`` from an IFE ``inference.json`` run and the ``synthesis.json`` of the synthetic
data set it ran on (the generator records every monoclonal band's row and half-width), and writes into
``--output-dir`` (default: the inference folder):

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
    parser.add_argument("--inference-dir", type=Path, required=True, help="output_dir of an IFE inference.json run")
    parser.add_argument("--synthesis", type=Path, required=True, help="synthesis.json of the synthetic data set")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: the inference folder")
    args = parser.parse_args()

    from custom_components.ife.attention import report_from_files
    from custom_components.core.atomic import write_json_atomic
    from custom_components.ife.figures import plot_attention_alignment

    output_dir = args.output_dir or args.inference_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    report, records = report_from_files(args.inference_dir / "attention_profiles.jsonl", args.synthesis)
    write_json_atomic(report, output_dir / "attention_report.json")
    figure = output_dir / "attention_report.png"
    plot_attention_alignment({MAP_NAMES.get(k, k): v for k, v in records.items()}, figure)

    print(f"{report['gels']} gels ({report['unmatched']} not in {args.synthesis.name}, left out)")
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
