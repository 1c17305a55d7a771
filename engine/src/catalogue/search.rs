//! Title search over the served catalogue: "star wars" finds "Star Wars (1977)", "empire strikes"
//! finds "Empire Strikes Back, The" (MovieLens puts articles last, so word order is free), and one
//! typo ("godfater") still finds "Godfather, The".
//!
//! Titles are split into lowercase words; every word of the query must match a word of the title,
//! exactly, as its prefix (the word being typed), or within one edit (Damerau-Levenshtein, from
//! `strsim`) for words of four letters or more. Titles rank by how well their words matched, then
//! by fewer words (the closer title), then by popularity. An inverted index from words to titles
//! keeps a query to the titles that share a word with it: the fuzzy comparison runs over the
//! vocabulary, not over every title. A full-text engine (tantivy) would bring an on-disk index and
//! its own tokenizer for what is an in-memory lookup over titles.

use std::collections::{BTreeMap, HashMap};

/// One searchable item.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchableItem {
    pub item_id: String,
    pub title: String,
    pub popularity: f64,
}

/// A search hit: the item and how well it matched (higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct TitleMatch {
    pub item_id: String,
    pub title: String,
    pub score: f64,
}

const EXACT: u32 = 3;
const PREFIX: u32 = 2;
const ONE_EDIT: u32 = 1;
/// Shorter words are not matched with a typo: "war" is one edit from far too many words.
const MIN_FUZZY_LEN: usize = 4;

pub struct TitleSearch {
    items: Vec<SearchableItem>,
    /// Word count of each item's title.
    lengths: Vec<usize>,
    /// Each word, with the items whose titles hold it (sorted, so prefixes are ranges).
    postings: BTreeMap<String, Vec<u32>>,
}

/// Lowercase alphanumeric words of `text`.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl TitleSearch {
    pub fn new(items: Vec<SearchableItem>) -> TitleSearch {
        let mut postings: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut lengths = Vec::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            let mut title_words = words(&item.title);
            lengths.push(title_words.len());
            title_words.sort_unstable();
            title_words.dedup();
            for word in title_words {
                postings.entry(word).or_default().push(position as u32);
            }
        }
        TitleSearch {
            items,
            lengths,
            postings,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The best `limit` titles for `query`; none for a query without words.
    pub fn search(&self, query: &str, limit: usize) -> Vec<TitleMatch> {
        let query_words = words(query);
        if query_words.is_empty() || limit == 0 {
            return Vec::new();
        }
        // Per item: the summed score of the query words matched so far.
        let mut scores: HashMap<u32, u32> = HashMap::new();
        for (number, query_word) in query_words.iter().enumerate() {
            let matched = self.match_word(query_word);
            if number == 0 {
                scores = matched;
            } else {
                scores.retain(|item, score| match matched.get(item) {
                    Some(word_score) => {
                        *score += word_score;
                        true
                    }
                    None => false,
                });
            }
            if scores.is_empty() {
                return Vec::new();
            }
        }
        let mut ranked: Vec<(u32, u32)> = scores.into_iter().collect();
        ranked.sort_by(|&(a, a_score), &(b, b_score)| {
            let (a_item, b_item) = (&self.items[a as usize], &self.items[b as usize]);
            b_score
                .cmp(&a_score)
                .then(self.lengths[a as usize].cmp(&self.lengths[b as usize]))
                .then(b_item.popularity.total_cmp(&a_item.popularity))
                .then(a_item.item_id.cmp(&b_item.item_id))
        });
        let best = f64::from(EXACT) * query_words.len() as f64;
        ranked
            .into_iter()
            .take(limit)
            .map(|(position, score)| {
                let item = &self.items[position as usize];
                TitleMatch {
                    item_id: item.item_id.clone(),
                    title: item.title.clone(),
                    score: f64::from(score) / best,
                }
            })
            .collect()
    }

    /// Items with a word matching `query_word`, each with its best score for it.
    fn match_word(&self, query_word: &str) -> HashMap<u32, u32> {
        let mut matched: HashMap<u32, u32> = HashMap::new();
        let mut add = |postings: &[u32], score: u32| {
            for &item in postings {
                let best = matched.entry(item).or_insert(0);
                *best = (*best).max(score);
            }
        };
        for (word, postings) in self.postings.range(query_word.to_owned()..) {
            if !word.starts_with(query_word) {
                break;
            }
            add(postings, if word == query_word { EXACT } else { PREFIX });
        }
        let length = query_word.chars().count();
        if length >= MIN_FUZZY_LEN {
            for (word, postings) in &self.postings {
                let word_length = word.chars().count();
                if word_length.abs_diff(length) <= 1
                    && !word.starts_with(query_word)
                    && strsim::damerau_levenshtein(word, query_word) == 1
                {
                    add(postings, ONE_EDIT);
                }
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_over(titles: &[(&str, &str, f64)]) -> TitleSearch {
        TitleSearch::new(
            titles
                .iter()
                .map(|&(item_id, title, popularity)| SearchableItem {
                    item_id: item_id.into(),
                    title: title.into(),
                    popularity,
                })
                .collect(),
        )
    }

    fn ids(matches: &[TitleMatch]) -> Vec<&str> {
        matches.iter().map(|hit| hit.item_id.as_str()).collect()
    }

    #[test]
    fn every_word_must_match_in_any_order() {
        let search = search_over(&[
            ("50", "Star Wars (1977)", 583.0),
            ("172", "Empire Strikes Back, The (1980)", 367.0),
            ("222", "Star Trek: First Contact (1996)", 365.0),
        ]);
        assert_eq!(ids(&search.search("star wars", 10)), ["50"]);
        assert_eq!(ids(&search.search("Empire strikes", 10)), ["172"]);
        assert_eq!(ids(&search.search("the empire", 10)), ["172"]);
        assert_eq!(ids(&search.search("star", 10)), ["50", "222"]);
        assert!(search.search("star wars trek", 10).is_empty());
        assert!(search.search("  ,. ", 10).is_empty());
    }

    #[test]
    fn a_typo_or_an_unfinished_word_still_finds_the_title() {
        let search = search_over(&[
            ("127", "Godfather, The (1972)", 413.0),
            ("187", "Godfather: Part II, The (1974)", 209.0),
            ("1", "Toy Story (1995)", 452.0),
        ]);
        assert_eq!(ids(&search.search("godfater", 10)), ["127", "187"]);
        assert_eq!(ids(&search.search("godf", 10)), ["127", "187"]);
        assert_eq!(
            ids(&search.search("toy stroy", 10)),
            ["1"],
            "a transposition"
        );
        // Below four letters only exact words and prefixes count.
        assert!(search.search("tay", 10).is_empty());
    }

    #[test]
    fn exact_words_rank_before_prefixes_and_typos_then_shorter_then_popular() {
        let search = search_over(&[
            ("a", "Heat (1995)", 10.0),
            ("b", "Heathers (1989)", 500.0),
            ("c", "Heat Wave (1990)", 900.0),
            ("d", "Meat (1990)", 999.0),
        ]);
        let hits = search.search("heat", 10);
        assert_eq!(ids(&hits), ["a", "c", "b", "d"]);
        assert!((hits[0].score - 1.0).abs() < 1e-12);
        assert!(hits[3].score < hits[2].score);
        assert_eq!(search.search("heat", 2).len(), 2);
    }
}
