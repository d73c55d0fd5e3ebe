//! Batched evaluation under both protocols (no autograd, dropout off), in bounded blocks of
//! users × items and sharded over the ranks of a process group.
//!
//! A block of `users` rows is encoded once (`F[:, -1, :]`, (rows, C)); its scores against the
//! catalogue are computed `items` columns at a time, `s = F·E[lo..lo+n]ᵀ`, so no more than
//! rows × `items` scores exist at once, however large the catalogue (docs/MODELS.md §1.7).
//! The full-ranking rank of the true item t is counted block by block:
//!
//! `rank = Σ_blocks #{j : ¬(s_j < s_t)} − #{d ∈ D : ¬(s_d < s_t)}`,  `D = {0, t} ∪ history`
//!
//! (distinct), which equals counting the competitors `j ∉ D` directly: ties and NaN
//! competitors count against the true item, a NaN target ranks last. `s_t`, the 100 sampled
//! candidates' scores and `s_D` are gathered from their blocks in a first pass; when the
//! catalogue spans several blocks a second pass recomputes each block to count.
//!
//! The first pass also keeps each user's top-L list under full ranking (L the largest
//! `--metrics_k` cut-off): the same competitors as the rank (`D` without t hidden at −∞),
//! each block's best L merged with the running best, for coverage@k and the mean popularity
//! rank of the recommendations (docs/MODELS.md §1.7).

use std::ops::Range;

use sasrec_models::SeqRecModel;
use sasrec_shared::eval::{EvalBatch, EvalSet};
use sasrec_shared::metrics::{popularity_ranks, Accumulator, AtK, ListStats, Metrics};
use sasrec_shared::Split;
use tch::{Device, Kind, Tensor};

use crate::dist::ProcessGroup;
use crate::error::Result;

/// Metrics of one split part under both protocols.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartMetrics {
    /// True item against the 100 fixed sampled negatives.
    pub sampled: Metrics,
    /// True item against all items, the input history excluded.
    pub full: Metrics,
    /// `--metrics_k`: the metrics at each cut-off, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cutoffs: Vec<Cutoff>,
    /// `--cold_items`: the same metrics over the users whose target is a cold item and over
    /// the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdWarm>,
    /// `--cold_items` with item features: the category-popularity baseline's metrics over the
    /// same two groups (`sasrec_shared::cold::category_popularity_order`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_popularity: Option<ColdWarm>,
}

/// HR@k, NDCG@k and MRR@k under both protocols, and what the full-ranking top-k lists
/// recommend over all users (docs/MODELS.md §1.7).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cutoff {
    /// The cut-off k.
    pub k: usize,
    /// Sampled protocol.
    pub sampled: AtK,
    /// Full ranking.
    pub full: AtK,
    /// Coverage@k and mean popularity rank@k.
    #[serde(flatten)]
    pub lists: ListStats,
}

/// What an evaluation reports beyond the headline HR@10, NDCG@10 and MRR: the `--metrics_k`
/// cut-offs and the items' training-popularity ranks their lists are measured against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The cut-offs, ascending and distinct.
    pub cutoffs: Vec<usize>,
    /// [`popularity_ranks`] of the training interactions, per item index.
    pub popularity: Vec<u32>,
}

impl Report {
    /// The cut-offs `cutoffs` (sorted and deduplicated) against the training popularity of
    /// `split`.
    pub fn new(cutoffs: &[usize], split: &Split) -> Self {
        let mut cutoffs = cutoffs.to_vec();
        cutoffs.sort_unstable();
        cutoffs.dedup();
        Self {
            cutoffs,
            popularity: popularity_ranks(&split.train_item_counts()),
        }
    }

    /// Length of the top lists to keep: the largest cut-off (0 when there is none).
    pub fn list_len(&self) -> usize {
        self.cutoffs.last().copied().unwrap_or(0)
    }
}

/// Both protocols' metrics over one group of users.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Protocols {
    /// Sampled protocol.
    pub sampled: Metrics,
    /// Full ranking.
    pub full: Metrics,
}

/// Metrics of the users whose target is cold and of the others (docs/MODELS.md §6.4).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColdWarm {
    /// Targets the model never saw in training.
    pub cold: Protocols,
    /// Targets with training interactions.
    pub warm: Protocols,
}

/// Items per scoring block: at most `--eval_batch_size` × 65,536 scores exist at once
/// (128 MiB of f32 and 32 MiB of comparison flags at the default 512 users), whatever the
/// catalogue.
pub const ITEM_BLOCK: usize = 65_536;

/// Block sizes of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Users per block (`--eval_batch_size`).
    pub users: usize,
    /// Items per block ([`ITEM_BLOCK`]).
    pub items: usize,
}

impl BlockSizes {
    /// `users` users per block and [`ITEM_BLOCK`] items.
    pub fn users(users: usize) -> Self {
        Self {
            users: users.max(1),
            items: ITEM_BLOCK,
        }
    }
}

/// 0-based ranks of evaluated users, in [`EvalSet::users`] order, and their top lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ranks {
    /// Sampled protocol: the true item among its 100 fixed negatives.
    pub sampled: Vec<i64>,
    /// Full ranking: the true item among all items, the input history excluded.
    pub full: Vec<i64>,
    /// Each user's best `list_len` items under full ranking, best first (users × `list_len`,
    /// −1 past the end of a list shorter than that).
    pub lists: Vec<i64>,
    /// Entries per list.
    pub list_len: usize,
}

impl Ranks {
    /// HR@10, NDCG@10 and MRR of both protocols, summed in user order (so equal ranks give
    /// bit-identical metrics), the metrics at each cut-off of `report` and, under
    /// `--cold_items`, the cold and warm targets of `set` apart.
    pub fn metrics_of(&self, set: &EvalSet, report: &Report) -> PartMetrics {
        let all = self.protocols(|_| true);
        PartMetrics {
            sampled: all.sampled,
            full: all.full,
            cutoffs: self.cutoffs(report),
            cold_start: self.cold_warm(set),
            category_popularity: None,
        }
    }

    /// The metrics at each cut-off of `report`; the lists' statistics need `list_len` ≥ k.
    pub fn cutoffs(&self, report: &Report) -> Vec<Cutoff> {
        let as_usize = |r: &[i64]| r.iter().map(|&x| x as usize).collect::<Vec<_>>();
        let (sampled, full) = (as_usize(&self.sampled), as_usize(&self.full));
        report
            .cutoffs
            .iter()
            .map(|&k| Cutoff {
                k,
                sampled: AtK::of(&sampled, k),
                full: AtK::of(&full, k),
                lists: ListStats::of(&self.lists, self.list_len, k, &report.popularity),
            })
            .collect()
    }

    /// The metrics of the users whose target is cold and of the others; `None` when no item
    /// is held out.
    pub fn cold_warm(&self, set: &EvalSet) -> Option<ColdWarm> {
        let cold = set.cold_targets()?;
        Some(ColdWarm {
            cold: self.protocols(|k| cold[k]),
            warm: self.protocols(|k| !cold[k]),
        })
    }

    /// Both protocols over the users `k` (indices into the ranks) with `keep(k)`.
    fn protocols(&self, keep: impl Fn(usize) -> bool) -> Protocols {
        let protocol = |ranks: &[i64]| {
            let mut acc = Accumulator::new(10);
            let kept: Vec<usize> = (0..ranks.len())
                .filter(|&k| keep(k))
                .map(|k| ranks[k] as usize)
                .collect();
            acc.add(&kept);
            acc.finish()
        };
        Protocols {
            sampled: protocol(&self.sampled),
            full: protocol(&self.full),
        }
    }
}

/// 0-based ranks (rows) of `target` (rows, 1) among the columns of `others` (rows, m): the
/// count of columns not strictly below the target, so ties count against the true item and
/// NaN competitors count as higher; a NaN target ranks last. With `valid`, only the columns
/// where it is true count. The rule of [`sasrec_shared::metrics::rank_of`] on the scores'
/// device.
pub fn ranks(target: &Tensor, others: &Tensor, valid: Option<&Tensor>) -> Tensor {
    let higher = others.lt_tensor(target).logical_not();
    let higher = match valid {
        Some(v) => higher.logical_and(v),
        None => higher,
    };
    higher.sum_dim_intlist(1, false, Kind::Int64)
}

/// Every user of `set`, one process: metrics under both protocols, as `report` asks.
pub fn evaluate(
    model: &SeqRecModel,
    set: &EvalSet,
    sizes: BlockSizes,
    report: &Report,
) -> sasrec_models::Result<PartMetrics> {
    let ranks = rank_users(model, set, 0..set.len(), sizes, report.list_len())?;
    Ok(ranks.metrics_of(set, report))
}

/// Every user of `set` over the ranks of `pg`: rank r scores the r-th of `world` contiguous
/// shares of the users; the rows (sampled rank, full rank, top list) are summed into one
/// (users, 2 + L) matrix on every rank (each row written by exactly one rank, so the integer
/// sum is exact) and the metrics equal a single process's.
pub fn evaluate_sharded(
    model: &SeqRecModel,
    set: &EvalSet,
    sizes: BlockSizes,
    report: &Report,
    pg: &ProcessGroup,
) -> Result<PartMetrics> {
    let (rank, world, n) = (pg.rank(), pg.world_size(), set.len());
    let share = shard(n, rank, world);
    let len = report.list_len();
    let mine = rank_users(model, set, share.clone(), sizes, len)?;
    let rows = share.len() as i64;
    let part = Tensor::cat(
        &[
            Tensor::from_slice(&mine.sampled).view([rows, 1]),
            Tensor::from_slice(&mine.full).view([rows, 1]),
            Tensor::from_slice(&mine.lists).view([rows, len as i64]),
        ],
        1,
    );
    let all = Tensor::zeros([n as i64, 2 + len as i64], (Kind::Int64, Device::Cpu));
    all.narrow(0, share.start as i64, rows).copy_(&part);
    let mut all = all.to_device(model.device());
    pg.all_reduce_sum(&mut all)?;
    let all = all.to_device(Device::Cpu);
    let columns =
        |lo: i64, width: i64| Vec::<i64>::try_from(all.narrow(1, lo, width).reshape([-1]));
    Ok(Ranks {
        sampled: columns(0, 1)?,
        full: columns(1, 1)?,
        lists: columns(2, len as i64)?,
        list_len: len,
    }
    .metrics_of(set, report))
}

/// The `rank`-th of `world` contiguous, balanced shares of `0..n`.
pub fn shard(n: usize, rank: usize, world: usize) -> Range<usize> {
    (n * rank / world)..(n * (rank + 1) / world)
}

/// Ranks and top-`list_len` lists of the users `range` (indices into [`EvalSet::users`]),
/// `sizes.users` at a time.
pub fn rank_users(
    model: &SeqRecModel,
    set: &EvalSet,
    range: Range<usize>,
    sizes: BlockSizes,
    list_len: usize,
) -> sasrec_models::Result<Ranks> {
    let mut out = Ranks {
        list_len,
        ..Ranks::default()
    };
    let mut start = range.start;
    while start < range.end {
        let end = (start + sizes.users.max(1)).min(range.end);
        let batch = set.batch(start..end);
        let (sampled, full, lists) = tch::no_grad(|| rank_batch(model, &batch, sizes, list_len))?;
        out.sampled.extend(Vec::<i64>::try_from(sampled)?);
        out.full.extend(Vec::<i64>::try_from(full)?);
        out.lists.extend(Vec::<i64>::try_from(lists.reshape([-1]))?);
        start = end;
    }
    Ok(out)
}

/// Sampled and full-ranking ranks (rows) and top-`list_len` lists (rows, `list_len`) of one
/// batch of users (module docs).
fn rank_batch(
    model: &SeqRecModel,
    b: &EvalBatch,
    sizes: BlockSizes,
    list_len: usize,
) -> sasrec_models::Result<(Tensor, Tensor, Tensor)> {
    let rows = b.users.len() as i64;
    let t = model.config().maxlen as i64;
    let device = model.device();
    let seq = Tensor::from_slice(&b.seq).view([rows, t]);
    let tm = b
        .intervals
        .as_ref()
        .map(|iv| Tensor::from_slice(iv).view([rows, t, t]));
    let h = model.last_hidden(&seq, tm.as_ref())?; // (rows, C)
    let table = model.item_vectors(); // (I+1, C), composed when the model has item features
    let block = sizes.items.max(1) as i64;
    let columns = table.size()[0];
    let score_block = |lo: i64| {
        let s = h
            .matmul(&table.narrow(0, lo, block.min(columns - lo)).tr())
            .to_kind(Kind::Float);
        if lo == 0 {
            let _ = s.narrow(1, 0, 1).fill_(f64::NEG_INFINITY); // padding never competes
        }
        s
    };
    let n_cand = (b.candidates.len() as i64) / rows.max(1);
    let cand = Tensor::from_slice(&b.candidates)
        .view([rows, n_cand])
        .to_device(device);
    let removed = removed_columns(&b.targets, &b.exclude, device);
    let blocks = Blocks {
        score: &score_block,
        columns,
        width: block,
    };
    Ok(rank_blocks(&blocks, &cand, &removed, list_len as i64))
}

/// A score matrix produced one block of `width` columns at a time: `score(lo)` is (rows, n),
/// the columns `lo..lo + n` of `columns`.
struct Blocks<'a> {
    score: &'a dyn Fn(i64) -> Tensor,
    columns: i64,
    width: i64,
}

/// Sampled and full-ranking ranks and the top-`list_len` lists from the scores of `blocks`:
/// `cand` (rows, 1 + negatives) holds the true item first, `removed` the padded `D` of every
/// row ([`removed_columns`]).
fn rank_blocks(
    blocks: &Blocks,
    cand: &Tensor,
    removed: &(Tensor, Tensor),
    list_len: i64,
) -> (Tensor, Tensor, Tensor) {
    let (removed, removed_valid) = removed;
    let (rows, n_cand) = (cand.size()[0], cand.size()[1]);
    let device = cand.device();
    let (columns, block) = (blocks.columns, blocks.width);
    // D without the true item: the columns a top list never holds.
    let target_col = cand.narrow(1, 0, 1);
    let hidden = removed.where_self(
        &removed_valid.logical_and(&removed.not_equal_tensor(&target_col)),
        &Tensor::from(-1i64).to_device(device),
    );
    // Pass 1: the scores of the candidates (true item first) and of D, from their blocks,
    // and the running top lists.
    let mut cand_s = Tensor::zeros([rows, n_cand], (Kind::Float, device));
    let mut removed_s = Tensor::zeros(removed.size(), (Kind::Float, device));
    let mut only_block = None;
    let mut best = None;
    for lo in (0..columns).step_by(block as usize) {
        let s = (blocks.score)(lo);
        cand_s = gather_in_block(&s, lo, cand, &cand_s);
        removed_s = gather_in_block(&s, lo, removed, &removed_s);
        if list_len > 0 {
            best = Some(top_in_block(&s, lo, &hidden, best.take(), list_len));
        }
        if columns <= block {
            only_block = Some(s);
        }
    }
    let lists = finish_lists(best, rows, list_len, device);
    let target = cand_s.narrow(1, 0, 1);
    let sampled = ranks(&target, &cand_s.narrow(1, 1, n_cand - 1), None);

    // Pass 2: count every column not below the target, then take D back out.
    let mut not_below = Tensor::zeros([rows], (Kind::Int64, device));
    match only_block {
        Some(s) => not_below += ranks(&target, &s, None),
        None => {
            for lo in (0..columns).step_by(block as usize) {
                not_below += ranks(&target, &(blocks.score)(lo), None);
            }
        }
    }
    let full = not_below - ranks(&target, &removed_s, Some(removed_valid));
    (sampled, full, lists)
}

/// The running top `len` (scores, global columns) after the block `s` (columns `lo..lo + n`):
/// the block's columns listed in `hidden` (rows, w; −1 = none) set to −∞, its best `len`
/// merged with `best`.
fn top_in_block(
    s: &Tensor,
    lo: i64,
    hidden: &Tensor,
    best: Option<(Tensor, Tensor)>,
    len: i64,
) -> (Tensor, Tensor) {
    let (rows, n) = (s.size()[0], s.size()[1]);
    let local = hidden - lo;
    let inside = local.ge(0).logical_and(&local.lt(n));
    // Columns outside the block all land in one spare column n, dropped after the scatter.
    let slot = local.where_self(&inside, &Tensor::from(n).to_device(s.device()));
    let mask = Tensor::zeros([rows, n + 1], (Kind::Bool, s.device())).scatter_value(1, &slot, 1);
    let masked = s.masked_fill(&mask.narrow(1, 0, n), f64::NEG_INFINITY);
    let (values, cols) = masked.topk(len.min(n), 1, true, true);
    let cols = cols + lo;
    let Some((best_v, best_c)) = best else {
        return (values, cols);
    };
    let values = Tensor::cat(&[best_v, values], 1);
    let cols = Tensor::cat(&[best_c, cols], 1);
    let (top, at) = values.topk(len.min(values.size()[1]), 1, true, true);
    (top, cols.gather(1, &at, false))
}

/// The lists (rows, `len`) of the running top: hidden or padding columns (scored −∞) and
/// the slots past a catalogue shorter than `len` are −1.
fn finish_lists(best: Option<(Tensor, Tensor)>, rows: i64, len: i64, device: Device) -> Tensor {
    let out = Tensor::full([rows, len], -1i64, (Kind::Int64, device));
    if let Some((values, cols)) = best {
        let listed = cols.masked_fill(&values.eq(f64::NEG_INFINITY), -1);
        out.narrow(1, 0, listed.size()[1]).copy_(&listed);
    }
    out
}

/// `D` of every row as (rows, width) global columns, padded with −1, and its validity mask:
/// column 0, the true item and the input history, each once.
fn removed_columns(targets: &[u32], exclude: &[&[u32]], device: Device) -> (Tensor, Tensor) {
    let sets: Vec<Vec<i64>> = targets
        .iter()
        .zip(exclude)
        .map(|(&t, history)| {
            let mut d: Vec<i64> = [0, t]
                .into_iter()
                .chain(history.iter().copied())
                .map(i64::from)
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect();
    let width = sets.iter().map(Vec::len).max().unwrap_or(0);
    let mut flat = vec![-1i64; sets.len() * width];
    for (row, d) in sets.iter().enumerate() {
        flat[row * width..row * width + d.len()].copy_from_slice(d);
    }
    let cols = Tensor::from_slice(&flat)
        .view([sets.len() as i64, width as i64])
        .to_device(device);
    let valid = cols.ge(0);
    (cols, valid)
}

/// `acc` with the entries whose global column `cols` lies in the block `s` (columns
/// `lo..lo + n`) replaced by their scores.
fn gather_in_block(s: &Tensor, lo: i64, cols: &Tensor, acc: &Tensor) -> Tensor {
    let n = s.size()[1];
    let local = cols - lo;
    let inside = local.ge(0).logical_and(&local.lt(n));
    let picked = s.gather(1, &local.clamp(0, n - 1), false);
    picked.where_self(&inside, acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sasrec_shared::metrics::{full_ranks, sampled_ranks};

    /// The device-side ranks equal the reference host implementation, ties and NaN included.
    #[test]
    fn tensor_ranks_equal_the_host_ranks() {
        let nan = f32::NAN;
        let scores: Vec<f32> = vec![
            0.0, 1.0, 2.0, 2.0, 0.5, 3.0, -1.0, 2.0, // target 0.0 below everything but col 0
            9.0, nan, 0.1, 0.2, 0.3, 0.1, 0.0, 0.4, // NaN competitor counts as higher
            nan, 0.3, 0.2, 0.2, 0.1, 0.5, 0.6, 0.7, // NaN target ranks last
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, // all tie
        ];
        let t = Tensor::from_slice(&scores).view([4, 8]);
        let got: Vec<i64> =
            Vec::try_from(ranks(&t.narrow(1, 0, 1), &t.narrow(1, 1, 7), None)).unwrap();
        let want = sampled_ranks(&scores, 8);
        assert_eq!(got.iter().map(|&x| x as usize).collect::<Vec<_>>(), want);
        assert_eq!(want, [6, 1, 7, 7]);
    }

    /// Block-wise full ranking equals the host reference for every block size, ties, NaN,
    /// a repeated history item and a scored padding column included; the sampled ranks too.
    #[test]
    fn ranks_by_blocks_equal_the_host_full_ranking() {
        let nan = f32::NAN;
        let scores: Vec<f32> = vec![
            0.0, 1.0, 2.0, 2.0, 0.5, 3.0, -1.0, 2.0, // target 2 ties with 3 and 7; 5 excluded
            9.0, nan, 0.1, 0.2, 0.3, 0.1, 0.0, 0.4, // NaN competitor counts as higher
            0.0, 0.3, nan, 0.2, 0.1, 0.5, 0.6, 0.7, // NaN target ranks last
            5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, // all tie; column 0 never competes
        ];
        let targets = [2u32, 4, 2, 1];
        let ex: Vec<Vec<u32>> = vec![vec![5, 6, 5], vec![2], vec![1, 2], vec![]];
        let exclude: Vec<&[u32]> = ex.iter().map(|v| v.as_slice()).collect();
        let want = full_ranks(&scores, &targets, &exclude);
        assert_eq!(want, [2, 2, 5, 6]);
        let all = Tensor::from_slice(&scores).view([4, 8]);
        // Candidates: the target, then columns 1..=3.
        let cand: Vec<i64> = targets.iter().flat_map(|&t| [t as i64, 1, 3, 7]).collect();
        let cand = Tensor::from_slice(&cand).view([4, 4]);
        let cand_scores: Vec<f32> = Vec::try_from(all.gather(1, &cand, false).view([-1])).unwrap();
        let want_sampled = sampled_ranks(&cand_scores, 4);
        let removed = removed_columns(&targets, &exclude, Device::Cpu);
        for block in [1, 2, 3, 5, 8, 100] {
            let score_block = |lo: i64| all.narrow(1, lo, block.min(8 - lo));
            let blocks = Blocks {
                score: &score_block,
                columns: 8,
                width: block,
            };
            let (sampled, full, _) = rank_blocks(&blocks, &cand, &removed, 0);
            let as_usize = |t: Tensor| {
                Vec::<i64>::try_from(t)
                    .unwrap()
                    .into_iter()
                    .map(|r| r as usize)
            };
            assert_eq!(as_usize(full).collect::<Vec<_>>(), want, "block {block}");
            assert_eq!(
                as_usize(sampled).collect::<Vec<_>>(),
                want_sampled,
                "block {block}"
            );
        }
    }

    /// The host reference of the top lists: per row of `scores` (rows × width), the columns
    /// other than padding and the history (the true item stays), by descending score, the
    /// first `len`, padded with −1.
    fn host_lists(scores: &[f32], targets: &[u32], exclude: &[&[u32]], len: usize) -> Vec<i64> {
        let width = scores.len() / targets.len();
        let mut out = Vec::new();
        for (row, (&t, ex)) in scores.chunks_exact(width).zip(targets.iter().zip(exclude)) {
            let mut cols: Vec<usize> = (1..width)
                .filter(|&i| i == t as usize || !ex.contains(&(i as u32)))
                .collect();
            cols.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            cols.resize(len.max(cols.len()), usize::MAX);
            out.extend(
                cols[..len]
                    .iter()
                    .map(|&c| if c == usize::MAX { -1 } else { c as i64 }),
            );
        }
        out
    }

    /// Top lists kept block by block equal the host's: the history hidden, the true item
    /// listed even when the history holds it, padding never listed, lists longer than the
    /// competitors padded with −1.
    #[test]
    fn top_lists_by_blocks_hide_the_history_but_not_the_target() {
        let scores: Vec<f32> = vec![
            9.0, 0.1, 0.8, 0.3, 0.9, 0.5, 0.7, 0.2, // target 3; 4 and 6 in the history
            9.0, 0.6, 0.1, 0.4, 0.3, 0.8, 0.2, 0.7, // target 5, which the history holds too
        ];
        let targets = [3u32, 5];
        let ex: Vec<Vec<u32>> = vec![vec![4, 6], vec![5, 1, 7, 7]];
        let exclude: Vec<&[u32]> = ex.iter().map(|v| v.as_slice()).collect();
        let all = Tensor::from_slice(&scores).view([2, 8]);
        let cand = Tensor::from_slice(&[3i64, 1, 5, 1]).view([2, 2]);
        let removed = removed_columns(&targets, &exclude, Device::Cpu);
        for len in [1, 3, 7] {
            let want = host_lists(&scores, &targets, &exclude, len);
            for block in [1, 2, 3, 8, 100] {
                let score_block = |lo: i64| all.narrow(1, lo, block.min(8 - lo));
                let blocks = Blocks {
                    score: &score_block,
                    columns: 8,
                    width: block,
                };
                let (_, _, lists) = rank_blocks(&blocks, &cand, &removed, len as i64);
                let got = Vec::<i64>::try_from(lists.reshape([-1])).unwrap();
                assert_eq!(got, want, "len {len}, block {block}");
            }
        }
        assert_eq!(
            host_lists(&scores, &targets, &exclude, 7),
            [2, 5, 3, 7, 1, -1, -1, 5, 3, 4, 6, 2, -1, -1]
        );
    }

    /// On a real model, ranks and top lists from small user and item blocks (several blocks,
    /// ragged last ones, the two-pass path) equal those computed from the one full score
    /// matrix of `score_all` with the host reference, for both protocols.
    #[test]
    fn block_wise_ranks_equal_the_full_score_matrix() {
        use sasrec_shared::config::{Backbone, ModelConfig, TimeDropout};
        use sasrec_shared::eval::EvalConfig;
        use sasrec_shared::Part;

        let (_dir, split) = crate::test_support::synthetic_split(90, 300, 40);
        let maxlen = 12;
        let ecfg = EvalConfig {
            maxlen,
            seed: 3,
            max_users: None,
            intervals: None,
        };
        let set = EvalSet::new(&split, Part::Test, ecfg).unwrap();
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig {
            backbone: Backbone::Sasrec,
            num_items: split.num_items(),
            maxlen,
            hidden_units: 16,
            num_blocks: 2,
            num_heads: 2,
            dropout_rate: 0.2,
            norm_first: false,
            block_wiring: None,
            init: Default::default(),
            padding: Default::default(),
            time_span: 0,
            mhc: None,
            time_dropout: TimeDropout::Table,
            item_features: None,
        };
        let model = SeqRecModel::new(&vs.root(), &cfg).unwrap();

        let b = set.batch(0..set.len());
        let rows = set.len() as i64;
        let seq = Tensor::from_slice(&b.seq).view([rows, maxlen as i64]);
        let scores = tch::no_grad(|| model.score_all(&seq, None)).unwrap();
        let flat: Vec<f32> = Vec::try_from(scores.view([-1])).unwrap();
        let n_cand = set.num_candidates() as i64;
        let cand = Tensor::from_slice(&b.candidates).view([rows, n_cand]);
        let cand_scores: Vec<f32> =
            Vec::try_from(scores.gather(1, &cand, false).view([-1])).unwrap();
        let want = Ranks {
            sampled: sampled_ranks(&cand_scores, n_cand as usize)
                .into_iter()
                .map(|r| r as i64)
                .collect(),
            full: full_ranks(&flat, &b.targets, &b.exclude)
                .into_iter()
                .map(|r| r as i64)
                .collect(),
            lists: host_lists(&flat, &b.targets, &b.exclude, 5),
            list_len: 5,
        };
        assert!(
            want.full.iter().any(|&r| r > 0),
            "ranks vary: {:?}",
            want.full
        );
        for (users, items) in [(512, ITEM_BLOCK), (17, 7), (5, 64), (90, 299), (1, 1000)] {
            let sizes = BlockSizes { users, items };
            let got = rank_users(&model, &set, 0..set.len(), sizes, 5).unwrap();
            assert_eq!(got, want, "{users} users × {items} items per block");
        }
    }

    #[test]
    fn shards_cover_the_users_once_in_order() {
        for (n, world) in [(10, 3), (2, 3), (6040, 2), (0, 2)] {
            let shares: Vec<Range<usize>> = (0..world).map(|r| shard(n, r, world)).collect();
            assert_eq!(shares[0].start, 0);
            assert_eq!(shares[world - 1].end, n);
            assert!(shares.windows(2).all(|w| w[0].end == w[1].start));
            assert!(shares.iter().all(|s| s.len() <= n.div_ceil(world)));
        }
        assert_eq!(shard(10, 1, 3), 3..6);
    }
}
