//! Column kinds of an item features file and the `--item_feature_columns` flag.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a feature column is read and encoded (docs/MODELS.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// One token per item (a studio, a brand): a value id of the column's vocabulary.
    Categorical,
    /// `|`-separated tokens (MovieLens genres): up to the column's width of value ids.
    Multi,
    /// One number (a year, a price): standardised on the training items.
    Numeric,
    /// A pretrained vector, space-separated floats of one length.
    Dense,
}

impl FeatureKind {
    /// Every kind, in the order of [`FeatureKind::name`]'s documentation.
    pub const ALL: [FeatureKind; 4] = [Self::Categorical, Self::Multi, Self::Numeric, Self::Dense];

    /// The kind's name in flags and headers: `categorical`, `multi`, `numeric`, `dense`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Categorical => "categorical",
            Self::Multi => "multi",
            Self::Numeric => "numeric",
            Self::Dense => "dense",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the kind holds tokens (categorical and multi) rather than numbers (numeric and
    /// dense).
    pub fn is_token(self) -> bool {
        matches!(self, Self::Categorical | Self::Multi)
    }
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// One declared feature column: `name:kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// The column's header name.
    pub name: String,
    /// How it is read and embedded.
    pub kind: FeatureKind,
}

impl ColumnSpec {
    /// Parses `name:kind`; `what` names where the text came from in the error
    /// (`--item_feature_columns`, or a header cell).
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let kinds = || {
            FeatureKind::ALL
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (name, kind) = text.rsplit_once(':').ok_or_else(|| {
            Error::Config(format!(
                "{what}: `{text}` is not `name:kind` (kinds: {})",
                kinds()
            ))
        })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::Config(format!(
                "{what}: `{text}` has no column name"
            )));
        }
        let kind = FeatureKind::from_name(kind.trim()).ok_or_else(|| {
            Error::Config(format!(
                "{what}: `{text}`: unknown kind `{}` (kinds: {})",
                kind.trim(),
                kinds()
            ))
        })?;
        Ok(Self {
            name: name.to_string(),
            kind,
        })
    }
}

/// Parses `--item_feature_columns genres:multi,year:numeric,…`: at least one column, each
/// named once.
pub fn parse_columns(text: &str) -> Result<Vec<ColumnSpec>> {
    const FLAG: &str = "--item_feature_columns";
    let specs = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| ColumnSpec::parse(s, FLAG))
        .collect::<Result<Vec<_>>>()?;
    if specs.is_empty() {
        return Err(Error::Config(format!("{FLAG}: no columns in `{text}`")));
    }
    check_unique(&specs, FLAG)?;
    Ok(specs)
}

/// The value of `--item_feature_columns`: the declared columns ([`parse_columns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpecs(pub Vec<ColumnSpec>);

impl std::str::FromStr for ColumnSpecs {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_columns(s).map(ColumnSpecs)
    }
}

/// Every column is named once.
pub(crate) fn check_unique(specs: &[ColumnSpec], what: &str) -> Result<()> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|t| t.name == s.name) {
            return Err(Error::Config(format!(
                "{what}: column `{}` is named twice",
                s.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_parses_names_and_kinds() {
        let got = parse_columns("genres:multi, year:numeric,studio:categorical,emb:dense").unwrap();
        let kinds: Vec<_> = got.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("genres", FeatureKind::Multi),
                ("year", FeatureKind::Numeric),
                ("studio", FeatureKind::Categorical),
                ("emb", FeatureKind::Dense)
            ]
        );
    }

    #[test]
    fn flag_errors_name_the_flag_and_the_entry() {
        let err = |t: &str| parse_columns(t).unwrap_err().to_string();
        assert_eq!(
            err("genres"),
            "--item_feature_columns: `genres` is not `name:kind` (kinds: categorical, multi, numeric, dense)"
        );
        assert_eq!(
            err("year:number"),
            "--item_feature_columns: `year:number`: unknown kind `number` (kinds: categorical, multi, numeric, dense)"
        );
        assert_eq!(
            err(":multi"),
            "--item_feature_columns: `:multi` has no column name"
        );
        assert_eq!(
            err("a:multi,a:numeric"),
            "--item_feature_columns: column `a` is named twice"
        );
        assert_eq!(err(","), "--item_feature_columns: no columns in `,`");
    }
}
