//! Verification pairs: every same-person pair plus seeded different-person pairs drawn from
//! identity labels, or an explicit list (LFW's `pairs.txt`).

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Two samples (indices into the embedding list) and whether they show the same person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub same: bool,
    /// The protocol's fold when the pairs come with folds (LFW: 10 × 600).
    pub fold: Option<usize>,
}

/// All same-identity pairs and up to `max_different` different-identity pairs (all of them
/// when there are fewer; otherwise a seeded uniform sample without repeats).
pub fn all_pairs(labels: &[usize], max_different: usize, seed: u64) -> Vec<Pair> {
    let n = labels.len();
    let mut pairs = Vec::new();
    let mut different_total = 0usize;
    for a in 0..n {
        for b in a + 1..n {
            if labels[a] == labels[b] {
                pairs.push(Pair {
                    a,
                    b,
                    same: true,
                    fold: None,
                });
            } else {
                different_total += 1;
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    if different_total <= max_different {
        for a in 0..n {
            for b in a + 1..n {
                if labels[a] != labels[b] {
                    pairs.push(Pair {
                        a,
                        b,
                        same: false,
                        fold: None,
                    });
                }
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(max_different);
        while seen.len() < max_different {
            let a = rng.random_range(0..n);
            let b = rng.random_range(0..n);
            if labels[a] == labels[b] {
                continue;
            }
            let key = (a.min(b), a.max(b));
            if seen.insert(key) {
                pairs.push(Pair {
                    a: key.0,
                    b: key.1,
                    same: false,
                    fold: None,
                });
            }
        }
    }
    // Shuffle so that folds assigned by position mix both kinds and all identities.
    pairs.shuffle(&mut rng);
    pairs
}

/// One line of an LFW-style `pairs.txt`: two (identity, 1-based image number) references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPair {
    pub a: (String, u32),
    pub b: (String, u32),
    pub same: bool,
    pub fold: usize,
}

/// Parse LFW's `pairs.txt`: a header `FOLDS N`, then per fold N same pairs `name i j` and N
/// different pairs `name1 i name2 j`. The header is checked against the lines the file
/// really has before anything is allocated for it, so a header promising billions of pairs
/// is an error, not an allocation.
pub fn parse_lfw_pairs(text: &str) -> Result<Vec<NamedPair>> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines
        .next()
        .ok_or_else(|| Error::Invalid("pairs file is empty".into()))?;
    let nums: Vec<usize> = header
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Invalid(format!("pairs header {header:?} is not `FOLDS N`")))?;
    let (folds, per) = match nums.as_slice() {
        [f, n] => (*f, *n),
        [n] => (1, *n),
        _ => {
            return Err(Error::Invalid(format!(
                "pairs header {header:?} is not `FOLDS N`"
            )))
        }
    };
    let body: Vec<&str> = lines.collect();
    let promised = folds
        .checked_mul(per)
        .and_then(|n| n.checked_mul(2))
        .filter(|&n| n == body.len())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "pairs header {header:?} promises {folds} folds × 2×{per} pairs, but the file \
                 has {} pair lines: fix the header (LFW's is `10 300`)",
                body.len()
            ))
        })?;
    let num = |s: &str, line: &str| {
        s.parse::<u32>()
            .map_err(|_| Error::Invalid(format!("bad image number in pairs line {line:?}")))
    };
    let mut out = Vec::with_capacity(promised);
    for (i, line) in body.into_iter().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let fold = if per == 0 { 0 } else { i / (2 * per) };
        let pair = match f.as_slice() {
            [name, i, j] => NamedPair {
                a: (name.to_string(), num(i, line)?),
                b: (name.to_string(), num(j, line)?),
                same: true,
                fold,
            },
            [n1, i, n2, j] => NamedPair {
                a: (n1.to_string(), num(i, line)?),
                b: (n2.to_string(), num(j, line)?),
                same: false,
                fold,
            },
            _ => {
                return Err(Error::Invalid(format!(
                    "pairs line {line:?} has {} fields",
                    f.len()
                )))
            }
        };
        out.push(pair);
    }
    Ok(out)
}

/// Map named pairs onto sample indices. `index` maps (identity, image number) to the
/// sample; pairs naming a missing sample are dropped and counted.
pub fn resolve(pairs: &[NamedPair], index: &HashMap<(String, u32), usize>) -> (Vec<Pair>, usize) {
    let mut out = Vec::with_capacity(pairs.len());
    let mut missing = 0;
    for p in pairs {
        match (index.get(&p.a), index.get(&p.b)) {
            (Some(&a), Some(&b)) => out.push(Pair {
                a,
                b,
                same: p.same,
                fold: Some(p.fold),
            }),
            _ => missing += 1,
        }
    }
    (out, missing)
}

/// The image number of an LFW file name: `Name_Surname_0007.jpg` → 7.
pub fn lfw_image_number(file_name: &str) -> Option<u32> {
    let stem = file_name.rsplit('/').next()?.split('.').next()?;
    stem.rsplit('_').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_same_and_different_pairs() {
        // 3 + 2 + 1 samples: same pairs C(3,2)+C(2,2) = 4, different 15 − 4 = 11.
        let labels = [0, 0, 0, 1, 1, 2];
        let pairs = all_pairs(&labels, 100, 7);
        assert_eq!(pairs.iter().filter(|p| p.same).count(), 4);
        assert_eq!(pairs.iter().filter(|p| !p.same).count(), 11);
        for p in &pairs {
            assert_eq!(labels[p.a] == labels[p.b], p.same);
        }
        // Capped and seeded: same sample for the same seed, no repeats.
        let a = all_pairs(&labels, 5, 7);
        let b = all_pairs(&labels, 5, 7);
        assert_eq!(a, b);
        let diff: HashSet<_> = a.iter().filter(|p| !p.same).map(|p| (p.a, p.b)).collect();
        assert_eq!(diff.len(), 5);
    }

    #[test]
    fn parses_lfw_pairs() {
        let text = "2 1\nAbel_Pacheco 1 4\nA_B 2 C_D 3\nX 1 2\nY 1 Z 1\n";
        let p = parse_lfw_pairs(text).unwrap();
        assert_eq!(p.len(), 4);
        assert!(p[0].same && !p[1].same);
        assert_eq!(p[0].a, ("Abel_Pacheco".to_string(), 1));
        assert_eq!(p[1].b, ("C_D".to_string(), 3));
        assert_eq!([p[0].fold, p[1].fold, p[2].fold, p[3].fold], [0, 0, 1, 1]);
        assert!(parse_lfw_pairs("10 300\nA 1\n").is_err());
        // A header far beyond the file (or beyond usize) is refused before any allocation.
        for header in [
            "10 999999999999",
            "18446744073709551615 2",
            "3 6148914691236517206",
        ] {
            let e = parse_lfw_pairs(&format!("{header}\nX 1 2\nY 1 Z 1\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("but the file has 2 pair lines"), "{e}");
        }
        assert_eq!(lfw_image_number("Abel_Pacheco_0004.jpg"), Some(4));
    }
}
