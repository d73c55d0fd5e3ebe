//! Where the batch subcommands write their answers: one row per user (or item), as JSON lines,
//! or as Parquet when the output's name ends in `.parquet`.
//!
//! * JSON lines: `{"<key>": raw id, "items": [raw ids, best first], "scores": [...]}`, ids as
//!   `POST /recommend` writes them (numbers when canonical unsigned integers, else strings).
//! * Parquet (uncompressed, row groups of [`ROW_GROUP`] rows), the schema
//!
//!   ```text
//!   message answers {
//!     REQUIRED BYTE_ARRAY <key> (UTF8);
//!     REQUIRED group items (LIST) { REPEATED group list { REQUIRED BYTE_ARRAY element (UTF8); } }
//!     REQUIRED group scores (LIST) { REPEATED group list { REQUIRED FLOAT element; } }
//!   }
//!   ```
//!
//!   — the standard three-level list layout that pandas, Polars, Spark and DuckDB read as a
//!   string column and two list columns; ids are always strings there.
//!
//! Either way the file is written to a temporary sibling, synced and renamed
//! ([`sasrec_shared::io::write_atomic_path`]): a reader never sees a partial file, and on an
//! error nothing is left behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::Value;

use crate::api::ScoredItem;

/// Rows per Parquet row group.
pub const ROW_GROUP: usize = 65_536;

/// A destination of answer rows.
pub trait Sink {
    /// Appends the row of `id` with its ranked items.
    fn push(&mut self, id: &Value, ranked: &[ScoredItem]) -> anyhow::Result<()>;
}

/// JSON lines on a buffered file.
struct JsonLines {
    out: BufWriter<File>,
    key: &'static str,
}

impl Sink for JsonLines {
    fn push(&mut self, id: &Value, ranked: &[ScoredItem]) -> anyhow::Result<()> {
        let items: Vec<&Value> = ranked.iter().map(|s| &s.item).collect();
        let scores: Vec<f32> = ranked.iter().map(|s| s.score).collect();
        writeln!(
            self.out,
            "{{\"{}\":{},\"items\":{},\"scores\":{}}}",
            self.key,
            serde_json::to_string(id)?,
            serde_json::to_string(&items)?,
            serde_json::to_string(&scores)?
        )?;
        Ok(())
    }
}

/// The text of a raw id (JSON numbers as their digits).
fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parquet rows, buffered as column values with their repetition and definition levels
/// (Dremel: a list element has repetition 0 when it starts its row, 1 otherwise, and
/// definition 1; an empty list is one entry of definition 0 and no value).
struct ParquetRows {
    writer: SerializedFileWriter<File>,
    ids: Vec<ByteArray>,
    items: Vec<ByteArray>,
    scores: Vec<f32>,
    rep: Vec<i16>,
    def: Vec<i16>,
}

impl ParquetRows {
    /// A writer on `file` for rows keyed by `key`.
    fn new(file: File, key: &str) -> anyhow::Result<Self> {
        let schema = format!(
            "message answers {{ REQUIRED BYTE_ARRAY {key} (UTF8); \
             REQUIRED group items (LIST) {{ REPEATED group list {{ REQUIRED BYTE_ARRAY element (UTF8); }} }} \
             REQUIRED group scores (LIST) {{ REPEATED group list {{ REQUIRED FLOAT element; }} }} }}"
        );
        let schema = Arc::new(parse_message_type(&schema)?);
        let props = Arc::new(WriterProperties::builder().build());
        Ok(Self {
            writer: SerializedFileWriter::new(file, schema, props)?,
            ids: Vec::new(),
            items: Vec::new(),
            scores: Vec::new(),
            rep: Vec::new(),
            def: Vec::new(),
        })
    }

    /// Writes the buffered rows as one row group.
    fn flush_group(&mut self) -> anyhow::Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let mut group = self.writer.next_row_group()?;
        let mut column = 0;
        while let Some(mut col) = group.next_column()? {
            let (rep, def) = (Some(&self.rep[..]), Some(&self.def[..]));
            match column {
                0 => col
                    .typed::<ByteArrayType>()
                    .write_batch(&self.ids, None, None)?,
                1 => col
                    .typed::<ByteArrayType>()
                    .write_batch(&self.items, def, rep)?,
                _ => col
                    .typed::<FloatType>()
                    .write_batch(&self.scores, def, rep)?,
            };
            col.close()?;
            column += 1;
        }
        group.close()?;
        self.ids.clear();
        self.items.clear();
        self.scores.clear();
        self.rep.clear();
        self.def.clear();
        Ok(())
    }

    /// The last row group and the footer.
    fn finish(mut self) -> anyhow::Result<()> {
        self.flush_group()?;
        self.writer.close()?;
        Ok(())
    }
}

impl Sink for ParquetRows {
    fn push(&mut self, id: &Value, ranked: &[ScoredItem]) -> anyhow::Result<()> {
        self.ids.push(ByteArray::from(id_text(id).into_bytes()));
        if ranked.is_empty() {
            self.rep.push(0);
            self.def.push(0);
        }
        for (j, s) in ranked.iter().enumerate() {
            self.items
                .push(ByteArray::from(id_text(&s.item).into_bytes()));
            self.scores.push(s.score);
            self.rep.push(i16::from(j > 0));
            self.def.push(1);
        }
        if self.ids.len() >= ROW_GROUP {
            self.flush_group()?;
        }
        Ok(())
    }
}

/// Whether `path` names a Parquet file (`.parquet`, any case).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Writes `path` atomically ([module docs](self)) with the rows `fill` pushes, keyed by `key`
/// (`user` or `item`); on any error nothing is left behind and the error is `fill`'s own, or
/// a write error naming `path`.
pub fn write_answers(
    path: &Path,
    key: &'static str,
    fill: impl FnOnce(&mut dyn Sink) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut failure = None;
    let written = sasrec_shared::io::write_atomic_path(path, |tmp| {
        let run = || -> anyhow::Result<()> {
            let file = File::create(tmp).with_context(|| format!("writing {}", path.display()))?;
            if is_parquet(path) {
                let mut rows = ParquetRows::new(file, key)?;
                fill(&mut rows)?;
                rows.finish()
                    .with_context(|| format!("writing {}", path.display()))
            } else {
                let mut lines = JsonLines {
                    out: BufWriter::new(file),
                    key,
                };
                fill(&mut lines)?;
                lines
                    .out
                    .flush()
                    .with_context(|| format!("writing {}", path.display()))
            }
        };
        run().map_err(|e| {
            let msg = e.to_string();
            failure = Some(match e.downcast_ref::<std::io::Error>() {
                Some(_) => e.context(format!("writing {}", path.display())),
                None => e,
            });
            msg
        })
    });
    match failure {
        Some(e) => Err(e),
        None => written.map_err(|e| anyhow!(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::{ListAccessor, RowAccessor};

    fn scored(ids: &[&str]) -> Vec<ScoredItem> {
        ids.iter()
            .enumerate()
            .map(|(j, i)| ScoredItem {
                item: Value::from(*i),
                score: j as f32 + 0.5,
            })
            .collect()
    }

    /// Rows with empty, one- and three-element lists, across a row-group boundary, read back
    /// as written; a failing fill leaves no file.
    #[test]
    fn parquet_rows_round_trip_with_empty_lists_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let rows: Vec<(String, Vec<ScoredItem>)> = (0..ROW_GROUP + 3)
            .map(|r| {
                let ids: &[&str] = match r % 3 {
                    0 => &[],
                    1 => &["x"],
                    _ => &["7", "b", "c"],
                };
                (format!("u{r}"), scored(ids))
            })
            .collect();
        write_answers(&path, "user", |out| {
            for (id, ranked) in &rows {
                out.push(&Value::from(id.as_str()), ranked)?;
            }
            Ok(())
        })
        .unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 2);
        let back: Vec<(String, Vec<String>, usize)> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                let items = row.get_list(1).unwrap();
                let ids = (0..items.len())
                    .map(|j| items.get_string(j).unwrap().clone())
                    .collect();
                (
                    row.get_string(0).unwrap().clone(),
                    ids,
                    row.get_list(2).unwrap().len(),
                )
            })
            .collect();
        assert_eq!(back.len(), rows.len());
        for ((id, ranked), (bid, bitems, nscores)) in rows.iter().zip(&back) {
            let want: Vec<String> = ranked.iter().map(|s| id_text(&s.item)).collect();
            assert_eq!((id, &want, ranked.len()), (bid, bitems, *nscores));
        }
        let failed = dir.path().join("failed.parquet");
        let err = write_answers(&failed, "user", |_| Err(anyhow!("stop"))).unwrap_err();
        assert_eq!(err.to_string(), "stop");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only out.parquet"
        );
    }
}
