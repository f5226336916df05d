#!/usr/bin/env python
"""Write the measured tables of the bundles' READMEs from the results files the experiment scripts made.

A generated block in ``bundles/<bundle>/docs/README.md`` is everything between two marker lines::

    <!-- generated: lane_layout from results/ife_lane_layout_cpu.json -->
    ...                                  (written by this script: do not edit by hand)
    <!-- end generated -->

``lane_layout`` names a renderer below and the path is relative to the README's folder. A renderer is a small
function that takes the results file's JSON and returns markdown: a table or a short sentence. Where the
experiment script that wrote the file has its own markdown function, the renderer calls it (the README then shows
exactly what the script's ``.md`` shows), so there is one formatter per kind of result.

Usage::

    python scripts/docs_tables.py            # rewrite every generated block from its file
    python scripts/docs_tables.py --check    # exit 1 and name each block that differs from its file

Adding a renderer for a new results file (say ``results/x.json``, written by ``scripts/experiments/x.py``, whose
``markdown()`` makes its ``.md``)::

    @renderer
    def x(result: dict) -> str:
        return first_table(experiment("x").markdown(result))

then put ``<!-- generated: x from results/x.json -->`` and ``<!-- end generated -->`` in the README where the table
goes and run ``python scripts/docs_tables.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = re.compile(r"^<!-- generated: (?P<renderer>\w+) from (?P<source>\S+\.json) -->$")
END = "<!-- end generated -->"

RENDERERS: dict[str, Callable[[dict], str]] = {}


class DocsTablesError(ValueError):
    """A README's markers are malformed, or name a renderer or file that does not exist."""


def renderer(func: Callable[[dict], str]) -> Callable[[dict], str]:
    """Register ``func`` under its name, the name the README's marker uses."""
    RENDERERS[func.__name__] = func
    return func


def experiment(name: str):
    """An experiment script of ``scripts/experiments`` (or a script of ``scripts/``) as a module, for its formatters."""
    for folder in (REPO / "scripts", REPO / "scripts" / "experiments"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def first_table(markdown: str, heading: str | None = None) -> str:
    """The first markdown table in ``markdown`` (after the line ``heading``, when given)."""
    lines = markdown.splitlines()
    if heading is not None:
        if heading not in lines:
            raise DocsTablesError(f"no heading {heading!r} in the script's markdown")
        lines = lines[lines.index(heading) + 1 :]
    table: list[str] = []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if not table:
        raise DocsTablesError("no table in the script's markdown")
    return "\n".join(table)


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


# ---------------------------------------------------------------------------------------------------- renderers


@renderer
def paper_tables(result: dict) -> str:
    """Tables 1-2 of ``ife_paper_tables_*.json``, as ``ife_paper_tables.py`` writes them."""
    markdown = experiment("ife_paper_tables").markdown(result["summary"], result["meta"])
    return first_table(markdown, "## Tables 1-2: classification on the test split")


@renderer
def paper_fig3(result: dict) -> str:
    """Fig. 3 of ``ife_paper_tables_*.json`` in one sentence: the paper's maps against a fixed row, and the best map."""
    summary = result["summary"]
    paper = summary["multi-task, both (the paper)"]["attention"]
    fixed = paper["attention_severe"]["fixed_row_share"][0]
    best = max(
        (stats["peak_in_band_share"][0], setting, key.split("_")[-1])
        for setting, entry in summary.items()
        for key, stats in entry["attention"].items()
    )
    verdict = "no setting's map beats it" if best[0] <= fixed else "one setting's map beats it"
    return (
        f"Fig. 3: the paper's regularised maps peak within the band on "
        f"{_pct(paper['attention_severe']['peak_in_band_share'][0])} (severe) and "
        f"{_pct(paper['attention_mild']['peak_in_band_share'][0])} (mild) of the positive test gels, where a fixed "
        f"row reaches {_pct(fixed)}; {verdict} (the best: the {best[2]} map of {best[1]}, at {_pct(best[0])})."
    )


@renderer
def attention_settings(result: dict) -> str:
    """``ife_attention.json``: per setting, both branches' peak-in-band shares beside the fixed row, and the scores."""
    fmt = experiment("ife_attention")._fmt
    lines = [
        "| setting | seeds | severe: peak in band (%) | mild: peak in band (%) | a fixed row (%) | severe contrast, "
        f"band / none | saturated maps of {result['meta']['test_gels']} (severe, mild) | accuracy (%) | macro F1 (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, entry in result["summary"].items():
        severe, mild = entry["attention_severe"], entry["attention_mild"]
        lines.append(
            f"| {setting} | {len(entry['seeds'])} | {fmt(severe['peak_in_band_share'], True)} | "
            f"{fmt(mild['peak_in_band_share'], True)} | {fmt(severe['fixed_row_share'], True)} | "
            f"{severe['contrast_positive'][0]:.2f} / {severe['contrast_negative'][0]:.2f} | "
            f"{severe['saturated'][0]:.0f}, {mild['saturated'][0]:.0f} | {fmt(entry['accuracy'], True)} | "
            f"{fmt(entry['macro_f1'], True)} |"
        )
    return "\n".join(lines)


@renderer
def attention_report(result: dict) -> str:
    """An ``attention_report.json`` of ``scripts/attention_report.py`` (e.g. the demo's), one row per map."""
    names = experiment("attention_report").MAP_NAMES
    lines = [
        "| map | rows | gels with a band | peak in band | a fixed row | contrast, band / none | saturated maps |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, m in result["maps"].items():
        rows = ", ".join(str(r) for r in m["map_rows"])
        lines.append(
            f"| {names.get(key, key)} | {rows} | {m['positives']} | {m['peak_in_band']} "
            f"({_pct(m['peak_in_band_share'])}) | {_pct(m['fixed_row_share'])} | "
            f"{m['contrast_positive']:.2f} / {m['contrast_negative']:.2f} | {m['saturated']} of {m['gels']} |"
        )
    return "\n".join(lines)


@renderer
def lane_layout(result: dict) -> str:
    """``ife_lane_layout_*.json``, as ``ife_lane_layout.py`` writes it."""
    return "\n".join(experiment("ife_lane_layout")._table(result))


@renderer
def fast_settings(result: dict) -> str:
    """``fast_settings_*.json``: mean +- std over the seeds of each setting (the per-seed rows are in its ``.md``)."""
    script = experiment("fast_settings")
    kind = {bundle: kind for kind, bundle in script.BUNDLES.items()}[result["bundle"]]
    metrics = script.METRICS[kind]
    lines = [
        "| Run | " + " | ".join(label for _, label in metrics) + " | Training time |",
        "|---|" + "---|" * (len(metrics) + 1),
    ]
    for name, by_seed in result["runs"].items():
        runs = list(by_seed.values())
        on = ", ".join(k for k, v in runs[0]["settings"].items() if v) or "fp32, none on"
        cells = [
            f"{statistics.mean(r['metrics'][key] for r in runs):.3f} +- "
            f"{statistics.pstdev(r['metrics'][key] for r in runs):.3f}"
            for key, _ in metrics
        ]
        seconds = statistics.mean(r["train_s"] for r in runs)
        lines.append(f"| {name} ({on}) | {' | '.join(cells)} | {seconds:.0f} s |")
    return "\n".join(lines)


@renderer
def real_lanes(result: dict) -> str:
    """``ife_real_lanes.json``: the summary table of ``ife_real_lanes.py`` (the per-gel rows are in its ``.md``)."""
    return first_table(experiment("ife_real_lanes").markdown(result))


@renderer
def real_gels(result: dict) -> str:
    """``ife_real_gels.json``: what ``ife_real_gels.py`` writes, without its title (the README's section has one)."""
    text = experiment("ife_real_gels").markdown(result)
    return text.split("\n", 2)[2].strip()


@renderer
def synthetic_gap(result: dict) -> str:
    """``ife_synthetic_gap.json``: how well the real gels are told apart from each synthetic set, beside the
    real-vs-real floor."""
    meta = result["meta"]
    lines = ["| real gels told apart from | gels | ROC AUC | accuracy |", "|---|---|---|---|"]
    rows = [(f"synthetic, {name} look", f"{meta['gels']} + {entry['gels']}", entry)
            for name, entry in result["real_vs_synthetic"].items()]  # fmt: skip
    rows.append(("the other half of the real gels (the floor)", f"{meta['gels']}", result["real_vs_real"]))
    for what, gels, entry in rows:
        lines.append(f"| {what} | {gels} | {entry['auc']['mean']:.3f} ± {entry['auc']['std']:.3f} | "
                     f"{100 * entry['accuracy']['mean']:.1f} % |")  # fmt: skip
    lines += ["", f"{meta['folds']}-fold, seed {meta['seed']}; {meta['features']} features of `{meta['network']}` "
              f"({meta['classifier']}); {meta['machine']}; {meta['minutes']} min."]  # fmt: skip
    return "\n".join(lines)


@renderer
def strategy_speed(result: dict) -> str:
    """``strategy_speed_cpu.json`` of ``apps/monailabel/scripts/strategy_speed.py``: one ``/activelearning`` request's
    time per state of the score cache, per strategy."""
    strategies = result["strategies"]
    names = list(strategies)
    rows = [("cold (no cache: every image scored)", "cold_s"), ("warm (every score cached)", "warm_s"),
            ("after a restart (cache read from its file)", "restart_s"),
            ("after labelling the offered image", "after_label_s"),
            (f"after a new checkpoint ({result['count'] - 1} images scored again)", "new_model_s")]  # fmt: skip
    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |", "| --- |" + " --- |" * len(names)]
    for label, key in rows:
        cells = []
        for name in names:
            seconds = strategies[name][key]
            cell = f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2f} s"
            if key == "cold_s":
                cell += f" ({strategies[name]['cold_per_image_ms'] / 1000:.2f} s an image)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    height, width = result["image_hw"]
    lines += ["", f"{result['count']} images of {height} x {width} pixels per strategy; {result['cpus']} CPU cores, "
              f"{result['torch_threads']} torch thread; load average {result['load_average'][0]:.1f} from other jobs."]
    return "\n".join(lines)


@renderer
def active_learning(result: dict) -> str:
    """``active_learning_<bundle>[_<tag>].json`` of ``apps/monailabel/scripts/active_learning_simulation.py``: what its
    ``.md`` shows without its title, the curves' PNG named from the MONAI Label README's folder."""
    folder = REPO / "apps" / "monailabel" / "scripts"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    meta = result["meta"]
    png = f"results/active_learning_{meta['bundle']}{'_' + meta['tag'] if meta['tag'] else ''}.png"
    return importlib.import_module("active_learning_simulation").markdown(result, png).split("\n", 2)[2].strip()


@renderer
def fluid_types(result: dict) -> str:
    """``fluid_types.json`` of ``oct_fluid_types.py``: what its ``.md`` shows, without its title."""
    return experiment("oct_fluid_types").markdown(result).split("\n", 2)[2].strip()


@renderer
def real_vs_synthetic(result: dict) -> str:
    """``real_vs_synthetic.json`` of ``oct_real_vs_synthetic.py``: the real B-scan's layer levels and speckle beside
    the synthetic ones' (mean +- std), and how alike the two depth profiles are."""
    real, synthetic = result["real"], result["synthetic"]
    lines = [f"| measure | real B-scan | synthetic (mean ± std of {synthetic['count']}) |", "| --- | --- | --- |"]
    for name, value in real["relative_to_rpe"].items():
        entry = synthetic["relative_to_rpe"][name]
        lines.append(f"| {name}, relative to the RPE | {value:.2f} | {entry['mean']:.2f} ± {entry['std']:.2f} |")
    speckle = synthetic["speckle_contrast"]
    lines.append(f"| speckle contrast (std / mean, 5 x 5 px) | {real['speckle_contrast']:.2f} | "
                 f"{speckle['mean']:.2f} ± {speckle['std']:.2f} |")  # fmt: skip
    lines += ["", f"Correlation of the mean depth profiles (ILM to RPE and on into the choroid): "
              f"{result['profile_correlation']:.2f}. {real['columns_measured']} columns of the real B-scan measured; "
              f"synthetic seed {synthetic['seed']}, {synthetic['size'][0]} x {synthetic['size'][1]} px; "
              f"{result['machine']}."]  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Block:
    """One generated block: ``lines[start]`` is its opening marker, ``lines[end]`` its closing one (0-based)."""

    renderer: str
    source: str
    start: int
    end: int

    def name(self) -> str:
        return f"{self.renderer} from {self.source}"


def parse_blocks(text: str) -> list[Block]:
    """The generated blocks of a README, in order; malformed or unbalanced markers raise :class:`DocsTablesError`."""
    blocks, opened = [], None
    for number, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if stripped.startswith("<!-- generated"):
            match = START.match(stripped)
            if match is None:
                raise DocsTablesError(f"line {number + 1}: malformed marker {stripped!r}")
            if opened is not None:
                raise DocsTablesError(f"line {number + 1}: a block opens inside the block of line {opened[0] + 1}")
            opened = (number, match["renderer"], match["source"])
        elif stripped == END:
            if opened is None:
                raise DocsTablesError(f"line {number + 1}: {END} without an opening marker")
            blocks.append(Block(opened[1], opened[2], opened[0], number))
            opened = None
    if opened is not None:
        raise DocsTablesError(f"line {opened[0] + 1}: block {opened[1]} from {opened[2]} is never closed")
    return blocks


def render(block: Block, folder: Path) -> str:
    """The markdown a block should hold: its renderer applied to its results file (a path relative to ``folder``)."""
    if block.renderer not in RENDERERS:
        raise DocsTablesError(f"unknown renderer {block.renderer!r} (known: {', '.join(sorted(RENDERERS))})")
    path = folder / block.source
    if not path.is_file():
        raise DocsTablesError(f"{block.name()}: no file {path}")
    return RENDERERS[block.renderer](json.loads(path.read_text(encoding="utf-8"))).strip("\n")


def regenerate(text: str, folder: Path) -> tuple[str, list[Block]]:
    """``text`` with every block rewritten from its file, and the blocks whose text changed."""
    lines = text.split("\n")
    out, stale, done = [], [], 0
    for block in parse_blocks(text):
        body = ["", *render(block, folder).split("\n"), ""]
        if lines[block.start + 1 : block.end] != body:
            stale.append(block)
        out += lines[done : block.start + 1] + body
        done = block.end
    out += lines[done:]
    return "\n".join(out), stale


def readmes() -> list[Path]:
    return sorted(REPO.glob("bundles/*/docs/README.md")) + [REPO / "apps" / "monailabel" / "README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs from its file")
    parser.add_argument("readme", nargs="*", type=Path, help="default: every bundles/*/docs/README.md")
    args = parser.parse_args(argv)
    differing = 0
    for path in args.readme or readmes():
        text = path.read_text(encoding="utf-8")
        try:
            new, stale = regenerate(text, path.parent)
        except DocsTablesError as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
        shown = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
        for block in stale:
            verb = "differs from its file" if args.check else "rewritten"
            print(f"{shown}:{block.start + 1}: {block.name()} {verb}")
        differing += len(stale)
        if stale and not args.check:
            path.write_text(new, encoding="utf-8")
    if args.check and differing:
        print(f"{differing} generated block(s) differ: run python scripts/docs_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
