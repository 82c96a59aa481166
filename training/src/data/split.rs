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
        let (n_val, n_test) = (people(cfg.val, total), people(cfg.test, total));
        let mut eligible: Vec<&String> = counts
            .iter()
            .filter(|(_, &n)| n >= min_images)
            .map(|(k, _)| k)
            .collect();
        if n_val + n_test > eligible.len() || n_val + n_test >= total {
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
