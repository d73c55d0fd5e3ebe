//! `--cold_items`: which items are held out, what leaves the training parts, the renumbering,
//! the category-popularity order and the ranks it gives under both protocols.

mod common;

use sasrec_shared::cold::{category_popularity_order, ColdItems};
use sasrec_shared::eval::{EvalConfig, EvalSet};
use sasrec_shared::features::TokenIds;
use sasrec_shared::{Dataset, Part, Split};

use common::temp_file;

/// 10 items (raw ids 101..=110), 6 users with timestamps.
const DATA: &str = "\
1 101 1\n1 102 2\n1 103 3\n1 104 4\n1 105 5\n1 106 6\n\
2 107 1\n2 108 2\n2 109 3\n2 110 4\n\
3 101 1\n3 110 2\n3 102 3\n3 103 4\n3 104 5\n\
4 105 1\n4 106 2\n4 107 3\n\
5 108 1\n5 109 2\n5 101 3\n5 102 4\n5 103 5\n5 104 6\n5 105 7\n\
6 106 1\n6 107 2\n6 108 3\n6 109 4\n6 110 5\n";

fn read() -> Dataset {
    let (_dir, p) = temp_file("d.txt", DATA);
    Dataset::read(&p, None).unwrap()
}

/// The raw item ids of user `u`'s sequence.
fn raw(d: &Dataset, u: usize) -> Vec<String> {
    d.sequences[u]
        .iter()
        .map(|&i| d.items.raw_of(i).unwrap().to_string())
        .collect()
}

#[test]
fn cold_items_are_renumbered_last_and_leave_only_the_training_parts() {
    let before = read();
    let cold = ColdItems::new(0.3, 7).unwrap();
    let drawn = cold.draw(10);
    assert_eq!(drawn.iter().filter(|&&c| c).count(), 3, "round(0.3 · 10)");
    assert_eq!(drawn, cold.draw(10), "the draw is seeded");
    assert_ne!(
        drawn,
        ColdItems::new(0.3, 8).unwrap().draw(10),
        "and depends on the seed"
    );
    let cold_raw: Vec<String> = (1..=10u32)
        .filter(|&i| drawn[i as usize])
        .map(|i| before.items.raw_of(i).unwrap().to_string())
        .collect();

    let (after, report) = cold.apply(read(), 4).unwrap();
    assert_eq!(after.cold_items, 3);
    assert_eq!(report.items, 3);
    let split = Split::new(after.clone().into(), 4);
    assert_eq!(split.num_warm_items(), 7);
    // items 8..=10 are the cold ones, the warm keep their relative order
    let last: Vec<String> = (8..=10)
        .map(|i| after.items.raw_of(i).unwrap().into())
        .collect();
    assert_eq!(last, cold_raw);
    let warm: Vec<&str> = (1..=7).map(|i| after.items.raw_of(i).unwrap()).collect();
    let mut sorted = warm.clone();
    sorted.sort_by_key(|r| r.parse::<u32>().unwrap());
    assert_eq!(warm, sorted);

    let mut removed = 0;
    for u in 1..=6 {
        let (old, new) = (raw(&before, u), raw(&after, u));
        let is_cold = |r: &String| cold_raw.contains(r);
        assert!(
            split.train(u).iter().all(|&i| !split.is_cold(i)),
            "user {u}: {new:?}"
        );
        if split.has_holdout(u) {
            // training part: the old one without cold items; valid and test unchanged
            let n = old.len();
            let want: Vec<String> = old[..n - 2]
                .iter()
                .filter(|r| !is_cold(r))
                .chain(&old[n - 2..])
                .cloned()
                .collect();
            assert_eq!(new, want, "user {u}");
        } else {
            let want: Vec<String> = old.iter().filter(|r| !is_cold(r)).cloned().collect();
            assert_eq!(new, want, "user {u} (training-only)");
        }
        removed += old.len() - new.len();
        // the timestamps follow their items
        let ts = &after.timestamps.as_ref().unwrap()[u];
        let old_ts = &before.timestamps.as_ref().unwrap()[u];
        for (r, t) in new.iter().zip(ts) {
            let j = old.iter().position(|o| o == r).unwrap();
            assert_eq!(*t, old_ts[j], "user {u} item {r}");
        }
    }
    assert_eq!(report.interactions_removed, removed);
    assert!(removed > 0, "the draw removed nothing: {cold_raw:?}");
}

#[test]
fn a_user_left_without_a_holdout_loses_every_cold_interaction() {
    // user 1: 1 2 3 | 4 5 — cold {1, 2} leaves 1 training item + 2 held out = 3 < 4
    let (_dir, p) = temp_file(
        "d.txt",
        "1 1\n1 2\n1 3\n1 4\n1 5\n2 1\n2 2\n2 5\n2 4\n2 3\n",
    );
    let d = Dataset::read(&p, None).unwrap();
    let cold = (2..1000u64)
        .map(|seed| ColdItems::new(0.4, seed).unwrap())
        .find(|c| c.draw(5) == [false, true, true, false, false, false])
        .expect("a seed that draws items 1 and 2");
    let (after, report) = cold.apply(d, 4).unwrap();
    assert_eq!(report.users_without_holdout, 2);
    assert_eq!(report.interactions_removed, 4);
    let raws = |u| raw(&after, u);
    assert_eq!(raws(1), ["3", "4", "5"]);
    assert_eq!(raws(2), ["5", "4", "3"]);
    assert_eq!(after.items.raw_of(4), Some("1"));
}

#[test]
fn bad_fractions_are_refused() {
    for f in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
        let e = ColdItems::new(f, 1).unwrap_err().to_string();
        assert!(e.contains("--cold_items"), "{e}");
    }
    let (_dir, p) = temp_file("d.txt", "1 1\n1 1\n1 1\n");
    let d = Dataset::read(&p, None).unwrap();
    let e = ColdItems::new(0.5, 1)
        .unwrap()
        .apply(d, 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2"), "{e}");
}

#[test]
fn category_popularity_orders_by_the_mean_count_of_each_value() {
    // items 1..=5 warm, 6 cold; one multi column of width 2
    // counts: 1:10 2:2 3:4 4:0 5:6 (6 cold: 0)
    // values: 1 {a} 2 {a,b} 3 {b} 4 {} 5 {c} 6 {a}
    // means: a = (10+2)/2 = 6, b = (2+4)/2 = 3, c = 6
    // scores: 1:6 2:4.5 3:3 4:0 5:6 6:6
    let counts = [0, 10, 2, 4, 0, 6, 0];
    let ids = vec![0, 0, 1, 0, 1, 2, 2, 0, 0, 0, 3, 0, 1, 0];
    let tokens = TokenIds { width: 2, ids };
    let pos = category_popularity_order(&counts, &tokens, 5, 3);
    let mut top: Vec<u32> = vec![pos[1], pos[5], pos[6]];
    top.sort_unstable();
    assert_eq!(
        top,
        [0, 1, 2],
        "the three items of score 6 come first: {pos:?}"
    );
    assert_eq!(&pos[2..5], &[3, 4, 5], "{pos:?}");
    let other = category_popularity_order(&counts, &tokens, 5, 4);
    assert_eq!(&other[2..5], &[3, 4, 5]);
}

#[test]
fn ranks_by_order_count_the_items_placed_before_the_target() {
    let (after, _) = ColdItems::new(0.3, 7).unwrap().apply(read(), 4).unwrap();
    let split = Split::new(after.into(), 4);
    let cfg = EvalConfig {
        maxlen: 5,
        seed: 1,
        max_users: None,
        intervals: None,
    };
    let set = EvalSet::new(&split, Part::Test, cfg).unwrap();
    // order = item index: position[i] = i − 1
    let position: Vec<u32> = (0..=10u32).map(|i| i.saturating_sub(1)).collect();
    let (sampled, full) = set.ranks_by_order(&position);
    let cold = set.cold_targets().unwrap();
    assert_eq!(cold.len(), set.len());
    for (k, &u) in set.users.iter().enumerate() {
        let (t, prefix) = split.holdout(u as usize, Part::Test).unwrap();
        assert_eq!(cold[k], t > 7, "user {u}");
        let history = &split.all(u as usize)[..prefix];
        let want = (1..t).filter(|i| !history.contains(i)).count() as i64;
        assert_eq!(full[k], want, "user {u}: full rank");
        let want = set.candidates[k][1..].iter().filter(|&&c| c < t).count() as i64;
        assert_eq!(sampled[k], want, "user {u}: sampled rank");
    }
}
