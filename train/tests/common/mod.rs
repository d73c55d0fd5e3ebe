//! Helpers shared by the `sasrec-train` integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test, logging warnings only.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sasrec-train"));
    c.env("RUST_LOG", "warn");
    c
}

/// A synthetic dataset of `users` users and 200 items in `dir`.
pub fn fixture_with(dir: &Path, users: usize) -> PathBuf {
    let p = dir.join(format!("syn{users}.txt"));
    let out = bin()
        .args([
            "data",
            "synthetic",
            "--users",
            &users.to_string(),
            "--items",
            "200",
            "--output",
        ])
        .arg(&p)
        .output()
        .unwrap();
    succeeded(out);
    p
}

/// The standard output of a command that must have succeeded (its error output otherwise).
pub fn succeeded(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard 120-user fixture.
pub fn fixture(dir: &Path) -> PathBuf {
    fixture_with(dir, 120)
}

/// The summary JSON of a successful run.
pub fn ok(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The error message of a run that failed with exit code 2.
pub fn err(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected failure, stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Makes `cmd` rank `rank` of `world` with its store on 127.0.0.1:`port`, as torchrun would.
pub fn as_rank(cmd: &mut Command, rank: usize, world: usize, port: u16) -> &mut Command {
    cmd.env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write_text(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
