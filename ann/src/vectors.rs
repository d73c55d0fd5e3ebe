//! The item-vector table `item_vectors.safetensors`: one float32 tensor `[num_items + 1, d]`,
//! row = item index, row 0 = padding, read by memory map and validated on opening.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo, View};
use safetensors::SafeTensors;
use sasrec_shared::run::two_tower::{meta as keys, ITEM_VECTORS_TENSOR};

use crate::error::{Error, Result};

/// The metadata keys [`ItemVectors::write`] sets itself; extra metadata may not use them.
const RESERVED: [&str; 4] = [keys::SOURCE_SHA256, keys::NUM_ITEMS, keys::DIM, keys::KIND];

/// The caller-supplied part of an item-vector file's metadata; `num_items` and `dim` are
/// derived from the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorsMeta {
    /// Lower-case hex SHA-256 (64 digits) of the source `model.safetensors`.
    pub source_sha256: String,
    /// The model kind (non-empty).
    pub kind: String,
    /// Further string metadata (e.g. the writer's version); the four keys of
    /// [`sasrec_shared::run::two_tower::meta`] are rejected.
    pub extra: BTreeMap<String, String>,
}

/// The table's floats: borrowed from the memory map where the tensor's data is 4-byte aligned
/// and the machine is little-endian (always, for files written by safetensors ≥ 0.4 on
/// x86-64/aarch64), copied otherwise.
enum Table {
    Mapped { map: Mmap, start: usize, len: usize },
    Owned(Vec<f32>),
}

impl Table {
    fn new(map: Mmap, start: usize, len: usize) -> Self {
        let aligned = (map[start..].as_ptr() as usize) & (std::mem::align_of::<f32>() - 1) == 0;
        if aligned && cfg!(target_endian = "little") {
            return Table::Mapped { map, start, len };
        }
        let bytes = &map[start..start + 4 * len];
        let floats = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Table::Owned(floats.collect())
    }

    /// Gives the pages of a mapped table back to the page cache after a pass over every row
    /// (the check at open), so the process keeps resident only the rows it later reads: the
    /// candidates it re-scores (at 10M items × d 32 the table is 1.28 GB).
    fn release_pages(&self) {
        #[cfg(unix)]
        if let Table::Mapped { map, .. } = self {
            // SAFETY: the map is a private, read-only mapping of a file that is replaced by
            // rename, never rewritten in place, so dropping its pages only means they are read
            // again from the same bytes on the next access. A failure only costs memory.
            if let Err(e) = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) } {
                tracing::debug!(error = %e, "madvise(DONTNEED) on the item vectors failed");
            }
        }
    }

    fn floats(&self) -> &[f32] {
        match self {
            Table::Mapped { map, start, len } => {
                let bytes = &map[*start..*start + 4 * *len];
                // SAFETY: `Table::new` checked that `bytes` is 4-byte aligned and the target
                // little-endian; it holds `len` f32s (the range is inside the map, so the
                // slice indexing above would have panicked otherwise); every bit pattern is a
                // valid f32; the slice borrows `self`, which owns the map.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), *len) }
            }
            Table::Owned(v) => v,
        }
    }
}

/// The item vectors `v_i` (rows 1..=I of a `[I + 1, d]` float32 table; row 0 is padding),
/// memory-mapped from `item_vectors.safetensors`. The score of item `i` for a user vector `q`
/// is `q · v_i` ([`crate::dot`]).
pub struct ItemVectors {
    path: PathBuf,
    table: Table,
    num_items: usize,
    dim: usize,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for ItemVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemVectors")
            .field("path", &self.path)
            .field("num_items", &self.num_items)
            .field("dim", &self.dim)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl ItemVectors {
    /// Opens `path` by memory map and validates it: the tensor [`ITEM_VECTORS_TENSOR`] exists,
    /// is F32 of shape `[I + 1, d]` with `I, d ≥ 1`, every value is finite, and the metadata
    /// holds `source_sha256` (64 hex digits), `kind`, and `num_items` / `dim` equal to the
    /// shape. The file must not be modified in place while open (replacing it by rename, as
    /// [`ItemVectors::write`] does, is safe).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; files of this crate are replaced by rename, never
        // rewritten in place, so the mapped bytes do not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, header) = SafeTensors::read_metadata(&map).map_err(|e| {
            Error::file(
                path,
                format!("not a valid safetensors file (truncated?): {e}"),
            )
        })?;
        let info = tensor_info(&header).map_err(|m| Error::file(path, m))?;
        let (num_items, dim) = table_shape(info).map_err(|m| Error::file(path, m))?;
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        check_metadata(&metadata, num_items, dim).map_err(|m| Error::file(path, m))?;
        let start = 8 + header_len + info.data_offsets.0;
        let table = Table::new(map, start, (num_items + 1) * dim);
        check_finite(table.floats(), dim).map_err(|m| Error::file(path, m))?;
        table.release_pages();
        tracing::debug!(path = %path.display(), num_items, dim, "item vectors opened");
        Ok(Self {
            path: path.to_path_buf(),
            table,
            num_items,
            dim,
            metadata,
        })
    }

    /// Writes `rows` (the whole `[I + 1, d]` table, row-major, row 0 = padding) to `path` as
    /// a safetensors file with tensor [`ITEM_VECTORS_TENSOR`] and metadata `meta` plus
    /// `num_items` and `dim`, atomically (temporary file, fsync, rename). Rejects a table
    /// that [`ItemVectors::open`] would reject.
    pub fn write(path: &Path, rows: &[f32], dim: usize, meta: &VectorsMeta) -> Result<()> {
        let num_items = check_rows(rows, dim).map_err(|m| Error::file(path, m))?;
        let metadata = meta
            .to_map(num_items, dim)
            .map_err(|m| Error::file(path, m))?;
        check_finite(rows, dim).map_err(|m| Error::file(path, m))?;
        let view = F32View {
            rows,
            shape: [num_items + 1, dim],
        };
        sasrec_shared::io::write_atomic_path(path, |tmp| {
            let metadata: HashMap<String, String> = metadata.into_iter().collect();
            safetensors::serialize_to_file([(ITEM_VECTORS_TENSOR, view)], Some(metadata), tmp)
        })?;
        Ok(())
    }

    /// The number of items `I` (rows 1..=I are items).
    pub fn num_items(&self) -> usize {
        self.num_items
    }

    /// The vector dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i` of the table: `v_i` for an item `1 ≤ i ≤ I`, the padding row for `i = 0`.
    /// Panics when `i > I`.
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(
            i <= self.num_items,
            "row {i} past the {} items",
            self.num_items
        );
        &self.table.floats()[i * self.dim..(i + 1) * self.dim]
    }

    /// Lower-case hex SHA-256 of the model the vectors came from (`source_sha256`).
    pub fn source_sha256(&self) -> &str {
        &self.metadata[keys::SOURCE_SHA256]
    }

    /// The model kind (`kind`).
    pub fn kind(&self) -> &str {
        &self.metadata[keys::KIND]
    }

    /// All of the file's metadata, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The file the vectors were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl VectorsMeta {
    /// The `__metadata__` map for a table of `num_items` items of dimension `dim`.
    fn to_map(&self, num_items: usize, dim: usize) -> Result<BTreeMap<String, String>, String> {
        if let Some(k) = self.extra.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(format!(
                "metadata key {k:?} is reserved; it is set by the writer"
            ));
        }
        let mut map = self.extra.clone();
        map.insert(keys::SOURCE_SHA256.into(), self.source_sha256.clone());
        map.insert(keys::KIND.into(), self.kind.clone());
        map.insert(keys::NUM_ITEMS.into(), num_items.to_string());
        map.insert(keys::DIM.into(), dim.to_string());
        check_metadata(&map, num_items, dim)?;
        Ok(map)
    }
}

/// The float32 table as a safetensors [`View`] (little-endian bytes).
struct F32View<'a> {
    rows: &'a [f32],
    shape: [usize; 2],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.rows.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn data_len(&self) -> usize {
        4 * self.rows.len()
    }
}

/// The item-vector tensor's entry in the header, or what is missing.
fn tensor_info(header: &Metadata) -> Result<&TensorInfo, String> {
    header.info(ITEM_VECTORS_TENSOR).ok_or_else(|| {
        let mut names: Vec<String> = header.tensors().into_keys().collect();
        names.sort();
        format!(
            "no tensor {ITEM_VECTORS_TENSOR:?} (the file holds {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    })
}

/// `(I, d)` of a float32 `[I + 1, d]` tensor with `I, d ≥ 1`, or what is wrong.
fn table_shape(info: &TensorInfo) -> Result<(usize, usize), String> {
    if info.dtype != Dtype::F32 {
        return Err(format!(
            "tensor {ITEM_VECTORS_TENSOR:?} has dtype {:?}; expected F32",
            info.dtype
        ));
    }
    match info.shape[..] {
        [rows, dim] if rows >= 2 && dim >= 1 => Ok((rows - 1, dim)),
        _ => Err(format!(
            "tensor {ITEM_VECTORS_TENSOR:?} has shape {:?}; expected [num_items + 1, dim] \
             with num_items ≥ 1 and dim ≥ 1",
            info.shape
        )),
    }
}

/// `I` of a row-major `[I + 1, dim]` table, or what is wrong with its size.
fn check_rows(rows: &[f32], dim: usize) -> Result<usize, String> {
    let n = rows.len() / dim.max(1);
    if dim == 0 || n * dim != rows.len() || n < 2 {
        return Err(format!(
            "{} floats do not form an [num_items + 1, {dim}] table with num_items ≥ 1",
            rows.len()
        ));
    }
    Ok(n - 1)
}

/// Checks that every value is finite; names the first row that is not.
fn check_finite(rows: &[f32], dim: usize) -> Result<(), String> {
    match rows
        .chunks_exact(dim)
        .position(|r| !r.iter().all(|x| x.is_finite()))
    {
        Some(i) => Err(format!("row {i} holds a non-finite value (NaN or ±inf)")),
        None => Ok(()),
    }
}

/// Checks the required metadata against the table's shape.
fn check_metadata(
    meta: &BTreeMap<String, String>,
    num_items: usize,
    dim: usize,
) -> Result<(), String> {
    let get = |k: &str| meta.get(k).ok_or_else(|| format!("metadata has no {k:?}"));
    let digest = get(keys::SOURCE_SHA256)?;
    if !is_sha256_hex(digest) {
        return Err(format!(
            "metadata source_sha256 {digest:?} is not 64 lower-case hex digits"
        ));
    }
    if get(keys::KIND)?.is_empty() {
        return Err("metadata kind is empty".into());
    }
    for (key, want) in [(keys::NUM_ITEMS, num_items), (keys::DIM, dim)] {
        let value = get(key)?;
        if value.parse::<usize>().ok() != Some(want) {
            return Err(format!(
                "metadata {key} = {value:?}, but the tensor's shape says {want}"
            ));
        }
    }
    Ok(())
}

/// Whether `s` is 64 lower-case hex digits (a SHA-256 as this project writes it).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
