//! The end of a run: calibrate the threshold on the validation people (with the same
//! calibration as `facepipe evaluate`), evaluate the test people, and write the model
//! artifact, `metrics.json` and the plots.

use std::path::Path;

use facepipe_model::artifact::{self, ModelJson};
use facepipe_model::{DistanceKind, Metric};
use tch::{nn, Device};

use super::checkpoint::{write_json, TrainState};
use super::model::Model;
use super::validate::{self, PairSummary};
use super::{RunOptions, TrainConfig, TrainSummary};
use crate::data::Subset;
use crate::error::{Error, Result};
use crate::eval::metrics::calibrate;

/// Embed a set of people and summarise all their pairs; also returns the raw scores.
pub(crate) fn validate_people(
    net: &dyn nn::ModuleT,
    set: &Subset,
    input: &facepipe_model::InputSpec,
    batch: usize,
    device: Device,
) -> Result<(PairSummary, Vec<f32>, Vec<f32>)> {
    let emb = validate::embed_subset(net, set, input, batch, device)?;
    let (g, i) = validate::pair_scores(&emb, &set.labels)?;
    Ok((validate::summarise(&g, &i), g, i))
}

/// Calibrate, test and write the artifact of the run in `out` whose kept weights are in
/// `model`.
pub(crate) fn finish(
    out: &Path,
    cfg: &TrainConfig,
    state: &TrainState,
    model: &Model,
    val_set: &Subset,
    test_set: &Subset,
    opts: &RunOptions,
) -> Result<TrainSummary> {
    let input = cfg.arch.input();
    let eval_batch = cfg.batch.clamp(8, 256);
    // Threshold: cosine distance at the target FAR (or the smallest the pairs resolve) on
    // validation people; without validation people it stays at 0.5, uncalibrated.
    let (val_summary, calibration) = if val_set.is_empty() {
        tracing::warn!("no validation people: the threshold stays at 0.5 (not calibrated)");
        (PairSummary::default(), None)
    } else {
        let (summary, g, i) =
            validate_people(model.net.as_ref(), val_set, &input, eval_batch, opts.device)?;
        let photos_per_person = val_set.len() as f64 / val_set.classes.max(1) as f64;
        let c = calibrate(
            &validate::as_distances(&g, &i),
            cfg.target_far,
            photos_per_person,
        );
        (summary, c)
    };
    let threshold = calibration.as_ref().map_or(0.5, |c| c.threshold);
    if !threshold.is_finite() {
        return Err(Error::NonFiniteEmbeddings { threshold });
    }
    let validation = facepipe_model::json::to_value(&val_summary)
        .map_err(|e| Error::json("validation summary", e))?;
    let mut threshold_json = serde_json::json!({
        "distance": "cosine",
        "value": threshold,
        "target_far": cfg.target_far,
        "calibrated_on": if calibration.is_some() { "validation people" } else { "none (default 0.5)" },
    });
    if let Some(c) = &calibration {
        threshold_json["calibrated_far"] = c.calibrated_far.into();
        threshold_json["achieved_far"] = c.achieved_far.into();
        threshold_json["method"] = facepipe_model::json::to_value(&c.method)
            .map_err(|e| Error::json("calibration method", e))?;
        threshold_json["validation_tar_at_target_far"] = c.tar.into();
        threshold_json["impostor_pairs"] = c.impostor_pairs.into();
        threshold_json["genuine_pairs"] = c.genuine_pairs.into();
        threshold_json["resolvable"] = c.resolvable.into();
        threshold_json["people_needed"] = c.people_needed.into();
        // The command prints it; the artifact keeps it for whoever deploys the model.
        threshold_json["warning"] = c.warning().into();
    }
    let mut metrics = serde_json::json!({
        "threshold": threshold_json,
        "validation": validation,
        "best_epoch": state.early_stop.best_epoch,
        "epochs_run": state.completed_epochs,
        "stopped_early": state.early_stop.stopped_early,
        "people": { "train": state.split.train.len(), "validation": state.split.val.len(), "test": state.split.test.len() },
    });
    let metric = Metric {
        distance: DistanceKind::Cosine,
        threshold,
    };
    if !test_set.is_empty() {
        // The held-out people, through the same evaluation as `facepipe evaluate`.
        let emb = validate::embed_subset(
            model.net.as_ref(),
            test_set,
            &input,
            eval_batch,
            opts.device,
        )?;
        let flat = Vec::<f32>::try_from(emb.flatten(0, -1))?;
        let dim = cfg.embedding_dim as usize;
        let rows: Vec<Vec<f32>> = flat.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        let labels: Vec<usize> = test_set.labels.iter().map(|&l| l as usize).collect();
        let report = crate::eval::evaluate(
            format!("{} (trained, test people)", cfg.arch.name()),
            &rows,
            &labels,
            &metric,
            &crate::eval::EvalOptions {
                target_far: cfg.target_far,
                seed: cfg.seed,
                ..Default::default()
            },
            None,
        )?;
        crate::eval::plot_roc(&report.roc, &out.join("roc.png"))?;
        metrics["test"] =
            facepipe_model::json::to_value(&report).map_err(|e| Error::json("test report", e))?;
    }
    let mut json = ModelJson::new(cfg.arch, input, cfg.embedding_dim as usize, metric);
    json.training =
        facepipe_model::json::to_value(cfg).map_err(|e| Error::json("training config", e))?;
    json.training["history"] =
        facepipe_model::json::to_value(&state.history).map_err(|e| Error::json("history", e))?;
    json.metrics = metrics.clone();
    artifact::save(out, &model.vs, &json)?;
    write_json(&out.join("metrics.json"), &metrics)?;
    let losses: Vec<(f64, f64)> = state
        .history
        .iter()
        .map(|h| (h.epoch as f64, h.train_loss))
        .filter(|p| p.1.is_finite())
        .collect();
    crate::eval::plot_loss(&losses, &out.join("loss.png"))?;
    Ok(TrainSummary {
        out: out.to_path_buf(),
        state: state.clone(),
        metrics,
        threshold,
        best_score: state.early_stop.best_score,
    })
}
