//! The README's `sasrec-serve` flag tables list exactly the flags of `--help`: the server's
//! (`## Serving`) and each subcommand's (`## Batch recommendations`, `## Similar items`).

use sasrec_testutil::readme as readme_flags;

const BIN: &str = env!("CARGO_BIN_EXE_sasrec-serve");

#[test]
fn readme_flag_table_matches_help() {
    let readme = readme_flags::readme_flags(&["Serving"]);
    let help = readme_flags::help_flags(BIN, &[]);
    assert!(help.len() >= 15, "{help:?}");
    readme_flags::assert_same(&readme, &help, "sasrec-serve");
}

#[test]
fn readme_subcommand_tables_match_help() {
    for (section, subcommand) in [
        ("Batch recommendations", "recommend"),
        ("Similar items", "similar"),
    ] {
        let readme = readme_flags::readme_flags(&[section]);
        let help = readme_flags::help_flags(BIN, &[subcommand]);
        assert!(help.len() >= 10, "{subcommand}: {help:?}");
        readme_flags::assert_same(&readme, &help, &format!("sasrec-serve {subcommand}"));
    }
}
