//! The server must not depend on libtorch: not through Cargo (no `tch`, `torch-sys` or
//! `sasrec-models` among its normal dependencies) and not at run time (the binary does not
//! link `libtorch*`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const FORBIDDEN: [&str; 3] = ["tch", "torch-sys", "sasrec-models"];

/// Normal (non-dev) dependencies of `name` from `Cargo.lock`, transitively. `Cargo.lock` lists
/// build and dev dependencies too, so this over-approximates: if even this set is clean, the
/// real graph is.
fn lock_closure(lock: &str, root: &str) -> BTreeSet<String> {
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_string())
            .unwrap();
        let list: Vec<String> = block
            .split_once("dependencies = [")
            .map(|(_, rest)| {
                rest.split(']')
                    .next()
                    .unwrap_or("")
                    .lines()
                    .map(|l| l.trim().trim_end_matches(',').trim_matches('"'))
                    .filter(|l| !l.is_empty())
                    // "name version" when several versions exist
                    .map(|l| l.split_whitespace().next().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        deps.entry(name).or_default().extend(list);
    }
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_string()];
    while let Some(n) = stack.pop() {
        if seen.insert(n.clone()) {
            stack.extend(deps.get(&n).cloned().unwrap_or_default());
        }
    }
    seen
}

#[test]
fn manifest_has_no_torch_dependency() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for f in FORBIDDEN {
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{f} "))
                    || l.trim_start().starts_with(&format!("{f}."))),
            "serve/Cargo.toml depends on {f}"
        );
    }
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"))
        .unwrap();
    let closure = lock_closure(&lock, "sasrec-serve");
    assert!(closure.contains("ort"), "lock parsing broken: {closure:?}");
    assert!(closure.contains("sasrec-shared"));
    for f in FORBIDDEN {
        assert!(
            !closure.contains(f),
            "sasrec-serve pulls in {f} (via Cargo.lock)"
        );
    }
}

#[test]
fn binary_does_not_link_libtorch() {
    let exe = env!("CARGO_BIN_EXE_sasrec-serve");
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .unwrap_or_else(|e| panic!("the link check needs ldd (Debian: libc-bin): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd failed: {text}");
    for bad in ["libtorch", "libc10", "libonnxruntime"] {
        assert!(!text.contains(bad), "{exe} links {bad}:\n{text}");
    }
}
