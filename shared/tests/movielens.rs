//! Integration tests on the real MovieLens files in ../shared/data (CI has them).

mod common;

use std::io::Write;
use std::path::PathBuf;

use sasrec_shared::convert::{convert_ml1m, ConvertReport};
use sasrec_shared::{Dataset, KCore};

use common::temp_file;

fn data(rel: &str) -> PathBuf {
    let root = std::env::var("SASREC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let p = root.join(rel);
    assert!(
        p.is_file(),
        "{} is missing (set SASREC_DATA to the shared data folder)",
        p.display()
    );
    p
}

const RAW_COUNTS: ConvertReport = ConvertReport {
    interactions: 487_650,
    users: 2_999,
    items: 3_615,
};

#[test]
fn converter_reports_the_raw_counts_and_sorts_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ml-1m.txt");
    let report = convert_ml1m(&data("ml-1m/raw/ratings_u1-2999.dat.gz"), &out).unwrap();
    assert_eq!(report, RAW_COUNTS);
    let d = Dataset::read(&out, None).unwrap();
    assert_eq!(
        (d.num_users(), d.num_items(), d.stats().interactions),
        (2_999, 3_615, 487_650)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    // First lines of user 1, as the prototype's README shows them.
    assert!(
        text.starts_with("1 3186 978300019\n1 1270 978300055\n"),
        "{}",
        &text[..60]
    );
    for ts in d.timestamps.as_ref().unwrap() {
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[test]
fn converter_reads_the_official_zip() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sasrec_shared::io::read_bytes(&data("ml-1m/raw/ratings_u1-2999.dat.gz")).unwrap();
    let zip_path = dir.path().join("ml-1m.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("ml-1m/movies.dat", opts).unwrap();
    zip.write_all(b"1::Toy Story (1995)::Animation\n").unwrap();
    zip.start_file("ml-1m/ratings.dat", opts).unwrap();
    zip.write_all(&raw).unwrap();
    zip.finish().unwrap();
    let report = convert_ml1m(&zip_path, &dir.path().join("out.txt")).unwrap();
    assert_eq!(report, RAW_COUNTS);
}

#[test]
fn converter_errors_name_the_line_and_write_nothing() {
    let (dir, bad) = temp_file("ratings.dat", "1::2::5::978300760\n1::3::5\n");
    let out = dir.path().join("out.txt");
    let e = convert_ml1m(&bad, &out).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2: expected UserID::MovieID::Rating::Timestamp, found 3 field(s)",
            bad.display()
        )
    );
    std::fs::write(&bad, "1::2::5::yesterday\n").unwrap();
    let e = convert_ml1m(&bad, &out).unwrap_err().to_string();
    assert!(
        e.ends_with(":1: Timestamp `yesterday` is not an integer"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn sasrec_layout_file_has_the_published_counts() {
    let d = Dataset::read(&data("ml-1m/ml-1m.sasrec.txt.gz"), None).unwrap();
    let s = d.stats();
    assert_eq!((s.users, s.items, s.interactions), (6_040, 3_416, 999_611));
    // ids are already 1..N: the map keeps them
    assert_eq!(d.items.index_of("3416"), Some(3416));
    assert_eq!(d.users.index_of("1"), Some(1));
}

#[test]
fn tisasrec_file_with_one_pass_5_filter_matches_the_reference() {
    let d = Dataset::read(
        &data("ml-1m/ml-1m.tisasrec_u1-2999.txt.gz"),
        Some(KCore {
            min_user: 5,
            min_item: 5,
            iterative: false,
        }),
    )
    .unwrap();
    let s = d.stats();
    assert_eq!((s.interactions, s.users, s.items), (486_907, 2_999, 3_266));
    assert_eq!(d.report.columns, 4);
}

#[test]
fn movielens_100k_raw_file_loads_sorted() {
    let d = Dataset::read(&data("ml-100k/u.data.gz"), None).unwrap();
    let s = d.stats();
    assert_eq!((s.users, s.items, s.interactions), (943, 1_682, 100_000));
    assert_eq!(s.min_len, 20);
    for ts in d.timestamps.as_ref().unwrap() {
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }
}
