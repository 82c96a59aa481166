//! Honest evaluation of an embedding model on labelled faces: verification pairs (every
//! same-person pair and seeded different-person pairs, or LFW's `pairs.txt`), 10-fold
//! accuracy with thresholds chosen on held-out folds, ROC AUC, TAR at FAR 1e-3 and 1e-2,
//! rank-1 identification with one gallery photo per person, and a threshold calibrated at a
//! target FAR. [`EvaluationReport`] is what `metrics.json` holds.

pub mod identification;
pub mod metrics;
pub mod pairs;
pub mod plot;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use facepipe_model::{DistanceKind, Metric};

pub use identification::{identification, Identification};
pub use metrics::{Calibration, CalibrationMethod, FoldAccuracy, Scored, TarAtFar};
pub use pairs::{all_pairs, parse_lfw_pairs, NamedPair, Pair};
pub use plot::{plot_curves, plot_loss, plot_roc};

/// Knobs of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// FAR at which the threshold is calibrated.
    pub target_far: f64,
    /// Folds for the accuracy protocol when the pairs carry none.
    pub folds: usize,
    /// Cap on sampled different-person pairs.
    pub max_different_pairs: usize,
    /// Seed of the pair sampling and fold assignment.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            target_far: 1e-3,
            folds: 10,
            max_different_pairs: 20_000,
            seed: 42,
        }
    }
}

/// Where the verification pairs came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairSummary {
    /// `all_same_sampled_different` or `pairs_file`.
    pub source: String,
    pub same: usize,
    pub different: usize,
    /// Pairs of the file that name photos absent from the dataset (dropped).
    pub missing: usize,
}

/// Accuracy of the model's own threshold (e.g. face-api's 0.6) on all pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtThreshold {
    pub threshold: f32,
    pub accuracy: f64,
    pub tar: f64,
    pub far: f64,
}

/// Everything `facepipe evaluate` reports; serialised as `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// What was evaluated (architecture or artifact path), filled by the caller.
    pub model: String,
    pub distance: DistanceKind,
    pub samples: usize,
    pub identities: usize,
    pub pairs: PairSummary,
    /// K-fold verification accuracy (threshold chosen on the other folds).
    pub accuracy: FoldAccuracy,
    pub roc_auc: f64,
    pub tar_at_far: Vec<TarAtFar>,
    /// The model's current threshold applied to all pairs.
    pub at_model_threshold: AtThreshold,
    pub identification: Identification,
    pub calibration: Calibration,
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
}

impl EvaluationReport {
    /// Write `metrics.json` (and `roc.png`) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("metrics.json");
        let text = facepipe_model::json::to_string_pretty(self)
            .map_err(|e| Error::json("metrics.json", e))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        plot_roc(&self.roc, &dir.join("roc.png"))
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let tars: Vec<String> = self
            .tar_at_far
            .iter()
            .map(|t| {
                format!(
                    "TAR@FAR={:.0e}: {:.4}{}",
                    t.far,
                    t.tar,
                    if t.resolvable {
                        ""
                    } else {
                        " (too few different pairs to measure)"
                    }
                )
            })
            .collect();
        format!(
            "{model}: {samples} faces of {ids} people; {same} same / {diff} different pairs ({src})\n\
             verification accuracy ({folds}-fold): {acc:.4} ± {std:.4}\n\
             ROC AUC: {auc:.4}\n\
             {tars}\n\
             at the model's threshold {mt:.3}: accuracy {macc:.4}, TAR {mtar:.4}, FAR {mfar:.4}\n\
             identification rank-1: {r1:.4} (rank-5 {r5:.4}; gallery {g}, probes {p})\n\
             calibrated threshold at FAR {cf:.2e} (target {tf:.0e}): {ct:.4} ({method:?} on \
             {cn} different pairs; TAR {ctar:.4}, FAR {cfar:.4}){warn}",
            model = self.model,
            samples = self.samples,
            ids = self.identities,
            same = self.pairs.same,
            diff = self.pairs.different,
            src = self.pairs.source,
            folds = self.accuracy.folds,
            acc = self.accuracy.mean,
            std = self.accuracy.std,
            auc = self.roc_auc,
            tars = tars.join(", "),
            mt = self.at_model_threshold.threshold,
            macc = self.at_model_threshold.accuracy,
            mtar = self.at_model_threshold.tar,
            mfar = self.at_model_threshold.far,
            r1 = self.identification.rank1,
            r5 = self.identification.rank5,
            g = self.identification.gallery,
            p = self.identification.probes,
            cf = self.calibration.calibrated_far,
            tf = self.calibration.target_far,
            ct = self.calibration.threshold,
            method = self.calibration.method,
            cn = self.calibration.impostor_pairs,
            ctar = self.calibration.tar,
            cfar = self.calibration.achieved_far,
            warn = self
                .calibration
                .warning()
                .map(|w| format!("\nwarning: {w}"))
                .unwrap_or_default(),
        )
    }
}

/// Evaluate embeddings with identity labels (any integers). `explicit` replaces the generated
/// pairs (e.g. resolved from LFW's `pairs.txt`, with `missing` of them dropped).
pub fn evaluate(
    model: impl Into<String>,
    embeddings: &[Vec<f32>],
    labels: &[usize],
    metric: &Metric,
    opts: &EvalOptions,
    explicit: Option<(Vec<Pair>, usize)>,
) -> Result<EvaluationReport> {
    if embeddings.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "{} embeddings but {} labels",
            embeddings.len(),
            labels.len()
        )));
    }
    let (pairs, source, missing) = match explicit {
        Some((p, missing)) => (p, "pairs_file", missing),
        None => (
            all_pairs(labels, opts.max_different_pairs, opts.seed),
            "all_same_sampled_different",
            0,
        ),
    };
    let same = pairs.iter().filter(|p| p.same).count();
    let different = pairs.len() - same;
    if same == 0 || different == 0 {
        return Err(Error::Invalid(format!(
            "verification needs both kinds of pairs, got {same} same-person and {different} \
             different-person pairs (a dataset needs at least two people, one with two photos)"
        )));
    }
    let folds = opts.folds.max(1);
    let scored: Vec<Scored> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| Scored {
            distance: metric.distance(&embeddings[p.a], &embeddings[p.b]),
            same: p.same,
            fold: p.fold.unwrap_or(i % folds),
        })
        .collect();
    let t = metric.threshold;
    let n_same = same as f64;
    let n_diff = different as f64;
    let at_model_threshold = AtThreshold {
        threshold: t,
        accuracy: metrics::accuracy_at(&scored, t),
        tar: scored.iter().filter(|p| p.same && p.distance < t).count() as f64 / n_same,
        far: scored.iter().filter(|p| !p.same && p.distance < t).count() as f64 / n_diff,
    };
    let identities = labels
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let photos_per_person = embeddings.len() as f64 / identities.max(1) as f64;
    let calibration = metrics::calibrate(&scored, opts.target_far, photos_per_person)
        .ok_or_else(|| Error::Internal("no different-person pair to calibrate on".into()))?;
    Ok(EvaluationReport {
        model: model.into(),
        distance: metric.distance,
        samples: embeddings.len(),
        identities,
        pairs: PairSummary {
            source: source.to_string(),
            same,
            different,
            missing,
        },
        accuracy: metrics::kfold_accuracy(&scored),
        roc_auc: metrics::roc_auc(&scored),
        tar_at_far: vec![
            metrics::tar_at_far(&scored, 1e-3),
            metrics::tar_at_far(&scored, 1e-2),
        ],
        at_model_threshold,
        identification: identification(embeddings, labels, metric),
        calibration,
        roc: metrics::roc_curve(&scored),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn metric() -> Metric {
        Metric {
            distance: DistanceKind::Euclidean,
            threshold: 0.6,
        }
    }

    #[test]
    fn separable_clusters_are_perfect() {
        // 8 people × 5 photos, each person a tight cluster far from the others.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut e = Vec::new();
        let mut labels = Vec::new();
        for person in 0..8 {
            for _ in 0..5 {
                let mut v = vec![0f32; 8];
                v[person] = 10.0;
                for x in &mut v {
                    *x += rng.random_range(-0.05..0.05);
                }
                e.push(v);
                labels.push(person);
            }
        }
        let r = evaluate(
            "clusters",
            &e,
            &labels,
            &metric(),
            &EvalOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(r.pairs.same, 8 * 10);
        assert_eq!(r.pairs.different, 40 * 39 / 2 - 80);
        assert_eq!(r.accuracy.mean, 1.0);
        assert_eq!(r.accuracy.folds, 10);
        assert_eq!(r.roc_auc, 1.0);
        assert_eq!(r.identification.rank1, 1.0);
        assert_eq!(r.identification.probes, 32);
        assert_eq!(r.tar_at_far[1].tar, 1.0);
        // 700 different pairs cannot measure FAR 1e-3: calibrated at 1/700 instead, which
        // still accepts every same pair (≤ 0.1·√8 apart) and the one closest different pair
        // (≈ 14.1); 5 photos a person need 10 people for 1,000 different pairs.
        let c = &r.calibration;
        assert_eq!(c.method, CalibrationMethod::SmallestResolvable);
        assert_eq!((c.impostor_pairs, c.genuine_pairs), (700, 80));
        assert!(c.threshold > 14.0 && c.threshold < 14.3, "{}", c.threshold);
        assert_eq!(c.tar, 1.0);
        assert!((c.achieved_far - 1.0 / 700.0).abs() < 1e-12);
        assert_eq!(c.people_needed, Some(10));
        assert!(
            r.summary().contains("warning: FAR 1e-3 is finer"),
            "{}",
            r.summary()
        );
        let dir = tempfile::tempdir().unwrap();
        r.write(dir.path()).unwrap();
        let back: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("metrics.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(back["accuracy"]["mean"], 1.0);
        assert!(dir.path().join("roc.png").is_file());
    }

    #[test]
    fn random_embeddings_are_chance() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let e: Vec<Vec<f32>> = (0..300)
            .map(|_| (0..16).map(|_| rng.random::<f32>()).collect())
            .collect();
        let labels: Vec<usize> = (0..300).map(|i| i / 10).collect();
        let r = evaluate(
            "noise",
            &e,
            &labels,
            &metric(),
            &EvalOptions::default(),
            None,
        )
        .unwrap();
        assert!((r.roc_auc - 0.5).abs() < 0.05, "{}", r.roc_auc);
        // With ~10× more different pairs, "always different" is the best rule: accuracy
        // near the share of different pairs, never much above it.
        let base = r.pairs.different as f64 / (r.pairs.same + r.pairs.different) as f64;
        assert!(
            r.accuracy.mean <= base + 0.01,
            "{} vs {base}",
            r.accuracy.mean
        );
        assert!(r.identification.rank1 < 0.2);
    }

    #[test]
    fn refuses_one_kind_of_pair() {
        let e = vec![vec![0.0f32; 4]; 3];
        assert!(evaluate(
            "x",
            &e,
            &[0, 0, 0],
            &metric(),
            &EvalOptions::default(),
            None
        )
        .is_err());
        assert!(evaluate("x", &e, &[0, 0], &metric(), &EvalOptions::default(), None).is_err());
    }
}
