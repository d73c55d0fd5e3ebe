//! Helpers shared by the data layer's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::fmt::{Debug, Display};
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A fresh temporary directory holding one file, `name`, with `contents`; the directory lasts
/// as long as the returned guard.
pub fn temp_file(name: &str, contents: impl AsRef<[u8]>) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, contents).unwrap();
    (dir, p)
}

/// `bytes` compressed as one gzip member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The message of `e` after the name of `path`, which it must start with.
pub fn after_path(path: &Path, e: impl Display) -> String {
    let e = e.to_string();
    let prefix = format!("{}", path.display());
    assert!(e.starts_with(&prefix), "error does not name the file: {e}");
    e[prefix.len()..].to_string()
}

/// Asserts every case: `error(input)` is exactly `want`.
pub fn assert_errors<T: Copy + Debug>(error: impl Fn(T) -> String, cases: &[(T, &str)]) {
    for &(input, want) in cases {
        assert_eq!(error(input), want, "input {input:?}");
    }
}
