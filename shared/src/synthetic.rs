//! A deterministic synthetic dataset with real sequential structure and timestamps: the
//! bundled default for the main job and the fixture for tests.
//!
//! Items form `genres` groups of consecutive indices, and within a genre a fixed successor
//! chain (item → next item of the genre, wrapping). Each user has two favourite genres and
//! consumes items in sessions:
//! * inside a session, with probability `p_chain` the next item is the successor of the
//!   previous one (what a sequential model can learn), otherwise a popularity-skewed draw from
//!   the session's genre (what a popularity-aware model can learn): the item at offset `r` of
//!   its genre is drawn with probability ∝ `(1 − r/L)` (the bundled default, a `u²` draw over
//!   offsets), or with Zipf weights `P(r) ∝ 1/(r + 1)^s` (`zipf = Some(s)`, the long tail of
//!   real catalogues, for the scale benchmarks);
//! * a new session starts after a geometric number of events (mean `session_len`); it is
//!   separated by a long gap (hours to days) and switches to the user's other favourite genre,
//!   so the time interval carries information that a time-aware model can use;
//! * inside a session events are seconds to minutes apart.
//!
//! A user never repeats an item. Raw ids are not contiguous (`user = 1000 + u`,
//! `item = 10·i + 7`), which exercises the id maps. The same config always gives the same
//! lines, on every platform. Memory and time grow with the number of events, not with
//! users × items: a user's items are tracked in a hash set, and [`write`] streams user by user.

use std::io::Write;
use std::path::Path;

use rand::Rng;
use rustc_hash::FxHashSet;

use crate::error::Result;
use crate::io::write_atomic;
use crate::rng::{rng_for, Stream};
use crate::{Dataset, Split};

/// Generator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticConfig {
    /// Number of users.
    pub users: usize,
    /// Number of items (a multiple of `genres` is best).
    pub items: usize,
    /// Number of genres.
    pub genres: usize,
    /// Shortest user sequence.
    pub min_len: usize,
    /// Longest user sequence.
    pub max_len: usize,
    /// Probability of following the successor chain inside a session.
    pub p_chain: f64,
    /// Mean events per session.
    pub session_len: f64,
    /// Zipf exponent `s` of the in-genre popularity, `None` for the quadratic skew.
    pub zipf: Option<f64>,
    /// Seed.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            users: 2000,
            items: 800,
            genres: 16,
            min_len: 12,
            max_len: 120,
            p_chain: 0.7,
            session_len: 8.0,
            zipf: None,
            seed: 2024,
        }
    }
}

/// One generated interaction, with 0-based internal indices and unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Raw user id.
    pub user: u64,
    /// Raw item id.
    pub item: u64,
    /// Unix time in seconds.
    pub timestamp: i64,
}

/// The genres' item ranges and the in-genre popularity draw, resolved once per dataset.
struct Catalogue {
    genres: usize,
    per_genre: usize,
    items: usize,
    /// Cumulative Zipf weights over offsets `0..len` for the two genre lengths (all genres but
    /// the last have `per_genre` items, the last one the remainder too).
    zipf_cdf: Option<[Vec<f64>; 2]>,
}

impl Catalogue {
    fn new(cfg: &SyntheticConfig) -> Self {
        let genres = cfg.genres.clamp(1, cfg.items.max(1));
        let per_genre = cfg.items / genres;
        let last_len = cfg.items - (genres - 1) * per_genre;
        let cdf = |len: usize, s: f64| -> Vec<f64> {
            let mut acc = 0.0;
            let mut c: Vec<f64> = (0..len)
                .map(|r| {
                    acc += ((r + 1) as f64).powf(-s);
                    acc
                })
                .collect();
            c.iter_mut().for_each(|x| *x /= acc);
            c
        };
        Self {
            genres,
            per_genre,
            items: cfg.items,
            zipf_cdf: cfg.zipf.map(|s| [cdf(per_genre, s), cdf(last_len, s)]),
        }
    }

    /// Item indices of genre `g`: none is empty.
    fn range(&self, g: usize) -> std::ops::Range<usize> {
        let end = if g + 1 == self.genres {
            self.items
        } else {
            (g + 1) * self.per_genre
        };
        (g * self.per_genre)..end
    }

    /// A popularity-skewed item of genre `g` from a uniform `x ∈ [0, 1)`.
    fn popular(&self, g: usize, x: f64) -> usize {
        let range = self.range(g);
        let offset = match &self.zipf_cdf {
            None => ((x * x) * range.len() as f64) as usize,
            Some(cdfs) => {
                let cdf = &cdfs[usize::from(g + 1 == self.genres)];
                cdf.partition_point(|&c| c <= x).min(range.len() - 1)
            }
        };
        range.start + offset
    }
}

/// Generates the events, users ascending, each user's events in time order.
pub fn generate(cfg: &SyntheticConfig) -> Vec<Event> {
    let catalogue = Catalogue::new(cfg);
    (0..cfg.users)
        .flat_map(|u| user_events(cfg, &catalogue, u))
        .collect()
}

/// The events of user `u` (0-based), in time order.
fn user_events(cfg: &SyntheticConfig, catalogue: &Catalogue, u: usize) -> Vec<Event> {
    let genres = catalogue.genres;
    let mut rng = rng_for(cfg.seed, Stream::Synthetic, u as u64, 0);
    let len = rng.random_range(cfg.min_len..=cfg.max_len.max(cfg.min_len));
    let favourites = [rng.random_range(0..genres), rng.random_range(0..genres)];
    let mut genre = favourites[0];
    let mut seen = FxHashSet::default();
    let mut t: i64 = 946_684_800 + rng.random_range(0..86_400 * 365);
    let mut prev: Option<usize> = None;
    let mut out = Vec::with_capacity(len);
    let mut attempts = 0;
    while out.len() < len && attempts < len * 50 {
        attempts += 1;
        let range = catalogue.range(genre);
        let item = match prev {
            Some(p) if rng.random_bool(cfg.p_chain) && range.contains(&p) => {
                let next = p + 1;
                if next < range.end {
                    next
                } else {
                    range.start
                }
            }
            _ => catalogue.popular(genre, rng.random()),
        };
        if !seen.insert(item) {
            prev = None; // restart the chain elsewhere in the genre
            continue;
        }
        out.push(Event {
            user: 1000 + u as u64,
            item: 10 * item as u64 + 7,
            timestamp: t,
        });
        prev = Some(item);
        if rng.random_bool(1.0 / cfg.session_len.max(1.0)) {
            t += rng.random_range(6 * 3600..4 * 86_400);
            genre = if genre == favourites[0] {
                favourites[1]
            } else {
                favourites[0]
            };
            prev = None;
        } else {
            t += rng.random_range(5..600);
        }
    }
    out
}

/// Writes the dataset as `user item timestamp` lines, atomically, one user at a time;
/// returns the line count.
pub fn write(cfg: &SyntheticConfig, path: &Path) -> Result<usize> {
    let catalogue = Catalogue::new(cfg);
    let mut lines = 0;
    write_atomic(path, |w| {
        for u in 0..cfg.users {
            for e in user_events(cfg, &catalogue, u) {
                writeln!(w, "{} {} {}", e.user, e.item, e.timestamp)?;
                lines += 1;
            }
        }
        Ok(())
    })?;
    Ok(lines)
}

/// Writes the item features of the catalogue of `cfg` to `path` as a TSV (README "Item
/// features"): `item  genre:categorical  rank:numeric`, the raw item id, its genre (`g0`,
/// `g1`, …) and its offset inside the genre (the popularity rank the draws skew towards), every
/// item of the catalogue whether or not the events use it; returns the row count.
pub fn write_features(cfg: &SyntheticConfig, path: &Path) -> Result<usize> {
    let catalogue = Catalogue::new(cfg);
    write_atomic(path, |w| {
        writeln!(w, "item\tgenre:categorical\trank:numeric")?;
        for g in 0..catalogue.genres {
            let range = catalogue.range(g);
            for item in range.clone() {
                writeln!(w, "{}\tg{g}\t{}", 10 * item as u64 + 7, item - range.start)?;
            }
        }
        Ok(())
    })?;
    Ok(cfg.items)
}

/// Writes the dataset of `cfg` to `path` and reads it back, split leave-one-out with
/// `min_holdout_len` (the small datasets the tests and examples train on).
pub fn write_split(cfg: &SyntheticConfig, path: &Path, min_holdout_len: usize) -> Result<Split> {
    write(cfg, path)?;
    Ok(Split::new(
        Dataset::read(path, None)?.into(),
        min_holdout_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse CDF of Zipf(s = 1) over 4 offsets: weights 1, 1/2, 1/3, 1/4 (sum 25/12),
    /// cumulative 0.48, 0.72, 0.88, 1.
    #[test]
    fn zipf_draw_inverts_the_cumulative_weights() {
        let cat = Catalogue::new(&SyntheticConfig {
            items: 8,
            genres: 2,
            zipf: Some(1.0),
            ..Default::default()
        });
        let offsets: Vec<usize> = [0.0, 0.47, 0.481, 0.71, 0.73, 0.87, 0.89, 0.999_999]
            .iter()
            .map(|&x| cat.popular(1, x) - 4)
            .collect();
        assert_eq!(offsets, [0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(cat.range(0), 0..4);
    }
}
