//! The README's `sasrec-serve` flag table lists exactly the flags of `sasrec-serve --help`.

use sasrec_testutil::readme as readme_flags;

#[test]
fn readme_flag_table_matches_help() {
    let readme = readme_flags::readme_flags(&["Serving"]);
    let help = readme_flags::help_flags(env!("CARGO_BIN_EXE_sasrec-serve"), &[]);
    assert!(help.len() >= 15, "{help:?}");
    readme_flags::assert_same(&readme, &help, "sasrec-serve");
}
