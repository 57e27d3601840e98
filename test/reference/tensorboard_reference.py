"""Reads TensorBoard event files with TensorBoard's own loader and writes their scalars as JSON.

Usage: tensorboard_reference.py --out DIR LOGDIR
Writes DIR/scalars.json: {run: {tag: [[step, value], ...]}} for every run (folder) under LOGDIR,
as TensorBoard's EventMultiplexer sees them (the same reader the TensorBoard UI uses).
"""
import argparse, json, os

from tensorboard.backend.event_processing import event_multiplexer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("logdir")
    args = ap.parse_args()
    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(args.logdir)
    mux.Reload()
    out = {}
    for run, tags in sorted(mux.Runs().items()):
        out[run] = {}
        for tag in sorted(tags.get("scalars", [])):
            out[run][tag] = [[e.step, e.value] for e in mux.Scalars(run, tag)]
    with open(os.path.join(args.out, "scalars.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
