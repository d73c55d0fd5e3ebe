//! Reading interaction files into a [`Dataset`] of per-user, time-ordered item sequences.
//!
//! # Files
//!
//! A file is UTF-8 text (a leading byte-order mark is ignored), plain or gzip (recognised by
//! its magic bytes, so `.gz` needs no flag). Blank lines and lines starting with `#` are skipped
//! wherever they are and counted in [`LoadReport::skipped_lines`]. The field separator is
//! detected from the first data line: `::` if it contains `::`, else a tab if it contains one,
//! else a comma if it contains one, else runs of spaces ([`Separator`]); fields are trimmed.
//! There are two line formats ([`Format`]).
//!
//! **Interactions** ([`Format::Interactions`]): one interaction per line, every line with the
//! same number of columns. Each column has a [`Role`] (user, item, rating, timestamp or
//! ignored), taken from, in this order of precedence:
//!
//! 1. an explicit mapping, `--columns` ([`ReadOptions::columns`], [`Columns`]), naming the role
//!    of every column in file order with `-` for an ignored one, e.g. `user,-,item,timestamp`;
//!    every line, a header included, must have exactly that many columns;
//! 2. a header line, mapped by name, in any column order: `item_id,timestamp,user_id`, or
//!    RecBole's `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float`;
//! 3. otherwise the column count: `user item` (2), `user item timestamp` (3) or
//!    `user item rating timestamp` (4); any other count is an error.
//!
//! The first data line is a **header**, and skipped, when either every field is a known column
//! name, or it has a user and an item name and every other field is empty or looks like a name
//! (starts with a letter or `_` and is not a number). Names are matched by [`Role::from_name`]:
//! a `:type` suffix is dropped, then everything but ASCII letters and digits, case ignored, and
//! what is left must be one of `user userid uid users`, `item itemid iid items movie movieid
//! product productid`, `rating ratings score` or `timestamp time ts datetime`. Unknown names
//! are ignored columns. A header that names no user or no item column, or one role twice, is
//! an error; so is a data line with a different number of fields than the header.
//!
//! Values: user and item tokens, ratings and timestamps must be non-empty; ratings finite
//! numbers (checked, otherwise unused); timestamps numbers, integers or decimals rounded
//! half-to-even to whole seconds. Ignored columns are not looked at.
//!
//! **Sequences** ([`Format::Sequence`]): one user per line, `user item1 item2 …`, oldest item
//! first, no timestamps, as in the public Beauty, Sports, Toys and Yelp files of S3-Rec,
//! CL4SRec, ICLRec and DuoRec. A line needs a user and at least one item, none of them empty;
//! lines naming the same user are concatenated in file order. A sequence file reads into
//! exactly the dataset of the `user item` file with one line per interaction in the same
//! order. A header line (same rule) is skipped; `--columns` does not apply.
//!
//! # Detection ([`Format::Auto`], the default)
//!
//! A file is read as sequences when all of these hold: no `--columns` is given, the first data
//! line is not a header, the separator is spaces (the first data line has no `::`, tab or
//! comma), and the data lines do not all have the same number of fields, at least one of them
//! having more than 4. Every other file is read as interactions, where a line with another
//! column count is an error. So an interaction file is never taken for sequences unless a line
//! has 5 or more fields and another line fewer. A file whose lines all have 2 fields reads the
//! same either way. A sequence file is not detected, and must be read with `--format sequence`
//! ([`Format::Sequence`]), when its lines all have the same number of fields (e.g. every user
//! has 2 or 3 items, which would be taken for `user item timestamp` or
//! `user item rating timestamp`), when none has more than 4, or when it is not space-separated.
//!
//! Anything malformed is an [`Error::Parse`] that names the file, the 1-based line and what is
//! wrong. [`LoadReport`] records the separator, format and column mapping used.
//!
//! Raw tokens are mapped to indices 1..=N by [`IdMap`] (0 is padding). With timestamps, each
//! user's events are sorted by time, stably (ties keep file order); without, file order is time
//! order.

use crate::csr::{Buf, Csr};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::format::{Columns, Format, ReadOptions, Role};
use crate::idmap::IdMap;
use crate::io::read_bytes;

/// Field separator of an interaction file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The separator of a file whose first data line is `line` (the rule is in the module
    /// docs).
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

    /// Splits a line into trimmed fields.
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

/// Whether the first data line is a header (the rule is in the module docs).
fn is_header(fields: &[&str]) -> bool {
    let roles: Vec<Option<Role>> = fields.iter().map(|f| Role::from_name(f)).collect();
    if roles.iter().all(Option::is_some) {
        return true;
    }
    let looks_like_name = |f: &str| {
        f.is_empty()
            || (f.starts_with(|c: char| c.is_alphabetic() || c == '_') && f.parse::<f64>().is_err())
    };
    roles.contains(&Some(Role::User))
        && roles.contains(&Some(Role::Item))
        && fields
            .iter()
            .zip(&roles)
            .all(|(f, r)| r.is_some() || looks_like_name(f))
}

/// The sequence-format test of [`Format::Auto`] on a space-separated file: the data lines'
/// field counts differ and one exceeds 4.
fn looks_like_sequences(text: &str) -> bool {
    let (mut first, mut varies, mut long) = (None, false, false);
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let n = t.split_ascii_whitespace().count();
        long |= n > 4;
        varies |= *first.get_or_insert(n) != n;
        if varies && long {
            return true;
        }
    }
    false
}

/// Minimum interaction counts per user and per item (k-core filtering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KCore {
    /// Users with fewer interactions are dropped.
    pub min_user: usize,
    /// Items with fewer interactions are dropped.
    pub min_item: usize,
    /// Repeat until every remaining user and item meets its minimum (a true k-core); `false`
    /// counts once over the whole file and drops in one pass, as the TiSASRec reference's
    /// 5-filter does (docs/MODELS.md §2.2).
    pub iterative: bool,
}

/// How the file was read and what was skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The detected separator.
    pub separator: Separator,
    /// The line format used: [`Format::Interactions`] or [`Format::Sequence`], never
    /// [`Format::Auto`] (serialised as `"interactions"` or `"sequence"`).
    pub format: Format,
    /// Fields per line: the column count of an interaction file (2, 3 or 4 without a header or
    /// `--columns`), the longest line (user and items) of a sequence file.
    pub columns: usize,
    /// The role of each column of an interaction file (serialised as e.g.
    /// `"user,item,timestamp"`); `None` for a sequence file.
    pub mapping: Option<Columns>,
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
    pub sequences: Csr<u32>,
    /// `timestamps[u][j]` is the unix time of `sequences[u][j]`, when the file has timestamps.
    pub timestamps: Option<Csr<i64>>,
    /// How the file was read.
    pub report: LoadReport,
    /// The last `cold_items` item indices are held out of training (`--cold_items`,
    /// [`crate::cold`]); 0 otherwise.
    pub cold_items: usize,
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

/// Raw tokens interned to provisional ids (first appearance order).
#[derive(Default)]
struct Tokens<'a> {
    user_ids: FxHashMap<&'a str, u32>,
    item_ids: FxHashMap<&'a str, u32>,
    users: Vec<&'a str>,
    items: Vec<&'a str>,
}

impl<'a> Tokens<'a> {
    /// The record of one interaction, its tokens interned.
    fn record(&mut self, user: &'a str, item: &'a str, ts: i64) -> Record {
        Record {
            user: intern(&mut self.user_ids, &mut self.users, user),
            item: intern(&mut self.item_ids, &mut self.items, item),
            ts,
        }
    }
}

/// A file parsed into provisional records, before k-core filtering.
struct Parsed<'a> {
    records: Vec<Record>,
    tokens: Tokens<'a>,
    /// The report so far: `removed_by_kcore` is still 0.
    report: LoadReport,
}

impl<'a> Parsed<'a> {
    /// The parse of a file whose first data line is `first`: an interaction file with its
    /// `mapping`, or a sequence file (`mapping` `None`) whose longest line has `columns` fields.
    fn new(
        (records, tokens): (Vec<Record>, Tokens<'a>),
        first: &FirstLine<'_>,
        columns: usize,
        mapping: Option<Columns>,
        skipped_lines: usize,
    ) -> Self {
        let format = match mapping {
            Some(_) => Format::Interactions,
            None => Format::Sequence,
        };
        let report = LoadReport {
            separator: first.sep,
            format,
            columns,
            mapping,
            header: first.header,
            skipped_lines,
            interactions_read: records.len(),
            removed_by_kcore: 0,
        };
        Self {
            records,
            tokens,
            report,
        }
    }
}

/// The data lines of a file: (1-based line number, trimmed line), counting skipped lines.
fn data_lines<'a: 's, 's>(
    text: &'a str,
    skipped: &'s mut usize,
) -> impl Iterator<Item = (usize, &'a str)> + 's {
    text.lines().enumerate().filter_map(move |(n, line)| {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            *skipped += 1;
            None
        } else {
            Some((n + 1, t))
        }
    })
}

/// The error for a malformed line `line` (1-based) of `path`.
fn parse_error(path: &Path, line: usize, msg: String) -> Error {
    Error::Parse {
        path: path.into(),
        line,
        msg,
    }
}

/// Parses one-interaction-per-line text. `Ok(None)`: the column count does not fit and
/// `detect_sequences` is set and the file passes the sequence test (read it as sequences).
fn parse_interactions<'a>(
    path: &Path,
    text: &'a str,
    explicit: Option<&Columns>,
    detect_sequences: bool,
) -> Result<Option<Parsed<'a>>> {
    let mut skipped_lines = 0;
    let mut lines = data_lines(text, &mut skipped_lines);
    let first = FirstLine::read(path, lines.next())?;
    let file = InteractionFile {
        path,
        text,
        sep: first.sep,
        detect_sequences,
    };
    let Some((mapping, origin)) = file.map_columns(&first, explicit)? else {
        return Ok(None);
    };
    let data = first.as_data().into_iter().chain(lines);
    let Some(read) = file.read_lines(data, &mapping, origin)? else {
        return Ok(None);
    };
    let columns = mapping.len();
    Ok(Some(Parsed::new(
        read,
        &first,
        columns,
        Some(mapping),
        skipped_lines,
    )))
}

/// The first data line of a file, which sets the separator and may be a header.
struct FirstLine<'a> {
    /// Its 1-based line number.
    no: usize,
    line: &'a str,
    sep: Separator,
    fields: Vec<&'a str>,
    header: bool,
}

impl<'a> FirstLine<'a> {
    /// Detects the separator and the header from the first data line; without one the file
    /// is [`Error::Empty`].
    fn read(path: &Path, first: Option<(usize, &'a str)>) -> Result<Self> {
        let Some((no, line)) = first else {
            return Err(Error::Empty { path: path.into() });
        };
        let sep = Separator::detect(line);
        let mut fields = Vec::with_capacity(8);
        sep.split(line, &mut fields);
        let header = is_header(&fields);
        Ok(Self {
            no,
            line,
            sep,
            fields,
            header,
        })
    }

    /// The line as the first data line to read, unless it is a header.
    fn as_data(&self) -> Option<(usize, &'a str)> {
        (!self.header).then_some((self.no, self.line))
    }
}

/// An interaction file being read: where its errors point, its separator, and whether a
/// column count that does not fit may make it a sequence file.
struct InteractionFile<'p, 'a> {
    path: &'p Path,
    text: &'a str,
    sep: Separator,
    detect_sequences: bool,
}

/// Where an interaction file's column mapping came from (for the column-count message).
#[derive(Clone, Copy)]
enum Origin {
    Count,
    Header,
    Explicit,
}

impl Origin {
    /// The message for a line with `n` fields where the mapping has `cols`.
    fn count_mismatch(self, n: usize, cols: usize) -> String {
        match self {
            Origin::Count => format!("found {n} column(s) but the file has {cols}"),
            Origin::Header => format!("found {n} column(s) but the header has {cols}"),
            Origin::Explicit => format!("found {n} column(s) but --columns names {cols}"),
        }
    }
}

impl<'a> InteractionFile<'_, 'a> {
    /// The parse error for `line` (1-based).
    fn err(&self, line: usize, msg: String) -> Error {
        parse_error(self.path, line, msg)
    }

    /// The sequence fallback of [`Format::Auto`]: detection is on, the file is
    /// space-separated and passes the sequence test.
    fn is_sequence_file(&self) -> bool {
        self.detect_sequences
            && self.sep == Separator::Whitespace
            && looks_like_sequences(self.text)
    }

    /// The column mapping and its origin: `--columns`, else the header, else the column count
    /// of the first line. `Ok(None)`: no count fits and the file is a sequence file.
    fn map_columns(
        &self,
        first: &FirstLine<'_>,
        explicit: Option<&Columns>,
    ) -> Result<Option<(Columns, Origin)>> {
        let n = first.fields.len();
        if let Some(c) = explicit {
            if n != c.len() {
                let what = if first.header {
                    "the header has"
                } else {
                    "found"
                };
                let msg = format!("{what} {n} column(s) but --columns names {}", c.len());
                return Err(self.err(first.no, msg));
            }
            return Ok(Some((c.clone(), Origin::Explicit)));
        }
        if first.header {
            let c = Columns::from_header(&first.fields).map_err(|m| self.err(first.no, m))?;
            return Ok(Some((c, Origin::Header)));
        }
        if let Some(c) = Columns::positional(n) {
            return Ok(Some((c, Origin::Count)));
        }
        if self.is_sequence_file() {
            return Ok(None);
        }
        Err(self.err(
            first.no,
            format!(
                "found {n} column(s); expected 2 (user item), 3 (user item timestamp) \
                 or 4 (user item rating timestamp)"
            ),
        ))
    }

    /// Checks the data `lines` against `mapping` and interns them into records. `Ok(None)`: a
    /// line's column count does not fit a count-mapped file that is a sequence file.
    fn read_lines(
        &self,
        lines: impl Iterator<Item = (usize, &'a str)>,
        mapping: &Columns,
        origin: Origin,
    ) -> Result<Option<(Vec<Record>, Tokens<'a>)>> {
        let layout = Layout::new(mapping);
        let mut tokens = Tokens::default();
        let mut records: Vec<Record> = Vec::with_capacity(self.text.len() / 16);
        let mut fields: Vec<&str> = Vec::with_capacity(8);
        for (line_no, line) in lines {
            self.sep.split(line, &mut fields);
            if fields.len() != layout.cols {
                if matches!(origin, Origin::Count) && self.is_sequence_file() {
                    return Ok(None);
                }
                let msg = origin.count_mismatch(fields.len(), layout.cols);
                return Err(self.err(line_no, msg));
            }
            let ts = layout.check(&fields).map_err(|m| self.err(line_no, m))?;
            records.push(tokens.record(fields[layout.user], fields[layout.item], ts));
        }
        Ok(Some((records, tokens)))
    }
}

/// The 0-based columns an interaction line is read from.
struct Layout {
    /// Fields per line.
    cols: usize,
    user: usize,
    item: usize,
    rating: Option<usize>,
    time: Option<usize>,
    /// The columns that are not ignored.
    used: Vec<usize>,
}

impl Layout {
    /// The columns of `mapping`.
    fn new(mapping: &Columns) -> Self {
        Self {
            cols: mapping.len(),
            user: mapping.position(Role::User).unwrap_or(0),
            item: mapping.position(Role::Item).unwrap_or(0),
            rating: mapping.position(Role::Rating),
            time: mapping.position(Role::Timestamp),
            used: (0..mapping.len())
                .filter(|&j| mapping.roles()[j] != Role::Ignored)
                .collect(),
        }
    }

    /// Checks one line's values (used columns non-empty, the timestamp and the rating numbers)
    /// and returns its timestamp (0 without one), or what is wrong.
    fn check(&self, fields: &[&str]) -> std::result::Result<i64, String> {
        if let Some(&j) = self.used.iter().find(|&&j| fields[j].is_empty()) {
            return Err(format!("column {} is empty", j + 1));
        }
        let ts = match self.time {
            None => 0,
            Some(j) => parse_timestamp(fields[j]).map_err(|msg| format!("timestamp {msg}"))?,
        };
        if let Some(j) = self.rating {
            if !fields[j].parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(format!("rating `{}` is not a number", fields[j]));
            }
        }
        Ok(ts)
    }
}

/// Parses one-user-per-line text, `user item1 item2 …`.
fn parse_sequences<'a>(path: &Path, text: &'a str) -> Result<Parsed<'a>> {
    let err = |line: usize, msg: String| parse_error(path, line, msg);
    let mut skipped_lines = 0;
    let mut tokens = Tokens::default();
    let mut records: Vec<Record> = Vec::with_capacity(text.len() / 8);
    let mut fields: Vec<&str> = Vec::with_capacity(64);
    let mut lines = data_lines(text, &mut skipped_lines);
    let first = FirstLine::read(path, lines.next())?;
    let mut columns = 0;
    for (line_no, line) in first.as_data().into_iter().chain(lines) {
        first.sep.split(line, &mut fields);
        columns = columns.max(fields.len());
        let Some(&user) = fields.first() else {
            continue; // unreachable: a trimmed non-empty line has a field
        };
        if user.is_empty() {
            return Err(err(line_no, "the user (column 1) is empty".into()));
        }
        if fields.len() < 2 {
            return Err(err(
                line_no,
                format!("sequence line has user `{user}` but no items"),
            ));
        }
        for (j, &item) in fields.iter().enumerate().skip(1) {
            if item.is_empty() {
                return Err(err(
                    line_no,
                    format!("item {j} (column {}) of user `{user}` is empty", j + 1),
                ));
            }
            records.push(tokens.record(user, item, 0));
        }
    }
    let read = (records, tokens);
    Ok(Parsed::new(read, &first, columns, None, skipped_lines))
}

/// The text of a file's bytes, without a leading byte-order mark; invalid UTF-8 is an error
/// naming the line.
fn decode<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        parse_error(path, line, "invalid UTF-8".into())
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Parses `text` in the format `options` name, detecting it for [`Format::Auto`].
fn parse<'a>(path: &Path, text: &'a str, options: &ReadOptions) -> Result<Parsed<'a>> {
    let columns = options.columns.as_ref();
    match options.format {
        Format::Sequence => parse_sequences(path, text),
        Format::Interactions | Format::Auto => {
            let detect = options.format == Format::Auto && columns.is_none();
            match parse_interactions(path, text, columns, detect)? {
                Some(p) => Ok(p),
                None => parse_sequences(path, text),
            }
        }
    }
}

/// The records that pass the k-core filter `kcore`, if any; an error when none does.
fn filter_kcore(
    path: &Path,
    records: Vec<Record>,
    tokens: &Tokens<'_>,
    kcore: Option<KCore>,
) -> Result<Vec<Record>> {
    let Some(k) = kcore else {
        return Ok(records);
    };
    let kept = kcore_filter(records, tokens.users.len(), tokens.items.len(), k);
    if kept.is_empty() {
        return Err(Error::Data(format!(
            "{}: no interactions left after k-core filtering (users ≥ {}, items ≥ {})",
            path.display(),
            k.min_user,
            k.min_item
        )));
    }
    Ok(kept)
}

impl Dataset {
    /// Reads an interaction or sequence text file as `options` say (see the module docs for
    /// the formats and the detection rule), optionally k-core filtered.
    /// [`Dataset::read_with`] (module `load`) also reads data packs.
    pub fn read_text(path: &Path, kcore: Option<KCore>, options: &ReadOptions) -> Result<Self> {
        if options.format == Format::Sequence && options.columns.is_some() {
            return Err(Error::Config(
                "--columns names the columns of an interaction file; \
                 it cannot be combined with --format sequence"
                    .into(),
            ));
        }
        let bytes = read_bytes(path)?;
        let text = decode(path, &bytes)?;
        let Parsed {
            records,
            tokens,
            mut report,
        } = parse(path, text, options)?;
        if records.is_empty() {
            return Err(Error::Empty { path: path.into() });
        }
        let records = filter_kcore(path, records, &tokens, kcore)?;
        report.removed_by_kcore = report.interactions_read - records.len();
        let timed = report
            .mapping
            .as_ref()
            .is_some_and(|m| m.position(Role::Timestamp).is_some());
        let users = final_map(&tokens.users, records.iter().map(|r| r.user));
        let items = final_map(&tokens.items, records.iter().map(|r| r.item));
        // The file's text is no longer needed: free it before the sequences are built, so
        // that the peak holds the records and either the text or the sequences, not all three.
        drop(tokens);
        drop(bytes);
        Ok(Self::assemble(path, records, users, items, timed, report))
    }

    /// Maps the surviving provisional ids to final indices (`(map, remap)` from [`final_map`])
    /// and groups records by user.
    fn assemble(
        path: &Path,
        records: Vec<Record>,
        (users, user_remap): (IdMap, Vec<u32>),
        (items, item_remap): (IdMap, Vec<u32>),
        timed: bool,
        report: LoadReport,
    ) -> Self {
        let mut offsets = vec![0u64; users.len() + 2];
        for r in &records {
            offsets[user_remap[r.user as usize] as usize + 1] += 1;
        }
        for u in 1..offsets.len() {
            offsets[u] += offsets[u - 1];
        }
        offsets.pop(); // offsets[u] = where user u starts; the end is the number of records
        let mut cursor = offsets.clone();
        let mut seq = vec![0u32; records.len()];
        let mut ts = vec![0i64; if timed { records.len() } else { 0 }];
        for r in &records {
            let u = user_remap[r.user as usize] as usize;
            let at = cursor[u] as usize;
            seq[at] = item_remap[r.item as usize];
            if timed {
                ts[at] = r.ts;
            }
            cursor[u] += 1;
        }
        offsets.push(records.len() as u64);
        if timed {
            sort_rows_by_time(&offsets, &mut seq, &mut ts);
        }
        let csr = |v| Csr::from_parts(Buf::Owned(offsets.clone()), Buf::Owned(v));
        let sequences = csr(seq).expect("offsets count the records");
        let timestamps = timed.then(|| {
            Csr::from_parts(Buf::Owned(offsets.clone()), Buf::Owned(ts)).expect("as above")
        });
        Self {
            path: path.into(),
            users,
            items,
            sequences,
            timestamps,
            report,
            cold_items: 0,
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
        let mut lens: Vec<usize> = self.sequences.iter().skip(1).map(<[u32]>::len).collect();
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

/// Sorts each row `offsets[u]..offsets[u+1]` of `seq` and `ts` by time, stably (ties keep the
/// file order); rows already in order are left alone.
fn sort_rows_by_time(offsets: &[u64], seq: &mut [u32], ts: &mut [i64]) {
    for w in offsets.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        let (s, t) = (&mut seq[a..b], &mut ts[a..b]);
        if t.windows(2).any(|w| w[0] > w[1]) {
            let mut order: Vec<usize> = (0..t.len()).collect();
            order.sort_by_key(|&j| t[j]); // stable: ties keep file order
            let (s0, t0) = (s.to_vec(), t.to_vec());
            for (k, &j) in order.iter().enumerate() {
                s[k] = s0[j];
                t[k] = t0[j];
            }
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

/// A timestamp field as whole seconds (decimals rounded half to even), or what is wrong.
fn parse_timestamp(field: &str) -> std::result::Result<i64, String> {
    if let Ok(t) = field.parse::<i64>() {
        return Ok(t);
    }
    match field.parse::<f64>() {
        Ok(t) if t.is_finite() && t.abs() < 9.0e15 => Ok(t.round_ties_even() as i64),
        _ => Err(format!("`{field}` is not a number")),
    }
}

/// The provisional id of `tok`, a new one (its first appearance) appended to `tokens`.
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

/// The records whose user and item meet `k`'s minimum counts (once, or until stable).
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
