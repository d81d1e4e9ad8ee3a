"""``python -m minivae.teaching.exercises make [OUT] | grade NOTEBOOK [--only NAME ...]``."""

from __future__ import annotations

import argparse
import sys

from . import GRADED, SOURCE, grade_file, make_notebooks


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minivae.teaching.exercises",
                                description="Make the exercise notebooks from the solution source, or grade one.")
    sub = p.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make", help="write source/aevb/aevb.ipynb (teacher) and release/aevb/aevb.ipynb (students)")
    mk.add_argument("out", nargs="?", default="notebooks/exercises",
                    help="course folder to write into (default: notebooks/exercises)")
    mk.add_argument("--source", default=str(SOURCE), help=f"the solution source (default: {SOURCE})")
    gr = sub.add_parser("grade", help="run every check on a notebook and print one line per function")
    gr.add_argument("notebook", help="a student's .ipynb (or the .py source)")
    gr.add_argument("--only", nargs="+", choices=GRADED, metavar="NAME", help="only these checks")
    args = p.parse_args(argv)
    if args.command == "make":
        for which, path in make_notebooks(args.out, args.source).items():
            print(f"{which:8s} {path}")
        return 0
    try:
        results = grade_file(args.notebook, args.only or GRADED)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
