//! Raw id ↔ contiguous index maps (index 0 is padding, real ids are 1..=N).

use std::hash::BuildHasher;
use std::io::Write;
use std::path::Path;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::error::{Error, Result};
use crate::io::{read_bytes, write_atomic};

/// A bijection between raw tokens (as written in the data file) and indices 1..=N.
///
/// Order: when every token is an unsigned integer the indices follow numeric order, otherwise
/// byte-wise lexicographic order. So a file that already uses 1..N keeps its ids, and the map
/// does not depend on the order of lines.
///
/// Layout: the tokens are stored once, concatenated in index order, with their end offsets,
/// and a hash table holds the indices keyed by their token's hash, so the map costs about
/// `Σ|token| + 8·N + 5·N / 0.875` bytes (≈ 22 bytes per id of 8 characters: 230 MB at 10M
/// items, where a `Vec<String>` and a `HashMap<String, u32>` of copies cost ~150 bytes per
/// id).
#[derive(Clone, Default)]
pub struct IdMap {
    /// The tokens of indices 1..=N, concatenated.
    text: String,
    /// `ends[i - 1]` is where the token of index `i` ends in `text` (it starts at the previous
    /// end, or 0).
    ends: Vec<usize>,
    /// The indices 1..=N, found by their token's [`FxBuildHasher`] hash.
    index: HashTable<u32>,
}

impl PartialEq for IdMap {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.ends == other.ends
    }
}

impl std::fmt::Debug for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdMap")
            .field("len", &self.len())
            .field("first", &self.raw_of(1))
            .field("last", &self.raw_of(self.len() as u32))
            .finish()
    }
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
        let mut map = Self::with_capacity(tokens.len(), tokens.iter().map(String::len).sum());
        for t in &tokens {
            map.push(t);
        }
        map
    }

    /// The map of `tokens` in the order given (index 1 = the first); repeated tokens keep
    /// their first index.
    pub fn from_ordered<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        let mut map = Self::with_capacity(0, 0);
        for t in tokens {
            map.push(t);
        }
        map
    }

    /// An empty map with room for `n` tokens of `bytes` bytes in all.
    fn with_capacity(n: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
        }
    }

    /// Appends `token` as index N + 1 and returns that index, or `None` (nothing added) when
    /// the map already holds it.
    fn push(&mut self, token: &str) -> Option<u32> {
        let hash = FxBuildHasher.hash_one(token);
        if self.find(token, hash).is_some() {
            return None;
        }
        self.text.push_str(token);
        self.ends.push(self.text.len());
        let i = self.ends.len() as u32;
        let (text, ends) = (&self.text, &self.ends);
        let rehash = |&j: &u32| FxBuildHasher.hash_one(token_at(text, ends, j));
        self.index.insert_unique(hash, i, rehash);
        Some(i)
    }

    /// The index of `token`, whose hash is `hash`.
    fn find(&self, token: &str, hash: u64) -> Option<u32> {
        let (text, ends) = (&self.text, &self.ends);
        self.index
            .find(hash, |&j| token_at(text, ends, j) == token)
            .copied()
    }

    /// Number of real ids N (padding excluded).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the map holds no ids.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The index (1..=N) of a raw token.
    pub fn index_of(&self, raw: &str) -> Option<u32> {
        self.find(raw, FxBuildHasher.hash_one(raw))
    }

    /// The raw token of an index (1..=N); `None` for padding or out of range.
    pub fn raw_of(&self, index: u32) -> Option<&str> {
        (1..=self.len() as u32)
            .contains(&index)
            .then(|| token_at(&self.text, &self.ends, index))
    }

    /// Writes the map as TSV (`index<TAB>raw_id`, header line first), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, |w| {
            writeln!(w, "index\traw_id")?;
            for i in 1..=self.len() as u32 {
                writeln!(w, "{i}\t{}", token_at(&self.text, &self.ends, i))?;
            }
            Ok(())
        })
    }

    /// Reads a map written by [`IdMap::save`]; indices must be 1..=N in order.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_bytes(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::Data(format!("{}: not UTF-8: {e}", path.display())))?;
        let mut map = Self::with_capacity(text.len() / 12, text.len());
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
            if idx != map.len() + 1 {
                return Err(parse(format!(
                    "index {idx} out of order (expected {})",
                    map.len() + 1
                )));
            }
            if map.push(tok).is_none() {
                return Err(parse(format!(
                    "raw id `{tok}` is already index {}",
                    map.index_of(tok).unwrap_or(0)
                )));
            }
        }
        if map.is_empty() {
            return Err(Error::Empty { path: path.into() });
        }
        Ok(map)
    }
}

/// The token of index `i` (1..=N) in the concatenated `text` with end offsets `ends`.
fn token_at<'a>(text: &'a str, ends: &[usize], i: u32) -> &'a str {
    let i = i as usize;
    let start = if i > 1 { ends[i - 2] } else { 0 };
    &text[start..ends[i - 1]]
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
        std::fs::write(&p, "index\traw_id\n1\ta\n2\tb\n3\ta\n").unwrap();
        let e = IdMap::load(&p).unwrap_err().to_string();
        assert!(e.ends_with(":4: raw id `a` is already index 1"), "{e}");
    }

    #[test]
    fn every_token_round_trips_at_scale() {
        let tokens: Vec<String> = (0..50_000u64)
            .map(|i| (i * 7919 % 100_003).to_string())
            .collect();
        let m = IdMap::from_tokens(tokens.clone());
        assert_eq!(m.len(), 50_000);
        let mut last = None;
        for i in 1..=50_000u32 {
            let t = m.raw_of(i).unwrap();
            assert_eq!(m.index_of(t), Some(i));
            let v: u64 = t.parse().unwrap();
            assert!(last < Some(v), "numeric order at {i}");
            last = Some(v);
        }
        assert_eq!(m.index_of("100003"), None);
        assert_eq!(m.index_of(""), None);
    }
}
