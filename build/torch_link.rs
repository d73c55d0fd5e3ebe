// Shared build-script body for every package whose binaries or tests link libtorch
// (`build = "../build/torch_link.rs"`, or `#[path] mod torch_link` from a larger build
// script). See docs/TOOLCHAIN.md, "Two traps, one fix":
// torch-sys's rpath never reaches the final link, and rustc's `--as-needed` drops
// `libtorch_cuda.so` (tch-rs issue #980), so CUDA would be invisible on a GPU machine.
/// Emits the rpath and keeps `libtorch_cuda` linked.
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
