//! Rows of different lengths in one array (compressed sparse rows): `values` holds row 0, then
//! row 1, …, and row r is `values[offsets[r]..offsets[r + 1]]`. A dataset's per-user sequences
//! and timestamps are stored this way: one allocation instead of one per user, and the same
//! layout as a data pack (module `pack`), whose arrays a [`Csr`] can read in place from a
//! memory map shared by every process on the node.

use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use memmap2::Mmap;

/// A fixed-size number a file's bytes can be read as in place (little-endian, any bit pattern
/// valid, no padding).
///
/// # Safety
/// Implementors must be plain integers or floats.
pub unsafe trait Plain: Copy + Send + Sync + 'static {}
// SAFETY: plain integers.
unsafe impl Plain for u32 {}
// SAFETY: plain integers.
unsafe impl Plain for u64 {}
// SAFETY: plain integers.
unsafe impl Plain for i64 {}

/// An array owned in memory or read in place from a memory map.
#[derive(Clone)]
pub enum Buf<T: Plain> {
    /// In memory.
    Owned(Vec<T>),
    /// `len` values at byte `start` of a memory map.
    Mapped {
        /// The map (shared).
        map: Arc<Mmap>,
        /// Byte offset, a multiple of `align_of::<T>()`.
        start: usize,
        /// Number of values.
        len: usize,
    },
}

impl<T: Plain> Buf<T> {
    /// `len` values at byte `start` of `map`, or why not (out of bounds, misaligned).
    pub fn mapped(map: Arc<Mmap>, start: usize, len: usize) -> Result<Self, String> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_add(start))
            .ok_or("size overflows")?;
        if bytes > map.len() {
            return Err(format!(
                "{len} values at byte {start} run past the end ({} bytes)",
                map.len()
            ));
        }
        if !(map.as_ptr() as usize + start).is_multiple_of(align_of::<T>()) {
            return Err(format!(
                "byte {start} is not aligned to {}",
                align_of::<T>()
            ));
        }
        Ok(Self::Mapped { map, start, len })
    }

    /// The values.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            // SAFETY: `mapped` checked bounds and alignment; the map is read-only and lives as
            // long as `self`; every bit pattern is a valid `T` (`Plain`).
            Self::Mapped { map, start, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*start).cast::<T>(), *len)
            },
        }
    }
}

/// Rows of `T` ([module docs](self)).
#[derive(Clone)]
pub struct Csr<T: Plain> {
    offsets: Buf<u64>,
    values: Buf<T>,
}

impl<T: Plain> Csr<T> {
    /// The rows given, in order.
    pub fn from_rows<R: AsRef<[T]>>(rows: impl IntoIterator<Item = R>) -> Self {
        let mut offsets = vec![0u64];
        let mut values = Vec::new();
        for r in rows {
            values.extend_from_slice(r.as_ref());
            offsets.push(values.len() as u64);
        }
        Self::from_parts(Buf::Owned(offsets), Buf::Owned(values))
            .expect("consistent by construction")
    }

    /// Rows from their offsets (rows + 1, starting at 0, non-decreasing, ending at the number
    /// of values) and values, or what is wrong with them.
    pub fn from_parts(offsets: Buf<u64>, values: Buf<T>) -> Result<Self, String> {
        let o = offsets.as_slice();
        let n = values.as_slice().len() as u64;
        match (o.first(), o.last()) {
            (Some(0), Some(&end)) if end == n => {}
            _ => return Err(format!("offsets must run from 0 to the {n} values")),
        }
        if let Some(w) = o.windows(2).position(|w| w[0] > w[1]) {
            return Err(format!("offsets decrease at row {w}"));
        }
        Ok(Self { offsets, values })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.as_slice().len() - 1
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[T]> + '_ {
        (0..self.len()).map(move |r| &self[r])
    }

    /// Every value, row after row.
    pub fn values(&self) -> &[T] {
        self.values.as_slice()
    }

    /// The offsets (rows + 1).
    pub fn offsets(&self) -> &[u64] {
        self.offsets.as_slice()
    }

    /// Whether the arrays are read in place from a memory map.
    pub fn is_mapped(&self) -> bool {
        matches!(self.values, Buf::Mapped { .. })
    }
}

impl<T: Plain> Index<usize> for Csr<T> {
    type Output = [T];

    fn index(&self, r: usize) -> &[T] {
        let o = self.offsets.as_slice();
        &self.values.as_slice()[o[r] as usize..o[r + 1] as usize]
    }
}

impl<'a, T: Plain> IntoIterator for &'a Csr<T> {
    type Item = &'a [T];
    type IntoIter = Box<dyn ExactSizeIterator<Item = &'a [T]> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<T: Plain + PartialEq> PartialEq for Csr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.offsets() == other.offsets() && self.values() == other.values()
    }
}

impl<T: Plain + PartialEq> PartialEq<Vec<Vec<T>>> for Csr<T> {
    fn eq(&self, other: &Vec<Vec<T>>) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_slice())
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for Csr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().take(8)).finish()?;
        match self.len() > 8 {
            true => write!(f, " … ({} rows)", self.len()),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_bad_offsets_are_refused() {
        let rows = vec![vec![], vec![3u32, 1], vec![7]];
        let c = Csr::from_rows(&rows);
        assert_eq!(c.len(), 3);
        assert_eq!(c, rows);
        assert_eq!(&c[1], &[3, 1]);
        assert_eq!(c.offsets(), &[0, 0, 2, 3]);
        assert_eq!(c.iter().map(<[u32]>::len).collect::<Vec<_>>(), [0, 2, 1]);
        let bad =
            |o: Vec<u64>| Csr::from_parts(Buf::Owned(o), Buf::Owned(vec![1u32, 2, 3])).unwrap_err();
        assert_eq!(bad(vec![0, 2, 1, 3]), "offsets decrease at row 1");
        assert_eq!(bad(vec![0, 2]), "offsets must run from 0 to the 3 values");
        assert_eq!(bad(vec![]), "offsets must run from 0 to the 3 values");
    }
}
