//! Set-up shared by the library's unit tests.

use sasrec_shared::synthetic::{self, SyntheticConfig};
use sasrec_shared::Split;

/// A generated dataset of `users` users over `items` items, sequences of 5..=`max_len`,
/// split with the short-user threshold 3; the directory holding it lives as long as the result.
pub(crate) fn synthetic_split(
    users: usize,
    items: usize,
    max_len: usize,
) -> (tempfile::TempDir, Split) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticConfig {
        users,
        items,
        min_len: 5,
        max_len,
        ..Default::default()
    };
    let split = synthetic::write_split(&cfg, &dir.path().join("syn.txt"), 3).unwrap();
    (dir, split)
}
