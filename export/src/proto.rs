//! ONNX protobuf types, generated at build time from the `onnx.proto` of the PyPI `onnx`
//! package (see `build.rs`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
