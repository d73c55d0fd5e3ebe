"""How much of ML-1M's leave-one-out split depends on the order of ratings made in the same second.

Reads the users with real timestamps (`ml-1m/raw/ratings_u1-2999.dat.gz`, users 1..2999) and the
chronological order the shared files were built from (`ml-1m/ml-1m.chrono_all.txt.gz`), and
prints: the share of users whose test item (the last) has the same timestamp as the item before
it, and whose validation item (the second last) ties with a neighbour — for them the target
depends on how ties were ordered; the share of ratings inside a same-second group; and for how
many users the shared order equals a stable time sort of the raw file (ties in file order) or
ties ordered by MovieID. Used by docs/RESULTS.md, "Reproducing the literature".
Usage: python benches/ml1m_ties.py [DATA_DIR]   (default ../shared/data)
"""
import collections
import gzip
import json
import os
import sys



def read(data):
    """The raw (timestamp, MovieID) events of users 1..2999 and their MovieIDs in the shared
    chronological order, both by user."""
    raw = collections.defaultdict(list)
    for line in gzip.open(os.path.join(data, "ml-1m/raw/ratings_u1-2999.dat.gz"), "rt"):
        user, movie, _, t = line.strip().split("::")
        raw[int(user)].append((int(t), int(movie)))
    shared = collections.defaultdict(list)
    for line in gzip.open(os.path.join(data, "ml-1m/ml-1m.chrono_all.txt.gz"), "rt"):
        user, movie = map(int, line.split())
        if user in raw:
            shared[user].append(movie)
    return raw, shared


def main(data):
    raw, shared = read(data)
    test_tied = valid_tied = in_group = ratings = file_order = movie_order = 0
    for user, events in raw.items():
        ts = sorted(t for t, _ in events)
        test_tied += ts[-1] == ts[-2]
        valid_tied += ts[-2] in (ts[-3], ts[-1])
        counts = collections.Counter(ts)
        in_group += sum(c for c in counts.values() if c > 1)
        ratings += len(ts)
        file_order += [m for _, m in sorted(events, key=lambda e: e[0])] == shared[user]
        movie_order += [m for _, m in sorted(events)] == shared[user]
    n = len(raw)
    print(json.dumps({
        "users": n,
        "test_item_tied_with_previous": round(test_tied / n, 4),
        "validation_item_tied": round(valid_tied / n, 4),
        "ratings_in_same_second_groups": round(in_group / ratings, 4),
        "shared_order_equals_file_order_ties": file_order,
        "shared_order_equals_movie_id_ties": movie_order,
    }))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../shared/data"))
