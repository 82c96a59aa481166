//! Verification scores the training loop needs on its own: embed a set of people, score every
//! pair, and summarise (ROC AUC, best accuracy); the pairs as distances for calibration.
//! Used for early stopping on validation people and for calibrating the shipped threshold.

use tch::{nn, Device, Kind, Tensor};

use crate::data::{Loader, LoaderConfig, Subset};
use crate::error::{Error, Result};
use crate::eval::Scored;
use facepipe_model::InputSpec;

/// L2-normalised embeddings of every item of `subset` (in subset order), as an N×D CPU tensor.
pub fn embed_subset(
    net: &dyn nn::ModuleT,
    subset: &Subset,
    input: &InputSpec,
    batch: usize,
    device: Device,
) -> Result<Tensor> {
    let loader = Loader::new(
        subset.clone(),
        LoaderConfig::eval(batch, input.clone(), device),
    )?;
    let mut parts = Vec::new();
    for b in loader.epoch(0) {
        let b = b?;
        let e = tch::no_grad(|| net.forward_t(&b.images, false))
            .to_kind(Kind::Float)
            .to_device(Device::Cpu);
        let norm = e
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        parts.push(e / norm);
    }
    if parts.is_empty() {
        return Err(Error::Invalid("no images to embed".into()));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// Cosine similarities of all genuine (same person) and impostor pairs `i < j`.
pub fn pair_scores(embeddings: &Tensor, labels: &[i64]) -> Result<(Vec<f32>, Vec<f32>)> {
    let sim = embeddings.matmul(&embeddings.tr()).contiguous();
    let n = labels.len();
    let flat = Vec::<f32>::try_from(sim.flatten(0, -1))?;
    if flat.len() != n * n {
        return Err(Error::Internal(format!(
            "{} similarities for {n} embeddings",
            flat.len()
        )));
    }
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            let s = flat[i * n + j];
            if labels[i] == labels[j] {
                genuine.push(s);
            } else {
                impostor.push(s);
            }
        }
    }
    Ok((genuine, impostor))
}

/// Summary of a genuine/impostor score set (higher score = more alike).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairSummary {
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    /// Area under the ROC curve.
    pub auc: f64,
    /// Accuracy at the best similarity threshold, genuine and impostor pairs weighted equally.
    pub best_balanced_accuracy: f64,
    /// Similarity at which that accuracy is reached (pairs scoring at least this are
    /// accepted); `None` when no threshold beats rejecting every pair.
    #[serde(default)]
    pub best_threshold: Option<f32>,
}

/// AUC and the best balanced accuracy.
pub fn summarise(genuine: &[f32], impostor: &[f32]) -> PairSummary {
    let mut all: Vec<(f32, bool)> = genuine
        .iter()
        .map(|&s| (s, true))
        .chain(impostor.iter().map(|&s| (s, false)))
        .collect();
    // Descending score: walking down moves the threshold from strict to lenient.
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (ng, ni) = (genuine.len() as f64, impostor.len() as f64);
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut auc = 0.0;
    // Rejecting every pair scores 0.5 and has no finite threshold.
    let mut best = (0.5, None);
    let mut i = 0;
    while i < all.len() {
        let s = all[i].0;
        let (tp0, fp0) = (tp, fp);
        while i < all.len() && all[i].0 == s {
            if all[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        if ng > 0.0 && ni > 0.0 {
            // Trapezoid between (fp0, tp0) and (fp, tp) handles ties.
            auc += (fp - fp0) / ni * (tp + tp0) / (2.0 * ng);
            let acc = 0.5 * (tp / ng + (ni - fp) / ni);
            if acc > best.0 {
                best = (acc, Some(s));
            }
        }
    }
    PairSummary {
        genuine_pairs: genuine.len(),
        impostor_pairs: impostor.len(),
        auc,
        best_balanced_accuracy: best.0,
        best_threshold: best.1,
    }
}

/// Similarity scores as the cosine-distance pairs (1 − similarity) that
/// [`crate::eval::metrics`] calibrates and measures on.
pub fn as_distances(genuine: &[f32], impostor: &[f32]) -> Vec<Scored> {
    let pair = |same: bool| {
        move |&s: &f32| Scored {
            distance: 1.0 - s,
            same,
            fold: 0,
        }
    };
    genuine
        .iter()
        .map(pair(true))
        .chain(impostor.iter().map(pair(false)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_random_separation() {
        let s = summarise(&[0.9, 0.8, 0.7], &[0.1, 0.2, 0.3, 0.4]);
        assert!((s.auc - 1.0).abs() < 1e-12);
        assert!((s.best_balanced_accuracy - 1.0).abs() < 1e-12);
        assert_eq!(s.best_threshold, Some(0.7));
        let s = summarise(&[0.5, 0.5], &[0.5, 0.5]);
        assert!((s.auc - 0.5).abs() < 1e-12);
        // Nothing beats rejecting every pair: no threshold, and the summary still writes
        // and reads back as JSON.
        assert_eq!(s.best_threshold, None);
        let text = facepipe_model::json::to_string_pretty(&s).unwrap();
        assert_eq!(serde_json::from_str::<PairSummary>(&text).unwrap(), s);
        let d = as_distances(&[0.9], &[0.25]);
        assert_eq!((d[0].distance, d[0].same), (1.0 - 0.9, true));
        assert_eq!((d[1].distance, d[1].same), (0.75, false));
    }
}
