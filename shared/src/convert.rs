//! The MovieLens-1M converter (the prototype's `convert_ml1m.py`, done right).
//!
//! Reads the raw `ratings.dat` (`UserID::MovieID::Rating::Timestamp`; plain, gzip, or inside
//! the official `ml-1m.zip`) and writes `user item timestamp` lines: users ascending, each
//! user's ratings sorted by time (stable: same-second ratings keep file order), ratings dropped,
//! raw ids kept. Ids are made contiguous when the file is loaded ([`crate::dataset`]), so no
//! never-rated movie id becomes a phantom negative (docs/MODELS.md, pitfall 30).

use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{read_bytes, write_atomic};

/// Counts of a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConvertReport {
    /// Interactions written.
    pub interactions: usize,
    /// Distinct users.
    pub users: usize,
    /// Distinct items.
    pub items: usize,
}

/// Reads `ratings.dat` bytes from a plain/gzip file or from `ml-1m.zip` (`*/ratings.dat`).
fn ratings_bytes(input: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(input)?;
    if !bytes.starts_with(b"PK\x03\x04") {
        return Ok(bytes);
    }
    let zip_err = |msg: String| Error::Data(format!("{}: {msg}", input.display()));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| zip_err(format!("not a readable zip archive: {e}")))?;
    let name = archive
        .file_names()
        .find(|n| n.rsplit('/').next() == Some("ratings.dat"))
        .map(str::to_owned)
        .ok_or_else(|| zip_err("no ratings.dat in the archive".into()))?;
    let mut out = Vec::new();
    archive
        .by_name(&name)
        .map_err(|e| zip_err(format!("{name}: {e}")))?
        .read_to_end(&mut out)
        .map_err(|e| Error::io(input, e))?;
    Ok(out)
}

/// Converts `input` to `output` (written atomically) and reports the counts.
pub fn convert_ml1m(input: &Path, output: &Path) -> Result<ConvertReport> {
    let bytes = ratings_bytes(input)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::Data(format!("{}: not UTF-8/ASCII text", input.display())))?;
    let mut rows: Vec<(u64, i64, u64)> = Vec::with_capacity(text.len() / 24);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| Error::Parse {
            path: input.into(),
            line: n + 1,
            msg,
        };
        let f: Vec<&str> = line.trim().split("::").collect();
        if f.len() != 4 {
            return Err(err(format!(
                "expected UserID::MovieID::Rating::Timestamp, found {} field(s)",
                f.len()
            )));
        }
        let num = |i: usize, name: &str| {
            f[i].parse::<u64>()
                .map_err(|_| err(format!("{name} `{}` is not an integer", f[i])))
        };
        let (user, item) = (num(0, "UserID")?, num(1, "MovieID")?);
        num(2, "Rating")?;
        let ts = f[3]
            .parse::<i64>()
            .map_err(|_| err(format!("Timestamp `{}` is not an integer", f[3])))?;
        rows.push((user, ts, item));
    }
    if rows.is_empty() {
        return Err(Error::Empty { path: input.into() });
    }
    rows.sort_by_key(|&(u, t, _)| (u, t)); // stable: ties keep file order
    let mut users: Vec<u64> = rows.iter().map(|r| r.0).collect();
    users.dedup();
    let mut items: Vec<u64> = rows.iter().map(|r| r.2).collect();
    items.sort_unstable();
    items.dedup();
    write_atomic(output, |w| {
        for (u, t, i) in &rows {
            writeln!(w, "{u} {i} {t}")?;
        }
        Ok(())
    })?;
    Ok(ConvertReport {
        interactions: rows.len(),
        users: users.len(),
        items: items.len(),
    })
}
