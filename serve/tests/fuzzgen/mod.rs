//! The fuzz harness of the serve tests (stable Rust, no libFuzzer): a seeded generator, the
//! budget from the environment, and a structure-aware generator of `POST /recommend` and
//! `POST /recommend/batch` bodies (well-formed, wrong types, numbers at the edges, deep
//! nesting, huge arrays, and bytes mutated after serialisation).
//!
//! Budget: `FUZZ_CASES` (cases per target) or `FUZZ_SECONDS` (run each target this long);
//! `FUZZ_SEED` (default 0x5A5) picks the sequence, `FUZZ_CASE=N` replays case N alone.
//! The harness itself (`sasrec_testutil::fuzz`) is shared with shared/tests/fuzz.rs.
#![allow(dead_code)] // each test binary uses a subset

use serde_json::{json, Value};

pub use sasrec_testutil::fuzz::*;

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
