//! A deterministic synthetic dataset with real sequential structure and timestamps: the
//! bundled default for the main job and the fixture for tests.
//!
//! Items form `genres` groups of consecutive indices, and within a genre a fixed successor
//! chain (item → next item of the genre, wrapping). Each user has two favourite genres and
//! consumes items in sessions:
//! * inside a session, with probability `p_chain` the next item is the successor of the
//!   previous one (what a sequential model can learn), otherwise a popularity-skewed draw from
//!   the session's genre (what a popularity-aware model can learn);
//! * a new session starts after a geometric number of events (mean `session_len`); it is
//!   separated by a long gap (hours to days) and switches to the user's other favourite genre,
//!   so the time interval carries information that a time-aware model can use;
//! * inside a session events are seconds to minutes apart.
//!
//! A user never repeats an item. Raw ids are not contiguous (`user = 1000 + u`,
//! `item = 10·i + 7`), which exercises the id maps. The same config always gives the same
//! lines, on every platform.

use std::io::Write;
use std::path::Path;

use rand::Rng;

use crate::error::Result;
use crate::io::write_atomic;
use crate::rng::{rng_for, Stream};

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

/// Generates the events, users ascending, each user's events in time order.
pub fn generate(cfg: &SyntheticConfig) -> Vec<Event> {
    let genres = cfg.genres.clamp(1, cfg.items.max(1));
    // Every genre gets ⌊items/genres⌋ items, the last one the remainder too: none is empty.
    let per_genre = cfg.items / genres;
    let genre_items = |g: usize| {
        (g * per_genre)..if g + 1 == genres {
            cfg.items
        } else {
            (g + 1) * per_genre
        }
    };
    let mut out = Vec::new();
    for u in 0..cfg.users {
        let mut rng = rng_for(cfg.seed, Stream::Synthetic, u as u64, 0);
        let len = rng.random_range(cfg.min_len..=cfg.max_len.max(cfg.min_len));
        let favourites = [rng.random_range(0..genres), rng.random_range(0..genres)];
        let mut genre = favourites[0];
        let mut seen = vec![false; cfg.items];
        let mut t: i64 = 946_684_800 + rng.random_range(0..86_400 * 365);
        let mut prev: Option<usize> = None;
        let mut produced = 0;
        let mut attempts = 0;
        while produced < len && attempts < len * 50 {
            attempts += 1;
            let range = genre_items(genre);
            let item = match prev {
                Some(p) if rng.random_bool(cfg.p_chain) && range.contains(&p) => {
                    let next = p + 1;
                    if next < range.end {
                        next
                    } else {
                        range.start
                    }
                }
                _ => {
                    // Popularity skew: low offsets in a genre are more popular (u² draw).
                    let x: f64 = rng.random();
                    range.start + ((x * x) * range.len() as f64) as usize
                }
            };
            if seen[item] {
                prev = None; // restart the chain elsewhere in the genre
                continue;
            }
            seen[item] = true;
            out.push(Event {
                user: 1000 + u as u64,
                item: 10 * item as u64 + 7,
                timestamp: t,
            });
            produced += 1;
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
    }
    out
}

/// Writes the dataset as `user item timestamp` lines, atomically; returns the line count.
pub fn write(cfg: &SyntheticConfig, path: &Path) -> Result<usize> {
    let events = generate(cfg);
    write_atomic(path, |w| {
        for e in &events {
            writeln!(w, "{} {} {}", e.user, e.item, e.timestamp)?;
        }
        Ok(())
    })?;
    Ok(events.len())
}
