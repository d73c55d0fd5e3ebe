//! The README's `sasrec-export` flag table lists exactly the flags of `sasrec-export --help`.

use sasrec_testutil::readme as readme_flags;

#[test]
fn readme_flag_table_matches_help() {
    let readme = readme_flags::readme_flags(&["Export"]);
    let help = readme_flags::help_flags(env!("CARGO_BIN_EXE_sasrec-export"), &[]);
    assert_eq!(help.len(), 11, "{help:?}");
    readme_flags::assert_same(&readme, &help, "sasrec-export");
}
