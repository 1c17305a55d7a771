//! RecBole's "atomic files": tab-separated, one header line of `name:type` columns.
//!
//! `<name>.inter` holds interactions (`user_id`, `item_id`, optional `rating`, `timestamp`);
//! `<name>.item` holds the catalogue (`item_id`, a title column, a year column, a genre column).
//! MovieLens files are not valid UTF-8 everywhere (Latin-1 titles), so text is decoded lossily.
//! Read with the `csv` crate (tab-delimited, unquoted).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Interaction, ItemMetadata};

pub fn load_atomic_files(dir: &Path, name: &str) -> Result<Dataset, DataError> {
    let interactions = load_interactions(&dir.join(format!("{name}.inter")))?;
    let item_path = dir.join(format!("{name}.item"));
    let items = if item_path.exists() {
        load_items(&item_path)?
    } else {
        Vec::new()
    };
    Ok(Dataset {
        name: name.to_owned(),
        interactions,
        items,
    }
    .with_catalogue_covering_interactions())
}

impl Dataset {
    /// Adds a bare catalogue entry for every interacted item the item file does not list, so the
    /// catalogue is always a superset of what users touched.
    fn with_catalogue_covering_interactions(mut self) -> Dataset {
        let mut known: std::collections::HashSet<String> =
            self.items.iter().map(|item| item.item_id.clone()).collect();
        for interaction in &self.interactions {
            if known.insert(interaction.item_id.clone()) {
                self.items.push(ItemMetadata {
                    item_id: interaction.item_id.clone(),
                    title: interaction.item_id.clone(),
                    year: None,
                    genres: Vec::new(),
                });
            }
        }
        self
    }
}

/// Column positions resolved from a header line.
struct Header {
    columns: Vec<String>,
}

impl Header {
    fn parse(fields: &[Cow<'_, str>]) -> Header {
        Header {
            columns: fields
                .iter()
                .map(|column| column.split(':').next().unwrap_or("").trim().to_owned())
                .collect(),
        }
    }

    fn position(&self, path: &Path, candidates: &[&str]) -> Result<usize, DataError> {
        self.find(candidates).ok_or_else(|| DataError::Malformed {
            path: path.to_owned(),
            line: 1,
            problem: format!(
                "header has no column named {} (columns: {})",
                candidates.join(" or "),
                self.columns.join(", ")
            ),
        })
    }

    fn find(&self, candidates: &[&str]) -> Option<usize> {
        self.columns
            .iter()
            .position(|column| candidates.contains(&column.as_str()))
    }
}

fn malformed(path: &Path, line: usize, problem: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.to_owned(),
        line,
        problem: problem.into(),
    }
}

/// Reads a table: `columns` resolves what the caller needs from the header line, once, then
/// `on_row` gets each non-empty data line with its 1-based line number and exactly as many fields
/// as the header has. Fields are tab-separated and never quoted (RecBole writes titles with quotes
/// as they are); text is decoded lossily.
fn read_table<Columns>(
    path: &Path,
    columns: impl FnOnce(&Header) -> Result<Columns, DataError>,
    mut on_row: impl FnMut(&Columns, usize, &[Cow<'_, str>]) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let io_error = |source: std::io::Error| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .quoting(false)
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut record = csv::ByteRecord::new();
    let mut columns = Some(columns);
    let mut header: Option<(usize, Columns)> = None;
    loop {
        let more = reader.read_byte_record(&mut record).map_err(|error| {
            let line = error
                .position()
                .map_or(0, |position| position.line() as usize);
            match error.into_kind() {
                csv::ErrorKind::Io(source) => io_error(source),
                other => malformed(path, line, format!("{other:?}")),
            }
        })?;
        if !more {
            break;
        }
        let line = record
            .position()
            .map_or(0, |position| position.line() as usize);
        let fields: Vec<Cow<'_, str>> = record.iter().map(String::from_utf8_lossy).collect();
        if fields.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        let Some((width, resolved)) = &header else {
            let parsed = Header::parse(&fields);
            let resolve = columns.take().expect("the header is read once");
            header = Some((parsed.columns.len(), resolve(&parsed)?));
            continue;
        };
        if fields.len() != *width {
            return Err(malformed(
                path,
                line,
                format!(
                    "expected {width} tab-separated fields, found {}",
                    fields.len()
                ),
            ));
        }
        on_row(resolved, line, &fields)?;
    }
    match header {
        Some(_) => Ok(()),
        None => Err(malformed(path, 1, "file is empty, expected a header line")),
    }
}

/// Where the columns of an interaction file are.
struct InteractionColumns {
    user: usize,
    item: usize,
    timestamp: usize,
    rating: Option<usize>,
}

pub fn load_interactions(path: &Path) -> Result<Vec<Interaction>, DataError> {
    let mut interactions = Vec::new();
    let columns = |header: &Header| {
        Ok(InteractionColumns {
            user: header.position(path, &["user_id"])?,
            item: header.position(path, &["item_id"])?,
            timestamp: header.position(path, &["timestamp"])?,
            rating: header.find(&["rating"]),
        })
    };
    read_table(path, columns, |columns, line_number, fields| {
        let user_id = fields[columns.user].trim();
        let item_id = fields[columns.item].trim();
        if user_id.is_empty() || item_id.is_empty() {
            return Err(malformed(path, line_number, "empty user_id or item_id"));
        }
        let timestamp_text = fields[columns.timestamp].trim();
        let timestamp = timestamp_text
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| {
                malformed(
                    path,
                    line_number,
                    format!("timestamp '{timestamp_text}' is not a number"),
                )
            })? as i64;
        let rating = match columns.rating {
            None => None,
            Some(column) => {
                let rating_text = fields[column].trim();
                Some(rating_text.parse::<f32>().map_err(|_| {
                    malformed(
                        path,
                        line_number,
                        format!("rating '{rating_text}' is not a number"),
                    )
                })?)
            }
        };
        interactions.push(Interaction {
            user_id: user_id.to_owned(),
            item_id: item_id.to_owned(),
            rating,
            timestamp,
        });
        Ok(())
    })?;
    Ok(interactions)
}

/// Where the columns of an item file are; only the id is required.
struct ItemColumns {
    item: usize,
    title: Option<usize>,
    year: Option<usize>,
    genres: Option<usize>,
}

pub fn load_items(path: &Path) -> Result<Vec<ItemMetadata>, DataError> {
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let columns = |header: &Header| {
        Ok(ItemColumns {
            item: header.position(path, &["item_id"])?,
            title: header.find(&["movie_title", "title"]),
            year: header.find(&["release_year", "year"]),
            genres: header.find(&["class", "genre", "genres"]),
        })
    };
    read_table(path, columns, |columns, line_number, fields| {
        let item_id = fields[columns.item].trim();
        if item_id.is_empty() {
            return Err(malformed(path, line_number, "empty item_id"));
        }
        if !seen.insert(item_id.to_owned()) {
            return Err(malformed(
                path,
                line_number,
                format!("item_id '{item_id}' is listed twice"),
            ));
        }
        let title = columns
            .title
            .map(|column| fields[column].trim().to_owned())
            .filter(|title| !title.is_empty())
            .unwrap_or_else(|| item_id.to_owned());
        // A missing or unparsable year is common in MovieLens and not an error.
        let year = columns
            .year
            .and_then(|column| fields[column].trim().parse::<i32>().ok());
        let genres = columns
            .genres
            .map(|column| {
                fields[column]
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        items.push(ItemMetadata {
            item_id: item_id.to_owned(),
            title,
            year,
            genres,
        });
        Ok(())
    })?;
    Ok(items)
}

/// Writes a data set in the same format, so synthetic data goes through the same loader.
pub fn write_atomic_files(dir: &Path, dataset: &Dataset) -> Result<(), DataError> {
    let io_error = |path: &PathBuf| {
        let path = path.clone();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_error(&dir.to_path_buf()))?;

    let inter_path = dir.join(format!("{}.inter", dataset.name));
    let mut inter = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
    for interaction in &dataset.interactions {
        let rating = interaction.rating.unwrap_or(1.0);
        let _ = writeln!(
            inter,
            "{}\t{}\t{}\t{}",
            interaction.user_id, interaction.item_id, rating, interaction.timestamp
        );
    }
    std::fs::write(&inter_path, inter).map_err(io_error(&inter_path))?;

    let item_path = dir.join(format!("{}.item", dataset.name));
    let mut items = String::from("item_id:token\ttitle:token_seq\tyear:token\tgenre:token_seq\n");
    for item in &dataset.items {
        let year = item.year.map(|year| year.to_string()).unwrap_or_default();
        let _ = writeln!(
            items,
            "{}\t{}\t{}\t{}",
            item.item_id,
            item.title,
            year,
            item.genres.join(" ")
        );
    }
    std::fs::write(&item_path, items).map_err(io_error(&item_path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_movielens_style_files() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ml.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
        );
        write(
            dir.path(),
            "ml.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t\tCrime Film-Noir Mystery Thriller\n",
        );
        let dataset = load_atomic_files(dir.path(), "ml").unwrap();
        assert_eq!(dataset.interactions.len(), 2);
        assert_eq!(dataset.interactions[0].item_id, "242");
        assert_eq!(dataset.interactions[0].rating, Some(3.0));
        assert_eq!(dataset.interactions[1].timestamp, 891717742);
        assert_eq!(dataset.items[0].title, "Kolya");
        assert_eq!(dataset.items[0].year, Some(1996));
        assert_eq!(dataset.items[1].year, None);
        assert_eq!(
            dataset.items[1].genres,
            ["Crime", "Film-Noir", "Mystery", "Thriller"]
        );
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "bad.inter",
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t100\n1\t3\tyesterday\n",
        );
        let error = load_interactions(&path).unwrap_err().to_string();
        assert!(error.contains("bad.inter:3"), "{error}");
        assert!(error.contains("timestamp 'yesterday'"), "{error}");

        let path = write(
            dir.path(),
            "short.inter",
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\n",
        );
        let error = load_interactions(&path).unwrap_err().to_string();
        assert!(
            error.contains("short.inter:2: expected 3 tab-separated fields, found 2"),
            "{error}"
        );

        let path = write(dir.path(), "nohdr.inter", "user\titem\n");
        let error = load_interactions(&path).unwrap_err().to_string();
        assert!(
            error.contains("nohdr.inter:1: header has no column named user_id"),
            "{error}"
        );
    }

    #[test]
    fn catalogue_covers_items_missing_from_the_item_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "d.inter",
            "user_id:token\titem_id:token\ttimestamp:float\n1\tA\t1\n1\tB\t2\n",
        );
        write(
            dir.path(),
            "d.item",
            "item_id:token\ttitle:token_seq\nA\tAlpha\n",
        );
        let dataset = load_atomic_files(dir.path(), "d").unwrap();
        let ids: Vec<&str> = dataset
            .items
            .iter()
            .map(|item| item.item_id.as_str())
            .collect();
        assert_eq!(ids, ["A", "B"]);
    }

    #[test]
    fn write_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = Dataset {
            name: "rt".into(),
            interactions: vec![Interaction {
                user_id: "u".into(),
                item_id: "i".into(),
                rating: Some(4.0),
                timestamp: 7,
            }],
            items: vec![ItemMetadata {
                item_id: "i".into(),
                title: "Item i".into(),
                year: Some(2001),
                genres: vec!["g1".into(), "g2".into()],
            }],
        };
        write_atomic_files(dir.path(), &dataset).unwrap();
        let loaded = load_atomic_files(dir.path(), "rt").unwrap();
        assert_eq!(loaded.interactions, dataset.interactions);
        assert_eq!(loaded.items, dataset.items);
    }
}
