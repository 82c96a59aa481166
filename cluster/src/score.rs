//! How close a [`Grouping`] is to the truth, for tests and calibration runs.
//!
//! Both scores look only at the faces `truth` labels (other faces are unlabelled and
//! skipped). A labelled face that is unclustered, or absent from the grouping, counts as
//! a group of its own: refusing a face costs recall, never precision, which is what it
//! costs a reviewer too (the face must be placed by hand). Note that this lets a gate
//! buy precision with recall; compare gates on F, not precision.
//!
//! - [`pairwise_precision_recall`]: over pairs of faces. Precision is the share of pairs
//!   put together that are one person, recall the share of same-person pairs put
//!   together. Large groups dominate (pairs grow with the square of the size).
//! - [`bcubed`]: per face, then averaged (Amigó et al. 2009). Precision of a face is the
//!   share of its group that is its person, recall the share of its person in its group.
//!   Every face weighs the same, so small people count.
//!
//! With nothing to judge (no pairs, no faces) a precision or recall is 1: there was
//! nothing to get wrong.

use std::collections::HashMap;
use std::hash::Hash;

use crate::grouping::Grouping;

/// Precision, recall and their harmonic mean (0 when both are 0).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Scores {
    fn new(precision: f64, recall: f64) -> Self {
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Scores {
            precision,
            recall,
            f1,
        }
    }
}

/// Counts of labelled faces per (group, label), per group and per label.
struct Contingency {
    /// (group, label, faces) of each non-empty cell.
    cells: Vec<(usize, usize, u64)>,
    group_sizes: Vec<u64>,
    label_sizes: Vec<u64>,
    faces: u64,
}

impl Contingency {
    fn new<L: Eq + Hash>(truth: &HashMap<String, L>, grouping: &Grouping) -> Self {
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for (g, group) in grouping.groups.iter().enumerate() {
            for m in &group.members {
                group_of.insert(m.as_str(), g);
            }
        }
        let mut singletons = grouping.groups.len();
        let mut labels: HashMap<&L, usize> = HashMap::new();
        let mut cells: HashMap<(usize, usize), u64> = HashMap::new();
        for (face, label) in truth {
            let g = group_of.get(face.as_str()).copied().unwrap_or_else(|| {
                singletons += 1;
                singletons - 1
            });
            let next = labels.len();
            let l = *labels.entry(label).or_insert(next);
            *cells.entry((g, l)).or_default() += 1;
        }
        let mut c = Contingency {
            cells: Vec::with_capacity(cells.len()),
            group_sizes: vec![0; singletons],
            label_sizes: vec![0; labels.len()],
            faces: truth.len() as u64,
        };
        for ((g, l), n) in cells {
            c.group_sizes[g] += n;
            c.label_sizes[l] += n;
            c.cells.push((g, l, n));
        }
        c
    }
}

fn pairs(n: u64) -> f64 {
    (n * n.saturating_sub(1) / 2) as f64
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        1.0
    }
}

/// Pair-counting precision, recall and F1 of `grouping` against `truth` (face id → label).
pub fn pairwise_precision_recall<L: Eq + Hash>(
    truth: &HashMap<String, L>,
    grouping: &Grouping,
) -> Scores {
    let c = Contingency::new(truth, grouping);
    let together_and_same: f64 = c.cells.iter().map(|&(_, _, n)| pairs(n)).sum();
    let together: f64 = c.group_sizes.iter().map(|&n| pairs(n)).sum();
    let same: f64 = c.label_sizes.iter().map(|&n| pairs(n)).sum();
    Scores::new(
        ratio(together_and_same, together),
        ratio(together_and_same, same),
    )
}

/// BCubed precision, recall and F of `grouping` against `truth` (face id → label).
pub fn bcubed<L: Eq + Hash>(truth: &HashMap<String, L>, grouping: &Grouping) -> Scores {
    let c = Contingency::new(truth, grouping);
    // A face in cell (g, l) of n faces has precision n/|g| and recall n/|l|; the n faces
    // of the cell together add n²/|g| and n²/|l|.
    let (mut p, mut r) = (0.0, 0.0);
    for &(g, l, n) in &c.cells {
        let n2 = (n * n) as f64;
        p += n2 / c.group_sizes[g] as f64;
        r += n2 / c.label_sizes[l] as f64;
    }
    let faces = c.faces as f64;
    Scores::new(ratio(p, faces), ratio(r, faces))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouping::{Group, Reason, Unclustered};

    fn grouping(groups: &[&[&str]], unclustered: &[&str]) -> Grouping {
        Grouping {
            groups: groups
                .iter()
                .map(|m| Group {
                    key: m[0].into(),
                    members: m.iter().map(|s| s.to_string()).collect(),
                    representative: m[0].into(),
                    suggested_name: None,
                })
                .collect(),
            unclustered: unclustered
                .iter()
                .map(|f| Unclustered {
                    face: f.to_string(),
                    reason: Reason::SmallGroup,
                })
                .collect(),
            conflicts: Vec::new(),
        }
    }

    fn truth(labels: &[(&str, &str)]) -> HashMap<String, String> {
        labels
            .iter()
            .map(|(f, l)| (f.to_string(), l.to_string()))
            .collect()
    }

    fn assert_scores(got: Scores, precision: f64, recall: f64, f1: f64) {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(
            close(got.precision, precision) && close(got.recall, recall) && close(got.f1, f1),
            "{got:?} != ({precision}, {recall}, {f1})"
        );
    }

    /// Truth: a b c are X, d e are Y. Grouping: {a b d z} {c}, e unclustered, z unlabelled.
    fn example() -> (HashMap<String, String>, Grouping) {
        (
            truth(&[("a", "X"), ("b", "X"), ("c", "X"), ("d", "Y"), ("e", "Y")]),
            grouping(&[&["a", "b", "d", "z"], &["c"]], &["e"]),
        )
    }

    #[test]
    fn pairwise_on_a_hand_computed_example() {
        let (truth, grouping) = example();
        // Put together: ab ad bd (z is unlabelled), one of them right (ab): P = 1/3.
        // Same person: ab ac bc de, one of them together: R = 1/4. F1 = 2/7.
        let s = pairwise_precision_recall(&truth, &grouping);
        assert_scores(s, 1.0 / 3.0, 1.0 / 4.0, 2.0 / 7.0);
    }

    #[test]
    fn bcubed_on_a_hand_computed_example() {
        let (truth, grouping) = example();
        // Per face (precision, recall): a (2/3, 2/3), b (2/3, 2/3), d (1/3, 1/2),
        // c (1, 1/3), e alone (1, 1/2). P = 11/15, R = 8/15, F = 176/285.
        let s = bcubed(&truth, &grouping);
        assert_scores(s, 11.0 / 15.0, 8.0 / 15.0, 176.0 / 285.0);
    }

    #[test]
    fn perfect_all_apart_and_all_together() {
        let t = truth(&[("a", "X"), ("b", "X"), ("c", "Y"), ("d", "Y")]);
        let perfect = grouping(&[&["a", "b"], &["c", "d"]], &[]);
        assert_scores(pairwise_precision_recall(&t, &perfect), 1.0, 1.0, 1.0);
        assert_scores(bcubed(&t, &perfect), 1.0, 1.0, 1.0);
        // Nothing grouped: no pair put together (precision vacuously 1), none found.
        let apart = grouping(&[], &["a", "b", "c", "d"]);
        assert_scores(pairwise_precision_recall(&t, &apart), 1.0, 0.0, 0.0);
        assert_scores(bcubed(&t, &apart), 1.0, 0.5, 2.0 / 3.0);
        // Faces missing from the grouping count as unclustered.
        assert_scores(bcubed(&t, &grouping(&[], &[])), 1.0, 0.5, 2.0 / 3.0);
        let together = grouping(&[&["a", "b", "c", "d"]], &[]);
        // Pairs: 6 together, 2 of them right; BCubed: every face has P 1/2, R 1.
        assert_scores(
            pairwise_precision_recall(&t, &together),
            1.0 / 3.0,
            1.0,
            0.5,
        );
        assert_scores(bcubed(&t, &together), 0.5, 1.0, 2.0 / 3.0);
        assert_scores(
            bcubed(&HashMap::<String, u8>::new(), &together),
            1.0,
            1.0,
            1.0,
        );
    }
}
