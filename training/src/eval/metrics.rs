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
    let k = (far * n_neg as f64).floor() as usize;
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
        resolvable: n_neg as f64 * far >= 1.0,
    }
}

/// How the calibrated threshold was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// The empirical quantile of the different-pair distances (enough pairs to measure FAR).
    Empirical,
    /// Too few different pairs to measure the target FAR: a normal fit to their distances,
    /// extrapolated to the target's lower tail.
    GaussianTail,
    /// Too few pairs for either: the best-accuracy threshold.
    BestAccuracy,
}

/// A threshold calibrated at a target FAR.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub target_far: f64,
    pub threshold: f32,
    pub method: CalibrationMethod,
    /// FAR and TAR of the threshold on the pairs it was calibrated on.
    pub far: f64,
    pub tar: f64,
    pub same_pairs: usize,
    pub different_pairs: usize,
}

/// Different pairs needed before a normal fit is trusted at all.
const MIN_FOR_FIT: usize = 30;

/// Inverse of the standard normal CDF (Acklam's rational approximation, ample for a threshold).
fn norm_ppf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549671010422455,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Calibrate the threshold at `target_far`: empirical when there are at least 1/`target_far`
/// different pairs, else a normal fit of the different-pair distances (at least 30), else the
/// best-accuracy threshold.
pub fn calibrate(pairs: &[Scored], target_far: f64) -> Calibration {
    let neg: Vec<f64> = pairs
        .iter()
        .filter(|p| !p.same)
        .map(|p| f64::from(p.distance))
        .collect();
    let n_neg = neg.len();
    let n_pos = pairs.len() - n_neg;
    let (threshold, method) = if n_neg as f64 * target_far >= 1.0 {
        (
            tar_at_far(pairs, target_far).threshold,
            CalibrationMethod::Empirical,
        )
    } else if n_neg >= MIN_FOR_FIT {
        let mean = neg.iter().sum::<f64>() / n_neg as f64;
        let var = neg.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n_neg - 1) as f64;
        let t = mean + norm_ppf(target_far) * var.sqrt();
        (t as f32, CalibrationMethod::GaussianTail)
    } else {
        (best_threshold(pairs).0, CalibrationMethod::BestAccuracy)
    };
    let far = if n_neg == 0 {
        0.0
    } else {
        neg.iter().filter(|&&d| d < f64::from(threshold)).count() as f64 / n_neg as f64
    };
    let tar = if n_pos == 0 {
        0.0
    } else {
        pairs
            .iter()
            .filter(|p| p.same && p.distance < threshold)
            .count() as f64
            / n_pos as f64
    };
    Calibration {
        target_far,
        threshold,
        method,
        far,
        tar,
        same_pairs: n_pos,
        different_pairs: n_neg,
    }
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
    fn calibration_hits_the_far_and_falls_back() {
        // 2000 different pairs at 1.000, 1.001, …: FAR 1e-2 allows 20 below the threshold.
        let diff: Vec<f32> = (0..2000).map(|i| 1.0 + i as f32 * 0.001).collect();
        let same: Vec<f32> = (0..100).map(|i| 0.5 + i as f32 * 0.004).collect();
        let p = scored(&same, &diff);
        let c = calibrate(&p, 1e-2);
        assert_eq!(c.method, CalibrationMethod::Empirical);
        assert!((c.threshold - 1.02).abs() < 1e-4, "{}", c.threshold);
        assert!((c.far - 0.01).abs() < 1e-12);
        assert_eq!(c.tar, 1.0);
        // 100 different pairs cannot measure 1e-3: normal fit below their minimum.
        let p = scored(&same, &diff[..100]);
        let c = calibrate(&p, 1e-3);
        assert_eq!(c.method, CalibrationMethod::GaussianTail);
        assert!(c.threshold < 1.0 && c.threshold > 0.8, "{}", c.threshold);
        assert_eq!(c.far, 0.0);
        // Five different pairs: best accuracy.
        let p = scored(&same, &diff[..5]);
        assert_eq!(calibrate(&p, 1e-3).method, CalibrationMethod::BestAccuracy);
        assert!((norm_ppf(1e-3) + 3.090232).abs() < 1e-4);
    }
}
