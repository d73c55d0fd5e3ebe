//! The Rust side of the C++ shims in `csrc/` (conventions: `build/shim.h`): their error
//! message and tensor handles.

use std::ffi::CStr;
use std::os::raw::c_char;

use tch::Tensor;

extern "C" {
    fn sasrec_train_last_error() -> *const c_char;
    fn sasrec_train_torch_version() -> *const c_char;
}

/// The shims' last error on this thread (without libtorch's C++ backtrace).
pub(crate) fn last_error() -> String {
    // SAFETY: the shim returns a NUL-terminated thread-local string, valid until the next
    // failing call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(sasrec_train_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// The libtorch version this binary was built against (`TORCH_VERSION_MAJOR.MINOR.PATCH` of
/// its headers; tch refuses to build against any other libtorch than the one it links).
pub(crate) fn torch_version() -> String {
    // SAFETY: a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(sasrec_train_torch_version()) }
        .to_string_lossy()
        .into_owned()
}

/// Raw `at::Tensor*` handles of `ts`, valid while `ts` lives.
pub(crate) fn handles(ts: &mut [Tensor]) -> Vec<*mut torch_sys::C_tensor> {
    ts.iter_mut().map(|t| t.as_mut_ptr()).collect()
}
