"""Put several `experiments.compare` runs side by side: one table, one figure.

    python -m experiments.compare_runs runs/cifar10-alexnet runs/tin30-alexnet --out runs/cifar-vs-tin30

Each RUN_DIR is a finished compare run (config.json, results.json,
<model>/history.csv). Writes to --out: across.md, across.csv, across.json
(one row per model and dataset: test / validation / last train accuracy,
test loss, sizes, and each run's data source, classes, image size, preset,
device and backend) and across.png (per model: train and validation
accuracy and loss curves, one colour per dataset; below: the test accuracy
of every model, datasets side by side).
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.compare_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="compare run folders (two or more datasets, say)")
    p.add_argument("--out", required=True, help="folder for across.{md,csv,json,png}")
    p.add_argument("--title", default="", help="figure and table title")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasimpl import crossrun
    from kerasimpl.artifacts import save_figure, write_csv, write_json, write_text

    try:
        runs = crossrun.read_runs(args.runs)
    except crossrun.RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = crossrun.runs_table(runs)
    title = args.title or " vs ".join(r["dataset"] for r in runs)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "across.json"), rows)
    write_csv(os.path.join(args.out, "across.csv"), rows)
    write_text(os.path.join(args.out, "across.md"), crossrun.markdown(rows, title))
    save_figure(crossrun.runs_figure(runs, title), os.path.join(args.out, "across.png"))
    print(crossrun.markdown(rows, title))
    print(f"[compare_runs] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
