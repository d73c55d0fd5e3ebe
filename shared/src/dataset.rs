//! Reading interaction files into a [`Dataset`] of per-user, time-ordered item sequences.
//!
//! Accepted line formats (auto-detected from the first data line, `.gz` read directly):
//! `user item`, `user item timestamp` and `user item rating timestamp`, separated by `::`,
//! tabs, commas or runs of spaces. Blank lines and lines starting with `#` are skipped and
//! counted. The first line is a header, and skipped, when every field is a column name such as
//! `user`, `item_id`, `rating` or `timestamp`. Every other line must have the same number of
//! columns as the first data line; user and item tokens must be non-empty, ratings numeric and
//! timestamps numbers (integers, or decimals rounded half-to-even to whole seconds).
//! Anything else is an error that names the file and the line.
//!
//! Raw tokens are mapped to indices 1..=N by [`IdMap`] (0 is padding). With timestamps, each
//! user's events are sorted by time, stably (ties keep file order); without, file order is time
//! order.

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::io::read_bytes;

/// Field separator of an interaction file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Separator {
    /// `::` as in MovieLens-1M `ratings.dat`.
    DoubleColon,
    /// One tab per field.
    Tab,
    /// One comma per field (CSV without quoting).
    Comma,
    /// Runs of spaces (and tabs mixed with spaces).
    Whitespace,
}

impl Separator {
    fn detect(line: &str) -> Self {
        if line.contains("::") {
            Separator::DoubleColon
        } else if line.contains('\t') {
            Separator::Tab
        } else if line.contains(',') {
            Separator::Comma
        } else {
            Separator::Whitespace
        }
    }

    /// Splits a line into at most `MAX_FIELDS + 1` trimmed fields.
    fn split<'a>(self, line: &'a str, out: &mut Vec<&'a str>) {
        out.clear();
        match self {
            Separator::DoubleColon => out.extend(line.split("::").map(str::trim)),
            Separator::Tab => out.extend(line.split('\t').map(str::trim)),
            Separator::Comma => out.extend(line.split(',').map(str::trim)),
            Separator::Whitespace => out.extend(line.split_ascii_whitespace()),
        }
    }
}

const MAX_FIELDS: usize = 4;
const HEADER_NAMES: &[&str] = &[
    "user",
    "userid",
    "uid",
    "users",
    "item",
    "itemid",
    "iid",
    "items",
    "movie",
    "movieid",
    "product",
    "productid",
    "rating",
    "ratings",
    "score",
    "timestamp",
    "time",
    "ts",
    "datetime",
];

fn is_header(fields: &[&str]) -> bool {
    fields.iter().all(|f| {
        let name: String = f
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        HEADER_NAMES.contains(&name.as_str())
    })
}

/// Minimum interaction counts per user and per item (k-core filtering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KCore {
    /// Users with fewer interactions are dropped.
    pub min_user: usize,
    /// Items with fewer interactions are dropped.
    pub min_item: usize,
    /// Repeat until every remaining user and item meets its minimum (a true k-core); `false`
    /// counts once over the whole file and drops in one pass, as the TiSASRec reference's
    /// 5-filter does (models.md §2.2).
    pub iterative: bool,
}

/// How the file was read and what was skipped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The detected separator.
    pub separator: Separator,
    /// Columns per line (2, 3 or 4).
    pub columns: usize,
    /// Whether the first line was a header.
    pub header: bool,
    /// Blank and `#` comment lines skipped.
    pub skipped_lines: usize,
    /// Interactions read before filtering.
    pub interactions_read: usize,
    /// Interactions removed by k-core filtering.
    pub removed_by_kcore: usize,
}

/// Per-user item sequences in time order, with raw-id maps.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file it was read from.
    pub path: PathBuf,
    /// User index (1..=U) ↔ raw user token.
    pub users: IdMap,
    /// Item index (1..=I) ↔ raw item token.
    pub items: IdMap,
    /// `sequences[u]` holds user u's item indices, oldest first; `sequences[0]` is empty.
    pub sequences: Vec<Vec<u32>>,
    /// `timestamps[u][j]` is the unix time of `sequences[u][j]`, when the file has timestamps.
    pub timestamps: Option<Vec<Vec<i64>>>,
    /// How the file was read.
    pub report: LoadReport,
}

/// Summary statistics of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of users U.
    pub users: usize,
    /// Number of items I.
    pub items: usize,
    /// Number of interactions.
    pub interactions: usize,
    /// Shortest user sequence.
    pub min_len: usize,
    /// Longest user sequence.
    pub max_len: usize,
    /// Mean sequence length.
    pub mean_len: f64,
    /// Median sequence length (lower median).
    pub median_len: usize,
    /// interactions / (U · I).
    pub density: f64,
    /// Earliest and latest timestamp, when the file has timestamps.
    pub time_range: Option<(i64, i64)>,
}

struct Record {
    user: u32,
    item: u32,
    ts: i64,
}

impl Dataset {
    /// Reads an interaction file (see the module docs for the formats), optionally k-core filtered.
    pub fn read(path: &Path, kcore: Option<KCore>) -> Result<Self> {
        let bytes = read_bytes(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            Error::Parse {
                path: path.into(),
                line,
                msg: "invalid UTF-8".into(),
            }
        })?;
        let parse_err = |line: usize, msg: String| Error::Parse {
            path: path.into(),
            line,
            msg,
        };

        let mut format: Option<(Separator, usize)> = None;
        let mut header = false;
        let mut skipped_lines = 0;
        let mut fields: Vec<&str> = Vec::with_capacity(MAX_FIELDS + 1);
        let mut user_ids: FxHashMap<&str, u32> = FxHashMap::default();
        let mut item_ids: FxHashMap<&str, u32> = FxHashMap::default();
        let mut user_tokens: Vec<&str> = Vec::new();
        let mut item_tokens: Vec<&str> = Vec::new();
        let mut records: Vec<Record> = Vec::with_capacity(text.len() / 16);

        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                skipped_lines += 1;
                continue;
            }
            let (sep, cols) = match format {
                Some(f) => f,
                None => {
                    let sep = Separator::detect(trimmed);
                    sep.split(trimmed, &mut fields);
                    let cols = fields.len();
                    if !(2..=MAX_FIELDS).contains(&cols) {
                        return Err(parse_err(line_no, format!(
                            "found {cols} column(s); expected 2 (user item), 3 (user item timestamp) \
                             or 4 (user item rating timestamp)"
                        )));
                    }
                    format = Some((sep, cols));
                    if is_header(&fields) {
                        header = true;
                        continue;
                    }
                    (sep, cols)
                }
            };
            sep.split(trimmed, &mut fields);
            if fields.len() != cols {
                return Err(parse_err(
                    line_no,
                    format!("found {} column(s) but the file has {cols}", fields.len()),
                ));
            }
            if let Some(pos) = fields.iter().position(|f| f.is_empty()) {
                return Err(parse_err(line_no, format!("column {} is empty", pos + 1)));
            }
            let ts = match cols {
                2 => 0,
                _ => parse_timestamp(fields[cols - 1])
                    .map_err(|msg| parse_err(line_no, format!("timestamp {msg}")))?,
            };
            if cols == 4 && !fields[2].parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(parse_err(
                    line_no,
                    format!("rating `{}` is not a number", fields[2]),
                ));
            }
            let user = intern(&mut user_ids, &mut user_tokens, fields[0]);
            let item = intern(&mut item_ids, &mut item_tokens, fields[1]);
            records.push(Record { user, item, ts });
        }
        let Some((separator, columns)) = format else {
            return Err(Error::Empty { path: path.into() });
        };
        if records.is_empty() {
            return Err(Error::Empty { path: path.into() });
        }
        let interactions_read = records.len();
        if let Some(k) = kcore {
            records = kcore_filter(records, user_tokens.len(), item_tokens.len(), k);
            if records.is_empty() {
                return Err(Error::Data(format!(
                    "{}: no interactions left after k-core filtering (users ≥ {}, items ≥ {})",
                    path.display(),
                    k.min_user,
                    k.min_item
                )));
            }
        }
        let report = LoadReport {
            separator,
            columns,
            header,
            skipped_lines,
            interactions_read,
            removed_by_kcore: interactions_read - records.len(),
        };
        Ok(Self::assemble(
            path,
            records,
            &user_tokens,
            &item_tokens,
            columns >= 3,
            report,
        ))
    }

    /// Maps the surviving provisional ids to final indices and groups records by user.
    fn assemble(
        path: &Path,
        records: Vec<Record>,
        user_tokens: &[&str],
        item_tokens: &[&str],
        timed: bool,
        report: LoadReport,
    ) -> Self {
        let (users, user_remap) = final_map(user_tokens, records.iter().map(|r| r.user));
        let (items, item_remap) = final_map(item_tokens, records.iter().map(|r| r.item));
        let mut counts = vec![0usize; users.len() + 1];
        for r in &records {
            counts[user_remap[r.user as usize] as usize] += 1;
        }
        let mut sequences: Vec<Vec<u32>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
        let mut timestamps: Vec<Vec<i64>> = if timed {
            counts.iter().map(|&c| Vec::with_capacity(c)).collect()
        } else {
            Vec::new()
        };
        for r in &records {
            let u = user_remap[r.user as usize] as usize;
            sequences[u].push(item_remap[r.item as usize]);
            if timed {
                timestamps[u].push(r.ts);
            }
        }
        if timed {
            for (seq, ts) in sequences.iter_mut().zip(timestamps.iter_mut()) {
                if ts.windows(2).any(|w| w[0] > w[1]) {
                    let mut order: Vec<usize> = (0..ts.len()).collect();
                    order.sort_by_key(|&j| ts[j]); // stable: ties keep file order
                    *seq = order.iter().map(|&j| seq[j]).collect();
                    *ts = order.iter().map(|&j| ts[j]).collect();
                }
            }
        }
        Self {
            path: path.into(),
            users,
            items,
            sequences,
            timestamps: timed.then_some(timestamps),
            report,
        }
    }

    /// Number of users U.
    pub fn num_users(&self) -> usize {
        self.users.len()
    }

    /// Number of items I.
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// Whether the file had timestamps.
    pub fn has_timestamps(&self) -> bool {
        self.timestamps.is_some()
    }

    /// Summary statistics.
    pub fn stats(&self) -> Stats {
        let mut lens: Vec<usize> = self.sequences[1..].iter().map(Vec::len).collect();
        lens.sort_unstable();
        let interactions: usize = lens.iter().sum();
        let time_range = self.timestamps.as_ref().map(|ts| {
            ts.iter()
                .filter(|t| !t.is_empty())
                .fold((i64::MAX, i64::MIN), |(lo, hi), t| {
                    (lo.min(t[0]), hi.max(t[t.len() - 1]))
                })
        });
        Stats {
            users: self.num_users(),
            items: self.num_items(),
            interactions,
            min_len: lens.first().copied().unwrap_or(0),
            max_len: lens.last().copied().unwrap_or(0),
            mean_len: interactions as f64 / lens.len().max(1) as f64,
            median_len: lens
                .get(lens.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or(0),
            density: interactions as f64 / (self.num_users() * self.num_items()).max(1) as f64,
            time_range,
        }
    }
}

/// Resolves `--dataset NAME_OR_PATH`: an existing file, else `data/NAME.txt`, else
/// `data/NAME.txt.gz` (relative to the working directory).
pub fn resolve_dataset(name_or_path: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(name_or_path);
    if direct.is_file() {
        return Ok(direct);
    }
    let candidates = [
        format!("data/{name_or_path}.txt"),
        format!("data/{name_or_path}.txt.gz"),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Data(format!(
                "--dataset {name_or_path}: no such file, and neither {} nor {} exists",
                candidates[0], candidates[1]
            ))
        })
}

fn parse_timestamp(field: &str) -> std::result::Result<i64, String> {
    if let Ok(t) = field.parse::<i64>() {
        return Ok(t);
    }
    match field.parse::<f64>() {
        Ok(t) if t.is_finite() && t.abs() < 9.0e15 => Ok(t.round_ties_even() as i64),
        _ => Err(format!("`{field}` is not a number")),
    }
}

fn intern<'a>(ids: &mut FxHashMap<&'a str, u32>, tokens: &mut Vec<&'a str>, tok: &'a str) -> u32 {
    *ids.entry(tok).or_insert_with(|| {
        tokens.push(tok);
        tokens.len() as u32 - 1
    })
}

/// The final [`IdMap`] of the provisional ids still in use, and provisional → final index.
fn final_map(tokens: &[&str], used: impl Iterator<Item = u32>) -> (IdMap, Vec<u32>) {
    let mut seen = vec![false; tokens.len()];
    used.for_each(|id| seen[id as usize] = true);
    let kept: Vec<String> = tokens
        .iter()
        .zip(&seen)
        .filter(|(_, &s)| s)
        .map(|(t, _)| t.to_string())
        .collect();
    let map = IdMap::from_tokens(kept);
    let remap = tokens
        .iter()
        .map(|t| map.index_of(t).unwrap_or(0))
        .collect();
    (map, remap)
}

fn kcore_filter(mut records: Vec<Record>, n_users: usize, n_items: usize, k: KCore) -> Vec<Record> {
    loop {
        let mut uc = vec![0usize; n_users];
        let mut ic = vec![0usize; n_items];
        for r in &records {
            uc[r.user as usize] += 1;
            ic[r.item as usize] += 1;
        }
        let before = records.len();
        records.retain(|r| uc[r.user as usize] >= k.min_user && ic[r.item as usize] >= k.min_item);
        if !k.iterative || records.len() == before {
            return records;
        }
    }
}
