//! One item's features given as a JSON object `{column: value}` (what a server receives for
//! an item it has never seen), encoded by a model's [`FeatureSchema`] exactly as the same
//! values in a features file row would be: each value becomes the field text the file would
//! hold and goes through the file reader's parsing, then [`FeatureSchema::encode`].
//!
//! | kind | JSON value | as in the file |
//! | --- | --- | --- |
//! | categorical | a string | the token |
//! | multi | an array of strings, or one `\|`-separated string | `A\|B` |
//! | numeric | a number | the number, standardised by the schema |
//! | dense | an array of numbers of the column's width | space-separated floats |
//!
//! A missing key or `null` is a missing value (as an empty field). Tokens outside the
//! vocabulary are dropped, as for a cold item of the file. What a file row could not hold is
//! refused with the column named: a key that is no column, a value of the wrong JSON type, more
//! known tokens than the column's width, a vector of another length, a non-finite number.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::features::encode::{EncodedFeatures, FeatureSchema, SchemaColumn};
use crate::features::spec::{ColumnSpec, FeatureKind};
use crate::features::table::{ColumnData, FeatureColumn, FeatureTable};

/// A feature value that cannot be encoded: the column (the JSON key) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The column name, as the JSON key.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "feature `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

impl FeatureSchema {
    /// The features of one item, `values` as in the [module docs](self): one row of
    /// [`EncodedFeatures`] (no padding row), equal to what [`FeatureSchema::encode`] gives
    /// for the same values read from a file.
    pub fn encode_json(&self, values: &Map<String, Value>) -> Result<EncodedFeatures, FieldError> {
        if let Some(key) = values
            .keys()
            .find(|k| !self.columns.iter().any(|c| &c.name == *k))
        {
            let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            return Err(FieldError {
                field: key.clone(),
                message: format!("no such feature column (the model's: {})", names.join(", ")),
            });
        }
        let columns = self
            .columns
            .iter()
            .map(|c| {
                let bad = |message: String| FieldError {
                    field: c.name.clone(),
                    message,
                };
                let field = field_text(c.kind, values.get(&c.name)).map_err(bad)?;
                let mut data = ColumnData::new(c.kind);
                data.push(c.kind, &field).map_err(bad)?;
                check_width(c, &data).map_err(bad)?;
                let spec = ColumnSpec {
                    name: c.name.clone(),
                    kind: c.kind,
                };
                Ok(FeatureColumn { spec, data })
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        let table = FeatureTable {
            path: PathBuf::from("request"),
            id_column: "item".into(),
            ids: vec![String::new()],
            columns,
            ignored: Vec::new(),
        };
        Ok(self.encode(&table, &[Some(0)]))
    }
}

/// The field text a features file would hold for `value` in a `kind` column.
fn field_text(kind: FeatureKind, value: Option<&Value>) -> Result<String, String> {
    let strings = |items: &[Value]| -> Result<Vec<String>, String> {
        items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.contains('|') => Ok(s.clone()),
                Value::String(s) => Err(format!("`{s}` holds `|`, the separator of the values")),
                other => Err(format!("expected strings, found {}", type_name(other))),
            })
            .collect()
    };
    let numbers = |items: &[Value]| -> Result<Vec<String>, String> {
        items
            .iter()
            .map(|v| match v {
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("expected numbers, found {}", type_name(other))),
            })
            .collect()
    };
    match (kind, value) {
        (_, None | Some(Value::Null)) => Ok(String::new()),
        (FeatureKind::Categorical | FeatureKind::Multi, Some(Value::String(s))) => Ok(s.clone()),
        (FeatureKind::Multi, Some(Value::Array(a))) => Ok(strings(a)?.join("|")),
        (FeatureKind::Numeric, Some(Value::Number(n))) => Ok(n.to_string()),
        (FeatureKind::Dense, Some(Value::Array(a))) => Ok(numbers(a)?.join(" ")),
        (kind, Some(other)) => Err(format!(
            "a {kind} column takes {}, found {}",
            expected(kind),
            type_name(other)
        )),
    }
}

/// The JSON a `kind` column takes, for error messages.
fn expected(kind: FeatureKind) -> &'static str {
    match kind {
        FeatureKind::Categorical => "a string",
        FeatureKind::Multi => "an array of strings or a `|`-separated string",
        FeatureKind::Numeric => "a number",
        FeatureKind::Dense => "an array of numbers",
    }
}

/// The JSON type of `v`, for error messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value fits the column: at most `width` known tokens, a vector of exactly `width`.
fn check_width(col: &SchemaColumn, data: &ColumnData) -> Result<(), String> {
    match data {
        ColumnData::Tokens { .. } => {
            let known = data
                .tokens(0)
                .iter()
                .filter(|t| col.vocab.contains(t))
                .count();
            if known > col.width {
                return Err(format!(
                    "{known} known values, the model takes at most {}",
                    col.width
                ));
            }
        }
        ColumnData::Vectors { rows, .. } => {
            if let Some(Some(v)) = rows.first() {
                if v.len() != col.width {
                    return Err(format!(
                        "{} values, the model's vectors have {}",
                        v.len(),
                        col.width
                    ));
                }
            }
        }
        ColumnData::Numbers(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::encode::item_rows;
    use crate::IdMap;
    use serde_json::json;

    const FILE: &str = "item,genres:multi,year:numeric,emb:dense,studio:categorical\n\
                        10,A|B,1990,1 2,x\n\
                        20,B,2000,,y\n\
                        30,C|A,,3 4,\n";

    /// The schema fitted on the file and the file's encoding of its three items.
    fn fitted() -> (FeatureSchema, EncodedFeatures) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, FILE).unwrap();
        let t = FeatureTable::read(&p, None).unwrap();
        let map = IdMap::from_tokens(vec!["10".into(), "20".into(), "30".into()]);
        let rows = item_rows(&t, &map);
        let s = FeatureSchema::fit(&t, &rows, &[false, true, true, true]);
        let e = s.encode(&t, &rows);
        (s, e)
    }

    /// Row `i` of `e` as a one-row encoding.
    fn row(e: &EncodedFeatures, i: usize) -> EncodedFeatures {
        EncodedFeatures {
            tokens: e
                .tokens
                .iter()
                .map(|t| crate::features::TokenIds {
                    width: t.width,
                    ids: t.ids[i * t.width..(i + 1) * t.width].to_vec(),
                })
                .collect(),
            numeric: e.numeric[i * e.numeric_width..(i + 1) * e.numeric_width].to_vec(),
            numeric_width: e.numeric_width,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn json_values_encode_as_the_same_file_row() {
        let (s, e) = fitted();
        let items = [
            json!({"genres": ["A", "B"], "year": 1990, "emb": [1, 2], "studio": "x"}),
            json!({"genres": "B", "year": 2000.0, "studio": "y", "emb": null}),
            json!({"genres": "C|A", "emb": [3.0, 4.0]}),
        ];
        for (i, v) in items.into_iter().enumerate() {
            assert_eq!(
                s.encode_json(&obj(v)).unwrap(),
                row(&e, i + 1),
                "item {}",
                i + 1
            );
        }
        // an unknown token is dropped, as for a cold item of the file; nothing given is none
        let unseen = s.encode_json(&obj(json!({"genres": ["Z", "A"]}))).unwrap();
        assert_eq!(unseen.tokens[0].ids, [1, 0]);
        assert_eq!(s.encode_json(&Map::new()).unwrap(), row(&e, 0));
    }

    #[test]
    fn what_a_file_row_could_not_hold_is_refused_naming_the_column() {
        let (s, _) = fitted();
        let err = |v: Value| s.encode_json(&obj(v)).unwrap_err().to_string();
        assert_eq!(
            err(json!({"genre": "A"})),
            "feature `genre`: no such feature column (the model's: genres, year, emb, studio)"
        );
        assert_eq!(
            err(json!({"year": "1990"})),
            "feature `year`: a numeric column takes a number, found a string"
        );
        assert_eq!(
            err(json!({"genres": ["A", 3]})),
            "feature `genres`: expected strings, found a number"
        );
        assert_eq!(
            err(json!({"genres": ["A|B"]})),
            "feature `genres`: `A|B` holds `|`, the separator of the values"
        );
        assert_eq!(
            err(json!({"genres": "A|B|C"})),
            "feature `genres`: 3 known values, the model takes at most 2"
        );
        assert_eq!(
            err(json!({"emb": [1, 2, 3]})),
            "feature `emb`: 3 values, the model's vectors have 2"
        );
        assert_eq!(
            err(json!({"emb": [1, "2"]})),
            "feature `emb`: expected numbers, found a string"
        );
        assert_eq!(
            err(json!({"studio": ["x"]})),
            "feature `studio`: a categorical column takes a string, found an array"
        );
        assert_eq!(
            err(json!({"year": 1e308, "emb": [1e39, 1]})),
            "feature `emb`: value 1 `1e+39` is not a finite number"
        );
    }
}
