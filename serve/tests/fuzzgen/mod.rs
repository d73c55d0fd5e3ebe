//! The fuzz harness of the serve tests (stable Rust, no libFuzzer): a seeded generator, the
//! budget from the environment, and a structure-aware generator of `POST /recommend` and
//! `POST /recommend/batch` bodies (well-formed, wrong types, numbers at the edges, deep
//! nesting, huge arrays, and bytes mutated after serialisation).
//!
//! Budget: `FUZZ_CASES` (cases per target) or `FUZZ_SECONDS` (run each target this long);
//! `FUZZ_SEED` (default 0x5A5) picks the sequence, `FUZZ_CASE=N` replays case N alone.
//! shared/tests/fuzz.rs has the same harness for the data layer.
#![allow(dead_code)] // each test binary uses a subset

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// SplitMix64: small, seedable, the same on every platform.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

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

// ---------------------------------------------------------------------------------------------
// Request bodies.

/// Raw ids of the model's item map (to hit known items), as strings.
pub struct Vocabulary {
    /// Known raw ids.
    pub known: Vec<String>,
}

fn raw_json(raw: &str) -> Value {
    match raw.parse::<u64>() {
        Ok(n) if n.to_string() == raw => json!(n),
        _ => json!(raw),
    }
}

/// Something that is not an id: null, a bool, an array, an object, or deep nesting.
fn wrong_value(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!([]),
        3 => json!({}),
        4 => json!([1, "2"]),
        5 => json!({"item": 1}),
        _ => {
            let mut v = json!(1);
            for _ in 0..1 + rng.below(100) {
                v = json!([v]);
            }
            v
        }
    }
}

/// A history / candidates / exclude entry: mostly known ids, also unknown ones, numbers at
/// the edges, odd strings and wrong types.
pub fn id_value(rng: &mut Rng, vocab: &Vocabulary) -> Value {
    match rng.below(20) {
        0..=9 => {
            let raw: &String = rng.pick(&vocab.known);
            raw_json(raw)
        }
        10 | 11 => json!(rng.pick(&vocab.known)),
        12 => json!(1_000_000 + rng.below(1000)),
        13 => rng
            .pick(&[
                json!(u64::MAX),
                json!(i64::MIN),
                json!(-1),
                json!(0),
                json!(-0.0),
                json!(1.5),
                json!(1e300),
                json!(f64::MIN_POSITIVE),
                json!(5e-324),
            ])
            .clone(),
        14 => json!(rng
            .pick(&[
                "",
                " ",
                "é",
                "日本",
                "a b",
                "007",
                "\u{0}",
                "\u{feff}1",
                "1 ",
                "+1"
            ])
            .to_string()),
        15 => json!("x".repeat(rng.below(5000))),
        16 => json!(format!("{}", rng.below(200))),
        17 => wrong_value(rng),
        _ => json!(rng.below(200)),
    }
}

fn timestamp(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => json!(i64::MIN),
        1 => json!(i64::MAX),
        2 => json!(0),
        3 => json!(-(rng.below(1_000_000) as i64)),
        4 => json!(1.5),
        5 => json!(u64::MAX),
        6 => json!("978300000"),
        7 => Value::Null,
        _ => json!(978_300_000 + rng.below(1_000_000) as i64),
    }
}

fn id_list(rng: &mut Rng, vocab: &Vocabulary, max: usize) -> Vec<Value> {
    let n = if rng.chance(3) {
        100 + rng.below(3000)
    } else {
        rng.below(max + 1)
    };
    (0..n).map(|_| id_value(rng, vocab)).collect()
}

/// One `POST /recommend` body as a JSON value (possibly not an object at all).
pub fn request(rng: &mut Rng, vocab: &Vocabulary) -> Value {
    if rng.chance(3) {
        return wrong_value(rng);
    }
    let mut o = serde_json::Map::new();
    let mut len = None;
    if !rng.chance(4) {
        if rng.chance(95) {
            let h = id_list(rng, vocab, 30);
            len = Some(h.len());
            o.insert("history".into(), Value::Array(h));
        } else {
            o.insert("history".into(), wrong_value(rng));
        }
    }
    if rng.chance(75) {
        let v = match (len, rng.below(10)) {
            (_, 0) => wrong_value(rng),
            (Some(n), 1) => Value::Array((0..n + 1).map(|_| timestamp(rng)).collect()),
            (Some(n), 2..=3) => Value::Array((0..n).map(|_| timestamp(rng)).collect()),
            (Some(n), _) => {
                // Mostly plausible: increasing, with ties.
                let mut t = 978_300_000i64;
                Value::Array(
                    (0..n)
                        .map(|_| {
                            t += rng.below(3) as i64 * 60;
                            json!(t)
                        })
                        .collect(),
                )
            }
            (None, _) => json!([]),
        };
        o.insert("timestamps".into(), v);
    }
    if rng.chance(60) {
        let k = match rng.below(30) {
            0 => json!(0),
            1 => json!(-1),
            2 => json!(i64::MAX),
            3 => json!(i64::MIN),
            4 => json!(u64::MAX),
            5 => json!(2.5),
            6 => json!("5"),
            7 => Value::Null,
            8 => json!(1e10),
            9 => json!(100_000),
            _ => json!(1 + rng.below(30)),
        };
        o.insert("k".into(), k);
    }
    if rng.chance(40) {
        let v = match rng.below(6) {
            0 => json!("true"),
            1 => json!(1),
            2 => Value::Null,
            _ => json!(rng.chance(50)),
        };
        o.insert("exclude_seen".into(), v);
    }
    for field in ["candidates", "exclude"] {
        if rng.chance(20) {
            let v = if rng.chance(90) {
                Value::Array(id_list(rng, vocab, 15))
            } else {
                wrong_value(rng)
            };
            o.insert(field.into(), v);
        }
    }
    if rng.chance(3) {
        let f = *rng.pick(&["exclude_Seen", "extra", "History", ""]);
        o.insert(f.into(), json!(true));
    }
    Value::Object(o)
}

/// One `POST /recommend/batch` body: mostly `{"requests": [...]}` with 0..8 entries (rarely
/// more than `--max_batch_requests`), sometimes another shape.
pub fn batch(rng: &mut Rng, vocab: &Vocabulary, max_requests: usize) -> Value {
    match rng.below(20) {
        0 => wrong_value(rng),
        1 => json!({}),
        2 => json!({"requests": wrong_value(rng)}),
        3 => json!({"requests": [], "extra": 1}),
        4 => {
            let n = max_requests + 1 + rng.below(20);
            let one = json!({"history": [rng.pick(&vocab.known)]});
            json!({"requests": vec![one; n]})
        }
        _ => {
            let n = rng.below(9);
            json!({"requests": (0..n).map(|_| request(rng, vocab)).collect::<Vec<_>>()})
        }
    }
}

const JSON_BITS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"null",
    b"-",
    b"1e999",
    b"-1e999",
    b"0.",
    b"01",
    b"NaN",
    b"Infinity",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\0",
    b"\"history\":[1]",
    b"\"k\":5",
    b"//",
    b" ",
];

/// Serialised `v`, mostly as it is, sometimes mutated at the byte level (then mostly not
/// JSON), or replaced by a nasty body: empty, deep nesting, a huge number.
pub fn body_bytes(rng: &mut Rng, v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(v).expect("a Value serialises");
    match rng.below(20) {
        0..=12 => b,
        13 => {
            // Deep nesting, within or far beyond serde_json's recursion limit (128).
            let depth = *rng.pick(&[10usize, 127, 129, 1000, 100_000]);
            let (open, close) = if rng.chance(50) {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            let mut s = String::from("{\"history\":");
            s.push_str(&open.repeat(depth));
            s.push('1');
            if rng.chance(70) {
                s.push_str(&close.repeat(depth));
                s.push('}');
            }
            s.into_bytes()
        }
        14 => rng
            .pick(&[
                &b""[..],
                b" ",
                b"null",
                b"[]",
                b"\"history\"",
                b"{}",
                b"{\"history\":[1],\"history\":[2]}",
                b"{\"history\":[1]}garbage",
                b"{\"history\":[1]}{}",
                b"\xef\xbb\xbf{\"history\":[1]}",
                b"{\"history\":[1e400]}",
                b"{\"history\":[1], \"k\": 1e400}",
                b"{\"history\":[-]}",
                b"{\"history\":[\"\\ud800\"]}",
            ])
            .to_vec(),
        15 => {
            // A huge number (within and over the body limit).
            let n = *rng.pick(&[400usize, 5000, 70_000, 2_000_000]);
            format!("{{\"history\":[{}]}}", "9".repeat(n)).into_bytes()
        }
        _ => {
            for _ in 0..1 + rng.below(4) {
                let len = b.len();
                match rng.below(5) {
                    0 if len > 0 => {
                        let i = rng.below(len);
                        b[i] ^= 1 << rng.below(8);
                    }
                    1 => {
                        let i = rng.below(len + 1);
                        b.splice(i..i, rng.pick(JSON_BITS).iter().copied());
                    }
                    2 if len > 0 => {
                        let a = rng.below(len);
                        let e = (a + 1 + rng.below(8)).min(len);
                        b.drain(a..e);
                    }
                    3 => b.truncate(rng.below(len + 1)),
                    _ => {
                        let i = rng.below(len + 1);
                        b.insert(i, rng.next() as u8);
                    }
                }
            }
            b
        }
    }
}

/// Every error code a client can cause on the recommend endpoints, with its status.
pub fn client_error_status(code: &str) -> Option<u16> {
    Some(match code {
        "invalid_json" => 400,
        "payload_too_large" => 413,
        "unsupported_media_type" => 415,
        "invalid_request"
        | "invalid_k"
        | "invalid_history"
        | "invalid_candidates"
        | "invalid_exclude"
        | "missing_timestamps"
        | "length_mismatch"
        | "too_many_requests_in_batch" => 422,
        _ => return None,
    })
}

/// Checks `{"error": {"code", "message"}}` with a known code of `status`.
pub fn check_error_body(status: u16, v: &Value) -> Result<(), String> {
    let code = v["error"]["code"]
        .as_str()
        .ok_or(format!("{status} without an error code: {v}"))?;
    let message = v["error"]["message"]
        .as_str()
        .ok_or(format!("{status} without an error message: {v}"))?;
    if message.is_empty() {
        return Err(format!("empty message: {v}"));
    }
    match client_error_status(code) {
        Some(s) if s == status => Ok(()),
        Some(s) => Err(format!("code {code} with status {status} (expected {s})")),
        None => Err(format!("unknown code {code} (status {status})")),
    }
}
