// What every C++ shim of sasrec-rs shares (models/csrc, train/csrc; on the include path through
// ../build/torch_cxx.rs): the C-boundary error convention and tensor lists from tch handles.
//
// Every `extern "C"` function runs its body through `guarded`: 0 on success; -1 on failure,
// with the exception's message (c10 errors without their C++ backtrace) kept in a thread-local
// string that the library's `…_last_error()` function returns. No exception crosses the
// boundary. Tensors arrive as `at::Tensor*` (what a tch `Tensor::as_mut_ptr()` is).
#pragma once

#include <exception>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace sasrec_shim {

// This thread's last error message ("" when none).
inline std::string& last_error() {
  thread_local std::string message;
  return message;
}

// Runs `f`, turning any exception into -1 plus the stored message.
template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    last_error() = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error() = e.what();
  } catch (...) {
    last_error() = "unknown C++ exception";
  }
  return -1;
}

// The tensors behind `n` handles (sharing their storage).
inline std::vector<at::Tensor> tensor_list(at::Tensor** ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

}  // namespace sasrec_shim
