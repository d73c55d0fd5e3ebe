//! Build script: links libtorch like every tch package (`../build/torch_link.rs`) and compiles
//! the C++ shims against the libtorch headers (`../build/torch_cxx.rs`): `csrc/c10d.cpp`
//! (Gloo always; NCCL when this torch has CUDA and the NCCL / CUDA headers are installed) and
//! `csrc/optim.cpp` (fused Adam) and `csrc/cuda_graph.cpp` (CUDA graphs of the training step:
//! the CUDA code, and the `sasrec_cuda` cfg, when this torch has CUDA and the CUDA runtime
//! headers are installed; without them its functions fail with "built without CUDA graphs").
//! See docs/TOOLCHAIN.md, "Multi-GPU: PyTorch's own c10d through a C++ shim".

#[path = "../build/torch_cxx.rs"]
mod torch_cxx;
#[path = "../build/torch_link.rs"]
mod torch_link;

fn main() {
    torch_link::main();
    println!("cargo::rustc-check-cfg=cfg(sasrec_nccl)");
    println!("cargo::rustc-check-cfg=cfg(sasrec_cuda)");

    let lib = torch_cxx::libtorch_lib();
    // site-packages = <torch>/lib/../.. : where the nvidia-* wheels put their headers.
    let site_packages = lib.join("../..");
    let nccl_include = site_packages.join("nvidia/nccl/include");
    let cuda_include = site_packages.join("nvidia/cu13/include");
    let cuda =
        cuda_include.join("cuda_runtime_api.h").is_file() && lib.join("libtorch_cuda.so").is_file();
    let nccl = cuda && nccl_include.join("nccl.h").is_file();

    let mut build = torch_cxx::build(&["csrc/c10d.cpp", "csrc/optim.cpp", "csrc/cuda_graph.cpp"]);
    build
        .define("USE_DISTRIBUTED", None)
        .define("USE_C10D_GLOO", None);
    if cuda {
        build
            .define("SASREC_CUDA_GRAPHS", None)
            .include(&cuda_include);
        println!("cargo:rustc-cfg=sasrec_cuda");
    }
    if nccl {
        build.define("USE_C10D_NCCL", None).include(&nccl_include);
        println!("cargo:rustc-cfg=sasrec_nccl");
    }
    build.compile("sasrec_train_shim");

    // The shim's c10d symbols (TCPStore, ProcessGroupGloo, ...) live in libtorch_cpu.so and
    // ProcessGroupNCCL and CUDAGraph in libtorch_cuda.so (the CUDA streams in libc10_cuda.so);
    // name them after the static lib so the linker resolves them whatever order torch-sys's own
    // flags come in.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if cuda {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    for h in [
        nccl_include.join("nccl.h"),
        cuda_include.join("cuda_runtime_api.h"),
    ] {
        if h.is_file() {
            println!("cargo:rerun-if-changed={}", h.display());
        }
    }
}
