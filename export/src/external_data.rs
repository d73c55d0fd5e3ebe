//! Writing the exported model: one self-contained `.onnx`, or, for large models, a `.onnx`
//! plus `<file>.onnx.data` holding the initializers (ONNX external data).
//!
//! A `.onnx` file is one protobuf message, and protobuf readers (ONNX Runtime, `onnx.load`)
//! refuse messages of 2 GiB or more, so a model whose weights approach that size must keep
//! them outside. The rule, with B = Σ raw bytes of the graph's initializers and θ =
//! `--external_data_threshold`:
//!
//! * B ≤ θ: every initializer stays inline; no data file is written and a data file left by an
//!   earlier export of the same output is removed.
//! * B > θ: every initializer of at least [`MIN_TENSOR_BYTES`] bytes moves to the data file
//!   (`data_location = EXTERNAL`, `raw_data` cleared) with the entries `location` (the data
//!   file's name, relative to the `.onnx`), `offset` and `length`. Tensors are laid out in graph
//!   order, each at the first multiple of [`ALIGNMENT`] at or after the end of the previous
//!   one: offset₀ = 0, offsetᵢ = ⌈(offsetᵢ₋₁ + lengthᵢ₋₁) / 4096⌉ · 4096, with zero bytes in
//!   the gaps, so ONNX Runtime can memory-map every tensor.
//!
//! Both files are encoded and checked before anything is written, then written atomically
//! (`sasrec_shared::io::write_atomic`: temporary file, fsync, rename, directory fsync), the data
//! file first, so the `.onnx` never names data that is not on disk yet. A crash between the two
//! renames leaves the new data file beside the previous `.onnx`; exporting again repairs it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::tensor_proto::DataLocation;
use crate::proto::{ModelProto, StringStringEntryProto};

/// Default `--external_data_threshold`: ⌊1.8 · 2³⁰⌋ bytes = 1.8 GiB of initializers. Every
/// model below it is one self-contained file; above it, the weights go to the data file well
/// before the `.onnx` (weights + graph + metadata) reaches the 2 GiB protobuf limit.
pub const DEFAULT_THRESHOLD: u64 = 1_932_735_283;

/// Smallest initializer moved to the data file, in bytes (ONNX's `size_threshold` convention
/// in `onnx.external_data_helper.convert_model_to_external_data`): smaller ones are not worth
/// a seek.
pub const MIN_TENSOR_BYTES: usize = 1024;

/// Alignment of every offset in the data file (the page size ONNX Runtime maps at).
pub const ALIGNMENT: u64 = 4096;

/// The largest `.onnx` protobuf readers accept: 2³¹ − 1 bytes.
pub const PROTOBUF_LIMIT: usize = i32::MAX as usize;

/// The data file of `onnx`: its file name plus `.data` in the same directory
/// (`model.onnx` → `model.onnx.data`).
pub fn data_path(onnx: &Path) -> Result<PathBuf> {
    Ok(onnx.with_file_name(format!("{}.data", file_name(onnx)?)))
}

/// The file name of `path` as UTF-8 (the `location` entry is a protobuf string).
fn file_name(path: &Path) -> Result<&str> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Output {
            path: path.to_path_buf(),
            msg: "--output must name a file with a UTF-8 name".into(),
        })
}

/// Where one tensor lies in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First byte, a multiple of [`ALIGNMENT`].
    pub offset: u64,
    /// Number of bytes (the tensor's `raw_data` length).
    pub length: u64,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// The first multiple of [`ALIGNMENT`] at or after `pos`.
pub fn align_up(pos: u64) -> u64 {
    pos.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// The data file's content: each moved tensor's bytes and where they go, in file order.
#[derive(Debug)]
struct DataFile {
    path: PathBuf,
    tensors: Vec<(Extent, Vec<u8>)>,
}

impl DataFile {
    /// Length of the file: the end of the last tensor.
    fn len(&self) -> u64 {
        self.tensors.last().map_or(0, |(e, _)| e.end())
    }

    /// Writes the tensors at their offsets, zeros in the alignment gaps, atomically.
    fn write(&self) -> Result<()> {
        sasrec_shared::io::write_atomic(&self.path, |w| {
            let mut pos = 0u64;
            for (extent, bytes) in &self.tensors {
                std::io::copy(&mut std::io::repeat(0).take(extent.offset - pos), w)?;
                w.write_all(bytes)?;
                pos = extent.end();
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// What was written for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Size of the `.onnx` file in bytes.
    pub onnx_bytes: usize,
    /// The data file, when the initializers were moved out.
    pub external: Option<ExternalFile>,
}

/// The external data file written beside the `.onnx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFile {
    /// `<onnx>.data`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many initializers it holds.
    pub tensors: usize,
}

/// The model's files, encoded and checked but not yet written (see the [module docs](self)).
#[derive(Debug)]
pub struct ModelFiles {
    onnx: PathBuf,
    encoded: Vec<u8>,
    initializer_bytes: u64,
    threshold: u64,
    /// Why the initializers go where they go, for the log.
    always_external: bool,
    data: DataFile,
}

impl ModelFiles {
    /// Splits `model` for the output `onnx` by `threshold` (bytes of initializers) and encodes
    /// the `.onnx`. Fails, naming `onnx` and the flag, when the `.onnx` would exceed
    /// [`PROTOBUF_LIMIT`].
    pub fn new(mut model: ModelProto, onnx: &Path, threshold: u64) -> Result<Self> {
        let data_path = data_path(onnx)?;
        let initializer_bytes = initializer_bytes(&model);
        let tensors = if initializer_bytes > threshold {
            externalize(&mut model, file_name(&data_path)?)
        } else {
            Vec::new()
        };
        let len = model.encoded_len();
        if len > PROTOBUF_LIMIT {
            return Err(Error::Output {
                path: onnx.to_path_buf(),
                msg: format!(
                    "the model would be {len} bytes, over the {PROTOBUF_LIMIT}-byte protobuf \
                     limit ({initializer_bytes} bytes of initializers); lower \
                     --external_data_threshold (now {threshold}) to write them to {}",
                    data_path.display()
                ),
            });
        }
        Ok(Self {
            onnx: onnx.to_path_buf(),
            encoded: model.encode_to_vec(),
            initializer_bytes,
            threshold,
            always_external: false,
            data: DataFile {
                path: data_path,
                tensors,
            },
        })
    }

    /// Splits every initializer of at least [`MIN_TENSOR_BYTES`] of `model` into the data
    /// file whatever their total (threshold 0), as for a user tower (`crate::run_dir`).
    pub fn always_external(model: ModelProto, onnx: &Path) -> Result<Self> {
        let mut files = Self::new(model, onnx, 0)?;
        files.always_external = true;
        Ok(files)
    }

    /// Writes the data file (when there is one) and then the `.onnx`, each atomically, or
    /// the `.onnx` alone and removes a stale data file; logs which form was written.
    pub fn write(self) -> Result<Written> {
        let (b, t) = (self.initializer_bytes, self.threshold);
        let external = if self.data.tensors.is_empty() {
            self.write_onnx()?;
            tracing::info!(
                "wrote {} inline ({} bytes): {b} bytes of initializers, \
                 --external_data_threshold {t}{}",
                self.onnx.display(),
                self.encoded.len(),
                if b > t {
                    format!(", but none of at least {MIN_TENSOR_BYTES} bytes to move")
                } else {
                    String::new()
                }
            );
            self.remove_stale_data()?;
            None
        } else {
            self.data.write()?;
            self.write_onnx()?;
            let file = ExternalFile {
                path: self.data.path.clone(),
                bytes: self.data.len(),
                tensors: self.data.tensors.len(),
            };
            tracing::info!(
                "wrote {} ({} bytes) with external data {} ({} bytes, {} of {} initializer \
                 bytes in {} tensors): {}",
                self.onnx.display(),
                self.encoded.len(),
                file.path.display(),
                file.bytes,
                self.data.tensors.iter().map(|(e, _)| e.length).sum::<u64>(),
                b,
                file.tensors,
                if self.always_external {
                    "always, for a user tower".to_string()
                } else {
                    format!("above --external_data_threshold {t}")
                }
            );
            Some(file)
        };
        Ok(Written {
            onnx_bytes: self.encoded.len(),
            external,
        })
    }

    fn write_onnx(&self) -> Result<()> {
        sasrec_shared::io::write_atomic(&self.onnx, |w| w.write_all(&self.encoded))?;
        Ok(())
    }

    /// Removes `<onnx>.data` left by an earlier external-data export of the same output.
    fn remove_stale_data(&self) -> Result<()> {
        let path = &self.data.path;
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(
                    "removed {}: external data of an earlier export, not used by the new {}",
                    path.display(),
                    self.onnx.display()
                );
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// Σ `raw_data` bytes over the graph's initializers (the recorder stores every tensor there).
pub fn initializer_bytes(model: &ModelProto) -> u64 {
    model.graph.as_ref().map_or(0, |g| {
        g.initializer
            .iter()
            .map(|t| t.raw_data.as_ref().map_or(0, |r| r.len() as u64))
            .sum()
    })
}

/// Moves every initializer of at least [`MIN_TENSOR_BYTES`] out of `model` into the layout
/// of the [module docs](self), pointing it at `location`; returns the bytes with their extents.
fn externalize(model: &mut ModelProto, location: &str) -> Vec<(Extent, Vec<u8>)> {
    let Some(graph) = model.graph.as_mut() else {
        return Vec::new();
    };
    let mut end = 0u64;
    graph
        .initializer
        .iter_mut()
        .filter_map(|t| {
            if t.raw_data.as_ref()?.len() < MIN_TENSOR_BYTES {
                return None;
            }
            let raw = t.raw_data.take()?;
            let extent = Extent {
                offset: align_up(end),
                length: raw.len() as u64,
            };
            end = extent.end();
            t.data_location = Some(DataLocation::External as i32);
            t.external_data = [
                ("location", location.to_string()),
                ("offset", extent.offset.to_string()),
                ("length", extent.length.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            })
            .collect();
            Some((extent, raw))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GraphProto, TensorProto};

    fn tensor(name: &str, bytes: usize) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: vec![(bytes / 4) as i64],
            data_type: Some(1),
            raw_data: Some((0..bytes).map(|i| (i % 251) as u8).collect()),
            ..Default::default()
        }
    }

    fn model(sizes: &[usize]) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                initializer: sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| tensor(&format!("t{i}"), n))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn entries(t: &TensorProto) -> Vec<(String, String)> {
        t.external_data
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
            .collect()
    }

    #[test]
    fn offsets_are_aligned_and_small_tensors_stay_inline() {
        let mut m = model(&[5000, 1020, 1024, 4096, 8]);
        let moved = externalize(&mut m, "m.onnx.data");
        let extents: Vec<Extent> = moved.iter().map(|(e, _)| *e).collect();
        assert_eq!(
            extents,
            [
                Extent {
                    offset: 0,
                    length: 5000
                },
                Extent {
                    offset: 8192,
                    length: 1024
                },
                Extent {
                    offset: 12288,
                    length: 4096
                },
            ]
        );
        let g = m.graph.unwrap();
        let original = model(&[5000, 1020, 1024, 4096, 8]).graph.unwrap();
        for (i, t) in g.initializer.iter().enumerate() {
            let inline = i == 1 || i == 4;
            assert_eq!(t.raw_data.is_some(), inline, "t{i}");
            if inline {
                assert_eq!(t.data_location, None, "t{i}");
                assert!(t.external_data.is_empty(), "t{i}");
            } else {
                assert_eq!(t.data_location, Some(DataLocation::External as i32));
            }
        }
        assert_eq!(
            entries(&g.initializer[2]),
            [
                ("location".to_string(), "m.onnx.data".to_string()),
                ("offset".into(), "8192".into()),
                ("length".into(), "1024".into()),
            ]
        );
        // the moved bytes are the tensors' own
        for ((_, bytes), i) in moved.iter().zip([0, 2, 3]) {
            assert_eq!(Some(bytes), original.initializer[i].raw_data.as_ref());
        }
    }

    #[test]
    fn alignment_rounds_up_to_the_page() {
        assert_eq!(
            [0, 1, 4095, 4096, 4097].map(align_up),
            [0, 4096, 4096, 4096, 8192]
        );
    }

    #[test]
    fn threshold_is_exclusive_and_counts_all_initializers() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("m.onnx");
        let total = 2000 + 100;
        let at = ModelFiles::new(model(&[2000, 100]), &onnx, total).unwrap();
        assert!(at.data.tensors.is_empty());
        let above = ModelFiles::new(model(&[2000, 100]), &onnx, total - 1).unwrap();
        assert_eq!(above.data.tensors.len(), 1);
        assert_eq!(above.data.len(), 2000);
        assert_eq!(above.data.path, dir.path().join("m.onnx.data"));
    }

    #[test]
    fn data_file_holds_the_tensors_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("m.onnx");
        let files = ModelFiles::new(model(&[5000, 1024]), &onnx, 0).unwrap();
        let written = files.write().unwrap();
        let data = std::fs::read(dir.path().join("m.onnx.data")).unwrap();
        assert_eq!(data.len(), 8192 + 1024);
        let want = model(&[5000, 1024]).graph.unwrap();
        assert_eq!(
            &data[..5000],
            want.initializer[0].raw_data.as_deref().unwrap()
        );
        assert!(data[5000..8192].iter().all(|&b| b == 0));
        assert_eq!(
            &data[8192..],
            want.initializer[1].raw_data.as_deref().unwrap()
        );
        assert_eq!(
            written,
            Written {
                onnx_bytes: std::fs::metadata(&onnx).unwrap().len() as usize,
                external: Some(ExternalFile {
                    path: dir.path().join("m.onnx.data"),
                    bytes: 9216,
                    tensors: 2
                }),
            }
        );
        // below the threshold: inline, and the data file goes
        let inline = ModelFiles::new(model(&[5000, 1024]), &onnx, u64::MAX).unwrap();
        let written = inline.write().unwrap();
        assert_eq!(written.external, None);
        assert!(!dir.path().join("m.onnx.data").exists());
        assert_eq!(
            ModelProto::decode(&std::fs::read(&onnx).unwrap()[..]).unwrap(),
            model(&[5000, 1024])
        );
    }

    #[test]
    fn data_path_appends_data_to_the_file_name() {
        assert_eq!(
            data_path(Path::new("runs/a/model.onnx")).unwrap(),
            Path::new("runs/a/model.onnx.data")
        );
        let err = data_path(Path::new("/")).unwrap_err().to_string();
        assert_eq!(err, "/: --output must name a file with a UTF-8 name");
    }
}
