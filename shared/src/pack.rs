//! Data packs (`sasrec-train data pack`): a dataset as read, k-core filtered and indexed,
//! stored in one binary file that loads by memory map, so that the ranks of a node share one
//! copy in the page cache and loading costs no parsing.
//!
//! Layout (little-endian), version [`VERSION`]:
//!
//! ```text
//! bytes 0..8    magic "SASRPACK"
//! bytes 8..12   layout version (u32)
//! bytes 12..16  0
//! bytes 16..24  H, the header's length (u64)
//! bytes 24..    the header: JSON (source, k-core, read report, counts, and each section's
//!               name, byte offset, length and CRC-32)
//! sections      each at a multiple of 8 bytes:
//!   offsets       u64 × (U + 2)   user u's interactions are [offsets[u], offsets[u+1])
//!   items         u32 × N         item indices, users in order, each oldest first
//!   timestamps    i64 × N         unix seconds (only when the file had timestamps)
//!   users.text    bytes           the raw user ids 1..=U concatenated
//!   users.ends    u64 × U         where each ends in users.text
//!   items.text, items.ends        the same for the items
//! ```
//!
//! Opening a pack checks the magic, the version, every section's bounds, size and CRC-32 (a
//! truncated, foreign or corrupt file is an error naming it) and rebuilds the two id maps in
//! memory; the offsets, items and timestamps stay in the map. The file must not change while
//! it is open (packs are written atomically, so rewriting one replaces the file rather than
//! its pages).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::csr::{Buf, Csr, Plain};
use crate::dataset::{Dataset, KCore, LoadReport, ReadOptions};
use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::io::write_atomic;

/// The first 8 bytes of every pack.
pub const MAGIC: &[u8; 8] = b"SASRPACK";
/// The layout this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the header.
const PREFIX: usize = 24;

/// Where a pack's data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackSource {
    /// The text file it was read from.
    pub path: PathBuf,
    /// Its size in bytes when packed.
    pub bytes: u64,
    /// Its modification time (unix seconds) when packed.
    pub modified: Option<i64>,
}

/// One array of the pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// `offsets`, `items`, `timestamps`, `users.text`, …
    pub name: String,
    /// Byte offset in the file (a multiple of 8).
    pub offset: u64,
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (ISO-HDLC, as zlib) of those bytes.
    pub crc32: u32,
}

/// The pack's JSON header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackHeader {
    /// The source file.
    pub source: PackSource,
    /// The k-core filter the data went through, `None` when none.
    pub kcore: Option<KCore>,
    /// How the source was read.
    pub report: LoadReport,
    /// U.
    pub users: usize,
    /// I.
    pub items: usize,
    /// N.
    pub interactions: usize,
    /// The arrays, in file order.
    pub sections: Vec<Section>,
}

/// Whether `path` starts with the pack magic (an unreadable or short file is not a pack).
pub fn is_pack(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == MAGIC)
}

/// The bytes of a plain array (little-endian on the platforms this builds for).
fn bytes_of<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: `Plain` types have no padding and any byte pattern; the length is exact.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// An id map as (concatenated text, end of each id).
fn id_parts(map: &IdMap) -> (String, Vec<u64>) {
    let mut text = String::new();
    let mut ends = Vec::with_capacity(map.len());
    for i in 1..=map.len() as u32 {
        text.push_str(map.raw_of(i).expect("indices 1..=N"));
        ends.push(text.len() as u64);
    }
    (text, ends)
}

/// Writes `data` (read from `source` with the k-core filter `kcore`) as a pack at `out`,
/// atomically; returns its header.
pub fn write(data: &Dataset, kcore: Option<KCore>, out: &Path) -> Result<PackHeader> {
    if data.cold_items != 0 {
        return Err(Error::Config(
            "a pack holds data as read, before --cold_items".into(),
        ));
    }
    let (user_text, user_ends) = id_parts(&data.users);
    let (item_text, item_ends) = id_parts(&data.items);
    let mut arrays: Vec<(&str, &[u8])> = vec![
        ("offsets", bytes_of(data.sequences.offsets())),
        ("items", bytes_of(data.sequences.values())),
    ];
    if let Some(ts) = &data.timestamps {
        arrays.push(("timestamps", bytes_of(ts.values())));
    }
    arrays.extend([
        ("users.text", user_text.as_bytes()),
        ("users.ends", bytes_of(&user_ends)),
        ("items.text", item_text.as_bytes()),
        ("items.ends", bytes_of(&item_ends)),
    ]);
    let header = header_for(data, kcore, &arrays)?;
    let json = serde_json::to_vec(&header).map_err(|e| Error::Data(e.to_string()))?;
    write_atomic(out, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&[0u8; 4])?;
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        let mut at = (PREFIX + json.len()) as u64;
        for ((_, bytes), s) in arrays.iter().zip(&header.sections) {
            w.write_all(&vec![0u8; (s.offset - at) as usize])?;
            w.write_all(bytes)?;
            at = s.offset + s.bytes;
        }
        Ok(())
    })?;
    Ok(header)
}

/// The header of a pack of `data` with `arrays` (name, bytes) laid out after it, each at a
/// multiple of 8. The header's own length fixes where the first array starts, so the offsets
/// are laid out for a header of the final length (recomputed until it stops growing).
fn header_for(
    data: &Dataset,
    kcore: Option<KCore>,
    arrays: &[(&str, &[u8])],
) -> Result<PackHeader> {
    let meta = std::fs::metadata(&data.path).map_err(|e| Error::io(&data.path, e))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let mut header = PackHeader {
        source: PackSource {
            path: data.path.clone(),
            bytes: meta.len(),
            modified,
        },
        kcore,
        report: data.report.clone(),
        users: data.num_users(),
        items: data.num_items(),
        interactions: data.sequences.values().len(),
        sections: arrays
            .iter()
            .map(|(name, bytes)| Section {
                name: name.to_string(),
                offset: 0,
                bytes: bytes.len() as u64,
                crc32: crc32fast::hash(bytes),
            })
            .collect(),
    };
    let mut len = 0;
    loop {
        let mut at = (PREFIX + len) as u64;
        for s in &mut header.sections {
            at = at.next_multiple_of(8);
            s.offset = at;
            at += s.bytes;
        }
        let now = serde_json::to_vec(&header)
            .map_err(|e| Error::Data(e.to_string()))?
            .len();
        if now == len {
            return Ok(header);
        }
        len = now;
    }
}

/// A pack's error: the file and what is wrong.
fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Data(format!("{}: {msg}", path.display()))
}

/// Opens the pack at `path` ([module docs](self)): the dataset (its arrays in the memory map)
/// and the header.
pub fn open(path: &Path) -> Result<(Dataset, PackHeader)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; packs are replaced atomically, never rewritten in place
    // (module docs), so its pages do not change while it is open.
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let header = read_header(path, &map)?;
    let section = |name: &str| -> Result<Option<&Section>> {
        let s = header.sections.iter().find(|s| s.name == name);
        if let Some(s) = s {
            check_section(path, &map, s)?;
        }
        Ok(s)
    };
    let need = |name: &str| section(name)?.ok_or_else(|| bad(path, format!("no `{name}` section")));
    let (u, n) = (header.users, header.interactions);
    let offsets = array::<u64>(path, &map, need("offsets")?, u + 2)?;
    let sequences = rows(path, &offsets, array::<u32>(path, &map, need("items")?, n)?)?;
    let timestamps = match section("timestamps")? {
        Some(s) => Some(rows(path, &offsets, array::<i64>(path, &map, s, n)?)?),
        None => None,
    };
    let users = id_map(path, &map, need("users.text")?, need("users.ends")?, u)?;
    let items = id_map(
        path,
        &map,
        need("items.text")?,
        need("items.ends")?,
        header.items,
    )?;
    if let Some(&bad_item) = sequences
        .values()
        .iter()
        .find(|&&i| i == 0 || i as usize > header.items)
    {
        return Err(bad(
            path,
            format!("item index {bad_item} outside 1..={}", header.items),
        ));
    }
    let data = Dataset {
        path: path.to_path_buf(),
        users,
        items,
        sequences,
        timestamps,
        report: header.report.clone(),
        cold_items: 0,
    };
    Ok((data, header))
}

/// Rows of `values` at `offsets`, or what is wrong with the offsets.
fn rows<T: Plain>(path: &Path, offsets: &Buf<u64>, values: Buf<T>) -> Result<Csr<T>> {
    Csr::from_parts(offsets.clone(), values).map_err(|e| bad(path, e))
}

/// The dataset in the pack at `path`, read as `--dataset` asks: the reading flags apply when a
/// pack is made, so `options` must be the defaults and `kcore` the filter the pack was made
/// with.
pub fn read(path: &Path, kcore: Option<KCore>, options: &ReadOptions) -> Result<Dataset> {
    if options != &ReadOptions::default() {
        return Err(bad(
            path,
            "a data pack is read as packed: --format and --columns apply to `data pack`",
        ));
    }
    let (data, header) = open(path)?;
    if header.kcore != kcore {
        let show = |k: Option<KCore>| match k {
            Some(k) => format!(
                "--min_user_count {} --min_item_count {}{}",
                k.min_user,
                k.min_item,
                if k.iterative { "" } else { " --kcore_one_pass" }
            ),
            None => "no k-core filter".into(),
        };
        return Err(bad(path, format!(
            "the pack holds the data after {}, the run asks for {}; pass the same filter flags or pack again with them",
            show(header.kcore),
            show(kcore)
        )));
    }
    Ok(data)
}

/// The magic, version and JSON header of the mapped pack.
fn read_header(path: &Path, map: &Mmap) -> Result<PackHeader> {
    if map.len() < PREFIX || &map[..8] != MAGIC {
        return Err(bad(
            path,
            "not a data pack (no SASRPACK magic); make one with `sasrec-train data pack`",
        ));
    }
    let version = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(path, format!(
            "pack layout version {version}, this build reads version {VERSION}; make the pack again with `sasrec-train data pack`"
        )));
    }
    let len = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes")) as usize;
    let json = map.get(PREFIX..PREFIX.saturating_add(len)).ok_or_else(|| {
        bad(
            path,
            format!(
                "truncated: the {len}-byte header runs past the end ({} bytes)",
                map.len()
            ),
        )
    })?;
    serde_json::from_slice(json).map_err(|e| bad(path, format!("corrupt header: {e}")))
}

/// A section's bounds and checksum.
fn check_section(path: &Path, map: &Mmap, s: &Section) -> Result<()> {
    let end = s.offset.checked_add(s.bytes).unwrap_or(u64::MAX);
    if end > map.len() as u64 {
        return Err(bad(
            path,
            format!(
                "truncated: section `{}` ends at byte {end}, the file has {} bytes",
                s.name,
                map.len()
            ),
        ));
    }
    let bytes = &map[s.offset as usize..end as usize];
    if crc32fast::hash(bytes) != s.crc32 {
        return Err(bad(
            path,
            format!("section `{}` is corrupt (CRC-32 mismatch)", s.name),
        ));
    }
    Ok(())
}

/// A section as `len` values of `T`, in place.
fn array<T: Plain>(path: &Path, map: &Arc<Mmap>, s: &Section, len: usize) -> Result<Buf<T>> {
    if s.bytes != (len * size_of::<T>()) as u64 {
        return Err(bad(
            path,
            format!(
                "section `{}` has {} bytes, {len} values need {}",
                s.name,
                s.bytes,
                len * size_of::<T>()
            ),
        ));
    }
    Buf::mapped(map.clone(), s.offset as usize, len)
        .map_err(|e| bad(path, format!("section `{}`: {e}", s.name)))
}

/// An id map of `n` ids from its text and ends sections.
fn id_map(path: &Path, map: &Arc<Mmap>, text: &Section, ends: &Section, n: usize) -> Result<IdMap> {
    let ends = array::<u64>(path, map, ends, n)?;
    let text = std::str::from_utf8(&map[text.offset as usize..(text.offset + text.bytes) as usize])
        .map_err(|e| bad(path, format!("id text is not UTF-8: {e}")))?;
    let ends = ends.as_slice();
    let mut start = 0;
    let mut ids = Vec::with_capacity(n);
    for &e in ends {
        let id = text
            .get(start..e as usize)
            .ok_or_else(|| bad(path, format!("id ends out of order at byte {e}")))?;
        ids.push(id);
        start = e as usize;
    }
    let m = IdMap::from_ordered(ids);
    if m.len() != n {
        return Err(bad(
            path,
            format!("{} distinct ids, the header says {n}", m.len()),
        ));
    }
    Ok(m)
}
