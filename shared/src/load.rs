//! Reading `--dataset`: a text file ([`Dataset::read_text`]) or a data pack
//! ([`crate::pack::read`]), told apart by the pack's magic bytes.

use std::path::Path;

use crate::dataset::{Dataset, KCore, ReadOptions};
use crate::error::Result;
use crate::pack;

impl Dataset {
    /// Reads an interaction file with the default [`ReadOptions`] (format and columns
    /// detected; see the `dataset` module docs), optionally k-core filtered, or a data pack.
    pub fn read(path: &Path, kcore: Option<KCore>) -> Result<Self> {
        Self::read_with(path, kcore, &ReadOptions::default())
    }

    /// Reads a data pack ([`pack::read`]: `options` must be the defaults and `kcore` the
    /// pack's filter), or else a text file as `options` say ([`Dataset::read_text`]).
    pub fn read_with(path: &Path, kcore: Option<KCore>, options: &ReadOptions) -> Result<Self> {
        if pack::is_pack(path) {
            return pack::read(path, kcore, options);
        }
        Self::read_text(path, kcore, options)
    }
}
