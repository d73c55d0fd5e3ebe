//! `sasrec-export --onnx --train_dir DIR [--output FILE] [--full_sequence]
//! [--external_data_threshold BYTES]`: a trained run directory to an ONNX model (plus its item
//! map, its two-tower files, and its weights in `FILE.data` when they are large) for
//! `sasrec-serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Parser;
use sasrec_ann::{AnnParams, Quantization};
use sasrec_export::ann::AnnIndexFile;
use sasrec_export::external_data::{ExternalFile, DEFAULT_THRESHOLD};
use sasrec_export::{export, ExportOptions, Exported, Variant};
use sasrec_shared::logging::{self, LogArgs, Stream};

/// Export a trained SASRec / TiSASRec / mHC model to ONNX (opset 17, IR version 10).
///
/// Reads DIR/config.json and DIR/model.safetensors, writes FILE (default DIR/model.onnx) and
/// copies DIR/items.tsv beside it. The graph takes `seq` [batch, maxlen] int64 (plus
/// `time_matrix` [batch, maxlen, maxlen] for time-aware models), `exclude` [batch, n] int64 and
/// `k` [1] int64, and returns `scores`, `topk_scores` and `topk_items`. Beside it go the
/// two-tower files: user_tower.onnx (same inputs but `exclude` and `k`; output `user_vector`
/// [batch, d]) and item_vectors.safetensors (`item_vectors` [num_items + 1, d]), with
/// user_vector · item_vectors[i] = scores[:, i]. A model trained with item features also gets
/// item_tower.onnx (inputs `item_features.<column>`, output `item_vector` [batch, d]), which
/// embeds items from their features, and user_tower_open.onnx (the user tower reading the item
/// table from the input `item_rows`), with which a server reads added items in histories.
#[derive(Debug, Parser)]
#[command(name = "sasrec-export", version)]
struct Args {
    /// Write an ONNX model (the only export format).
    #[arg(long)]
    onnx: bool,
    /// The training run directory (`sasrec-train --train_dir`).
    #[arg(long = "train_dir", alias = "train-dir", value_name = "DIR")]
    train_dir: PathBuf,
    /// Output file [default: DIR/model.onnx]; items.tsv, user_tower.onnx,
    /// item_vectors.safetensors and, with item features, item_tower.onnx and
    /// user_tower_open.onnx are written beside it.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Record the full-sequence forward (every position in every block, then the last row)
    /// instead of the last-position path. Same outputs, slower; for benchmarks only.
    #[arg(long = "full_sequence", alias = "full-sequence")]
    full_sequence: bool,
    /// Write the weights to FILE.data (ONNX external data) when the initializers total more
    /// than BYTES: every initializer of at least 1024 bytes moves there, at 4096-byte-aligned
    /// offsets, and FILE keeps its location, offset and length (ONNX Runtime, sasrec-serve and
    /// `onnx.checker.check_model(path)` read the pair). A .onnx is one protobuf message, which
    /// readers refuse at 2 GiB; the default, 1.8 GiB, keeps every model that fits in one file
    /// and splits the larger ones with room to spare for the graph and metadata. 0 = always
    /// split. When the model is written inline, a FILE.data of an earlier export is removed.
    #[arg(
        long = "external_data_threshold",
        alias = "external-data-threshold",
        value_name = "BYTES",
        default_value_t = DEFAULT_THRESHOLD
    )]
    external_data_threshold: u64,
    #[command(flatten)]
    log: LogArgs,
    /// Also build the approximate nearest-neighbour index over the item vectors (inner
    /// product, HNSW) and save it beside the model as items.usearch + items.usearch.json, for
    /// `sasrec-serve --retrieval ann`.
    #[arg(long)]
    ann: bool,
    /// --ann: HNSW links per item (M).
    #[arg(long = "ann_connectivity", alias = "ann-connectivity", default_value_t = AnnParams::default().connectivity)]
    ann_connectivity: usize,
    /// --ann: candidate list size while building (efConstruction).
    #[arg(long = "ann_expansion_add", alias = "ann-expansion-add", default_value_t = AnnParams::default().expansion_add)]
    ann_expansion_add: usize,
    /// --ann: how the index stores the vectors (the exact re-scoring always reads the f32
    /// item vectors).
    #[arg(
        long = "ann_quantization",
        alias = "ann-quantization",
        default_value = "f16",
        value_parser = PossibleValuesParser::new(["f32", "f16", "i8"]).try_map(|s| s.parse::<Quantization>())
    )]
    ann_quantization: Quantization,
    /// --ann: build threads (0 = one per core).
    #[arg(long = "ann_threads", alias = "ann-threads", default_value_t = 0)]
    ann_threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log.log_format, "sasrec_export=info", Stream::Stderr);
    if !args.onnx {
        eprintln!("error: nothing to do: pass --onnx (the only export format)");
        return ExitCode::from(2);
    }
    let result = export(&export_options(&args)).and_then(|out| {
        let index = args.ann.then(|| build_index(&args, &out)).transpose()?;
        Ok((out, index))
    });
    match result {
        Ok((out, index)) => {
            report(&out, index.as_ref());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line: every error names its file; libtorch messages are cut to their first line.
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// The flags as the library's options.
fn export_options(args: &Args) -> ExportOptions {
    ExportOptions {
        train_dir: args.train_dir.clone(),
        output: args.output.clone(),
        variant: if args.full_sequence {
            Variant::FullSequence
        } else {
            Variant::LastPosition
        },
        external_data_threshold: args.external_data_threshold,
    }
}

/// `--ann`: the index over the exported item vectors, saved beside them.
fn build_index(args: &Args, out: &Exported) -> sasrec_export::Result<AnnIndexFile> {
    let params = AnnParams {
        connectivity: args.ann_connectivity,
        expansion_add: args.ann_expansion_add,
        quantization: args.ann_quantization,
    };
    sasrec_export::ann::build(&out.item_vectors, &params, args.ann_threads)
}

/// The success lines: every file written, with its size.
fn report(out: &Exported, index: Option<&AnnIndexFile>) {
    println!(
        "wrote {} ({} bytes, {}, source sha256 {}){}, the user tower {} ({} bytes){}, \
         the item vectors {} ({} bytes) and {}",
        out.onnx.display(),
        out.bytes,
        out.kind,
        out.source_sha256,
        external_note(&out.external),
        out.user_tower.path.display(),
        out.user_tower.bytes,
        external_note(&out.user_tower.external),
        out.item_vectors.display(),
        out.item_vectors_bytes,
        out.items.display()
    );
    let towers = [
        ("item tower", &out.item_tower),
        ("open user tower", &out.open_user_tower),
    ];
    for (what, t) in towers {
        if let Some(t) = t {
            println!(
                "wrote the {what} {} ({} bytes){}",
                t.path.display(),
                t.bytes,
                external_note(&t.external)
            );
        }
    }
    if let Some(ix) = index {
        println!(
            "wrote {} ({} bytes, {} items, built in {:.1} s)",
            ix.path.display(),
            ix.bytes,
            ix.items,
            ix.build_seconds
        );
    }
}

/// `, FILE.data (N bytes, T tensors)` for a model written with external data, else nothing.
fn external_note(external: &Option<ExternalFile>) -> String {
    external.as_ref().map_or(String::new(), |x| {
        format!(
            ", {} ({} bytes, {} tensors)",
            x.path.display(),
            x.bytes,
            x.tensors
        )
    })
}
