#!/usr/bin/env python
"""Write a synthetic data set and its datalist.json.

    python scripts/synthesize.py ife --output-dir DIR --count N --seed S [--size H W]
    python scripts/synthesize.py oct --output-dir DIR --count N --seed S [--size H W]

``ife``: immunofixation electrophoresis gels of the nine classes (default 400 x 600, the paper's class imbalance).
``oct``: retinal OCT B-scans with binary fluid masks (default 512 x 512).
The same seed gives the same bytes. The datalist has ``training``, ``validation`` and ``testing`` lists.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("ife", "oct"), help="which data set")
    parser.add_argument("--output-dir", required=True, help="destination folder (created)")
    parser.add_argument("--count", type=int, default=600, help="number of images (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size in pixels, rows first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if args.kind == "ife":
        from custom_components.data.synthetic.ife import synthesize_ife_dataset as synthesize
    else:  # imported on demand: each generator only loads what it needs
        from custom_components.data.synthetic.oct import synthesize_oct_dataset as synthesize
    kwargs = {"image_size": tuple(args.size)} if args.size else {}
    start = time.time()
    try:
        datalist = synthesize(args.output_dir, count=args.count, seed=args.seed, **kwargs)
    except ValueError as err:
        parser.error(str(err))
    print(f"Wrote {args.count} synthetic {args.kind.upper()} images in {time.time() - start:.1f} s; datalist: {datalist}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
