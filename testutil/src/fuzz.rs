//! The fuzz harness shared by the fuzz targets (`shared/tests/fuzz.rs`,
//! `serve/tests/fuzzgen/mod.rs`): the seeded generator [`Rng`], the budget from
//! the environment (`FUZZ_CASES` cases per target or `FUZZ_SECONDS` per target; `FUZZ_SEED`,
//! default 0x5A5, picks the sequence; `FUZZ_CASE=N` replays case N alone) and the tally that
//! prints the summary line scripts/fuzz.sh parses.

use std::time::{Duration, Instant};

pub use crate::Rng;

/// How many cases a target runs, and from which seed.
pub struct Budget {
    /// At most this many cases.
    pub cases: u64,
    /// Stop at this time (`FUZZ_SECONDS`).
    pub until: Option<Instant>,
    /// `FUZZ_SEED`.
    pub seed: u64,
    /// `FUZZ_CASE`: run only this case.
    pub only: Option<u64>,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

impl Budget {
    /// The budget from the environment, `default_cases` without one.
    pub fn from_env(default_cases: u64) -> Self {
        let seconds = env_u64("FUZZ_SECONDS");
        Budget {
            cases: env_u64("FUZZ_CASES").unwrap_or(if seconds.is_some() {
                u64::MAX
            } else {
                default_cases
            }),
            until: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
            seed: env_u64("FUZZ_SEED").unwrap_or(0x5A5),
            only: env_u64("FUZZ_CASE"),
        }
    }

    /// The case to run after `done` cases, or `None` when the budget is spent.
    pub fn next_case(&self, done: u64) -> Option<u64> {
        match self.only {
            Some(n) => (done == 0).then_some(n),
            None if done >= self.cases => None,
            None if self.until.is_some_and(|t| Instant::now() >= t) => None,
            None => Some(done),
        }
    }

    /// The generator of case `i` (every case can be replayed alone).
    pub fn rng(&self, i: u64) -> Rng {
        Rng::new(Rng::new(self.seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03)).next())
    }

    /// How to replay case `i`.
    pub fn replay(&self, i: u64) -> String {
        format!("FUZZ_SEED={:#x} FUZZ_CASE={i}", self.seed)
    }
}

/// A panic payload as text.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into())
}

/// An input as printable text (bytes escaped), cut at 1,500 characters.
pub fn show(bytes: &[u8]) -> String {
    let s = bytes.escape_ascii().to_string();
    if s.len() > 1500 {
        format!("{}… ({} bytes)", &s[..1500], bytes.len())
    } else {
        s
    }
}

/// Counts and the first few failures of a target; prints the summary line scripts/fuzz.sh
/// parses (`fuzz <name>: cases=… failures=… …`) and fails the test on any failure.
pub struct Tally {
    name: String,
    started: Instant,
    /// Cases run.
    pub cases: u64,
    /// Cases answered (2xx / `Ok`).
    pub accepted: u64,
    /// Cases refused with a 4xx / `Err`.
    pub refused: u64,
    /// Cases that failed an oracle or panicked.
    pub failures: u64,
    shown: Vec<String>,
}

impl Tally {
    /// An empty tally for target `name`.
    pub fn new(name: &str) -> Self {
        Tally {
            name: name.into(),
            started: Instant::now(),
            cases: 0,
            accepted: 0,
            refused: 0,
            failures: 0,
            shown: Vec::new(),
        }
    }

    /// Records a failure of case `i` on `input`.
    pub fn fail(&mut self, budget: &Budget, i: u64, why: String, input: &[u8]) {
        self.failures += 1;
        if self.shown.len() < 5 {
            self.shown.push(format!(
                "case {i} (replay: {}): {why}\n  input: {}",
                budget.replay(i),
                show(input)
            ));
        }
    }

    /// Prints the summary and asserts no failure (and, for a run of 1,000+ cases, that both
    /// answers and refusals were reached).
    pub fn finish(self, budget: &Budget) {
        println!(
            "fuzz {}: cases={} failures={} accepted={} refused={} seed={:#x} seconds={:.1}",
            self.name,
            self.cases,
            self.failures,
            self.accepted,
            self.refused,
            budget.seed,
            self.started.elapsed().as_secs_f64()
        );
        assert!(
            self.shown.is_empty(),
            "{}: {} of {} cases failed:\n{}",
            self.name,
            self.failures,
            self.cases,
            self.shown.join("\n")
        );
        if budget.only.is_none() && self.cases >= 1000 {
            assert!(
                self.accepted * 20 >= self.cases && self.refused * 20 >= self.cases,
                "{}: {} accepted / {} refused of {}: the generator is off",
                self.name,
                self.accepted,
                self.refused,
                self.cases
            );
        }
    }
}
