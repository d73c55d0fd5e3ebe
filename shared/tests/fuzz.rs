//! Fuzz targets for the data layer's readers, on stable Rust (no libFuzzer here): seeded,
//! structure-aware generation and mutation, run as ordinary tests.
//!
//! * `fuzz_dataset_reader`: interaction and sequence files (separators, headers, column
//!   counts, numbers at the edges, comments, BOM, CRLF, invalid UTF-8, gzip, corrupt gzip)
//!   written to a temporary file and read through `Dataset::read_with` with random
//!   `ReadOptions` and k-core settings;
//! * `fuzz_idmap_reader`: `items.tsv` files through `IdMap::load`.
//!
//! Each case either reads (and the result's invariants hold) or fails with an error that names
//! the file (and `file:line` for a malformed line); a panic is caught (`catch_unwind`) and
//! reported with the seed, the case number and the input. A well-formed file (no mutation)
//! must read, with the expected number of interactions / ids.
//!
//! Budget: `FUZZ_CASES` (cases per target; default below, a few seconds), or `FUZZ_SECONDS`
//! (run each target this long); `FUZZ_SEED` (default 0x5A5) picks the sequence, `FUZZ_CASE=N`
//! replays case N alone. `scripts/fuzz.sh` runs every target for a bounded time.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use sasrec_shared::dataset::{Columns, Format, ReadOptions, Role};
use sasrec_shared::time::{time_codes, Intervals, TimeUnit};
use sasrec_shared::{Dataset, Error, IdMap, KCore};

use sasrec_testutil::fuzz::{panic_message, Budget, Rng, Tally};

use common::{gzip, temp_file};

/// What a case did: read (`true`) or was refused with a good error (`false`).
type Verdict = Result<bool, String>;

/// Runs `case` under the budget, catching panics; prints one summary line
/// (`fuzz <name>: cases=… failures=… …`, parsed by scripts/fuzz.sh) and fails the test on any
/// failure, naming seed, case and input. `case` stores the input it is about to try in its
/// second argument (so a panic still reports it) and returns its verdict.
fn run_target(
    name: &str,
    default_cases: u64,
    mut case: impl FnMut(&mut Rng, &mut Vec<u8>) -> Verdict,
) {
    let budget = Budget::from_env(default_cases);
    let mut tally = Tally::new(name);
    while let Some(i) = budget.next_case(tally.cases) {
        tally.cases += 1;
        let mut rng = budget.rng(i);
        let mut input = Vec::new();
        match catch_unwind(AssertUnwindSafe(|| case(&mut rng, &mut input))) {
            Ok(Ok(true)) => tally.accepted += 1,
            Ok(Ok(false)) => tally.refused += 1,
            Ok(Err(why)) => tally.fail(&budget, i, why, &input),
            Err(p) => {
                let why = format!("PANIC: {}", panic_message(&*p));
                tally.fail(&budget, i, why, &input)
            }
        }
    }
    tally.finish(&budget);
}

// ---------------------------------------------------------------------------------------------
// Byte-level mutations, shared by both targets.

const NASTY: &[&[u8]] = &[
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\0",
    b"\r",
    b"\n",
    b"\r\n",
    b"\t",
    b"::",
    b",",
    b" ",
    b"#",
    b"\xef\xbb\xbf",
    b"\xe2\x80\x8b",
    b"\x1f\x8b",
    b"-",
    b".",
    b"e",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1e400",
    b"NaN",
];

fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            bytes[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            bytes[i] = rng.next() as u8;
        }
        2 => {
            let i = rng.below(len + 1);
            let ins = *rng.pick(NASTY);
            bytes.splice(i..i, ins.iter().copied());
        }
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(16)).min(len);
            bytes.drain(a..b);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(32)).min(len);
            let chunk: Vec<u8> = bytes[a..b].to_vec();
            let at = rng.below(len + 1);
            bytes.splice(at..at, chunk);
        }
        5 => bytes.truncate(rng.below(len + 1)),
        6 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            bytes.splice(i..i, junk);
        }
        7 => {
            // A long line.
            let i = rng.below(len + 1);
            let fill = *rng.pick(b"7 ,a\t");
            bytes.splice(i..i, std::iter::repeat_n(fill, 1 + rng.below(5000)));
        }
        _ => {
            // Many lines.
            let n = 1 + rng.below(300);
            let line = *rng.pick(&[&b"1 2\n"[..], b"\n", b"# c\n", b"1\t2\t3\n", b"x,y\n"]);
            for _ in 0..n {
                bytes.extend_from_slice(line);
            }
        }
    }
}

/// The file as written, and the bytes the reader sees after decompression when that succeeds.
struct Encoded {
    file: Vec<u8>,
    plain: Option<Vec<u8>>,
}

/// Plain (most cases), gzip, or broken gzip.
fn encode(rng: &mut Rng, text: Vec<u8>) -> Encoded {
    match rng.below(10) {
        0 => Encoded {
            file: gzip(&text),
            plain: Some(text),
        },
        1 => {
            let mut z = gzip(&text);
            match rng.below(4) {
                0 => z.truncate(2 + rng.below(z.len() - 1)),
                1 => {
                    let i = 10 + rng.below(z.len() - 10);
                    z[i] ^= 1 << rng.below(8);
                }
                2 => z.extend_from_slice(b"\x1f\x8bjunk"),
                _ => z.extend(gzip(b"1 2 3\n")),
            }
            // What the reader then sees is unknown (a flip in the deflate stream may still
            // decode, a concatenated member adds lines): no line-number check.
            Encoded {
                file: z,
                plain: None,
            }
        }
        2 => {
            let mut f = b"\x1f\x8b".to_vec();
            f.extend(text);
            Encoded {
                file: f,
                plain: None,
            }
        }
        _ => Encoded {
            file: text.clone(),
            plain: Some(text),
        },
    }
}

/// Writes a case's file: `lines` joined (see [`join_lines`]), its bytes mutated in half the
/// `mutated` cases, then encoded, written to `path` and kept in `input` for the report.
fn write_case(
    rng: &mut Rng,
    lines: &[String],
    bom: bool,
    mutated: bool,
    path: &Path,
    input: &mut Vec<u8>,
) -> Encoded {
    let mut text = join_lines(rng, lines, bom);
    if mutated && rng.chance(50) {
        for _ in 0..1 + rng.below(3) {
            mutate_bytes(rng, &mut text);
        }
    }
    let enc = encode(rng, text);
    std::fs::write(path, &enc.file).unwrap();
    input.clone_from(&enc.file);
    enc
}

/// The error of a reader on `path` names it: `path: …`, or `path:line: …` for a malformed
/// line, with a line number that exists (`plain` is the text read, when known).
fn check_error_names_file(e: &Error, path: &Path, plain: Option<&[u8]>) -> Result<(), String> {
    let msg = e.to_string();
    let shown = path.display().to_string();
    if !msg.starts_with(&shown) {
        return Err(format!("the error does not name the file: {msg:?} ({e:?})"));
    }
    match e {
        Error::Parse { path: p, line, .. } => {
            if p != path {
                return Err(format!("Parse error names another file: {msg:?}"));
            }
            if !msg.starts_with(&format!("{shown}:{line}: ")) {
                return Err(format!("Parse error is not `file:line: …`: {msg:?}"));
            }
            if let Some(text) = plain {
                let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
                if *line == 0 || *line > lines {
                    return Err(format!("line {line} of a {lines}-line file: {msg:?}"));
                }
            }
        }
        Error::Io { path: p, .. } | Error::Empty { path: p } if p != path => {
            return Err(format!("error names another file: {msg:?}"));
        }
        Error::Io { .. } | Error::Empty { .. } | Error::Data(_) => {}
        Error::Config(_) => return Err(format!("unexpected Config error: {msg:?}")),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Dataset reader.

const SMALL_SEPS: &[&str] = &[" ", "\t", ",", "::"];
const ODD_SEPS: &[&str] = &["  ", " \t ", ";", "|", ", ", " :: ", ":"];

/// Field values for mutations: numbers at the edges, names, Unicode, empties.
const ODD_TOKENS: &[&str] = &[
    "",
    "0",
    "-1",
    "+5",
    "007",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551616",
    "1e308",
    "1e400",
    "-1e400",
    "9.0e15",
    "8.99e15",
    "-8.99e15",
    "2.5",
    "3.5",
    "-0.5",
    "0.0000001",
    "NaN",
    "inf",
    "-inf",
    "1_000",
    "0x10",
    "user",
    "item",
    "user_id:token",
    "item_id:token",
    "rating:float",
    "timestamp:float",
    "ts",
    "time",
    "score",
    "movie",
    "UserID",
    "_x",
    "é",
    "日本",
    "\u{feff}",
    "\u{200b}",
    "a b",
    "#",
    "x\u{0}y",
];

fn number_token(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => format!("{}", rng.below(40)),
        1 => format!("{}", 978_300_000 + rng.below(100_000)),
        2 => format!("{}.{}", 978_300_000 + rng.below(1000), rng.below(10)),
        _ => (*rng.pick(ODD_TOKENS)).to_string(),
    }
}

fn odd_token(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => number_token(rng),
        1 => (*rng.pick(ODD_TOKENS)).to_string(),
        _ => {
            let n = rng.below(12);
            (0..n)
                .map(|_| *rng.pick(&['a', 'z', '7', '_', ':', '.', 'é', ' ', '\t']))
                .collect()
        }
    }
}

/// A well-formed file: its lines, the options that read it, and its number of interactions.
struct CleanFile {
    lines: Vec<String>,
    options: ReadOptions,
    interactions: usize,
}

fn clean_interactions(rng: &mut Rng) -> CleanFile {
    let cols = 2 + rng.below(3);
    let sep = *rng.pick(SMALL_SEPS);
    let mut lines = Vec::new();
    if rng.chance(30) {
        let header: &[&str] = match (cols, rng.below(2)) {
            (2, 0) => &["user", "item"],
            (2, _) => &["user_id:token", "item_id:token"],
            (3, 0) => &["user_id", "item_id", "timestamp"],
            (3, _) => &["UserID", "MovieID", "ts"],
            (_, 0) => &["user", "item", "rating", "timestamp"],
            (_, _) => &[
                "user_id:token",
                "item_id:token",
                "rating:float",
                "timestamp:float",
            ],
        };
        lines.push(header.join(sep));
    }
    let n = 1 + rng.below(30);
    for _ in 0..n {
        if rng.chance(5) {
            lines.push(if rng.chance(50) { "# comment" } else { "" }.into());
        }
        let user = format!("{}", 1 + rng.below(8));
        let item = if rng.chance(20) {
            format!("i{}", rng.below(20))
        } else {
            format!("{}", 1 + rng.below(20))
        };
        let ts = match rng.below(3) {
            0 => format!("{}", 978_300_000 + rng.below(100_000)),
            1 => format!("{}.5", 978_300_000 + rng.below(1000)),
            _ => format!("{}", rng.below(50)),
        };
        let rating = format!("{}", 1 + rng.below(5));
        let fields: Vec<String> = match cols {
            2 => vec![user, item],
            3 => vec![user, item, ts],
            _ => vec![user, item, rating, ts],
        };
        lines.push(fields.join(sep));
    }
    CleanFile {
        lines,
        options: ReadOptions {
            format: if rng.chance(50) {
                Format::Auto
            } else {
                Format::Interactions
            },
            columns: None,
        },
        interactions: n,
    }
}

fn clean_sequences(rng: &mut Rng) -> CleanFile {
    let sep = if rng.chance(70) {
        " "
    } else {
        *rng.pick(SMALL_SEPS)
    };
    let mut lines = Vec::new();
    if rng.chance(20) {
        lines.push(["user_id", "item_id"].join(sep));
    }
    let n = 1 + rng.below(15);
    let mut total = 0;
    for u in 0..n {
        let k = 1 + rng.below(9);
        let mut f = vec![format!("u{}", u % 6)];
        f.extend((0..k).map(|_| format!("{}", 1 + rng.below(25))));
        total += k;
        lines.push(f.join(sep));
    }
    CleanFile {
        lines,
        options: ReadOptions {
            format: Format::Sequence,
            columns: None,
        },
        interactions: total,
    }
}

fn random_columns(rng: &mut Rng) -> Columns {
    let n = 2 + rng.below(4);
    let mut roles = vec![Role::Ignored; n];
    let mut free: Vec<usize> = (0..n).collect();
    for role in [Role::User, Role::Item, Role::Timestamp, Role::Rating] {
        if free.is_empty() || (matches!(role, Role::Timestamp | Role::Rating) && rng.chance(50)) {
            continue;
        }
        let at = free.remove(rng.below(free.len()));
        roles[at] = role;
    }
    Columns::new(roles).expect("one user and one item column")
}

/// Lines joined by LF or CRLF, with or without a final newline, and (when `bom`, as the data
/// reader allows) sometimes a byte-order mark.
fn join_lines(rng: &mut Rng, lines: &[String], bom: bool) -> Vec<u8> {
    let eol = if rng.chance(20) { "\r\n" } else { "\n" };
    let mut text = lines.join(eol);
    if rng.chance(80) {
        text.push_str(eol);
    }
    if bom && rng.chance(10) {
        text.insert(0, '\u{feff}');
    }
    text.into_bytes()
}

/// Line- and field-level mutations of a file's lines.
fn mutate_lines(rng: &mut Rng, lines: &mut Vec<String>) {
    let n = lines.len();
    match rng.below(8) {
        0 if n > 0 => {
            // Replace a field.
            let l = rng.below(n);
            let sep = *rng.pick(SMALL_SEPS);
            let mut f: Vec<String> = lines[l].split(sep).map(str::to_string).collect();
            let j = rng.below(f.len());
            f[j] = odd_token(rng);
            lines[l] = f.join(sep);
        }
        1 if n > 0 => {
            // Drop or add a field.
            let l = rng.below(n);
            if rng.chance(50) {
                if let Some(cut) = lines[l].rfind([' ', '\t', ',']) {
                    lines[l].truncate(cut);
                }
            } else {
                let sep = *rng.pick(SMALL_SEPS);
                let t = odd_token(rng);
                lines[l] = format!("{}{sep}{t}", lines[l]);
            }
        }
        2 if n > 0 => {
            // Another separator on one line.
            let l = rng.below(n);
            let (from, to) = (*rng.pick(SMALL_SEPS), *rng.pick(ODD_SEPS));
            lines[l] = lines[l].replace(from, to);
        }
        3 => {
            // A line of random tokens.
            let k = 1 + rng.below(7);
            let sep = *rng.pick(SMALL_SEPS);
            let l: Vec<String> = (0..k).map(|_| odd_token(rng)).collect();
            let at = rng.below(n + 1);
            lines.insert(at, l.join(sep));
        }
        4 if n > 0 => {
            let l = rng.below(n);
            lines.remove(l);
        }
        5 if n > 0 => {
            let l = rng.below(n);
            let dup = lines[l].clone();
            lines.insert(rng.below(n + 1), dup);
        }
        6 => {
            // A header, anywhere.
            let h = *rng.pick(&[
                "user item timestamp",
                "user,item",
                "item_id\tuser_id\ttimestamp",
                "user,user,item",
                "user\tfoo",
                "a,b,c",
                "user_id:token\titem_id:token\trating:float\ttimestamp:float",
            ]);
            lines.insert(rng.below(n + 1), h.into());
        }
        _ => {
            // Blank, comment, or whitespace-only lines.
            let l = *rng.pick(&["", " ", "\t", "#", "# x y z", "   # indented"]);
            lines.insert(rng.below(n + 1), l.into());
        }
    }
}

/// The invariants of a dataset that was read.
fn check_dataset(d: &Dataset, path: &Path, kcore: Option<KCore>) -> Result<(), String> {
    let (nu, ni) = (d.num_users(), d.num_items());
    let r = &d.report;
    let fail = |m: String| Err(format!("{m} (report {r:?})"));
    if d.path != path {
        return fail(format!("path {:?}", d.path));
    }
    if r.format == Format::Auto {
        return fail("format Auto in the report".into());
    }
    if d.sequences.len() != nu + 1 || !d.sequences[0].is_empty() {
        return fail(format!("{} sequences for {nu} users", d.sequences.len()));
    }
    let mut item_count = vec![0usize; ni + 1];
    let mut total = 0;
    for (u, s) in d.sequences.iter().enumerate().skip(1) {
        if s.is_empty() {
            return fail(format!("user {u} has no events"));
        }
        for &i in s {
            if i == 0 || i as usize > ni {
                return fail(format!("item index {i} of user {u}, {ni} items"));
            }
            item_count[i as usize] += 1;
        }
        total += s.len();
    }
    if let Some(i) = item_count.iter().skip(1).position(|&c| c == 0) {
        return fail(format!("item {} is in the map but in no sequence", i + 1));
    }
    if total != r.interactions_read - r.removed_by_kcore {
        return fail(format!("{total} events; report says otherwise"));
    }
    if kcore.is_none() && r.removed_by_kcore != 0 {
        return fail("removed by k-core without k-core".into());
    }
    if let Some(k) = kcore.filter(|k| k.iterative) {
        if d.sequences.iter().skip(1).any(|s| s.len() < k.min_user)
            || item_count[1..].iter().any(|&c| c < k.min_item)
        {
            return fail(format!("not a {k:?} core"));
        }
    }
    let timed = r
        .mapping
        .as_ref()
        .is_some_and(|m| m.position(Role::Timestamp).is_some());
    match &d.timestamps {
        Some(ts) if timed => {
            for (u, (t, s)) in ts.iter().zip(&d.sequences).enumerate() {
                if t.len() != s.len() || t.windows(2).any(|w| w[0] > w[1]) {
                    return fail(format!("timestamps of user {u}: {t:?}"));
                }
            }
        }
        None if !timed => {}
        _ => return fail("timestamps present without a timestamp column, or missing".into()),
    }
    for (map, n) in [(&d.users, nu), (&d.items, ni)] {
        for i in 1..=n as u32 {
            let raw = map.raw_of(i).ok_or(format!("no raw id for {i}"))?;
            if map.index_of(raw) != Some(i) {
                return fail(format!("id map does not round-trip at {i} ({raw:?})"));
            }
        }
    }
    let s = d.stats();
    if s.interactions != total || s.users != nu || s.items != ni {
        return fail(format!("stats {s:?}"));
    }
    Ok(())
}

#[test]
fn fuzz_dataset_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz-data.txt");
    run_target("dataset", 2000, |rng, input| {
        let mut clean = if rng.chance(75) {
            clean_interactions(rng)
        } else {
            clean_sequences(rng)
        };
        let mutated = rng.chance(75);
        let mut options = clean.options.clone();
        let mut kcore = None;
        if mutated {
            for _ in 0..1 + rng.below(3) {
                mutate_lines(rng, &mut clean.lines);
            }
            options.format = *rng.pick(&[Format::Auto, Format::Interactions, Format::Sequence]);
            if rng.chance(25) {
                options.columns = Some(random_columns(rng));
            }
            if rng.chance(25) {
                kcore = Some(KCore {
                    min_user: rng.below(5),
                    min_item: rng.below(5),
                    iterative: rng.chance(50),
                });
            }
        }
        let enc = write_case(rng, &clean.lines, true, mutated, &path, input);
        let got = Dataset::read_with(&path, kcore, &options);
        let verdict = (|| {
            if options.format == Format::Sequence && options.columns.is_some() {
                return match &got {
                    Err(Error::Config(m)) if m.contains("--columns") => Ok(false),
                    other => Err(format!("--columns with --format sequence gave {other:?}")),
                };
            }
            match &got {
                Ok(d) => {
                    check_dataset(d, &path, kcore)?;
                    if !mutated
                        && enc.plain.is_some()
                        && d.report.interactions_read != clean.interactions
                    {
                        return Err(format!(
                            "a well-formed file of {} interactions read {}",
                            clean.interactions, d.report.interactions_read
                        ));
                    }
                    Ok(true)
                }
                Err(e) if !mutated && enc.plain.is_some() => {
                    Err(format!("a well-formed file was refused: {e}"))
                }
                Err(e) => check_error_names_file(e, &path, enc.plain.as_deref()).map(|()| false),
            }
        })();
        verdict
    });
}

// ---------------------------------------------------------------------------------------------
// Id-map reader.

fn idmap_token(style: usize, i: usize) -> String {
    match style {
        0 => format!("{}", i * 7 + 3),
        1 => format!("tt{i:07}"),
        2 => format!("é{i}"),
        3 => format!("a b\t{i}"),
        4 => format!("0{i}"),
        _ => format!("{i}"),
    }
}

#[test]
fn fuzz_idmap_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.tsv");
    let again = dir.path().join("saved.tsv");
    run_target("idmap", 3000, |rng, input| {
        let n = 1 + rng.below(40);
        let style = rng.below(6); // one token style per file keeps the tokens distinct
        let tokens: Vec<String> = (1..=n).map(|i| idmap_token(style, i)).collect();
        let mut lines: Vec<String> = Vec::with_capacity(n + 1);
        if rng.chance(80) {
            lines.push("index\traw_id".into());
        }
        for (i, t) in tokens.iter().enumerate() {
            if rng.chance(3) {
                lines.push(String::new());
            }
            lines.push(format!("{}\t{t}", i + 1));
        }
        let mutated = rng.chance(70);
        if mutated {
            for _ in 0..1 + rng.below(3) {
                let m = lines.len();
                match rng.below(7) {
                    0 if m > 1 => {
                        let (a, b) = (rng.below(m), rng.below(m));
                        lines.swap(a, b);
                    }
                    1 if m > 0 => {
                        let l = rng.below(m);
                        let dup = lines[l].clone();
                        lines.insert(rng.below(m + 1), dup);
                    }
                    2 if m > 0 => {
                        let l = rng.below(m);
                        let tok = lines[l].split_once('\t').map_or("x", |p| p.1).to_string();
                        let idx = *rng.pick(&[
                            "0",
                            "-1",
                            "+1",
                            "01",
                            "",
                            " 1",
                            "18446744073709551616",
                            "4294967296",
                            "1.0",
                            "index",
                        ]);
                        lines[l] = format!("{idx}\t{tok}");
                    }
                    3 if m > 0 => {
                        let l = rng.below(m);
                        let to: &&str = rng.pick(&[" ", "", ",", "\t\t"]);
                        lines[l] = lines[l].replacen('\t', to, 1);
                    }
                    4 => {
                        let l = odd_token(rng);
                        lines.insert(rng.below(m + 1), l);
                    }
                    5 if m > 0 => {
                        let l = rng.below(m);
                        lines.remove(l);
                    }
                    _ => lines.clear(),
                }
            }
        }
        // A byte-order mark only in mutated files: `IdMap::load` reads what `IdMap::save`
        // writes, which has none (one is refused as `items.tsv:1: index `\u{feff}index` is not
        // a number`).
        let bom = mutated;
        let enc = write_case(rng, &lines, bom, mutated, &path, input);
        match IdMap::load(&path) {
            Ok(m) => (|| {
                let len = m.len() as u32;
                if len == 0 {
                    return Err("an empty map was accepted".into());
                }
                if m.raw_of(0).is_some() || m.raw_of(len + 1).is_some() {
                    return Err("raw_of outside 1..=N".into());
                }
                for i in 1..=len {
                    let raw = m.raw_of(i).ok_or(format!("no raw id for {i}"))?;
                    if m.index_of(raw) != Some(i) {
                        return Err(format!("index_of(raw_of({i})) = {:?}", m.index_of(raw)));
                    }
                }
                if !mutated && enc.plain.is_some() {
                    let got: Vec<&str> = (1..=len).filter_map(|i| m.raw_of(i)).collect();
                    if got != tokens {
                        return Err(format!("read {got:?}, wrote {tokens:?}"));
                    }
                }
                // What `save` writes, `load` reads back, unless a token ends in `\r` (only
                // possible on the last line of a file without a final newline: `str::lines`
                // keeps that `\r`, while `save` writes `\n` after it and `load` then drops it
                // as part of a CRLF).
                let ends_cr = (1..=len).any(|i| m.raw_of(i).is_some_and(|t| t.ends_with('\r')));
                if !rng.chance(15) {
                    return Ok(true); // `save` syncs to disk: round-trip a sample only
                }
                m.save(&again).map_err(|e| format!("save: {e}"))?;
                match IdMap::load(&again) {
                    Ok(back) if back == m || ends_cr => Ok(true),
                    Ok(_) => Err("save → load changed the map".into()),
                    Err(e) => Err(format!("load after save: {e}")),
                }
            })(),
            Err(e) if !mutated && enc.plain.is_some() => {
                Err(format!("a well-formed items.tsv was refused: {e}"))
            }
            Err(e) => check_error_names_file(&e, &path, enc.plain.as_deref()).map(|()| false),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Regressions.

/// Timestamps at the ends of i64 overflowed `t − t0` and the smallest gap in `time_codes`, and
/// `ci − cj` in the buckets: a panic with overflow checks (sasrec-serve's request fuzz,
/// serve/tests/fuzz_request.rs, hits it at case 5265 of the default seed), wrapped codes
/// without. A data file may hold such timestamps too.
#[test]
fn extreme_timestamps_give_codes_and_buckets_without_overflow() {
    let codes = time_codes(TimeUnit::Personal, &[i64::MIN, -1, 0, i64::MAX]);
    assert_eq!(codes, vec![1, i64::MAX, i64::MAX, i64::MAX]);
    let personal = Intervals {
        unit: TimeUnit::Personal,
        span: 32,
    };
    let mut m = vec![-1; 16];
    personal.window_matrix(&codes, 4, &mut m);
    let want = [[0, 32, 32, 32], [32, 0, 0, 0], [32, 0, 0, 0], [32, 0, 0, 0]];
    assert_eq!(m, want.concat());
    // Padding against a saturated code: `min(c, k)`.
    let mut m = vec![-1; 4];
    personal.window_matrix(&[i64::MAX], 2, &mut m);
    assert_eq!(m, vec![0, 32, 32, 0]);
    for unit in [TimeUnit::Second, TimeUnit::Day] {
        let iv = Intervals { unit, span: 7 };
        let codes = time_codes(unit, &[i64::MIN, i64::MAX]);
        assert_eq!(codes, vec![i64::MIN, i64::MAX]);
        let mut m = vec![-1; 9];
        iv.window_matrix(&codes, 3, &mut m);
        assert_eq!(m, vec![0, 0, 0, 0, 0, 7, 0, 7, 0], "{unit}");
    }
    // Unchanged where nothing overflows: gaps 2 and 4 → scale 2.
    assert_eq!(
        time_codes(TimeUnit::Personal, &[10, 12, 16, 12]),
        vec![1, 2, 4, 2]
    );
}

/// The reader keeps such timestamps (and orders by them).
#[test]
fn extreme_timestamps_read_and_sort() {
    let text = "1 10 9223372036854775807\n1 11 -9223372036854775808\n1 12 0\n";
    let (_dir, p) = temp_file("d.txt", text);
    let d = Dataset::read(&p, None).unwrap();
    assert_eq!(
        d.timestamps.as_ref().unwrap()[1],
        vec![i64::MIN, 0, i64::MAX]
    );
    // Gaps 2^63 and 2^63 − 1: scale 2^63 − 1, codes 1, 1 + round(2^63 / (2^63 − 1)), 1 + 2.
    let codes = time_codes(TimeUnit::Personal, &d.timestamps.unwrap()[1]);
    assert_eq!(codes, vec![1, 2, 3]);
}
