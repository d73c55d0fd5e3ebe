//! Where a model's files are: `sasrec-serve PATH` names a `.onnx` file or a directory holding
//! `model.onnx`, and the item map `items.tsv` lies beside the `.onnx` (as `sasrec-export`
//! writes it; names in [`sasrec_shared::run::files`]).

use std::path::{Path, PathBuf};

use sasrec_shared::run::{files, RunDir};

use crate::error::LoadError;

/// `PATH` → (`.onnx` file, `items.tsv`); errors name `PATH` and the missing file.
pub fn resolve_paths(path: &Path) -> Result<(PathBuf, PathBuf), LoadError> {
    let bad = |msg: String| LoadError::Path {
        path: path.to_path_buf(),
        msg,
    };
    let onnx = if path.is_dir() {
        RunDir::new(path).onnx()
    } else {
        path.to_path_buf()
    };
    if !onnx.is_file() {
        return Err(bad(if path.is_dir() {
            format!(
                "directory has no {} (run `sasrec-export --onnx --train_dir DIR`)",
                files::ONNX
            )
        } else {
            "no such file".to_string()
        }));
    }
    let items = RunDir::new(onnx.parent().unwrap_or_else(|| Path::new("."))).items();
    if !items.is_file() {
        return Err(bad(format!(
            "no {} beside the model (sasrec-export writes it)",
            files::ITEMS
        )));
    }
    Ok((onnx, items))
}
