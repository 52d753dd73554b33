"""`hybridlab compare STUDY_A STUDY_B [...]`: the Pareto fronts of several studies on one plot."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare", help="the Pareto fronts of several studies on one plot, with a small table",
        description="Write compare.png/.svg, compare.md/.csv and compare.html for two or more studies "
                    "that share their objectives. Studies holding the same architectures (a low-resolution "
                    "proxy and a full study, say) also get a fidelity agreement section (agreement.*): each "
                    "study against the high-fidelity one.")
    parser.add_argument("sources", nargs="+", metavar="STUDY",
                        help="study names under --results-dir, study folders or storage URLs (two or more)")
    parser.add_argument("--results-dir", default="results", help="where studies live (default ./results)")
    parser.add_argument("--out", default=None, help="output folder (default <results-dir>/compare-A-vs-B)")
    parser.add_argument("--reference-point", default=None, metavar="V1,V2,...",
                        help="hypervolume reference point, one value per objective in their order; it must be "
                             "worse than every point (negative values: --reference-point=-1,0)")
    parser.add_argument("--high", default=None, metavar="STUDY",
                        help="the high-fidelity study of the agreement section (default: the last one given; "
                             "the others are its cheaper proxies)")
    parser.add_argument("--match", default=None, choices=("arch_hash", "pattern", "label"),
                        help="how to pair architectures across studies (default: whichever pairs the most; "
                             "arch_hash differs when settings such as the image size differ)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from reports.comparison import compare

    compare(args.sources, results_dir=args.results_dir, out=args.out, echo=print,
            reference=parse_reference(args.reference_point), high=args.high, match=args.match)
    return 0


def parse_reference(text: str | None) -> list[float] | None:
    """`"70,0.5"` -> [70.0, 0.5]; a one-line ConfigError for anything else."""
    if text is None:
        return None
    from hybridlab.errors import ConfigError

    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"expected numbers separated by commas, got {text!r}", "--reference-point") from None
