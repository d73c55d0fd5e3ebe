//! Item features files from the MovieLens metadata that ships with the ratings: ML-1M
//! `movies.dat` (`MovieID::Title::Genres`, latin-1, genres `|`-separated) and ML-100k
//! `u.item` (`id|title|release date|video release date|URL|` + 19 genre flags, latin-1).
//!
//! Both write the same TSV, read back by [`FeatureTable`](crate::features::FeatureTable)
//! through its header convention:
//!
//! ```text
//! item  title              genres:multi                 year:numeric
//! 1     Toy Story (1995)   Animation|Children's|Comedy  1995
//! ```
//!
//! The year is the last `(YYYY)` of the ML-1M title, or the year of the ML-100k release date;
//! it is left empty when there is none. Latin-1 bytes become UTF-8. With an item map
//! (`ml-1m.sasrec.item_map.txt`: `sasrec_item_id MovieID` per line) the ids are renumbered as
//! in the file the model is trained on, and movies outside the map are skipped (counted).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{read_bytes, write_atomic};

/// The 19 genres of ML-100k, in the order of `u.item`'s flags (`u.genre`).
pub const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Counts of a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeaturesReport {
    /// Rows written.
    pub items: usize,
    /// Movies outside the item map, skipped.
    pub skipped: usize,
    /// Rows without a year.
    pub without_year: usize,
    /// Rows without a genre.
    pub without_genres: usize,
}

/// One movie's features.
struct Movie {
    id: String,
    title: String,
    genres: Vec<String>,
    year: Option<u32>,
}

/// Latin-1 bytes as text (every byte is the code point of the same value).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The last `(YYYY)` of a title.
fn title_year(title: &str) -> Option<u32> {
    let b = title.as_bytes();
    (0..b.len().saturating_sub(5)).rev().find_map(|i| {
        let digits = &b[i + 1..i + 5];
        (b[i] == b'(' && b[i + 5] == b')' && digits.iter().all(u8::is_ascii_digit))
            .then(|| title[i + 1..i + 5].parse().ok())
            .flatten()
    })
}

/// ML-1M `movies.dat` lines as movies; errors name the line.
fn parse_ml1m(path: &Path, text: &str) -> Result<Vec<Movie>> {
    let mut movies = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split("::").collect();
        let [id, title, genres] = fields[..] else {
            return Err(Error::Parse {
                path: path.into(),
                line: n + 1,
                msg: format!(
                    "expected `MovieID::Title::Genres`, found {} `::`-separated fields",
                    fields.len()
                ),
            });
        };
        movies.push(Movie {
            id: id.trim().to_string(),
            title: title.to_string(),
            genres: genres
                .split('|')
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect(),
            year: title_year(title),
        });
    }
    Ok(movies)
}

/// ML-100k `u.item` lines as movies; errors name the line.
fn parse_ml100k(path: &Path, text: &str) -> Result<Vec<Movie>> {
    let mut movies = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::Parse {
            path: path.into(),
            line: n + 1,
            msg,
        };
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 5 + ML100K_GENRES.len() {
            return Err(at(format!(
                "expected {} `|`-separated fields (id, title, dates, URL, 19 genre flags), \
                 found {}",
                5 + ML100K_GENRES.len(),
                fields.len()
            )));
        }
        let mut genres = Vec::new();
        for (flag, name) in fields[5..].iter().zip(ML100K_GENRES) {
            match *flag {
                "1" => genres.push(name.to_string()),
                "0" => {}
                other => return Err(at(format!("genre `{name}`: flag `{other}` is not 0 or 1"))),
            }
        }
        let date = fields[2].trim();
        let year = date
            .get(date.len().saturating_sub(4)..)
            .and_then(|y| y.parse().ok());
        movies.push(Movie {
            id: fields[0].trim().to_string(),
            title: fields[1].to_string(),
            genres,
            year,
        });
    }
    Ok(movies)
}

/// `sasrec_item_id MovieID` lines → MovieID ↦ sasrec id.
fn read_item_map(path: &Path) -> Result<HashMap<String, String>> {
    let text = latin1(&read_bytes(path)?);
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            [] => {}
            [new, old] => {
                map.insert(old.to_string(), new.to_string());
            }
            _ => {
                return Err(Error::Parse {
                    path: path.into(),
                    line: n + 1,
                    msg: "expected `item_id original_id`".into(),
                })
            }
        }
    }
    Ok(map)
}

/// Which MovieLens metadata file a conversion reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// ML-1M `movies.dat`.
    Ml1mMovies,
    /// ML-100k `u.item`.
    Ml100kItems,
}

/// Converts `input` (plain or gzip) to the features TSV `output` (atomically), renumbering by
/// `item_map` when given ([module docs](self)).
pub fn convert(
    source: Source,
    input: &Path,
    item_map: Option<&Path>,
    output: &Path,
) -> Result<FeaturesReport> {
    let text = latin1(&read_bytes(input)?);
    let mut movies = match source {
        Source::Ml1mMovies => parse_ml1m(input, &text)?,
        Source::Ml100kItems => parse_ml100k(input, &text)?,
    };
    let total = movies.len();
    if let Some(map_path) = item_map {
        let map = read_item_map(map_path)?;
        movies.retain_mut(|m| match map.get(&m.id) {
            Some(new) => {
                m.id = new.clone();
                true
            }
            None => false,
        });
    }
    let report = FeaturesReport {
        items: movies.len(),
        skipped: total - movies.len(),
        without_year: movies.iter().filter(|m| m.year.is_none()).count(),
        without_genres: movies.iter().filter(|m| m.genres.is_empty()).count(),
    };
    write_atomic(output, |w| {
        let mut out = csv::WriterBuilder::new().delimiter(b'\t').from_writer(w);
        out.write_record(["item", "title", "genres:multi", "year:numeric"])?;
        for m in &movies {
            let year = m.year.map(|y| y.to_string()).unwrap_or_default();
            out.write_record([m.id.as_str(), &m.title, &m.genres.join("|"), &year])?;
        }
        out.flush()?;
        Ok(())
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{ColumnData, FeatureTable};

    #[test]
    fn years_come_from_the_last_parenthesised_year() {
        assert_eq!(title_year("Toy Story (1995)"), Some(1995));
        assert_eq!(title_year("City of Lost Children, The (1995)"), Some(1995));
        assert_eq!(title_year("1984 (1956) (1956)"), Some(1956));
        assert_eq!(title_year("Seven (Se7en) (1995)"), Some(1995));
        assert_eq!(title_year("No year"), None);
        assert_eq!(title_year("(19x5)"), None);
    }

    #[test]
    fn ml1m_movies_round_trip_through_the_reader_with_an_item_map() {
        let dir = tempfile::tempdir().unwrap();
        let movies = dir.path().join("movies.dat");
        std::fs::write(
            &movies,
            b"1::Toy Story (1995)::Animation|Children's|Comedy\n\
              2::Caf\xe9 \"Noir\", Le (1990)::Drama\n\
              3::Unmapped (2000)::Drama\n",
        )
        .unwrap();
        let map = dir.path().join("map.txt");
        std::fs::write(&map, "7 1\n8 2\n").unwrap();
        let out = dir.path().join("features.tsv");
        let r = convert(Source::Ml1mMovies, &movies, Some(&map), &out).unwrap();
        assert_eq!(
            (r.items, r.skipped, r.without_year, r.without_genres),
            (2, 1, 0, 0)
        );
        let t = FeatureTable::read(&out, None).unwrap();
        assert_eq!(t.ids, ["7", "8"]);
        assert_eq!(t.ignored, ["title"]);
        assert_eq!(
            t.columns[0].data.tokens(0),
            ["Animation", "Children's", "Comedy"]
        );
        assert_eq!(
            t.columns[1].data,
            ColumnData::Numbers(vec![Some(1995.0), Some(1990.0)])
        );
    }

    #[test]
    fn bad_lines_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.item");
        std::fs::write(&p, "1|T|01-Jan-1995||u|0|0\n").unwrap();
        let out = dir.path().join("o.tsv");
        let e = convert(Source::Ml100kItems, &p, None, &out)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(":1: expected 24 `|`-separated fields (id, title, dates, URL, 19 genre flags), found 7"), "{e}");
        std::fs::write(&p, "1::T\n").unwrap();
        let e = convert(Source::Ml1mMovies, &p, None, &out)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(":1: expected `MovieID::Title::Genres`, found 2 `::`-separated fields"),
            "{e}"
        );
        assert!(!out.exists());
    }
}
