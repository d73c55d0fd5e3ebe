//! Dataset reading: every accepted format and every rejected input.

mod common;

use sasrec_shared::dataset::Separator;
use sasrec_shared::io::read_bytes;
use sasrec_shared::split::DEFAULT_MIN_HOLDOUT_LEN;
use sasrec_shared::{Dataset, KCore, Part, Split};

use common::{after_path, assert_errors, gzip, temp_file};

fn read(text: &str) -> Dataset {
    let (_dir, p) = temp_file("d.txt", text);
    Dataset::read(&p, None).unwrap()
}

/// The error for `text`, after the file name, which it must start with.
fn read_err(text: &str) -> String {
    let (_dir, p) = temp_file("bad.txt", text);
    after_path(&p, Dataset::read(&p, None).unwrap_err())
}

#[test]
fn all_separators_and_column_counts_give_the_same_sequences() {
    let variants = [
        ("1 10\n1 11\n2 10\n", Separator::Whitespace, 2),
        ("1\t10\n1\t11\n2\t10\n", Separator::Tab, 2),
        ("1,10\n1,11\n2,10\n", Separator::Comma, 2),
        ("1::10\n1::11\n2::10\n", Separator::DoubleColon, 2),
        ("1  10   5\n1 11 6\n2 10 7\n", Separator::Whitespace, 3),
        (
            "1\t10\t4\t5\n1\t11\t3.5\t6\n2\t10\t1\t7\n",
            Separator::Tab,
            4,
        ),
        (
            "1::10::4::5\n1::11::3::6\n2::10::1::7\n",
            Separator::DoubleColon,
            4,
        ),
        (
            "user,item,rating,timestamp\n1,10,4,5\n1,11,3,6\n2,10,1,7\n",
            Separator::Comma,
            4,
        ),
        (
            "\n# comment\n1 10\r\n\n1 11\r\n2 10\r\n",
            Separator::Whitespace,
            2,
        ),
    ];
    for (text, sep, cols) in variants {
        let d = read(text);
        assert_eq!(d.report.separator, sep, "{text:?}");
        assert_eq!(d.report.columns, cols, "{text:?}");
        assert_eq!(d.num_users(), 2, "{text:?}");
        assert_eq!(d.num_items(), 2, "{text:?}");
        assert_eq!(d.sequences, vec![vec![], vec![1, 2], vec![1]], "{text:?}");
        assert_eq!(d.has_timestamps(), cols >= 3, "{text:?}");
    }
    assert!(read("user,item,rating,timestamp\n1,10,4,5\n").report.header);
    assert_eq!(read("\n# c\n1 10\n\n").report.skipped_lines, 3);
}

#[test]
fn gzip_is_detected_by_content() {
    let (_dir, p) = temp_file("plain.txt", gzip(b"1 2\n"));
    assert_eq!(read_bytes(&p).unwrap(), b"1 2\n");
}

#[test]
fn gzip_is_read_directly() {
    let (_dir, p) = temp_file("d.txt.gz", gzip(b"u1 a 3\nu1 b 1\nu2 a 2\n"));
    let d = Dataset::read(&p, None).unwrap();
    // u1's events sorted by time: b (1) then a (3).
    assert_eq!(
        d.sequences[1],
        vec![
            d.items.index_of("b").unwrap(),
            d.items.index_of("a").unwrap()
        ]
    );
    assert_eq!(d.timestamps.as_ref().unwrap()[1], vec![1, 3]);
}

#[test]
fn raw_ids_map_to_contiguous_indices_and_back() {
    let d = read("500 30\n7 20\n500 10\n");
    assert_eq!(d.users.index_of("7"), Some(1));
    assert_eq!(d.users.index_of("500"), Some(2));
    assert_eq!(d.items.raw_of(1), Some("10"));
    assert_eq!(d.items.raw_of(3), Some("30"));
    assert_eq!(d.sequences[2], vec![3, 1]); // file order kept without timestamps
    assert_eq!(d.sequences[1], vec![2]);
}

#[test]
fn chronological_sort_is_stable_on_equal_timestamps() {
    let d = read("1 a 5\n1 b 3\n1 c 5\n1 d 3\n1 e 1\n");
    let names: Vec<&str> = d.sequences[1]
        .iter()
        .map(|&i| d.items.raw_of(i).unwrap())
        .collect();
    assert_eq!(names, ["e", "b", "d", "a", "c"]);
    assert_eq!(d.timestamps.unwrap()[1], vec![1, 3, 3, 5, 5]);
}

#[test]
fn decimal_timestamps_round_half_to_even() {
    let d = read("1 a 2.5\n1 b 3.5\n1 c 1e3\n");
    assert_eq!(d.timestamps.unwrap()[1], vec![2, 4, 1000]);
}

#[test]
fn bad_input_names_file_and_line() {
    assert_errors(
        read_err,
        &[
            ("1 2\n3\n", ":2: found 1 column(s) but the file has 2"),
            ("1 2 3\n1 2\n", ":2: found 2 column(s) but the file has 3"),
            ("1 2 3\n1 2 x7\n", ":2: timestamp `x7` is not a number"),
            ("1::2::five::3\n", ":1: rating `five` is not a number"),
            (
                "7\n",
                ":1: found 1 column(s); expected 2 (user item), 3 (user item timestamp) \
                 or 4 (user item rating timestamp)",
            ),
            (
                "1 2 3 4 5\n",
                ":1: found 5 column(s); expected 2 (user item), 3 (user item timestamp) \
                 or 4 (user item rating timestamp)",
            ),
            ("1,2\n1,,3\n", ":2: found 3 column(s) but the file has 2"),
            ("1,2\n1,\n", ":2: column 2 is empty"),
        ],
    );
    assert!(read_err("").contains("no interactions in the file"));
    assert!(read_err("\n\n# only comments\n").contains("no interactions in the file"));
    assert!(read_err("user item\n").contains("no interactions in the file"));
}

#[test]
fn invalid_utf8_and_missing_files_are_errors() {
    let (dir, p) = temp_file("bin.txt", b"1 2\n1 \xff\n");
    assert!(Dataset::read(&p, None)
        .unwrap_err()
        .to_string()
        .ends_with(":2: invalid UTF-8"));
    let missing = dir.path().join("nope.txt");
    let e = Dataset::read(&missing, None).unwrap_err().to_string();
    assert!(
        e.starts_with(&missing.display().to_string()) && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn kcore_one_pass_and_iterative_differ() {
    // Item x is rated by users 1 and 2 only; user 3 rates y once.
    // min 2/2: one pass drops user 3 and item z (single rating); iterative also drops
    // what becomes too small afterwards.
    let text = "1 x\n1 y\n2 x\n2 y\n3 y\n3 z\n4 w\n4 y\n";
    let (_dir, p) = temp_file("k.txt", text);
    let one = Dataset::read(
        &p,
        Some(KCore {
            min_user: 2,
            min_item: 2,
            iterative: false,
        }),
    )
    .unwrap();
    // counts: users all 2; items x2 y4 z1 w1 → drop z, w lines.
    assert_eq!(one.stats().interactions, 6);
    assert_eq!(one.report.removed_by_kcore, 2);
    let it = Dataset::read(
        &p,
        Some(KCore {
            min_user: 2,
            min_item: 2,
            iterative: true,
        }),
    )
    .unwrap();
    // after dropping z and w, users 3 and 4 have one rating each → dropped; then y has 2.
    assert_eq!(it.stats().interactions, 4);
    assert_eq!(it.num_users(), 2);
    let e = Dataset::read(
        &p,
        Some(KCore {
            min_user: 9,
            min_item: 1,
            iterative: true,
        }),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no interactions left after k-core filtering"),
        "{e}"
    );
}

#[test]
fn leave_one_out_split_and_short_users() {
    let d = read("1 a\n1 b\n1 c\n1 d\n1 e\n2 a\n2 b\n2 c\n3 a\n");
    let split = Split::new(d.into(), DEFAULT_MIN_HOLDOUT_LEN);
    let idx = |s: &str| split.data.items.index_of(s).unwrap();
    assert_eq!(split.train(1), &[idx("a"), idx("b"), idx("c")]);
    assert_eq!(split.holdout(1, Part::Valid), Some((idx("d"), 3)));
    assert_eq!(split.holdout(1, Part::Test), Some((idx("e"), 4)));
    // 3 items < 4: training only.
    assert!(!split.has_holdout(2));
    assert_eq!(split.train(2).len(), 3);
    assert_eq!(split.holdout(2, Part::Test), None);
    assert_eq!(split.num_train_interactions(), 3 + 3 + 1);
    let split3 = Split::new(split.data.clone(), 3);
    assert!(split3.has_holdout(2));
    assert_eq!(split3.train(2).len(), 1);
}

#[test]
fn stats_are_exact() {
    let d = read("1 a 10\n1 b 20\n2 a 5\n2 c 30\n2 d 40\n3 a 7\n");
    let s = d.stats();
    assert_eq!((s.users, s.items, s.interactions), (3, 4, 6));
    assert_eq!((s.min_len, s.max_len, s.median_len), (1, 3, 2));
    assert!((s.mean_len - 2.0).abs() < 1e-12);
    assert!((s.density - 0.5).abs() < 1e-12);
    assert_eq!(s.time_range, Some((5, 40)));
}
