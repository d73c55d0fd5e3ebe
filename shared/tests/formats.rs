//! Line formats beyond fixed-position interactions: sequence-per-line files, header-named
//! columns in any order (CSV, RecBole `.inter`), explicit `--columns` mappings, and their errors.

mod common;

use std::path::{Path, PathBuf};

use sasrec_shared::dataset::{Columns, Format, ReadOptions, Role, Separator};
use sasrec_shared::{Dataset, KCore};

use common::{after_path, assert_errors, temp_file};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn opts(format: Format, columns: Option<&str>) -> ReadOptions {
    ReadOptions {
        format,
        columns: columns.map(|c| c.parse().unwrap()),
    }
}

fn read_text(text: &str, options: &ReadOptions) -> Dataset {
    let (_dir, p) = temp_file("d.txt", text);
    Dataset::read_with(&p, None, options).unwrap()
}

/// The error for `text` read with `options`, after the file name, which it must start with.
fn read_err(text: &str, options: &ReadOptions) -> String {
    let (_dir, p) = temp_file("bad.txt", text);
    after_path(&p, Dataset::read_with(&p, None, options).unwrap_err())
}

fn auto() -> ReadOptions {
    ReadOptions::default()
}

/// Users, items, sequences and timestamps agree (the file and the report may differ).
fn assert_same_data(a: &Dataset, b: &Dataset) {
    assert_eq!(a.num_users(), b.num_users());
    assert_eq!(a.num_items(), b.num_items());
    assert_eq!(a.users, b.users);
    assert_eq!(a.items, b.items);
    assert_eq!(a.sequences, b.sequences);
    assert_eq!(a.timestamps, b.timestamps);
    assert_eq!(a.stats(), b.stats());
}

#[test]
fn sequence_file_reads_like_its_user_item_pairs() {
    let seq = Dataset::read(&fixture("seq.txt"), None).unwrap();
    let pairs = Dataset::read(&fixture("seq_pairs.txt"), None).unwrap();
    assert_same_data(&seq, &pairs);
    assert_eq!(seq.num_users(), 6);
    assert_eq!(seq.num_items(), 12);
    assert_eq!(seq.stats().interactions, 30);
    assert!(!seq.has_timestamps());
    // File order is time order: user 1 is `14 10 12 11 13 15`.
    let raw: Vec<&str> = seq.sequences[seq.users.index_of("1").unwrap() as usize]
        .iter()
        .map(|&i| seq.items.raw_of(i).unwrap())
        .collect();
    assert_eq!(raw, ["14", "10", "12", "11", "13", "15"]);

    assert_eq!(seq.report.format, Format::Sequence);
    assert_eq!(seq.report.mapping, None);
    assert_eq!(seq.report.columns, 9);
    assert_eq!(seq.report.separator, Separator::Whitespace);
    assert_eq!(seq.report.skipped_lines, 2);
    assert_eq!(seq.report.interactions_read, 30);
    assert!(!seq.report.header);
    assert_eq!(pairs.report.format, Format::Interactions);
    assert_eq!(
        pairs.report.mapping.as_ref().unwrap().to_string(),
        "user,item"
    );

    // Forcing the format gives the same result as detecting it.
    let forced = Dataset::read_with(&fixture("seq.txt"), None, &opts(Format::Sequence, None));
    assert_same_data(&forced.unwrap(), &seq);
}

#[test]
fn sequence_file_and_pairs_agree_under_kcore() {
    for iterative in [false, true] {
        let k = KCore {
            min_user: 3,
            min_item: 2,
            iterative,
        };
        let seq = Dataset::read(&fixture("seq.txt"), Some(k)).unwrap();
        let pairs = Dataset::read(&fixture("seq_pairs.txt"), Some(k)).unwrap();
        assert_same_data(&seq, &pairs);
        assert_eq!(seq.report.removed_by_kcore, pairs.report.removed_by_kcore);
        assert!(seq.report.removed_by_kcore > 0, "iterative={iterative}");
        assert!(seq.num_users() < 6 && seq.num_items() < 12);
    }
}

#[test]
fn three_field_lines_are_timestamps_unless_sequence_is_forced() {
    let path = fixture("three_fields.txt");
    let auto = Dataset::read(&path, None).unwrap();
    assert_eq!(auto.report.format, Format::Interactions);
    assert_eq!(
        auto.report.mapping.as_ref().unwrap().to_string(),
        "user,item,timestamp"
    );
    assert_eq!(auto.num_items(), 3); // the second column: 10, 11, 10, 12
    assert!(auto.has_timestamps());
    assert_eq!(auto.stats().interactions, 4);

    let seq = Dataset::read_with(&path, None, &opts(Format::Sequence, None)).unwrap();
    assert_eq!(seq.report.format, Format::Sequence);
    assert!(!seq.has_timestamps());
    assert_eq!(seq.stats().interactions, 8);
    let idx = |s: &str| seq.items.index_of(s).unwrap();
    assert_eq!(seq.sequences[1], vec![idx("10"), idx("11")]);
    assert_eq!(seq.sequences[4], vec![idx("12"), idx("10")]);

    // `--format interactions` never switches to sequences, even where auto would.
    assert_eq!(
        read_err("1 2\n1 2 3 4 5 6\n", &opts(Format::Interactions, None)),
        ":2: found 6 column(s) but the file has 2"
    );
}

#[test]
fn sequence_detection_rule() {
    // Counts differ and one line has more than 4 fields: sequences, wherever the long line is.
    let d = read_text("1 10\n2 10 11\n3 10 11 12 13 14\n", &auto());
    assert_eq!(d.report.format, Format::Sequence);
    assert_eq!(d.stats().interactions, 1 + 2 + 5);
    assert_errors(
        |text| read_err(text, &auto()),
        &[
            // A lone 1-field line in a sequence file is a user without items.
            (
                "1 2 3 4 5 6\n# c\n2\n",
                ":3: sequence line has user `2` but no items",
            ),
            // Same count on every line, or nothing longer than 4: interactions, so a short
            // line is an error rather than a silent switch to sequences.
            (
                "1 a 5\n2 b\n1 c 7\n",
                ":2: found 2 column(s) but the file has 3",
            ),
            (
                "1 2 3 4 5\n2 3 4 5 6\n",
                ":1: found 5 column(s); expected 2 (user item), 3 (user item timestamp) \
                 or 4 (user item rating timestamp)",
            ),
            // Only space-separated files are detected; commas, tabs and `::` need
            // --format sequence.
            (
                "1,2\n1,2,3,4,5\n",
                ":2: found 5 column(s) but the file has 2",
            ),
            // A header rules sequences out.
            (
                "user item\n1 2\n1 2 3 4 5 6\n",
                ":3: found 6 column(s) but the header has 2",
            ),
        ],
    );
    let comma = read_text("1,2\n1,2,3,4,5\n", &opts(Format::Sequence, None));
    assert_eq!(comma.report.separator, Separator::Comma);
    assert_eq!(comma.sequences[1].len(), 5);
    // With --columns, no detection either.
    assert_eq!(
        read_err("1 2\n1 2 3 4 5 6\n", &opts(Format::Auto, Some("user,item"))),
        ":2: found 6 column(s) but --columns names 2"
    );
}

#[test]
fn sequence_lines_of_one_user_concatenate_and_headers_and_bom_are_skipped() {
    let d = read_text(
        "\u{feff}user_id item_id\n7 a b c d e\n8 c\n7 f\n",
        &opts(Format::Sequence, None),
    );
    assert!(d.report.header);
    let names: Vec<&str> = d.sequences[d.users.index_of("7").unwrap() as usize]
        .iter()
        .map(|&i| d.items.raw_of(i).unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(d.num_users(), 2);
    let bom = read_text("\u{feff}1 a 5\n", &auto());
    assert_eq!(bom.users.raw_of(1), Some("1"));
}

#[test]
fn header_named_columns_in_any_order_match_the_plain_file() {
    let plain = Dataset::read(&fixture("uit.txt"), None).unwrap();
    assert_eq!(plain.timestamps.as_ref().unwrap()[1], vec![100, 200, 300]);
    let shuffled = Dataset::read(&fixture("shuffled.csv"), None).unwrap();
    let recbole = Dataset::read(&fixture("recbole.inter"), None).unwrap();
    assert_same_data(&shuffled, &plain);
    assert_same_data(&recbole, &plain);

    assert!(shuffled.report.header && recbole.report.header);
    assert_eq!(shuffled.report.separator, Separator::Comma);
    assert_eq!(recbole.report.separator, Separator::Tab);
    assert_eq!(
        shuffled.report.mapping.as_ref().unwrap().to_string(),
        "item,timestamp,user"
    );
    assert_eq!(
        recbole.report.mapping.as_ref().unwrap().roles(),
        [Role::User, Role::Item, Role::Rating, Role::Timestamp]
    );
    assert_eq!(recbole.report.columns, 4);

    // The same mapping given explicitly, header skipped.
    let explicit = Dataset::read_with(
        &fixture("shuffled.csv"),
        None,
        &opts(Format::Auto, Some("item_id, ts, user")),
    )
    .unwrap();
    assert_same_data(&explicit, &plain);
    assert!(explicit.report.header);
}

#[test]
fn unknown_header_columns_are_ignored_only_beside_user_and_item() {
    let d = read_text(
        "user_id,item_id,category,timestamp\n1,a,toys,5\n1,b,,3\n",
        &auto(),
    );
    assert!(d.report.header);
    assert_eq!(
        d.report.mapping.as_ref().unwrap().to_string(),
        "user,item,-,timestamp"
    );
    assert_eq!(d.timestamps.unwrap()[1], vec![3, 5]);
    // A pandas index column (empty name) is ignored too.
    let d = read_text(",user_id,item_id\n0,1,a\n1,1,b\n", &auto());
    assert_eq!(
        d.report.mapping.as_ref().unwrap().to_string(),
        "-,user,item"
    );
    assert_eq!(d.sequences[1].len(), 2);
    // Without both a user and an item name, an unknown field makes the line data.
    assert_eq!(
        read_err("uid,foo,ts\n1,2,3\n", &auto()),
        ":1: timestamp `ts` is not a number"
    );
    // Numbers are data, not column names: `user,item,5` is an interaction.
    let d = read_text("user,item,5\n", &auto());
    assert!(!d.report.header);
    assert_eq!(d.users.raw_of(1), Some("user"));
    // All-known headers must still name one user and one item column, once each.
    assert_errors(
        |text| read_err(text, &auto()),
        &[
            ("user,timestamp\n1,2\n", ":1: the header has no item column"),
            (
                "user_id\tuid\titem\n1\t1\t2\n",
                ":1: the header names the user column twice (columns 1 `user_id` and 2 `uid`)",
            ),
        ],
    );
    // A header with only a rating: columns by name, no timestamps.
    let d = read_text("item,user,rating\nx,1,4\ny,1,5\n", &auto());
    assert!(!d.has_timestamps());
    assert_eq!(d.items.raw_of(d.sequences[1][0]), Some("x"));
}

#[test]
fn explicit_columns_map_any_layout() {
    let d = read_text(
        "1 x 10 5\n1 y 11 4\n2 x 12 9\n",
        &opts(Format::Auto, Some("user,-,item,timestamp")),
    );
    assert_eq!(d.report.format, Format::Interactions);
    assert_eq!(
        d.report.mapping.as_ref().unwrap().to_string(),
        "user,-,item,timestamp"
    );
    assert_eq!(d.items.raw_of(d.sequences[1][0]), Some("11")); // ts 4 before 5
    assert_eq!(d.num_users(), 2);
    // Six columns, no header: only --columns can read it.
    let d = read_text(
        "a b 1 c d 2\n",
        &opts(Format::Interactions, Some("-,user,_,item,-,ts")),
    );
    assert_eq!(d.users.raw_of(1), Some("b"));
    assert_eq!(d.timestamps.unwrap()[1], vec![2]);

    let four = opts(Format::Auto, Some("user,-,item,timestamp"));
    assert_errors(
        |text| read_err(text, &four),
        &[
            ("1 x 10\n", ":1: found 3 column(s) but --columns names 4"),
            (
                "1 x 10 5\n\n2 y 6\n",
                ":3: found 3 column(s) but --columns names 4",
            ),
            (
                "user,item,timestamp\n1,2,3\n",
                ":1: the header has 3 column(s) but --columns names 4",
            ),
            (
                "1 x 10 5\n1 y 11 soon\n",
                ":2: timestamp `soon` is not a number",
            ),
        ],
    );
    let (_dir, p) = temp_file("d.txt", "1 2\n");
    let e = Dataset::read_with(&p, None, &opts(Format::Sequence, Some("user,item")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--columns names the columns of an interaction file; \
         it cannot be combined with --format sequence"
    );
}

#[test]
fn columns_and_format_parsing_errors_are_exact() {
    assert_errors(
        |s: &str| s.parse::<Columns>().unwrap_err().to_string(),
        &[
            (
                "user,foo,item",
                "unknown column role 'foo' in --columns; \
                 expected user, item, rating, timestamp or -",
            ),
            (
                "user,item,user",
                "column role 'user' appears twice in --columns (columns 1 and 3)",
            ),
            (
                "ts,user,item,time",
                "column role 'timestamp' appears twice in --columns (columns 1 and 4)",
            ),
            ("user,timestamp", "--columns has no item column"),
            ("item,-", "--columns has no user column"),
            (
                "user,,item",
                "empty column role at position 2 in --columns; write - for an ignored column",
            ),
            (
                " ",
                "--columns is empty; expected column roles in file order, e.g. user,item,timestamp",
            ),
        ],
    );

    let c: Columns = " user_id, item_id:token ,_,-,ts".parse().unwrap();
    assert_eq!(
        c.roles(),
        [
            Role::User,
            Role::Item,
            Role::Ignored,
            Role::Ignored,
            Role::Timestamp
        ]
    );
    assert_eq!(c.to_string(), "user,item,-,-,timestamp");
    assert_eq!(c.to_string().parse::<Columns>().unwrap(), c);
    assert_eq!(c.position(Role::Timestamp), Some(4));
    assert_eq!(c.position(Role::Rating), None);
    assert_eq!(
        Columns::positional(3).unwrap().to_string(),
        "user,item,timestamp"
    );
    assert_eq!(Columns::positional(5), None);
    assert_eq!(
        Columns::new(vec![Role::Item, Role::Item])
            .unwrap_err()
            .to_string(),
        "column role 'item' appears twice in --columns (columns 1 and 2)"
    );

    assert_eq!("auto".parse::<Format>().unwrap(), Format::Auto);
    assert_eq!(" Sequence".parse::<Format>().unwrap(), Format::Sequence);
    assert_eq!(
        "interactions".parse::<Format>().unwrap(),
        Format::Interactions
    );
    assert_eq!(
        "seqs".parse::<Format>().unwrap_err().to_string(),
        "unknown format 'seqs' in --format; expected auto, interactions or sequence"
    );
    for name in Format::NAMES {
        assert_eq!(name.parse::<Format>().unwrap().to_string(), name);
    }
    assert_eq!(ReadOptions::default().format, Format::Auto);
}

#[test]
fn malformed_lines_name_file_and_line() {
    // A fixture: line 4 is a user without items.
    let path = fixture("bad_seq.txt");
    let e = Dataset::read(&path, None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:4: sequence line has user `4` but no items",
            path.display()
        )
    );
    assert!(e.contains("bad_seq.txt:4:"), "{e}");

    let seq = opts(Format::Sequence, None);
    assert_errors(
        |text| read_err(text, &seq),
        &[
            (
                "1 2 3\n\n2\n",
                ":3: sequence line has user `2` but no items",
            ),
            (
                "1,2,3\n2,4,,5\n",
                ":2: item 2 (column 3) of user `2` is empty",
            ),
            (
                "1,2,3\n2,4,5,\n",
                ":2: item 3 (column 4) of user `2` is empty",
            ),
            ("1,2\n,3\n", ":2: the user (column 1) is empty"),
        ],
    );
    assert!(read_err("# nothing\n", &seq).contains("no interactions in the file"));
    assert!(read_err("user item\n", &seq).contains("no interactions in the file"));

    // Header-mapped files.
    assert_errors(
        |text| read_err(text, &auto()),
        &[
            (
                "item_id,timestamp,user_id\n10,5,1\n11,6\n",
                ":3: found 2 column(s) but the header has 3",
            ),
            (
                "item_id,timestamp,user_id\n10,5,1\n11,x,2\n",
                ":3: timestamp `x` is not a number",
            ),
            (
                "item_id,timestamp,user_id\n10,5,1\n# c\n11,6,\n",
                ":4: column 3 is empty",
            ),
            (
                "user_id:token\titem_id:token\trating:float\n1\t2\t4.0\n1\t3\tgood\n",
                ":3: rating `good` is not a number",
            ),
        ],
    );
    assert!(
        read_err("user_id:token\titem_id:token\n", &auto()).contains("no interactions in the file")
    );
}

#[test]
fn report_serialises_format_and_mapping() {
    let seq = Dataset::read(&fixture("seq.txt"), None).unwrap();
    let v = serde_json::to_value(&seq.report).unwrap();
    assert_eq!(v["format"], "sequence");
    assert!(v["mapping"].is_null());
    let inter = Dataset::read(&fixture("recbole.inter"), None).unwrap();
    let v = serde_json::to_value(&inter.report).unwrap();
    assert_eq!(v["format"], "interactions");
    assert_eq!(v["mapping"], "user,item,rating,timestamp");
    assert_eq!(v["separator"], "tab");
    assert_eq!(v["header"], true);
}
