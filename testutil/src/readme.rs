//! The README's flag tables against a binary's `--help`, for the tests of each binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The `--flags` named in the first column of the Markdown table rows under the `## {section}`
/// headings of README.md (up to the next `## ` heading).
pub fn readme_flags(sections: &[&str]) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut inside = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            inside = sections.contains(&title.trim());
            continue;
        }
        let first = match line.strip_prefix('|') {
            Some(rest) if inside => rest.split('|').next().unwrap_or(""),
            _ => continue,
        };
        out.extend(flags_in(first));
    }
    out
}

/// The long options a binary's `--help` lists (option lines only, not the prose), without
/// `--help` and `--version`.
pub fn help_flags(bin: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-h, ")
                .or(l.strip_prefix("-V, "))
                .unwrap_or(l);
            l.starts_with("--")
                .then(|| flags_in(l.split_whitespace().next().unwrap_or("")))
        })
        .flatten()
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

fn flags_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let tail = &rest[i + 2..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(tail.len());
        if tail.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            out.push(format!("--{}", &tail[..end]));
        }
        rest = &tail[end..];
    }
    out
}

/// Asserts that README and `--help` name the same flags, listing the differences both ways.
pub fn assert_same(readme: &BTreeSet<String>, help: &BTreeSet<String>, what: &str) {
    let missing: Vec<_> = help.difference(readme).collect();
    let stale: Vec<_> = readme.difference(help).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "{what}: flags in --help but not in the README table: {missing:?}; \
         in the README table but not in --help: {stale:?}"
    );
}
