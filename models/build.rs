//! Build script: links libtorch like every tch package (`../build/torch_link.rs`) and compiles
//! the shims `csrc/autocast.cpp` and `csrc/sinkhorn.cpp` against the libtorch headers (`../build/torch_cxx.rs`).

#[path = "../build/torch_cxx.rs"]
mod torch_cxx;
#[path = "../build/torch_link.rs"]
mod torch_link;

fn main() {
    torch_link::main();
    torch_cxx::build(&["csrc/autocast.cpp", "csrc/sinkhorn.cpp"]).compile("sasrec_models_shim");
}
