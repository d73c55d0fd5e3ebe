//! Data packs: a pack loads (by memory map) exactly the dataset the text reader gives, and a
//! truncated, corrupt, foreign or mismatched pack is an error naming it.

mod common;

use std::path::Path;

use sasrec_shared::dataset::{Format, ReadOptions};
use sasrec_shared::pack::{self, VERSION};
use sasrec_shared::{Dataset, KCore};

use common::{after_path, temp_file};

/// Users with 1–6 interactions (timestamps out of order for some, ties for others), raw ids
/// that are not numbers for the items.
const TEXT: &str = "u1 a 5\nu1 b 3\nu1 c 3\nu2 a 1\nu2 d 2\nu3 b 9\nu3 a 8\nu3 d 7\nu3 c 6\n\
                    u3 e 10\nu3 a 11\nu4 e 1\nu4 b 2\nu4 a 3\nu5 d 4\n";

fn packed(text: &str, kcore: Option<KCore>) -> (tempfile::TempDir, Dataset, std::path::PathBuf) {
    let (dir, src) = temp_file("d.txt", text);
    let data = Dataset::read(&src, kcore).unwrap();
    let out = dir.path().join("d.pack");
    pack::write(&data, kcore, &out).unwrap();
    (dir, data, out)
}

fn assert_same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.sequences, b.sequences);
    assert_eq!(a.timestamps, b.timestamps);
    assert_eq!(a.users, b.users);
    assert_eq!(a.items, b.items);
    assert_eq!(a.report, b.report);
    assert_eq!(a.stats(), b.stats());
}

#[test]
fn a_pack_loads_the_dataset_the_text_reader_gives() {
    let kcore = Some(KCore {
        min_user: 2,
        min_item: 2,
        iterative: true,
    });
    for (text, k) in [(TEXT, None), (TEXT, kcore), ("1 10\n1 11\n2 10\n", None)] {
        let (_dir, text_data, out) = packed(text, k);
        assert!(pack::is_pack(&out));
        let from_pack = Dataset::read(&out, k).unwrap();
        assert!(
            from_pack.sequences.is_mapped(),
            "the arrays stay in the map"
        );
        assert_same(&text_data, &from_pack);
        assert_eq!(from_pack.path, out);
    }
}

/// The error of reading the pack at `path` (with no k-core filter), after the file name.
fn pack_err(path: &Path, kcore: Option<KCore>, options: &ReadOptions) -> String {
    after_path(path, Dataset::read_with(path, kcore, options).unwrap_err())
}

#[test]
fn bad_packs_are_errors_naming_the_file() {
    let (dir, _, out) = packed(TEXT, None);
    let bytes = std::fs::read(&out).unwrap();
    let none = ReadOptions::default();
    let variant = |name: &str, b: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // Truncated: the last section (the item ids' ends) runs past the end.
    let cut = variant("cut.pack", &bytes[..bytes.len() - 5]);
    let e = pack_err(&cut, None, &none);
    assert!(
        e.starts_with(": truncated: section `items.ends` ends at byte"),
        "{e}"
    );
    // A flipped byte in the last section.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let e = pack_err(&variant("flip.pack", &flipped), None, &none);
    assert_eq!(e, ": section `items.ends` is corrupt (CRC-32 mismatch)");
    // Another layout version.
    let mut v2 = bytes.clone();
    v2[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let e = pack_err(&variant("v2.pack", &v2), None, &none);
    assert_eq!(
        e,
        format!(
            ": pack layout version {}, this build reads version {VERSION}; make the pack again \
             with `sasrec-train data pack`",
            VERSION + 1
        )
    );
    // A header cut short.
    let e = pack_err(&variant("head.pack", &bytes[..40]), None, &none);
    assert!(
        e.contains("truncated: the") && e.contains("header runs past the end"),
        "{e}"
    );
    // The filter or reading flags of the run do not match the pack's.
    let k = Some(KCore {
        min_user: 5,
        min_item: 5,
        iterative: true,
    });
    assert_eq!(
        pack_err(&out, k, &none),
        ": the pack holds the data after no k-core filter, the run asks for --min_user_count 5 \
         --min_item_count 5; pass the same filter flags or pack again with them"
    );
    let seq = ReadOptions {
        format: Format::Sequence,
        columns: None,
    };
    assert_eq!(
        pack_err(&out, None, &seq),
        ": a data pack is read as packed: --format and --columns apply to `data pack`"
    );
    // A text file is not a pack (and reads as text).
    assert!(!pack::is_pack(&dir.path().join("d.txt")));
}
