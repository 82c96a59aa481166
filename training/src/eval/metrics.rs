//! Verification metrics over scored pairs (a distance per pair; smaller means more alike):
//! k-fold accuracy with the threshold chosen on the other folds, ROC and its AUC, TAR at a
//! fixed FAR, and threshold calibration at a target FAR.

use serde::{Deserialize, Serialize};

/// One scored pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub distance: f32,
    pub same: bool,
    pub fold: usize,
}

/// The threshold (predict "same" when `distance < threshold`) with the best accuracy on
/// `pairs`, and that accuracy. Candidates lie midway between consecutive distinct distances.
pub fn best_threshold(pairs: &[Scored]) -> (f32, f64) {
    if pairs.is_empty() {
        return (0.0, 0.0);
    }
    let mut v: Vec<(f32, bool)> = pairs.iter().map(|p| (p.distance, p.same)).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = v.len();
    let total_diff = v.iter().filter(|p| !p.1).count();
    // Accept nothing: every different pair right.
    let mut best_k = 0usize;
    let mut best_correct = total_diff;
    let (mut same_below, mut diff_below) = (0usize, 0usize);
    for k in 1..=n {
        if v[k - 1].1 {
            same_below += 1;
        } else {
            diff_below += 1;
        }
        // Only cut between distinct values.
        if k < n && v[k].0 == v[k - 1].0 {
            continue;
        }
        let correct = same_below + (total_diff - diff_below);
        if correct > best_correct {
            best_correct = correct;
            best_k = k;
        }
    }
    let threshold = if best_k == 0 {
        v[0].0 - 1e-6
    } else if best_k == n {
        v[n - 1].0 + 1e-6
    } else {
        0.5 * (v[best_k - 1].0 + v[best_k].0)
    };
    (threshold, best_correct as f64 / n as f64)
}

/// Accuracy of `distance < threshold` on `pairs`.
pub fn accuracy_at(pairs: &[Scored], threshold: f32) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    let correct = pairs
        .iter()
        .filter(|p| (p.distance < threshold) == p.same)
        .count();
    correct as f64 / pairs.len() as f64
}

/// K-fold accuracy (LFW protocol): for each fold, the threshold is chosen on the others and
/// tested on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldAccuracy {
    pub folds: usize,
    pub mean: f64,
    pub std: f64,
    pub per_fold: Vec<f64>,
    pub thresholds: Vec<f32>,
}

pub fn kfold_accuracy(pairs: &[Scored]) -> FoldAccuracy {
    let folds = pairs.iter().map(|p| p.fold + 1).max().unwrap_or(0);
    let mut per_fold = Vec::new();
    let mut thresholds = Vec::new();
    for f in 0..folds {
        let test: Vec<Scored> = pairs.iter().copied().filter(|p| p.fold == f).collect();
        if test.is_empty() {
            continue;
        }
        let train: Vec<Scored> = pairs.iter().copied().filter(|p| p.fold != f).collect();
        // With a single fold there is nothing else to choose on: fall back to the fold itself.
        let (t, _) = best_threshold(if train.is_empty() { &test } else { &train });
        per_fold.push(accuracy_at(&test, t));
        thresholds.push(t);
    }
    let k = per_fold.len().max(1) as f64;
    let mean = per_fold.iter().sum::<f64>() / k;
    let var = per_fold
        .iter()
        .map(|a| (a - mean) * (a - mean))
        .sum::<f64>()
        / k;
    FoldAccuracy {
        folds: per_fold.len(),
        mean,
        std: var.sqrt(),
        per_fold,
        thresholds,
    }
}

/// Area under the ROC curve: the probability that a random same pair is closer than a random
/// different pair (ties count half). 0.5 when either kind is missing.
pub fn roc_auc(pairs: &[Scored]) -> f64 {
    let mut v: Vec<(f32, bool)> = pairs.iter().map(|p| (p.distance, p.same)).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_same = v.iter().filter(|p| p.1).count() as f64;
    let n_diff = v.len() as f64 - n_same;
    if n_same == 0.0 || n_diff == 0.0 {
        return 0.5;
    }
    // For each different pair, count same pairs strictly closer plus half the ties.
    let mut wins = 0.0f64;
    let mut same_before = 0.0f64;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        let (mut s, mut d) = (0.0, 0.0);
        while j < v.len() && v[j].0 == v[i].0 {
            if v[j].1 {
                s += 1.0;
            } else {
                d += 1.0;
            }
            j += 1;
        }
        wins += d * (same_before + 0.5 * s);
        same_before += s;
        i = j;
    }
    wins / (n_same * n_diff)
}

/// ROC points `(FAR, TAR)` from accepting nothing to accepting everything, one per distinct
/// distance.
pub fn roc_curve(pairs: &[Scored]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f32, bool)> = pairs.iter().map(|p| (p.distance, p.same)).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_same = v.iter().filter(|p| p.1).count().max(1) as f64;
    let n_diff = v.iter().filter(|p| !p.1).count().max(1) as f64;
    let mut out = vec![(0.0, 0.0)];
    let (mut s, mut d) = (0.0, 0.0);
    for k in 0..v.len() {
        if v[k].1 {
            s += 1.0;
        } else {
            d += 1.0;
        }
        if k + 1 < v.len() && v[k + 1].0 == v[k].0 {
            continue;
        }
        out.push((d / n_diff, s / n_same));
    }
    out
}

/// TAR at a FAR target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TarAtFar {
    /// The target false-accept rate.
    pub far: f64,
    /// True-accept rate at the threshold.
    pub tar: f64,
    /// The largest threshold whose false-accept rate on these pairs is ≤ `far`.
    pub threshold: f32,
    /// The false-accept rate actually reached on these pairs.
    pub achieved_far: f64,
    /// False when there are fewer than 1/`far` different pairs: the rate cannot be measured,
    /// only bounded (the threshold then accepts no different pair at all).
    pub resolvable: bool,
}

/// The largest threshold whose empirical FAR is ≤ `far`, with its TAR.
pub fn tar_at_far(pairs: &[Scored], far: f64) -> TarAtFar {
    let mut neg: Vec<f32> = pairs
        .iter()
        .filter(|p| !p.same)
        .map(|p| p.distance)
        .collect();
    neg.sort_by(f32::total_cmp);
    let pos: Vec<f32> = pairs
        .iter()
        .filter(|p| p.same)
        .map(|p| p.distance)
        .collect();
    let n_neg = neg.len();
    // At most k false accepts allowed; pairs strictly below neg[k] are accepted, which is at
    // most k negatives even with ties.
    let k = (far * n_neg as f64 + 1e-9).floor() as usize;
    let threshold = match neg.get(k) {
        Some(&t) => t,
        None => neg.last().map_or(f32::INFINITY, |&t| t + 1e-6),
    };
    let accepted = |d: &f32| *d < threshold;
    let tar = if pos.is_empty() {
        0.0
    } else {
        pos.iter().filter(|d| accepted(d)).count() as f64 / pos.len() as f64
    };
    let achieved_far = if n_neg == 0 {
        0.0
    } else {
        neg.iter().filter(|d| accepted(d)).count() as f64 / n_neg as f64
    };
    TarAtFar {
        far,
        tar,
        threshold,
        achieved_far,
        resolvable: resolves(n_neg, far),
    }
}

/// How the calibrated threshold was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// Enough different pairs to measure the target FAR: the empirical quantile of their
    /// distances at the target.
    Empirical,
    /// Fewer than 1/target different pairs: the target cannot be measured, so the threshold
    /// sits at the smallest FAR the pairs do resolve, one false accept in all of them.
    SmallestResolvable,
}

/// A threshold calibrated at a target FAR, and what that calibration rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The FAR asked for.
    pub target_far: f64,
    /// The FAR the threshold was calibrated at: the target, or 1/`impostor_pairs` when the
    /// target is finer than the pairs can resolve.
    pub calibrated_far: f64,
    /// Predict "same" when `distance < threshold`.
    pub threshold: f32,
    pub method: CalibrationMethod,
    /// FAR and TAR of the threshold on the pairs it was calibrated on.
    pub achieved_far: f64,
    pub tar: f64,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    /// Whether the pairs can measure the target FAR (at least 1/target different pairs).
    pub resolvable: bool,
    /// People, with as many photos each as these had, whose different pairs would resolve
    /// the target; `None` when it is resolved already.
    pub people_needed: Option<usize>,
}

impl Calibration {
    /// What to tell the user when the target could not be resolved.
    pub fn warning(&self) -> Option<String> {
        if self.resolvable {
            return None;
        }
        let people = self
            .people_needed
            .map(|p| format!("; about {p} people with as many photos each would resolve it"))
            .unwrap_or_default();
        Some(format!(
            "FAR {target:.0e} is finer than {n} different-person pairs can resolve: the \
             threshold is calibrated at FAR {cal:.2e} (1/{n}) instead{people}",
            target = self.target_far,
            n = self.impostor_pairs,
            cal = self.calibrated_far,
        ))
    }
}

/// The fewest people, each with `photos_per_person` photos, whose different-person pairs
/// (`photos² · P(P−1)/2`) number at least 1/`target_far`.
pub fn people_needed(target_far: f64, photos_per_person: f64) -> Option<usize> {
    if !(target_far > 0.0 && photos_per_person >= 1.0) {
        return None;
    }
    let needed = 1.0 / target_far;
    let per_pair_of_people = photos_per_person * photos_per_person;
    // Solve P(P−1)/2 · m² ≥ needed, then step past rounding.
    let mut p = ((1.0 + (1.0 + 8.0 * needed / per_pair_of_people).sqrt()) / 2.0).floor() as usize;
    p = p.max(2);
    while (p * (p - 1)) as f64 / 2.0 * per_pair_of_people < needed {
        p += 1;
    }
    Some(p)
}

/// Calibrate the threshold at `target_far` on scored pairs: at the target when the
/// different pairs resolve it, else at the smallest FAR they do (max(target, 1/pairs)),
/// never at an extrapolated rate. `photos_per_person` (of the people the pairs come from)
/// sizes the advice on how many people would resolve the target. `None` without any
/// different pair: there is no false-accept rate to calibrate.
///
/// The one calibration of the project: the trainer's shipped threshold and
/// `facepipe evaluate` both come from here.
pub fn calibrate(pairs: &[Scored], target_far: f64, photos_per_person: f64) -> Option<Calibration> {
    let impostor_pairs = pairs.iter().filter(|p| !p.same).count();
    if impostor_pairs == 0 {
        return None;
    }
    let resolvable = resolves(impostor_pairs, target_far);
    let (calibrated_far, method) = if resolvable {
        (target_far, CalibrationMethod::Empirical)
    } else {
        (
            1.0 / impostor_pairs as f64,
            CalibrationMethod::SmallestResolvable,
        )
    };
    let at = tar_at_far(pairs, calibrated_far);
    Some(Calibration {
        target_far,
        calibrated_far,
        threshold: at.threshold,
        method,
        achieved_far: at.achieved_far,
        tar: at.tar,
        genuine_pairs: pairs.len() - impostor_pairs,
        impostor_pairs,
        resolvable,
        people_needed: if resolvable {
            None
        } else {
            people_needed(target_far, photos_per_person)
        },
    })
}

/// Whether `n` different pairs can measure a FAR of `far` (one false accept among them is
/// at most `far`). The slack absorbs `1/n · n` rounding below 1.
fn resolves(n: usize, far: f64) -> bool {
    n as f64 * far + 1e-9 >= 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(same: &[f32], diff: &[f32]) -> Vec<Scored> {
        let mut v: Vec<Scored> = same
            .iter()
            .map(|&d| Scored {
                distance: d,
                same: true,
                fold: 0,
            })
            .chain(diff.iter().map(|&d| Scored {
                distance: d,
                same: false,
                fold: 0,
            }))
            .collect();
        for (i, p) in v.iter_mut().enumerate() {
            p.fold = i % 10;
        }
        v
    }

    #[test]
    fn separable_pairs_score_perfectly() {
        let same: Vec<f32> = (0..50).map(|i| 0.2 + i as f32 * 0.005).collect();
        let diff: Vec<f32> = (0..50).map(|i| 0.8 + i as f32 * 0.005).collect();
        let p = scored(&same, &diff);
        let (t, acc) = best_threshold(&p);
        assert_eq!(acc, 1.0);
        assert!(t > 0.445 && t < 0.8, "{t}");
        assert_eq!(roc_auc(&p), 1.0);
        assert_eq!(kfold_accuracy(&p).mean, 1.0);
        let tf = tar_at_far(&p, 0.01);
        assert_eq!(tf.tar, 1.0);
        assert_eq!(tf.achieved_far, 0.0);
        assert!(!tf.resolvable, "50 different pairs cannot resolve 1e-2");
    }

    #[test]
    fn known_auc_and_accuracy() {
        // same {1, 3}, different {2, 4}: pairs (1<2, 1<4, 3>2, 3<4) → AUC 3/4.
        let p = scored(&[1.0, 3.0], &[2.0, 4.0]);
        assert!((roc_auc(&p) - 0.75).abs() < 1e-12);
        // Best cut at 1.5: 1 same right + 2 different right = 3/4.
        let (t, acc) = best_threshold(&p);
        assert_eq!(acc, 0.75);
        assert_eq!(t, 1.5);
        // Ties count half.
        let p = scored(&[1.0], &[1.0]);
        assert_eq!(roc_auc(&p), 0.5);
        let roc = roc_curve(&scored(&[1.0, 3.0], &[2.0, 4.0]));
        assert_eq!(
            roc,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn random_scores_are_chance() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let same: Vec<f32> = (0..2000).map(|_| rng.random::<f32>()).collect();
        let diff: Vec<f32> = (0..2000).map(|_| rng.random::<f32>()).collect();
        let p = scored(&same, &diff);
        let auc = roc_auc(&p);
        assert!((auc - 0.5).abs() < 0.03, "{auc}");
        let acc = kfold_accuracy(&p);
        assert_eq!(acc.folds, 10);
        assert!((acc.mean - 0.5).abs() < 0.05, "{}", acc.mean);
    }

    #[test]
    fn calibration_hits_the_far_or_the_smallest_it_resolves() {
        // 2000 different pairs at 1.000, 1.001, …: FAR 1e-2 allows 20 below the threshold.
        let diff: Vec<f32> = (0..2000).map(|i| 1.0 + i as f32 * 0.001).collect();
        let same: Vec<f32> = (0..100).map(|i| 0.5 + i as f32 * 0.004).collect();
        let p = scored(&same, &diff);
        let c = calibrate(&p, 1e-2, 10.0).unwrap();
        assert_eq!(c.method, CalibrationMethod::Empirical);
        assert!(c.resolvable);
        assert_eq!(c.calibrated_far, 1e-2);
        assert!((c.threshold - 1.02).abs() < 1e-4, "{}", c.threshold);
        assert!((c.achieved_far - 0.01).abs() < 1e-12);
        assert_eq!(c.tar, 1.0);
        assert_eq!((c.genuine_pairs, c.impostor_pairs), (100, 2000));
        assert_eq!(c.people_needed, None);
        assert_eq!(c.warning(), None);

        // 600 different pairs (4 people of 5 photos … any set) cannot measure 1e-3: the
        // threshold sits at FAR 1/600, one false accept, not an extrapolated rate.
        let p = scored(&same, &diff[..600]);
        let c = calibrate(&p, 1e-3, 5.0).unwrap();
        assert_eq!(c.method, CalibrationMethod::SmallestResolvable);
        assert!(!c.resolvable);
        assert!((c.calibrated_far - 1.0 / 600.0).abs() < 1e-15);
        assert!((c.achieved_far - 1.0 / 600.0).abs() < 1e-15);
        // Exactly the closest different pair (1.000) is accepted: the threshold is the next.
        assert_eq!(c.threshold, diff[1]);
        // 5 photos a person: P(P−1)/2 · 25 ≥ 1000 → P = 10 (9 people give 900 pairs).
        assert_eq!(c.people_needed, Some(10));
        let w = c.warning().unwrap();
        assert!(
            w.contains("600 different-person pairs") && w.contains("about 10 people"),
            "{w}"
        );

        // 1/n · n rounding below one must not drop the one allowed false accept.
        for n in [3usize, 7, 49, 98, 600] {
            let p = scored(&same, &diff[..n]);
            let c = calibrate(&p, 1e-6, 2.0).unwrap();
            let false_accepts = c.achieved_far * n as f64;
            assert!(
                (false_accepts - 1.0).abs() < 1e-9,
                "{n} pairs: {false_accepts}"
            );
        }
        // No different pair at all: nothing to calibrate.
        assert_eq!(calibrate(&scored(&same, &[]), 1e-3, 5.0), None);
    }

    #[test]
    fn people_needed_counts_pairs_of_people() {
        // One photo each: P(P−1)/2 ≥ 100 → P = 15 (14 give 91).
        assert_eq!(people_needed(1e-2, 1.0), Some(15));
        // Two pairs needed: two people give one, three give three.
        assert_eq!(people_needed(0.5, 1.0), Some(3));
        assert_eq!(people_needed(0.0, 3.0), None);
        assert_eq!(people_needed(1e-3, 0.0), None);
    }
}
