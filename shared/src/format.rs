//! How an interaction file is laid out: its [`Format`] (one interaction per line, or one user's
//! whole sequence per line) and, for interaction files, the [`Columns`] mapping that gives each
//! column a [`Role`]. [`ReadOptions`] bundles both for [`Dataset::read_with`].
//!
//! The rules that pick a format and a mapping when they are not given are described in the
//! [`dataset`](crate::dataset) module docs.
//!
//! [`Dataset::read_with`]: crate::dataset::Dataset::read_with

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The line layout of a data file (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detect the layout (the rule is in the [`dataset`](crate::dataset) module docs).
    /// Never appears in a [`LoadReport`](crate::dataset::LoadReport).
    #[default]
    Auto,
    /// One interaction per line: `user item`, `user item timestamp`,
    /// `user item rating timestamp`, or any column order named by a header or by [`Columns`].
    Interactions,
    /// One user per line, `user item1 item2 …` in time order, no timestamps (the public
    /// Beauty/Sports/Toys/Yelp files of S3-Rec, CL4SRec, ICLRec and DuoRec).
    Sequence,
}

impl Format {
    /// The flag values, in declaration order.
    pub const NAMES: [&'static str; 3] = ["auto", "interactions", "sequence"];

    /// Every format, in declaration order (so `ALL[j]` is named `NAMES[j]`).
    const ALL: [Format; 3] = [Format::Auto, Format::Interactions, Format::Sequence];

    /// The flag value naming this format.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Parses `auto`, `interactions` or `sequence` (ASCII case-insensitive, surrounding
    /// whitespace ignored).
    fn from_str(s: &str) -> Result<Self> {
        let key = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|f| f.name() == key)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown format '{}' in --format; expected auto, interactions or sequence",
                    s.trim()
                ))
            })
    }
}

/// What one column of an interaction file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The raw user token (required, exactly once).
    User,
    /// The raw item token (required, exactly once).
    Item,
    /// A numeric rating: validated, otherwise unused (at most once).
    Rating,
    /// A unix time in seconds, integer or decimal (at most once); without one, file order is
    /// time order.
    Timestamp,
    /// A column that is not read (written `-` or `_`; any number of times).
    Ignored,
}

impl Role {
    /// The name used in `--columns` and in reports (`-` for [`Role::Ignored`]).
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Item => "item",
            Role::Rating => "rating",
            Role::Timestamp => "timestamp",
            Role::Ignored => "-",
        }
    }

    /// The role a column name stands for, or `None` for an unknown name.
    ///
    /// A `:type` suffix (RecBole's `user_id:token`) is dropped, then everything but ASCII
    /// letters and digits, and case is ignored; the remaining name must be one of
    /// `user userid uid users` (user), `item itemid iid items movie movieid product productid`
    /// (item), `rating ratings score` (rating) or `timestamp time ts datetime` (timestamp).
    /// So `user_id`, `UserID`, `item_id:token` and `timestamp:float` are all recognised.
    pub fn from_name(name: &str) -> Option<Role> {
        let base = name.split(':').next().unwrap_or("");
        let key: String = base
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        ROLE_NAMES
            .iter()
            .find(|(_, names)| names.contains(&key.as_str()))
            .map(|&(role, _)| role)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const ROLE_NAMES: &[(Role, &[&str])] = &[
    (Role::User, &["user", "userid", "uid", "users"]),
    (
        Role::Item,
        &[
            "item",
            "itemid",
            "iid",
            "items",
            "movie",
            "movieid",
            "product",
            "productid",
        ],
    ),
    (Role::Rating, &["rating", "ratings", "score"]),
    (Role::Timestamp, &["timestamp", "time", "ts", "datetime"]),
];

/// What is wrong with a list of roles.
pub(crate) enum RoleProblem {
    /// A role other than [`Role::Ignored`] at two 0-based positions.
    Twice(Role, usize, usize),
    /// No user or no item column.
    Missing(Role),
}

/// Checks that `roles` name one user and one item column and no other role twice.
fn check_roles(roles: &[Role]) -> std::result::Result<(), RoleProblem> {
    for (j, r) in roles.iter().enumerate() {
        if *r == Role::Ignored {
            continue;
        }
        if let Some(first) = roles[..j].iter().position(|p| p == r) {
            return Err(RoleProblem::Twice(*r, first, j));
        }
    }
    for need in [Role::User, Role::Item] {
        if !roles.contains(&need) {
            return Err(RoleProblem::Missing(need));
        }
    }
    Ok(())
}

/// The role of every column of an interaction file, in file order (`--columns`).
///
/// Always holds exactly one [`Role::User`] and one [`Role::Item`], at most one
/// [`Role::Rating`] and one [`Role::Timestamp`], and any number of [`Role::Ignored`].
/// Written (by [`Display`](fmt::Display), by serde, and for [`FromStr`]) as comma-separated
/// role names, e.g. `user,-,item,timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    roles: Vec<Role>,
}

impl Columns {
    /// A mapping from roles in file order; a `Config` error names what is duplicated or missing.
    pub fn new(roles: Vec<Role>) -> Result<Self> {
        check_roles(&roles).map_err(|p| {
            Error::Config(match p {
                RoleProblem::Twice(r, a, b) => format!(
                    "column role '{r}' appears twice in --columns (columns {} and {})",
                    a + 1,
                    b + 1
                ),
                RoleProblem::Missing(r) => format!("--columns has no {r} column"),
            })
        })?;
        Ok(Self { roles })
    }

    /// The mapping of a header-less file with `n` columns: `user item` (2),
    /// `user item timestamp` (3) or `user item rating timestamp` (4); `None` otherwise.
    pub fn positional(n: usize) -> Option<Self> {
        let roles = match n {
            2 => vec![Role::User, Role::Item],
            3 => vec![Role::User, Role::Item, Role::Timestamp],
            4 => vec![Role::User, Role::Item, Role::Rating, Role::Timestamp],
            _ => return None,
        };
        Some(Self { roles })
    }

    /// The mapping named by a header line: known names (see [`Role::from_name`]) take their
    /// role, unknown ones are ignored. The message says what is duplicated or missing.
    pub(crate) fn from_header(fields: &[&str]) -> std::result::Result<Self, String> {
        let roles: Vec<Role> = fields
            .iter()
            .map(|f| Role::from_name(f).unwrap_or(Role::Ignored))
            .collect();
        match check_roles(&roles) {
            Ok(()) => Ok(Self { roles }),
            Err(RoleProblem::Twice(r, a, b)) => Err(format!(
                "the header names the {r} column twice (columns {} `{}` and {} `{}`)",
                a + 1,
                fields[a],
                b + 1,
                fields[b]
            )),
            Err(RoleProblem::Missing(r)) => Err(format!("the header has no {r} column")),
        }
    }

    /// The roles, one per column in file order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Number of columns (including ignored ones).
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// Always `false`: a mapping has at least a user and an item column.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The 0-based column holding `role`, if any (the first one for [`Role::Ignored`]).
    pub fn position(&self, role: Role) -> Option<usize> {
        self.roles.iter().position(|&r| r == role)
    }
}

impl fmt::Display for Columns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (j, r) in self.roles.iter().enumerate() {
            if j > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.name())?;
        }
        Ok(())
    }
}

impl Serialize for Columns {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Columns {
    type Err = Error;

    /// Parses comma-separated roles in file order: `user`, `item`, `rating`, `timestamp`, any
    /// column name [`Role::from_name`] knows (`user_id`, `item_id:token`, `ts`, …), or `-` / `_`
    /// for an ignored column. Spaces around roles are ignored.
    fn from_str(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Err(Error::Config(
                "--columns is empty; expected column roles in file order, e.g. user,item,timestamp"
                    .into(),
            ));
        }
        let roles = s
            .split(',')
            .map(str::trim)
            .enumerate()
            .map(|(j, tok)| match tok {
                "" => Err(Error::Config(format!(
                    "empty column role at position {} in --columns; write - for an ignored column",
                    j + 1
                ))),
                "-" | "_" => Ok(Role::Ignored),
                _ => Role::from_name(tok).ok_or_else(|| {
                    Error::Config(format!(
                        "unknown column role '{tok}' in --columns; \
                         expected user, item, rating, timestamp or -"
                    ))
                }),
            })
            .collect::<Result<Vec<Role>>>()?;
        Columns::new(roles)
    }
}

/// How [`Dataset::read_with`](crate::dataset::Dataset::read_with) reads a file. The default
/// detects everything, as [`Dataset::read`](crate::dataset::Dataset::read) does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The line layout; [`Format::Auto`] detects it.
    pub format: Format,
    /// The role of each column (interaction files only); `None` takes it from the header or
    /// from the column count. Given, it also rules out detecting the sequence format, and it
    /// is an error together with [`Format::Sequence`].
    pub columns: Option<Columns>,
}
