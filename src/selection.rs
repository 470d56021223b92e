//! Which images of a file a command processes: all of them, the first N, or listed ids.
//!
//! `fragility explain --count 8` takes the first 8 images, `--ids 3,7,12,40-47` those ids (0-based
//! positions in the file, in the order given; a range `a-b` includes both ends). The text is
//! checked when parsed (syntax, repeats) and the ids against the file's size once it is read,
//! before anything is computed or written, so a typo costs nothing. Ranges stay ranges until
//! they are checked against the file: `0-18446744073709551615` is refused for its size, never
//! expanded into memory.

use crate::error::{Error, Result};
use std::ops::RangeInclusive;

/// The images to process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every image, in file order.
    #[default]
    All,
    /// The first this many images.
    First(usize),
    /// These ids, in this order: ranges (both ends included), checked not to overlap.
    Ids(Vec<RangeInclusive<usize>>),
}

impl Selection {
    /// The selection given by `--count` and `--ids` (at most one of them).
    pub fn from_args(count: Option<usize>, ids: Option<&str>) -> Result<Self> {
        match (count, ids) {
            (Some(_), Some(_)) => Err(Error::Invalid("--count and --ids exclude each other".into())),
            (Some(0), None) => Err(Error::Invalid("--count 0: give at least 1".into())),
            (Some(n), None) => Ok(Selection::First(n)),
            (None, Some(text)) => parse_ids(text).map(Selection::Ids),
            (None, None) => Ok(Selection::All),
        }
    }

    /// The ids selected from a file of `n` images; an error names what does not fit.
    pub fn resolve(&self, n: usize) -> Result<Vec<usize>> {
        match self {
            Selection::All => Ok((0..n).collect()),
            Selection::First(k) if *k <= n => Ok((0..*k).collect()),
            Selection::First(k) => Err(Error::Invalid(format!("--count {k}: the images hold only {n}"))),
            // Checked before expanding: the ranges do not overlap, so once every end is
            // below n they hold at most n ids.
            Selection::Ids(ranges) => match ranges.iter().find(|r| *r.end() >= n) {
                Some(r) => Err(Error::Invalid(format!(
                    "--ids: image {} does not exist (the images hold {n}: ids 0 to {})",
                    (*r.start()).max(n),
                    n.saturating_sub(1)
                ))),
                None => Ok(ranges.iter().flat_map(|r| r.clone()).collect()),
            },
        }
    }
}

/// Parses "3,7,12,40-47" into the ranges [3, 7, 12, 40..=47], refusing empty items, reversed
/// ranges and an id given twice (overlapping ranges, found without expanding them).
pub fn parse_ids(text: &str) -> Result<Vec<RangeInclusive<usize>>> {
    let bad = |why: String| Error::Invalid(format!("--ids {text:?}: {why}"));
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("`{}` is not an image id (0, 1, 2, ...)", s.trim())))
    };
    let mut ids = Vec::new();
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(bad(format!("the range {a}-{b} runs backwards")));
                }
                ids.push(a..=b);
            }
            None => {
                let i = number(item)?;
                ids.push(i..=i);
            }
        }
    }
    // Sorted by start, a range overlaps an earlier one exactly when it starts at or before
    // the furthest end so far; its start is then an id selected twice.
    let mut sorted: Vec<&RangeInclusive<usize>> = ids.iter().collect();
    sorted.sort_by_key(|r| (*r.start(), *r.end()));
    let mut furthest: Option<usize> = None;
    for r in sorted {
        if furthest.is_some_and(|f| *r.start() <= f) {
            return Err(bad(format!("image {} is selected twice", r.start())));
        }
        furthest = Some(furthest.map_or(*r.end(), |f| f.max(*r.end())));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<usize> {
        parse_ids(text).unwrap().into_iter().flatten().collect()
    }

    #[test]
    fn ids_and_ranges_parse_in_the_order_given() {
        assert_eq!(ids("3,7,12"), [3, 7, 12]);
        assert_eq!(ids("10-13, 2"), [10, 11, 12, 13, 2]);
        assert_eq!(ids("5-5"), [5]);
    }

    #[test]
    fn huge_ranges_are_checked_against_the_images_before_being_expanded() {
        // Expanded at parse time, these were a capacity overflow and an 800 GB allocation.
        let all = Selection::from_args(None, Some("0-18446744073709551615")).unwrap();
        let e = all.resolve(10).unwrap_err().to_string();
        assert_eq!(e, "--ids: image 10 does not exist (the images hold 10: ids 0 to 9)");
        let big = Selection::from_args(None, Some("0-1,5-99999999999")).unwrap();
        assert!(big.resolve(5).unwrap_err().to_string().contains("image 5 does not exist"));
        let msg = parse_ids("0-99999999999,5").unwrap_err().to_string();
        assert!(msg.contains("image 5 is selected twice"), "{msg}");
    }

    #[test]
    fn malformed_ids_are_refused_with_the_reason() {
        let msg = |t: &str| parse_ids(t).unwrap_err().to_string();
        assert!(msg("3,,7").contains("`` is not an image id"), "{}", msg("3,,7"));
        assert!(msg("-1").contains("`` is not an image id"), "{}", msg("-1"));
        assert!(msg("a").contains("`a` is not an image id"));
        assert!(msg("9-3").contains("the range 9-3 runs backwards"));
        assert!(msg("1-4,3").contains("image 3 is selected twice"));
        assert_eq!(parse_ids("x").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_selection_resolves_against_the_file_size() {
        assert_eq!(Selection::All.resolve(3).unwrap(), [0, 1, 2]);
        assert_eq!(Selection::First(2).resolve(3).unwrap(), [0, 1]);
        assert_eq!(Selection::Ids(vec![2..=2, 0..=0]).resolve(3).unwrap(), [2, 0]);
        let e = Selection::Ids(vec![1..=1, 3..=3]).resolve(3).unwrap_err();
        assert_eq!(e.to_string(), "--ids: image 3 does not exist (the images hold 3: ids 0 to 2)");
        let e = Selection::First(4).resolve(3).unwrap_err();
        assert_eq!(e.to_string(), "--count 4: the images hold only 3");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn count_and_ids_come_from_at_most_one_flag() {
        assert_eq!(Selection::from_args(None, None).unwrap(), Selection::All);
        assert_eq!(Selection::from_args(Some(4), None).unwrap(), Selection::First(4));
        assert_eq!(Selection::from_args(None, Some("1-2")).unwrap(), Selection::Ids(vec![1..=2]));
        assert!(Selection::from_args(Some(0), None).is_err());
        assert!(Selection::from_args(Some(1), Some("1")).is_err());
    }
}
