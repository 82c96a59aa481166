//! Splitting a dataset into train / validation / test *by identity*: no person appears in two
//! splits, so validation and test measure how the model does on people it never saw.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How many people go to validation and test: a value below 1 is a fraction of the
/// identities, a value of 1 or more a count of people.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub val: f64,
    pub test: f64,
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            val: 0.1,
            test: 0.1,
            seed: 0,
        }
    }
}

/// Identity names of each split, sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySplit {
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

/// Held-out people needed to evaluate on them: two, so there is an impostor pair (each
/// held-out person has at least two images, so genuine pairs exist too).
pub const MIN_HELD_OUT_PEOPLE: usize = 2;

fn people(amount: f64, total: usize) -> usize {
    if amount >= 1.0 {
        amount.round() as usize
    } else {
        (amount.max(0.0) * total as f64).round() as usize
    }
}

impl IdentitySplit {
    /// Shuffle the distinct `identities` with `cfg.seed` and cut them into the three splits.
    /// Validation and test only receive people with at least `min_images` images (a person
    /// with one photo gives no genuine pair); everyone else trains.
    pub fn new(
        counts: &BTreeMap<String, usize>,
        cfg: &SplitConfig,
        min_images: usize,
    ) -> Result<Self> {
        let total = counts.len();
        for (amount, flag) in [(cfg.val, "--val-people"), (cfg.test, "--test-people")] {
            if !amount.is_finite() || amount < 0.0 {
                return Err(Error::Invalid(format!(
                    "{flag} {amount} is not a fraction (below 1) or a count of people: use e.g. \
                     {flag} 0.1, {flag} 3 or {flag} 0"
                )));
            }
        }
        let (n_val, n_test) = (people(cfg.val, total), people(cfg.test, total));
        for (amount, n, flag, what) in [
            (cfg.val, n_val, "--val-people", "validation"),
            (cfg.test, n_test, "--test-people", "test"),
        ] {
            check_held_out(amount, n, total, flag, what)?;
        }
        let mut eligible: Vec<&String> = counts
            .iter()
            .filter(|(_, &n)| n >= min_images)
            .map(|(k, _)| k)
            .collect();
        let held_out = n_val.saturating_add(n_test);
        if held_out > eligible.len() || held_out >= total {
            return Err(Error::Invalid(format!(
                "cannot hold out {n_val} validation and {n_test} test people: the dataset has \
                 {total} people, {} of them with at least {min_images} images; lower \
                 --val-people/--test-people",
                eligible.len()
            )));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ 0x5EED_5B17);
        eligible.shuffle(&mut rng);
        let val: BTreeSet<String> = eligible[..n_val].iter().map(|s| (*s).clone()).collect();
        let test: BTreeSet<String> = eligible[n_val..n_val + n_test]
            .iter()
            .map(|s| (*s).clone())
            .collect();
        for (names, what) in [(&val, "validation"), (&test, "test")] {
            check_pairs(names, counts, what)?;
        }
        let train = counts
            .keys()
            .filter(|k| !val.contains(*k) && !test.contains(*k))
            .cloned()
            .collect();
        Ok(Self {
            train,
            val: val.into_iter().collect(),
            test: test.into_iter().collect(),
        })
    }
}

/// An asked-for held-out set (`amount` > 0) must hold enough people to evaluate on.
fn check_held_out(amount: f64, n: usize, total: usize, flag: &str, what: &str) -> Result<()> {
    if amount == 0.0 || n >= MIN_HELD_OUT_PEOPLE {
        return Ok(());
    }
    let asked = if amount < 1.0 {
        format!("{flag} {amount} of {total} identities is {n}")
    } else {
        format!("{flag} {amount} is {n}")
    };
    let person = if n == 1 { "person" } else { "people" };
    Err(Error::Invalid(format!(
        "{asked} {person}; {what} needs at least {MIN_HELD_OUT_PEOPLE} people (one genuine and \
         one impostor pair): use {flag} {MIN_HELD_OUT_PEOPLE} or more (a count), a dataset with \
         more identities, or {flag} 0 to train without {what} people"
    )))
}

/// Genuine and impostor pairs among `names` (people with `counts` images each); refuses a
/// non-empty set that lacks either kind.
fn check_pairs(
    names: &BTreeSet<String>,
    counts: &BTreeMap<String, usize>,
    what: &str,
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let sizes: Vec<u128> = names
        .iter()
        .map(|n| counts.get(n).copied().unwrap_or(0) as u128)
        .collect();
    let images: u128 = sizes.iter().sum();
    let genuine: u128 = sizes.iter().map(|&k| k * k.saturating_sub(1) / 2).sum();
    let impostor = (images * images.saturating_sub(1) / 2).saturating_sub(genuine);
    if genuine == 0 || impostor == 0 {
        return Err(Error::Invalid(format!(
            "the {} {what} people give {genuine} genuine and {impostor} impostor pairs; \
             evaluation needs at least one of each: hold out more people or people with more \
             photos",
            names.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_counts() {
        let counts: BTreeMap<String, usize> = (0..40).map(|i| (format!("s{i}"), 10)).collect();
        let s = IdentitySplit::new(
            &counts,
            &SplitConfig {
                val: 0.1,
                test: 10.0,
                seed: 3,
            },
            2,
        )
        .unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (26, 4, 10));
        let again = IdentitySplit::new(
            &counts,
            &SplitConfig {
                val: 0.1,
                test: 10.0,
                seed: 3,
            },
            2,
        )
        .unwrap();
        assert_eq!(s, again);
        let other = IdentitySplit::new(
            &counts,
            &SplitConfig {
                val: 0.1,
                test: 10.0,
                seed: 4,
            },
            2,
        )
        .unwrap();
        assert_ne!(s.test, other.test);
    }

    fn split(n_people: usize, val: f64, test: f64) -> Result<IdentitySplit> {
        let counts: BTreeMap<String, usize> = (0..n_people).map(|i| (format!("p{i}"), 3)).collect();
        IdentitySplit::new(&counts, &SplitConfig { val, test, seed: 0 }, 2)
    }

    #[test]
    fn a_held_out_set_of_one_person_is_refused_with_the_flag_to_change() {
        // 8 identities: 0.1 rounds to one person, who gives no impostor pair.
        let e = split(8, 0.0, 0.1).unwrap_err().to_string();
        assert!(
            e.contains("--test-people 0.1 of 8 identities is 1 person")
                && e.contains("--test-people 2 or more"),
            "{e}"
        );
        let e = split(8, 1.0, 0.0).unwrap_err().to_string();
        assert!(e.contains("--val-people 1 is 1 person"), "{e}");
        // 0.1 of 4 rounds to nobody: asked for, so refused too.
        let e = split(4, 0.1, 0.0).unwrap_err().to_string();
        assert!(e.contains("is 0 people"), "{e}");
        // Zero means "none", and two people are enough.
        let s = split(8, 0.0, 2.0).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (6, 0, 2));
        assert_eq!(split(20, 0.1, 0.1).unwrap().test.len(), 2);
        // A count far beyond the dataset is refused, not overflowed.
        assert!(split(8, 1e300, 1e300).is_err());
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let e = split(8, bad, 0.0).unwrap_err().to_string();
            assert!(
                e.contains("--val-people") && e.contains("not a fraction"),
                "{e}"
            );
        }
    }

    #[test]
    fn held_out_people_without_impostor_pairs_are_refused() {
        let counts: BTreeMap<String, usize> = [("a", 3), ("b", 3), ("c", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let one: BTreeSet<String> = ["a".to_string()].into_iter().collect();
        let e = check_pairs(&one, &counts, "test").unwrap_err().to_string();
        assert!(e.contains("3 genuine and 0 impostor pairs"), "{e}");
        let two: BTreeSet<String> = ["a".to_string(), "b".to_string()].into_iter().collect();
        check_pairs(&two, &counts, "test").unwrap();
    }

    #[test]
    fn too_many_held_out_is_an_error() {
        let counts: BTreeMap<String, usize> = (0..3).map(|i| (format!("p{i}"), 1)).collect();
        assert!(IdentitySplit::new(
            &counts,
            &SplitConfig {
                val: 1.0,
                test: 0.0,
                seed: 0
            },
            2
        )
        .is_err());
    }
}
