//! TiSASRec time intervals (docs/MODELS.md §2.2–2.3, §2.8; pitfalls 23–24).
//!
//! One implementation used by the training sampler, evaluation and the server:
//! 1. [`time_codes`] turns a user's timestamps into integer codes, once per user;
//! 2. [`Intervals::window_matrix`] left-pads the newest T codes into the model's window and
//!    turns them into the T×T matrix of interval buckets `r_ij ∈ 0..=k` that indexes the
//!    interval embeddings ([`Intervals::relation_matrix`]); every caller goes through it.
//!
//! Two families of units:
//! * [`TimeUnit::Personal`], the reference (pmixer/TiSASRec.pytorch, the paper): with the
//!   user's smallest non-zero gap `s` (over the user's whole sequence, 1 if all times are
//!   equal) and first time `t_0`, code `c_j = round_half_even((t_j − t_0)/s) + 1`; then
//!   `r_ij = min(|c_i − c_j|, k)`. Padding has code 0, exactly as in the reference, so a
//!   (padding, real) pair gets `min(c_j, k)` and a (padding, padding) pair 0. (The reference
//!   first shifts every timestamp by the global minimum; for integer timestamps that shift
//!   cancels in `t_j − t_0`, so it is omitted.)
//! * Absolute units (second, minute, hour, day): code = the raw timestamp and
//!   `r_ij = min(⌊|t_i − t_j| / unit⌋, k)`; any pair involving padding is 0 (raw epoch seconds
//!   against a padding time of 0 would otherwise always saturate at k).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How time differences become interval buckets (`--time_unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Per-user minimum-gap scaling (the TiSASRec paper and reference code).
    Personal,
    /// Whole seconds.
    Second,
    /// Whole minutes.
    Minute,
    /// Whole hours.
    Hour,
    /// Whole days.
    Day,
}

impl TimeUnit {
    /// Seconds per bucket for the absolute units, `None` for [`TimeUnit::Personal`].
    pub fn seconds(self) -> Option<i64> {
        match self {
            TimeUnit::Personal => None,
            TimeUnit::Second => Some(1),
            TimeUnit::Minute => Some(60),
            TimeUnit::Hour => Some(3600),
            TimeUnit::Day => Some(86_400),
        }
    }
}

impl TimeUnit {
    /// The flag values (`--time_unit`), in declaration order.
    pub const NAMES: [&'static str; 5] = ["personal", "second", "minute", "hour", "day"];

    /// The flag value of this unit.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl FromStr for TimeUnit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        const ALL: [TimeUnit; 5] = [
            TimeUnit::Personal,
            TimeUnit::Second,
            TimeUnit::Minute,
            TimeUnit::Hour,
            TimeUnit::Day,
        ];
        ALL.into_iter().find(|u| u.as_str() == s).ok_or_else(|| {
            let (last, rest) = Self::NAMES.split_last().expect("five names");
            Error::Config(format!(
                "--time_unit `{s}`: expected {} or {last}",
                rest.join(", ")
            ))
        })
    }
}

impl std::fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Interval settings: the unit and the clipping bound k (`--time_span`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intervals {
    /// How differences are scaled.
    pub unit: TimeUnit,
    /// Largest bucket k; buckets are 0..=k.
    pub span: usize,
}

/// Codes for one user's timestamps (any order; the personal scale uses sorted gaps).
pub fn time_codes(unit: TimeUnit, timestamps: &[i64]) -> Vec<i64> {
    if unit != TimeUnit::Personal || timestamps.is_empty() {
        return timestamps.to_vec();
    }
    let mut sorted = timestamps.to_vec();
    sorted.sort_unstable();
    // `abs_diff` and the saturating `+ 1`: any i64 timestamps (a request's, a data file's)
    // give codes without overflow; the values are unchanged where nothing overflows.
    let scale = sorted
        .windows(2)
        .map(|w| w[1].abs_diff(w[0]))
        .filter(|&d| d > 0)
        .min()
        .unwrap_or(1);
    let t0 = sorted[0];
    timestamps
        .iter()
        .map(|&t| {
            ((t.abs_diff(t0) as f64 / scale as f64).round_ties_even() as i64).saturating_add(1)
        })
        .collect()
}

impl Intervals {
    /// The bucket of one pair of codes; `pad_i`/`pad_j` mark padding positions.
    #[inline]
    pub fn bucket(&self, ci: i64, cj: i64, pad_i: bool, pad_j: bool) -> i32 {
        let k = self.span as u64;
        // |ci − cj| as `abs_diff` (u64): no overflow for extreme codes or timestamps.
        let r = match self.unit.seconds() {
            None => {
                let ci = if pad_i { 0 } else { ci };
                let cj = if pad_j { 0 } else { cj };
                ci.abs_diff(cj)
            }
            Some(_) if pad_i || pad_j => 0,
            Some(unit) => ci.abs_diff(cj) / unit.unsigned_abs(),
        };
        r.min(k) as i32
    }

    /// The interval matrix of a model input, as training, evaluation and serving build it:
    /// the newest T = `t` of `codes` (one user's [`time_codes`], oldest first) are left-padded
    /// into a window ([`left_pad`]) and [`Intervals::relation_matrix`] fills `out` (T×T).
    pub fn window_matrix(&self, codes: &[i64], t: usize, out: &mut [i32]) {
        let mut window = vec![0i64; t];
        let pad = left_pad(codes, 0i64, &mut window);
        self.relation_matrix(&window, pad, out);
    }

    /// Fills `out` (T×T, row = query i, column = key j) for a left-padded window of
    /// `codes` (length T) whose first `pad` positions are padding.
    pub fn relation_matrix(&self, codes: &[i64], pad: usize, out: &mut [i32]) {
        let t = codes.len();
        debug_assert_eq!(out.len(), t * t);
        for (i, row) in out.chunks_exact_mut(t).enumerate() {
            for (j, r) in row.iter_mut().enumerate() {
                *r = self.bucket(codes[i], codes[j], i < pad, j < pad);
            }
        }
    }
}

/// Copies the last `out.len()` values of `src` into the right end of `out`, filling the left
/// with `fill`; returns the number of padding positions. This is the left-padded window
/// shared by training, evaluation and serving (the newest item sits at position T−1).
pub fn left_pad<A: Copy, B: Copy + From<A>>(src: &[A], fill: B, out: &mut [B]) -> usize {
    let n = src.len().min(out.len());
    let pad = out.len() - n;
    out[..pad].fill(fill);
    for (o, &s) in out[pad..].iter_mut().zip(&src[src.len() - n..]) {
        *o = B::from(s);
    }
    pad
}
