#!/usr/bin/env python
"""Write a synthetic data set and its datalist.json.

    python scripts/synthesize.py ife --output-dir DIR --count N --seed S [--size H W] [--orientation O]
        [--style classic|plain|real|mixed] [--headers|--no-headers] [--frame|--no-frame] [--margin|--no-margin]
        [--uneven-lanes|--no-uneven-lanes] [--biclonal-fraction F] [--min-per-class K] [--difficulty D]
    python scripts/synthesize.py oct --output-dir DIR --count N --seed S [--size H W] [--difficulty D]
        [--typed-masks]

``ife``: immunofixation electrophoresis gels of the nine classes (default 400 x 600, the paper's class imbalance;
every class at least once from 9 gels on), with ``DIR/synthesis.json`` recording the parameters, class counts and
what each gel shows. Layout: ``--orientation albumin_bottom`` (default, as real scans) or ``albumin_top``;
``--style`` a named layout (default ``classic``: a label strip, nothing else; ``real``: header, frames, margins and
uneven lanes; ``plain``: none; ``mixed``: drawn per gel), each option switched on or off by its own flag on top of
the style. ``--biclonal-fraction F``: that share of the gels are biclonal (two monoclonal components, label
``biclonal``), listed in a ``biclonal`` section of the datalist, outside training/validation/testing.
``--min-per-class K``: every class at least K gels (taken from the commonest class), so that a small data set has
every class in its validation and test splits.
``oct``: retinal OCT B-scans with binary fluid masks (default 512 x 512). ``--typed-masks``: the masks hold the type
of fluid per pixel instead (RETOUCH's values: 0 background, 1 IRF, 2 SRF, 3 PED), drawn from every type alone and
together, pigment epithelial detachments included.
``--difficulty D`` (both, default 1): above 1 harder to read (IFE: fainter, thinner, more often faint bands, more
lane shift and sensor noise; OCT: fluid closer to the tissue's brightness, fewer and smaller cysts, stronger speckle).
The same seed gives the same bytes. The datalist has ``training``, ``validation`` and ``testing`` lists.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"count must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"biclonal fraction must be in [0, 1), got {value}")
    return value


_STYLE_OPTIONS = ("headers", "frame", "margin", "uneven_lanes")


def _ife_options(args: argparse.Namespace) -> dict:
    """The gel-only keyword arguments the user gave (none: the generator's defaults)."""
    kwargs = {}
    if args.orientation is not None:
        kwargs["orientation"] = args.orientation
    if args.biclonal_fraction is not None:
        kwargs["biclonal_fraction"] = args.biclonal_fraction
    if args.min_per_class is not None:
        kwargs["min_per_class"] = args.min_per_class
    if args.appearance is not None:
        kwargs["appearance"] = args.appearance
    overrides = {k: getattr(args, k) for k in _STYLE_OPTIONS if getattr(args, k) is not None}
    if overrides:
        if args.style == "mixed":
            raise ValueError("--style mixed draws every layout option per gel: do not combine it with option flags")
        from custom_components.ife.synthetic import resolve_style

        kwargs["style"] = {**resolve_style(args.style), **overrides}
    elif args.style is not None:
        kwargs["style"] = args.style
    return kwargs


def _synthesizer(kind: str):
    # imported on demand: each generator loads only what it needs, and one kind works while the other is absent
    if kind == "ife":
        from custom_components.ife.synthetic import synthesize_ife_dataset

        return synthesize_ife_dataset
    from custom_components.oct.synthetic import synthesize_oct_dataset

    return synthesize_oct_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("ife", "oct"), help="which data set")
    parser.add_argument("--output-dir", required=True, type=Path, help="destination folder (created)")
    parser.add_argument("--count", type=_positive_int, default=600, help="number of images (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size in pixels, rows first")
    parser.add_argument("--difficulty", type=float, help="> 0; 1 (default) the generator's look, higher harder")
    gels = parser.add_argument_group("ife only")
    gels.add_argument("--orientation", choices=("albumin_bottom", "albumin_top"), help="default albumin_bottom")
    gels.add_argument("--style", choices=("classic", "plain", "real", "mixed"), help="layout (default classic)")
    for option in _STYLE_OPTIONS:
        gels.add_argument(f"--{option.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None,
                          help=f"draw {option.replace('_', ' ')} (overrides the style)")  # fmt: skip
    gels.add_argument("--biclonal-fraction", type=_fraction, help="share of biclonal gels, default 0")
    gels.add_argument("--min-per-class", type=int, help="every class at least this many gels (default min(3, N // 9))")
    gels.add_argument("--appearance", choices=("classic", "published"),
                      help="the generator's classic look (default) or the look of published gels")  # fmt: skip
    scans = parser.add_argument_group("oct only")
    scans.add_argument("--typed-masks", action="store_true", default=None,
                       help="masks of fluid types (1 IRF, 2 SRF, 3 PED) instead of binary ones")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    gel_only = ("orientation", "style", *_STYLE_OPTIONS, "biclonal_fraction", "min_per_class", "appearance")
    ife_flags = [k for k in gel_only if getattr(args, k) is not None]
    if args.kind != "ife" and ife_flags:
        parser.error(f"--{ife_flags[0].replace('_', '-')} is for ife gels only")
    if args.kind != "oct" and args.typed_masks is not None:
        parser.error("--typed-masks is for oct scans only")
    synthesize = _synthesizer(args.kind)
    kwargs = {"image_size": tuple(args.size)} if args.size else {}
    if args.difficulty is not None:
        kwargs["difficulty"] = args.difficulty
    if args.kind == "ife":
        try:
            kwargs.update(_ife_options(args))
        except ValueError as err:
            parser.error(str(err))
    if args.typed_masks is not None:
        kwargs["typed_masks"] = args.typed_masks
    print(f"Writing {args.count} synthetic {args.kind.upper()} images (seed {args.seed}) to {args.output_dir} ...")
    start = time.perf_counter()
    try:
        datalist = Path(synthesize(args.output_dir, count=args.count, seed=args.seed, **kwargs))
    except ValueError as err:
        parser.error(str(err))
    seconds = time.perf_counter() - start
    sections = json.loads(datalist.read_text())
    split = ", ".join(f"{name} {len(entries)}" for name, entries in sections.items())
    print(f"Wrote {args.count} images in {seconds:.1f} s ({args.count / max(seconds, 1e-9):.1f} images/s).")
    for folder in sorted(p for p in datalist.parent.iterdir() if p.is_dir()):  # images/, and masks/ for oct
        print(f"{folder.name.capitalize() + ':':<9} {folder.resolve()} ({sum(1 for _ in folder.iterdir())} files)")
    print(f"Datalist: {datalist.resolve()} ({split})")
    summary = datalist.parent / "synthesis.json"
    if summary.is_file():
        print(f"Details:  {summary.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
