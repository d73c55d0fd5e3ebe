//! Reading an item features file: a header-named CSV or TSV (plain or gzip), one row per item,
//! whose first column is the item id (the raw id of the interaction file) and whose feature
//! columns are declared by `--item_feature_columns name:kind,…` or by header cells written
//! `name:kind`. Undeclared columns (a title, a URL) are read past and listed as ignored.
//!
//! The delimiter is a tab when the header line holds one, else a comma; fields may be quoted
//! (RFC 4180, through the `csv` crate). Every error names the file and the line, and the
//! column for a bad value: a row with the wrong number of fields, an empty or repeated item
//! id, a number that does not parse or is not finite, a vector of another length than the
//! earlier ones, text that is not UTF-8.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::features::spec::{check_unique, ColumnSpec, FeatureKind};
use crate::io::read_bytes;

/// The values of one feature column, row by row.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// Categorical and multi: row r's tokens are `tokens[offsets[r]..offsets[r + 1]]` (none
    /// when the field is empty; a multi field's `|`-separated tokens without repeats).
    Tokens {
        /// Row starts into `tokens`, plus the end.
        offsets: Vec<usize>,
        /// Every row's tokens, concatenated.
        tokens: Vec<String>,
    },
    /// Numeric: one number per row, `None` when the field is empty.
    Numbers(Vec<Option<f64>>),
    /// Dense: one vector of `dim` floats per row, `None` when the field is empty.
    Vectors {
        /// Length of every vector (0 when no row has one).
        dim: usize,
        /// The rows' vectors.
        rows: Vec<Option<Vec<f32>>>,
    },
}

impl ColumnData {
    /// An empty column of `kind`.
    pub(super) fn new(kind: FeatureKind) -> Self {
        match kind {
            FeatureKind::Categorical | FeatureKind::Multi => ColumnData::Tokens {
                offsets: vec![0],
                tokens: Vec::new(),
            },
            FeatureKind::Numeric => ColumnData::Numbers(Vec::new()),
            FeatureKind::Dense => ColumnData::Vectors {
                dim: 0,
                rows: Vec::new(),
            },
        }
    }

    /// The tokens of row `r` (empty for numeric and dense columns).
    pub fn tokens(&self, r: usize) -> &[String] {
        match self {
            ColumnData::Tokens { offsets, tokens } => &tokens[offsets[r]..offsets[r + 1]],
            _ => &[],
        }
    }

    /// Whether row `r` has a value.
    pub fn has_value(&self, r: usize) -> bool {
        match self {
            ColumnData::Tokens { offsets, .. } => offsets[r + 1] > offsets[r],
            ColumnData::Numbers(v) => v[r].is_some(),
            ColumnData::Vectors { rows, .. } => rows[r].is_some(),
        }
    }

    /// Appends the value `field` of a `kind` column, or says what is wrong with it.
    pub(super) fn push(
        &mut self,
        kind: FeatureKind,
        field: &str,
    ) -> std::result::Result<(), String> {
        let field = field.trim();
        match self {
            ColumnData::Tokens { offsets, tokens } => {
                let start = tokens.len();
                let values: Vec<&str> = match kind {
                    FeatureKind::Multi => field.split('|').map(str::trim).collect(),
                    _ => vec![field],
                };
                for v in values.into_iter().filter(|v| !v.is_empty()) {
                    if !tokens[start..].iter().any(|t| t == v) {
                        tokens.push(v.to_string());
                    }
                }
                offsets.push(tokens.len());
            }
            ColumnData::Numbers(v) => v.push(parse_number(field)?),
            ColumnData::Vectors { dim, rows } => {
                let row = parse_vector(field, *dim)?;
                if let Some(r) = &row {
                    *dim = r.len();
                }
                rows.push(row);
            }
        }
        Ok(())
    }
}

/// A number, `None` for an empty field.
fn parse_number(field: &str) -> std::result::Result<Option<f64>, String> {
    if field.is_empty() {
        return Ok(None);
    }
    match field.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        Ok(_) => Err(format!("`{field}` is not a finite number")),
        Err(_) => Err(format!("`{field}` is not a number")),
    }
}

/// Space-separated floats, `None` for an empty field; `dim` is the length of the earlier rows'
/// vectors (0 when none had one).
fn parse_vector(field: &str, dim: usize) -> std::result::Result<Option<Vec<f32>>, String> {
    if field.is_empty() {
        return Ok(None);
    }
    let mut v = Vec::with_capacity(dim);
    for (j, x) in field.split_whitespace().enumerate() {
        match x.parse::<f32>() {
            Ok(f) if f.is_finite() => v.push(f),
            _ => return Err(format!("value {} `{x}` is not a finite number", j + 1)),
        }
    }
    if dim > 0 && v.len() != dim {
        return Err(format!("{} values, but the rows above have {dim}", v.len()));
    }
    Ok(Some(v))
}

/// One declared feature column and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureColumn {
    /// Its name and kind.
    pub spec: ColumnSpec,
    /// Its values, one per row of the file.
    pub data: ColumnData,
}

/// An item features file, read.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureTable {
    /// The file.
    pub path: PathBuf,
    /// The header name of the id column (the first).
    pub id_column: String,
    /// Row r's raw item id.
    pub ids: Vec<String>,
    /// The declared columns, in declaration order.
    pub columns: Vec<FeatureColumn>,
    /// Header columns read past (neither the id nor declared).
    pub ignored: Vec<String>,
}

impl FeatureTable {
    /// Reads `path`; `declared` are the columns of `--item_feature_columns`, or `None` to take
    /// them from `name:kind` header cells ([module docs](self)).
    pub fn read(path: &Path, declared: Option<&[ColumnSpec]>) -> Result<Self> {
        let bytes = read_bytes(path)?;
        let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let delimiter = if first_line.contains(&b'\t') {
            b'\t'
        } else {
            b','
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .from_reader(&bytes[..]);
        let mut records = reader.byte_records();
        let header = match records.next() {
            Some(r) => text_record(path, r.map_err(|e| csv_error(path, e))?)?,
            None => {
                return Err(Error::Data(format!(
                    "{}: empty file (no header)",
                    path.display()
                )))
            }
        };
        let mut table = Self::from_header(path, &header, declared)?;
        let positions = table.positions(&header);
        let mut lines: HashMap<String, usize> = HashMap::new();
        for record in records {
            let record = text_record(path, record.map_err(|e| csv_error(path, e))?)?;
            table.push_row(path, &record, &positions, &mut lines)?;
        }
        if table.ids.is_empty() {
            return Err(Error::Data(format!(
                "{}: no item rows after the header",
                path.display()
            )));
        }
        Ok(table)
    }

    /// The table's columns from the header (first cell: the item id).
    fn from_header(path: &Path, header: &Record, declared: Option<&[ColumnSpec]>) -> Result<Self> {
        let cells = &header.fields;
        if cells.len() < 2 {
            return Err(Error::Data(format!(
                "{}: the header has no column after the item id",
                path.display()
            )));
        }
        let id_column = cells[0].clone();
        let (specs, ignored) = match declared {
            Some(specs) => declared_columns(path, cells, specs)?,
            None => header_columns(path, cells)?,
        };
        let columns = specs
            .into_iter()
            .map(|spec| FeatureColumn {
                data: ColumnData::new(spec.kind),
                spec,
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            id_column,
            ids: Vec::new(),
            columns,
            ignored,
        })
    }

    /// Each column's field position in a row.
    fn positions(&self, header: &Record) -> Vec<usize> {
        self.columns
            .iter()
            .map(|c| {
                header.fields[1..]
                    .iter()
                    .position(|h| header_name(h) == c.spec.name)
                    .map_or(0, |p| p + 1)
            })
            .collect()
    }

    /// Appends one data row; `lines` maps the ids read so far to their lines.
    fn push_row(
        &mut self,
        path: &Path,
        row: &Record,
        positions: &[usize],
        lines: &mut HashMap<String, usize>,
    ) -> Result<()> {
        let at = |msg: String| Error::Parse {
            path: path.into(),
            line: row.line,
            msg,
        };
        let id = row.fields[0].trim();
        if id.is_empty() {
            return Err(at(format!("empty item id (column `{}`)", self.id_column)));
        }
        if let Some(first) = lines.insert(id.to_string(), row.line) {
            return Err(at(format!("item `{id}` is already on line {first}")));
        }
        for (col, &p) in self.columns.iter_mut().zip(positions) {
            col.data
                .push(col.spec.kind, &row.fields[p])
                .map_err(|m| at(format!("column `{}`: {m}", col.spec.name)))?;
        }
        self.ids.push(id.to_string());
        Ok(())
    }

    /// Row index of every id.
    pub fn rows_by_id(&self) -> HashMap<&str, usize> {
        self.ids
            .iter()
            .enumerate()
            .map(|(r, id)| (id.as_str(), r))
            .collect()
    }
}

/// A header cell's column name: the part before `:kind` when it names a kind.
fn header_name(cell: &str) -> &str {
    match cell.rsplit_once(':') {
        Some((name, kind)) if FeatureKind::from_name(kind.trim()).is_some() => name.trim(),
        _ => cell.trim(),
    }
}

/// `--item_feature_columns`: each declared column is in the header; the rest is ignored.
fn declared_columns(
    path: &Path,
    cells: &[String],
    specs: &[ColumnSpec],
) -> Result<(Vec<ColumnSpec>, Vec<String>)> {
    let names: Vec<&str> = cells[1..].iter().map(|c| header_name(c)).collect();
    for s in specs {
        if !names.contains(&s.name.as_str()) {
            return Err(Error::Config(format!(
                "--item_feature_columns: column `{}` is not in the header of {} (columns after \
                 the id `{}`: {})",
                s.name,
                path.display(),
                cells[0],
                names.join(", ")
            )));
        }
    }
    let ignored = names
        .iter()
        .filter(|n| !specs.iter().any(|s| s.name == **n))
        .map(|n| n.to_string())
        .collect();
    Ok((specs.to_vec(), ignored))
}

/// Header convention: the cells written `name:kind` are the feature columns.
fn header_columns(path: &Path, cells: &[String]) -> Result<(Vec<ColumnSpec>, Vec<String>)> {
    let what = format!("{}:1", path.display());
    let (mut specs, mut ignored) = (Vec::new(), Vec::new());
    for cell in &cells[1..] {
        match cell.rsplit_once(':') {
            Some((_, kind)) if FeatureKind::from_name(kind.trim()).is_some() => {
                specs.push(ColumnSpec::parse(cell, &what)?)
            }
            _ => ignored.push(cell.trim().to_string()),
        }
    }
    if specs.is_empty() {
        return Err(Error::Data(format!(
            "{}: no feature columns: name header cells `name:kind` (kinds: categorical, multi, \
             numeric, dense) or pass --item_feature_columns name:kind,…",
            path.display()
        )));
    }
    check_unique(&specs, &what)?;
    Ok((specs, ignored))
}

/// One record as text, with its 1-based line.
struct Record {
    line: usize,
    fields: Vec<String>,
}

/// The record's fields as UTF-8 text; an error names the line and field.
fn text_record(path: &Path, r: csv::ByteRecord) -> Result<Record> {
    let line = r.position().map_or(0, |p| p.line() as usize);
    let fields = r
        .iter()
        .enumerate()
        .map(|(j, f)| {
            String::from_utf8(f.to_vec()).map_err(|_| Error::Parse {
                path: path.into(),
                line,
                msg: format!("field {} is not UTF-8 (convert latin-1 files first)", j + 1),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Record { line, fields })
}

/// A CSV error as the data layer's, naming the line.
fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line() as usize);
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, but the header has {expected_len}"),
        _ => e.to_string(),
    };
    Error::Parse {
        path: path.into(),
        line,
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::spec::parse_columns;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("items.csv");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_every_kind_from_header_kinds() {
        let (_d, p) = write(
            "item,title,genres:multi,year:numeric,studio:categorical,emb:dense\n\
             1,\"Toy Story, the\",Animation|Comedy|Animation,1995,Pixar,0.5 1\n\
             2,Heat,,,,\n",
        );
        let t = FeatureTable::read(&p, None).unwrap();
        assert_eq!(t.id_column, "item");
        assert_eq!(t.ids, ["1", "2"]);
        assert_eq!(t.ignored, ["title"]);
        let c = &t.columns;
        assert_eq!(c[0].data.tokens(0), ["Animation", "Comedy"]);
        assert!(!c[0].data.has_value(1));
        assert_eq!(c[1].data, ColumnData::Numbers(vec![Some(1995.0), None]));
        assert_eq!(c[2].data.tokens(0), ["Pixar"]);
        assert_eq!(
            c[3].data,
            ColumnData::Vectors {
                dim: 2,
                rows: vec![Some(vec![0.5, 1.0]), None]
            }
        );
    }

    #[test]
    fn declared_columns_pick_tsv_columns_by_name() {
        let (_d, p) = write("movie\tyear\tgenres\n10\t1999\tDrama\n");
        let specs = parse_columns("genres:multi,year:numeric").unwrap();
        let t = FeatureTable::read(&p, Some(&specs)).unwrap();
        assert_eq!(t.columns[0].data.tokens(0), ["Drama"]);
        assert_eq!(t.columns[1].data, ColumnData::Numbers(vec![Some(1999.0)]));
        let specs = parse_columns("studio:categorical").unwrap();
        let e = FeatureTable::read(&p, Some(&specs))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--item_feature_columns: column `studio` is not in the header of")
                && e.ends_with("(columns after the id `movie`: year, genres)"),
            "{e}"
        );
    }

    #[test]
    fn bad_rows_name_file_line_and_column() {
        let err = |text: &str| {
            let (_d, p) = write(text);
            let e = FeatureTable::read(&p, None).unwrap_err().to_string();
            e[p.display().to_string().len()..].to_string()
        };
        let h = "item,year:numeric,emb:dense\n";
        assert_eq!(
            err(&format!("{h}1,19x5,1 2\n")),
            ":2: column `year`: `19x5` is not a number"
        );
        assert_eq!(
            err(&format!("{h}1,inf,1 2\n")),
            ":2: column `year`: `inf` is not a finite number"
        );
        assert_eq!(
            err(&format!("{h}1,1,1 2\n2,2,1 2 3\n")),
            ":3: column `emb`: 3 values, but the rows above have 2"
        );
        assert_eq!(
            err(&format!("{h}1,1,a\n")),
            ":2: column `emb`: value 1 `a` is not a finite number"
        );
        assert_eq!(
            err(&format!("{h}1,1,1\n1,2,1\n")),
            ":3: item `1` is already on line 2"
        );
        assert_eq!(
            err(&format!("{h},1,1\n")),
            ":2: empty item id (column `item`)"
        );
        assert_eq!(
            err(&format!("{h}1,1\n")),
            ":2: 2 fields, but the header has 3"
        );
        assert_eq!(err(h), ": no item rows after the header");
        assert_eq!(err(""), ": empty file (no header)");
        assert!(err("item,title\n1,x\n").starts_with(": no feature columns"));
    }

    #[test]
    fn latin1_bytes_are_an_error_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.tsv");
        std::fs::write(&p, b"item\tg:categorical\n1\tCaf\xe9\n").unwrap();
        let e = FeatureTable::read(&p, None).unwrap_err().to_string();
        assert!(
            e.ends_with(":2: field 2 is not UTF-8 (convert latin-1 files first)"),
            "{e}"
        );
    }
}
