// Shared build-script helper: compiles a C++ shim against the libtorch headers of the linked
// torch-sys (the `include/` next to `DEP_TCH_LIBTORCH_LIB`) with the flags libtorch 2.11 needs
// (docs/TOOLCHAIN.md, "Multi-GPU: PyTorch's own c10d through a C++ shim").
use std::path::PathBuf;

/// The libtorch `lib/` directory torch-sys links against.
pub fn libtorch_lib() -> PathBuf {
    PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("DEP_TCH_LIBTORCH_LIB is set for packages that depend on torch-sys"),
    )
}

/// A `cc::Build` for C++17 against the libtorch headers (CXX11 ABI) and `build/shim.h`, with
/// `files` added and marked for rebuild on change.
pub fn build(files: &[&str]) -> cc::Build {
    let lib = libtorch_lib();
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(concat!(env!("CARGO_MANIFEST_DIR"), "/../build"))
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false);
    println!("cargo:rerun-if-changed=../build/shim.h");
    for f in files {
        println!("cargo:rerun-if-changed={f}");
        b.file(f);
    }
    b
}
