//! The index's sidecar `items.usearch.json`: what the index was built from and with, and the
//! index file's length and SHA-256, checked before the index is mapped.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::params::Quantization;
use crate::vectors::ItemVectors;

/// The sidecar's `format` value.
pub const FORMAT: &str = "sasrec-ann/usearch";
/// The sidecar's `format_version`; bumped on any incompatible change of index or sidecar.
pub const FORMAT_VERSION: u32 = 1;
/// The usearch version the index files are written with (the dependency is pinned to it).
pub const USEARCH_VERSION: &str = "2.26.6";
/// The sidecar's `metric`: inner product.
pub const METRIC: &str = "ip";

/// What an index was built from and with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexInfo {
    /// The vector dimension `d`.
    pub dim: usize,
    /// The number of items `I`; the keys are 1..=I.
    pub num_items: usize,
    /// How the vectors are stored in the index.
    pub quantization: Quantization,
    /// Graph edges per node (HNSW `M`).
    pub connectivity: usize,
    /// Beam width while building (HNSW `efConstruction`).
    pub expansion_add: usize,
    /// The item vectors' `source_sha256` (the model the vectors came from).
    pub source_sha256: String,
}

impl IndexInfo {
    /// Why an index described by `self` cannot serve `vectors`, if it cannot: another
    /// dimension, item count or source model.
    pub fn mismatch(&self, vectors: &ItemVectors) -> Option<String> {
        let (dim, count, source) = (vectors.dim(), vectors.num_items(), vectors.source_sha256());
        if self.dim == dim && self.num_items == count && self.source_sha256 == source {
            return None;
        }
        Some(format!(
            "built for other item vectors (index: dim {}, {} items, source_sha256 {}; {}: dim \
             {dim}, {count} items, source_sha256 {source}); rebuild the index",
            self.dim,
            self.num_items,
            self.source_sha256,
            vectors.path().display()
        ))
    }
}

/// The sidecar file's content (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The usearch version that wrote the index.
    pub usearch_version: String,
    /// Always [`METRIC`].
    pub metric: String,
    /// What the index was built from and with.
    #[serde(flatten)]
    pub info: IndexInfo,
    /// The index file's length in bytes.
    pub index_bytes: u64,
    /// Lower-case hex SHA-256 of the index file.
    pub index_sha256: String,
}

impl Sidecar {
    /// The sidecar of an index file of `index_bytes` bytes with digest `index_sha256`.
    pub fn new(info: IndexInfo, index_bytes: u64, index_sha256: String) -> Self {
        Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            usearch_version: USEARCH_VERSION.into(),
            metric: METRIC.into(),
            info,
            index_bytes,
            index_sha256,
        }
    }

    /// Reads the sidecar of the index `index`; errors name the sidecar file.
    pub fn read(index: &Path) -> Result<Self> {
        let path = sidecar_path(index);
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::file(
                    &path,
                    "missing: the index has no sidecar; rebuild it",
                ))
            }
            other => other.map_err(|e| Error::io(&path, e))?,
        };
        let sidecar: Sidecar = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("malformed sidecar: {e}")))?;
        let expected = (FORMAT, FORMAT_VERSION, METRIC);
        let found = (
            sidecar.format.as_str(),
            sidecar.format_version,
            sidecar.metric.as_str(),
        );
        if found != expected {
            return Err(Error::file(
                &path,
                format!("unsupported index format {found:?}; this build reads {expected:?}"),
            ));
        }
        Ok(sidecar)
    }

    /// Writes the sidecar of the index `index` atomically.
    pub fn write(&self, index: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("the sidecar serialises");
        sasrec_shared::io::write_atomic(&sidecar_path(index), |w| {
            w.write_all(json.as_bytes())?;
            w.write_all(b"\n")
        })?;
        Ok(())
    }

    /// Checks that the index file `index` has the recorded length (else it is truncated or
    /// extended) and SHA-256 (else it is corrupt); errors name the index file.
    pub fn verify_file(&self, index: &Path) -> Result<()> {
        let len = std::fs::metadata(index)
            .map_err(|e| Error::io(index, e))?
            .len();
        if len != self.index_bytes {
            let what = if len < self.index_bytes {
                "truncated"
            } else {
                "wrong length"
            };
            return Err(Error::file(
                index,
                format!(
                    "{what}: {len} bytes, the sidecar records {}",
                    self.index_bytes
                ),
            ));
        }
        let (_, digest) = file_digest(index)?;
        if digest != self.index_sha256 {
            return Err(Error::file(
                index,
                format!(
                    "corrupt: SHA-256 {digest}, the sidecar records {}",
                    self.index_sha256
                ),
            ));
        }
        Ok(())
    }
}

/// The sidecar of the index file `index`: `index` with `.json` appended
/// (`items.usearch` → `items.usearch.json`).
pub fn sidecar_path(index: &Path) -> PathBuf {
    let mut name = OsString::from(index.as_os_str());
    name.push(".json");
    PathBuf::from(name)
}

/// The length and lower-case hex SHA-256 of the file `path`, streamed.
pub fn file_digest(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let len = std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((len, hex))
}
