//! Sampler invariants and evaluation sets on the synthetic fixture.

mod common;

use std::sync::Arc;

use sasrec_shared::eval::{EvalConfig, EvalSet, NUM_SAMPLED_NEGATIVES};
use sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN;
use sasrec_shared::synthetic::{self, SyntheticConfig};
use sasrec_shared::time::{Intervals, TimeUnit};
use sasrec_shared::{Batch, Dataset, Part, Sampler, SamplerConfig, Split};

use common::temp_file;

fn fixture(users: usize) -> Split {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("syn.txt");
    let cfg = SyntheticConfig {
        users,
        items: 300,
        min_len: 5,
        max_len: 40,
        ..Default::default()
    };
    synthetic::write(&cfg, &p).unwrap();
    Split::new(
        Arc::new(Dataset::read(&p, None).unwrap()),
        DEFAULT_MIN_HOLDOUT_LEN,
    )
}

fn cfg(workers: usize) -> SamplerConfig {
    SamplerConfig {
        batch_size: 32,
        maxlen: 20,
        seed: 7,
        num_workers: workers,
        rank: 0,
        world_size: 1,
        intervals: Some(Intervals {
            unit: TimeUnit::Personal,
            span: 64,
        }),
    }
}

/// `cfg` as rank `rank` of `world_size`.
fn shard(cfg: SamplerConfig, rank: usize, world_size: usize) -> SamplerConfig {
    SamplerConfig {
        rank,
        world_size,
        ..cfg
    }
}

/// The batches of `epoch` of a sampler over `split` with `cfg`.
fn batches(split: &Split, cfg: SamplerConfig, epoch: u64) -> Vec<Batch> {
    Sampler::new(split.clone(), cfg)
        .unwrap()
        .epoch(epoch)
        .collect()
}

#[test]
fn batches_satisfy_the_reference_invariants() {
    let split = fixture(100);
    let sampler = Sampler::new(split.clone(), cfg(2)).unwrap();
    let t = 20;
    let batches: Vec<_> = sampler.epoch(0).collect();
    assert_eq!(batches.len(), sampler.num_batches());
    assert_eq!(batches.len(), sampler.num_train_users().div_ceil(32));
    let mut seen_users = Vec::new();
    for b in &batches {
        for (row, &u) in b.users.iter().enumerate() {
            seen_users.push(u);
            let tr = split.train(u as usize);
            let seq = &b.seq[row * t..(row + 1) * t];
            let pos = &b.pos[row * t..(row + 1) * t];
            let neg = &b.neg[row * t..(row + 1) * t];
            // seq = last ≤ T items of tr[..m-1], pos = the same window shifted by one.
            let n = (tr.len() - 1).min(t);
            let want_seq: Vec<i64> = tr[tr.len() - 1 - n..tr.len() - 1]
                .iter()
                .map(|&x| x as i64)
                .collect();
            let want_pos: Vec<i64> = tr[tr.len() - n..].iter().map(|&x| x as i64).collect();
            assert_eq!(&seq[t - n..], want_seq.as_slice());
            assert_eq!(&pos[t - n..], want_pos.as_slice());
            assert!(seq[..t - n]
                .iter()
                .chain(&pos[..t - n])
                .chain(&neg[..t - n])
                .all(|&x| x == 0));
            for j in t - n..t {
                assert_eq!(seq[j] != 0, pos[j] != 0);
                if j + 1 < t {
                    assert_eq!(pos[j], seq[j + 1], "pos is seq shifted by one");
                }
                assert!(neg[j] >= 1 && neg[j] <= split.num_items() as i64);
                assert!(
                    !tr.contains(&(neg[j] as u32)),
                    "negative {} is a training item",
                    neg[j]
                );
            }
            let iv = b.intervals.as_ref().unwrap();
            let m = &iv[row * t * t..(row + 1) * t * t];
            assert!(m.iter().all(|&r| (0..=64).contains(&r)));
            for i in 0..t {
                assert_eq!(m[i * t + i], 0, "diagonal");
                for j in 0..t {
                    assert_eq!(m[i * t + j], m[j * t + i], "symmetric");
                }
            }
        }
    }
    // one epoch visits every trainable user exactly once
    seen_users.sort_unstable();
    let mut want: Vec<u32> = (1..=split.num_users() as u32)
        .filter(|&u| split.train(u as usize).len() >= 2)
        .collect();
    want.sort_unstable();
    assert_eq!(seen_users, want);
}

#[test]
fn same_seed_same_batches_for_any_worker_count() {
    let split = fixture(80);
    let a = batches(&split, cfg(0), 3);
    assert_eq!(a, batches(&split, cfg(1), 3));
    assert_eq!(a, batches(&split, cfg(3), 3));
    assert_ne!(a, batches(&split, cfg(2), 4), "another epoch");
    let other_seed = SamplerConfig { seed: 8, ..cfg(2) };
    assert_ne!(a, batches(&split, other_seed, 3), "another seed");
}

#[test]
fn rank_shards_partition_the_global_batch() {
    let split = fixture(90);
    let whole = batches(&split, cfg(0), 1);
    let shards: Vec<Vec<_>> = (0..3)
        .map(|rank| batches(&split, shard(cfg(1), rank, 3), 1))
        .collect();
    for (b, global) in whole.iter().enumerate() {
        let mut users = Vec::new();
        let mut seq = Vec::new();
        let mut neg = Vec::new();
        for s in &shards {
            users.extend_from_slice(&s[b].users);
            seq.extend_from_slice(&s[b].seq);
            neg.extend_from_slice(&s[b].neg);
        }
        assert_eq!(users, global.users);
        assert_eq!(seq, global.seq);
        assert_eq!(
            neg, global.neg,
            "each user's draws do not depend on the rank"
        );
    }
}

/// 33 users, global batch 32, 2 ranks: rank 0's slice of the last global batch is empty and
/// comes as one all-padding row, so both ranks take the same number of steps.
#[test]
fn an_empty_shard_is_one_padding_row() {
    let split = fixture(33);
    let r0 = batches(&split, shard(cfg(0), 0, 2), 0);
    let r1 = batches(&split, shard(cfg(0), 1, 2), 0);
    assert_eq!((r0.len(), r1.len()), (2, 2), "same number of steps");
    let last = &r0[1];
    assert!(last.is_padding() && !r1[1].is_padding());
    assert_eq!((last.rows(), r1[1].rows()), (1, 1));
    assert_eq!(last.seq, vec![0; 20]);
    assert_eq!(last.pos, vec![0; 20]);
    assert_eq!(last.neg, vec![0; 20]);
    assert_eq!(last.intervals.as_deref(), Some(&[0; 400][..]));
}

#[test]
fn sampler_rejects_bad_settings() {
    let split = fixture(10);
    let e = |c: SamplerConfig| Sampler::new(split.clone(), c).err().unwrap().to_string();
    assert_eq!(
        e(SamplerConfig {
            batch_size: 0,
            ..cfg(0)
        }),
        "--batch_size and --maxlen must be at least 1"
    );
    assert_eq!(
        e(shard(cfg(0), 2, 2)),
        "rank 2 is outside a world of size 2"
    );
    let (_dir, p) = temp_file("untimed.txt", "1 1\n1 2\n1 3\n");
    let untimed = Split::new(Arc::new(Dataset::read(&p, None).unwrap()), 4);
    let err = Sampler::new(untimed, cfg(0)).err().unwrap().to_string();
    assert!(
        err.contains("has no timestamps") && err.contains("--no_time"),
        "{err}"
    );
}

#[test]
fn eval_candidates_are_fixed_and_exclude_the_users_items() {
    let split = fixture(60);
    let ecfg = EvalConfig {
        maxlen: 20,
        seed: 11,
        max_users: None,
        intervals: None,
    };
    let valid = EvalSet::new(&split, Part::Valid, ecfg).unwrap();
    let again = EvalSet::new(&split, Part::Valid, ecfg).unwrap();
    assert_eq!(valid.candidates, again.candidates);
    let held: usize = (1..=60).filter(|&u| split.has_holdout(u)).count();
    assert_eq!(valid.len(), held);
    for (&u, c) in valid.users.iter().zip(&valid.candidates) {
        assert_eq!(c.len(), NUM_SAMPLED_NEGATIVES + 1);
        assert_eq!(c[0], split.holdout(u as usize, Part::Valid).unwrap().0);
        let all = split.all(u as usize);
        assert!(c[1..].iter().all(|x| !all.contains(x)));
    }
    let test = EvalSet::new(&split, Part::Test, ecfg).unwrap();
    let b = test.batch(0..4);
    for (row, &u) in b.users.iter().enumerate() {
        let all = split.all(u as usize);
        // test input ends with the validation item, target is the last item
        assert_eq!(b.seq[row * 20 + 19], all[all.len() - 2] as i64);
        assert_eq!(b.targets[row], all[all.len() - 1]);
        assert_eq!(b.exclude[row], &all[..all.len() - 1]);
        assert_eq!(b.candidates[row * 101], b.targets[row] as i64);
    }
    let sub = EvalSet::new(
        &split,
        Part::Valid,
        EvalConfig {
            max_users: Some(10),
            ..ecfg
        },
    )
    .unwrap();
    assert_eq!(sub.len(), 10);
    assert!(sub.users.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn synthetic_catalogues_that_do_not_divide_into_genres_work() {
    // 120 items in 16 genres: 7 per genre, the last genre 15 (regression: an empty last genre
    // used to index past the catalogue).
    let cfg = SyntheticConfig {
        users: 60,
        items: 120,
        ..Default::default()
    };
    let events = synthetic::generate(&cfg);
    assert!(events.iter().all(|e| (e.item - 7) / 10 < 120));
    let items: std::collections::BTreeSet<u64> = events.iter().map(|e| e.item).collect();
    assert!(items.len() > 60, "{} distinct items", items.len());
}

#[test]
fn synthetic_data_is_deterministic_and_sequential() {
    let cfg = SyntheticConfig {
        users: 30,
        ..Default::default()
    };
    let a = synthetic::generate(&cfg);
    assert_eq!(a, synthetic::generate(&cfg));
    assert_ne!(a, synthetic::generate(&SyntheticConfig { seed: 1, ..cfg }));
    // time order per user and no repeated items
    for w in a.windows(2) {
        if w[0].user == w[1].user {
            assert!(w[0].timestamp < w[1].timestamp);
        }
    }
    // the successor chain makes "next raw id = previous + 10" frequent
    let chained = a
        .windows(2)
        .filter(|w| w[0].user == w[1].user && w[1].item == w[0].item + 10)
        .count();
    assert!(
        chained as f64 > 0.3 * a.len() as f64,
        "{chained} of {}",
        a.len()
    );
}

/// FNV-1a of the generated lines: the bundled default data must not change when the generator
/// is refactored (every number in the README's demo depends on it).
fn lines_digest(events: &[synthetic::Event]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in events {
        for b in format!("{} {} {}\n", e.user, e.item, e.timestamp).bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[test]
fn synthetic_default_data_is_unchanged() {
    let events = synthetic::generate(&SyntheticConfig::default());
    assert_eq!(
        (events.len(), lines_digest(&events)),
        (115_743, 0x9354_f9ea_b8ba_47ea)
    );
}

/// Zipf popularity puts the catalogue's mass on the head: with s = 1.2 over one genre of 10k
/// items, P(offset ≥ 5,000) ≈ 2.6% per draw (3.5% of the events once repeats are redrawn; the
/// quadratic skew gives 1 − √½ ≈ 29%), and item 0 (P ≈ 0.22 per draw) reaches nearly every
/// user.
#[test]
fn synthetic_zipf_popularity_has_a_long_tail() {
    let cfg = SyntheticConfig {
        users: 500,
        items: 10_000,
        genres: 1,
        min_len: 20,
        max_len: 20,
        p_chain: 0.0,
        ..Default::default()
    };
    let tail = |events: &[synthetic::Event]| {
        let far = events.iter().filter(|e| (e.item - 7) / 10 >= 5_000).count();
        far as f64 / events.len() as f64
    };
    let zipf = synthetic::generate(&SyntheticConfig {
        zipf: Some(1.2),
        ..cfg
    });
    assert_eq!(zipf.len(), 500 * 20);
    assert!(tail(&zipf) < 0.06, "Zipf tail {}", tail(&zipf));
    let head = zipf.iter().filter(|e| e.item == 7).count();
    assert!(head >= 450, "item 0 reached {head} of 500 users");
    let quadratic = tail(&synthetic::generate(&cfg));
    assert!(
        (0.25..0.33).contains(&quadratic),
        "quadratic tail {quadratic}"
    );
}
