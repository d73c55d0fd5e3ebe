//! Raw id ↔ contiguous index maps (index 0 is padding, real ids are 1..=N).

use std::io::Write;
use std::path::Path;

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::io::{read_bytes, write_atomic};

/// A bijection between raw tokens (as written in the data file) and indices 1..=N.
///
/// Order: when every token is an unsigned integer the indices follow numeric order, otherwise
/// byte-wise lexicographic order. So a file that already uses 1..N keeps its ids, and the map
/// does not depend on the order of lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdMap {
    /// `raw[i-1]` is the raw token of index `i`.
    raw: Vec<String>,
    index: FxHashMap<String, u32>,
}

impl IdMap {
    /// Builds the map from distinct tokens in any order, sorting them as described above.
    pub fn from_tokens(mut tokens: Vec<String>) -> Self {
        let numeric: Option<Vec<u64>> = tokens.iter().map(|t| t.parse::<u64>().ok()).collect();
        match numeric {
            Some(nums) => {
                let mut pairs: Vec<(u64, String)> = nums.into_iter().zip(tokens).collect();
                pairs.sort_unstable();
                tokens = pairs.into_iter().map(|(_, t)| t).collect();
            }
            None => tokens.sort_unstable(),
        }
        tokens.dedup();
        Self::from_ordered(tokens)
    }

    fn from_ordered(raw: Vec<String>) -> Self {
        let index = raw
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32 + 1))
            .collect();
        Self { raw, index }
    }

    /// Number of real ids N (padding excluded).
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the map holds no ids.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The index (1..=N) of a raw token.
    pub fn index_of(&self, raw: &str) -> Option<u32> {
        self.index.get(raw).copied()
    }

    /// The raw token of an index (1..=N); `None` for padding or out of range.
    pub fn raw_of(&self, index: u32) -> Option<&str> {
        (index as usize)
            .checked_sub(1)
            .and_then(|i| self.raw.get(i))
            .map(String::as_str)
    }

    /// Writes the map as TSV (`index<TAB>raw_id`, header line first), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, |w| {
            writeln!(w, "index\traw_id")?;
            for (i, t) in self.raw.iter().enumerate() {
                writeln!(w, "{}\t{}", i + 1, t)?;
            }
            Ok(())
        })
    }

    /// Reads a map written by [`IdMap::save`]; indices must be 1..=N in order.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_bytes(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::Data(format!("{}: not UTF-8: {e}", path.display())))?;
        let mut raw = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            if line_no == 1 && line.starts_with("index") || line.is_empty() {
                continue;
            }
            let parse = |msg: String| Error::Parse {
                path: path.into(),
                line: line_no,
                msg,
            };
            let (idx, tok) = line
                .split_once('\t')
                .ok_or_else(|| parse("expected `index<TAB>raw_id`".into()))?;
            let idx: usize = idx
                .parse()
                .map_err(|_| parse(format!("index `{idx}` is not a number")))?;
            if idx != raw.len() + 1 {
                return Err(parse(format!(
                    "index {idx} out of order (expected {})",
                    raw.len() + 1
                )));
            }
            raw.push(tok.to_string());
        }
        if raw.is_empty() {
            return Err(Error::Empty { path: path.into() });
        }
        let map = Self::from_ordered(raw);
        if map.index.len() != map.raw.len() {
            return Err(Error::Data(format!(
                "{}: duplicate raw ids",
                path.display()
            )));
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numeric_tokens_sort_numerically() {
        let m = IdMap::from_tokens(toks(&["10", "9", "100", "9"]));
        assert_eq!(m.len(), 3);
        assert_eq!(m.index_of("9"), Some(1));
        assert_eq!(m.index_of("10"), Some(2));
        assert_eq!(m.index_of("100"), Some(3));
        assert_eq!(m.raw_of(0), None);
        assert_eq!(m.raw_of(3), Some("100"));
        assert_eq!(m.raw_of(4), None);
    }

    #[test]
    fn string_tokens_sort_lexicographically() {
        let m = IdMap::from_tokens(toks(&["b", "a", "10"]));
        assert_eq!(m.index_of("10"), Some(1));
        assert_eq!(m.index_of("a"), Some(2));
        assert_eq!(m.index_of("b"), Some(3));
    }

    #[test]
    fn save_load_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("items.tsv");
        let m = IdMap::from_tokens(toks(&["x y", "7", "tt"]));
        m.save(&p).unwrap();
        assert_eq!(IdMap::load(&p).unwrap(), m);
        std::fs::write(&p, "index\traw_id\n1\ta\n3\tb\n").unwrap();
        let e = IdMap::load(&p).unwrap_err().to_string();
        assert!(e.ends_with(":3: index 3 out of order (expected 2)"), "{e}");
    }
}
