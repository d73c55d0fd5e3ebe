"""Mean ± std table over seeds (benches/mhc_compare.sh, benches/time_dropout.sh,
benches/gpu_suite.sh).

Reads every <model>-s<seed>.json summary in DIR (the stdout of sasrec-train) and prints, per
model, the validation NDCG@10 and the test metrics at the epoch chosen on validation NDCG@10
(sampled), mean ± sample std over seeds, under both protocols, and the mean training seconds
per epoch. A run cut
off before its end (no summary) is read from its metrics.jsonl up to its last evaluation and
its epochs are marked with "cut" and its best epoch chosen on validation NDCG@10 under
PROTOCOL (`sampled` unless given: what the runs select by).
Usage: python benches/seed_table.py DIR [sampled|full]
"""
import glob
import json
import os
import statistics as st
import sys


def ms(xs):
    return f"{st.mean(xs):.4f} ± {st.stdev(xs) if len(xs) > 1 else 0:.4f}"


def from_metrics(run_dir, protocol):
    """A summary-like dict from the evaluations of an unfinished run, or None."""
    try:
        evals = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    except OSError:
        return None
    if not evals:
        return None
    best = max(evals, key=lambda e: e["valid"][protocol]["ndcg"])
    last = evals[-1]
    return {"epochs": f"{last['epoch']} (cut)", "test_at_best": best["test"],
            "valid_at_best": best["valid"],
            "seconds_per_epoch": last["train_seconds"] / last["epoch"]}


def main(out, protocol="sampled"):
    rows = {}
    for f in sorted(glob.glob(os.path.join(out, "*-s*.json"))):
        try:
            s = json.load(open(f))
        except (OSError, ValueError):
            s = from_metrics(f[:-5], protocol)
            if s is None:
                print(f"skipping {f}: no summary and no evaluation", file=sys.stderr)
                continue
        model = os.path.basename(f)[:-5].rsplit("-s", 1)[0]
        rows.setdefault(model, []).append(s)
    print("| model | seeds | epochs | valid NDCG@10 (sampled) | valid NDCG@10 (full) "
          "| test NDCG@10 (sampled) | test HR@10 (sampled) "
          "| test NDCG@10 (full) | test HR@10 (full) | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for model, ss in rows.items():
        t = [s["test_at_best"] for s in ss]
        v = [s["valid_at_best"] for s in ss]
        print(f"| {model} | {len(ss)} | {ss[0]['epochs']} "
              f"| {ms([x['sampled']['ndcg'] for x in v])} | {ms([x['full']['ndcg'] for x in v])} "
              f"| {ms([x['sampled']['ndcg'] for x in t])} | {ms([x['sampled']['hr'] for x in t])} "
              f"| {ms([x['full']['ndcg'] for x in t])} | {ms([x['full']['hr'] for x in t])} "
              f"| {st.mean([s['seconds_per_epoch'] for s in ss]):.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
