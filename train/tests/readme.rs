//! The README's `sasrec-train` flag table lists exactly the flags of `sasrec-train --help`.

use sasrec_testutil::readme as readme_flags;

#[test]
fn readme_flag_table_matches_help() {
    let readme = readme_flags::readme_flags(&["Training"]);
    let help = readme_flags::help_flags(env!("CARGO_BIN_EXE_sasrec-train"), &[]);
    assert!(help.len() > 40, "{help:?}");
    readme_flags::assert_same(&readme, &help, "sasrec-train");
}
