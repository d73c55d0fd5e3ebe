//! `sasrec-export --onnx --train_dir DIR [--output FILE] [--full_sequence]`: a trained run
//! directory to an ONNX model (plus its item map) for `sasrec-serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sasrec_export::{export, ExportOptions, Variant};

/// Export a trained SASRec / TiSASRec / mHC model to ONNX (opset 17, IR version 10).
///
/// Reads DIR/config.json and DIR/model.safetensors, writes FILE (default DIR/model.onnx) and
/// copies DIR/items.tsv beside it. The graph takes `seq` [batch, maxlen] int64 (plus
/// `time_matrix` [batch, maxlen, maxlen] for time-aware models), `exclude` [batch, n] int64 and
/// `k` [1] int64, and returns `scores`, `topk_scores` and `topk_items`.
#[derive(Debug, Parser)]
#[command(name = "sasrec-export", version)]
struct Args {
    /// Write an ONNX model (the only export format).
    #[arg(long)]
    onnx: bool,
    /// The training run directory (`sasrec-train --train_dir`).
    #[arg(long = "train_dir", alias = "train-dir", value_name = "DIR")]
    train_dir: PathBuf,
    /// Output file [default: DIR/model.onnx].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Record the full-sequence forward (every position in every block, then the last row)
    /// instead of the last-position path. Same outputs, slower; for benchmarks only.
    #[arg(long = "full_sequence", alias = "full-sequence")]
    full_sequence: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.onnx {
        eprintln!("error: nothing to do: pass --onnx (the only export format)");
        return ExitCode::from(2);
    }
    let opts = ExportOptions {
        train_dir: args.train_dir,
        output: args.output,
        variant: if args.full_sequence {
            Variant::FullSequence
        } else {
            Variant::LastPosition
        },
    };
    match export(&opts) {
        Ok(out) => {
            println!(
                "wrote {} ({} bytes, {}, source sha256 {}) and {}",
                out.onnx.display(),
                out.bytes,
                out.kind,
                out.source_sha256,
                out.items.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line: every error names its file; libtorch messages are cut to their first line.
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
