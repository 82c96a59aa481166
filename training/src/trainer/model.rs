//! The network being trained: the backbone and its margin head in one var store, the
//! optimiser over it, its per-group learning rates, and weight imprinting of the head.
//!
//! Var-store layout: backbone variables at the root (optimiser group 0, so a pretrained
//! backbone can learn slower), the head under `head.` (group 1; not saved in the artifact).

use tch::nn;
use tch::{Device, Kind};

use facepipe_model::resnet::FaceResNet;

use super::optim::{Algorithm, Optimizer};
use super::{validate, Arch, Init, OptimizerKind, RunOptions, TrainConfig};
use crate::data::Subset;
use crate::error::Result;
use crate::losses::{build_head, Head};

/// A backbone and its training head in one var store.
pub struct Model {
    pub vs: nn::VarStore,
    pub net: Box<dyn nn::ModuleT>,
    pub head: Box<dyn Head>,
}

/// Build the backbone (loading pretrained weights when asked) and the head for `classes`.
pub fn build_model(cfg: &TrainConfig, classes: usize, opts: &RunOptions) -> Result<Model> {
    let vs = nn::VarStore::new(opts.device);
    let net: Box<dyn nn::ModuleT> = match (cfg.arch, cfg.init) {
        (Arch::Resnet128, Init::Pretrained) => {
            let models = facepipe_pipeline::ModelDir::locate(opts.models.as_deref())?;
            let weights = models.load(facepipe_pipeline::models::FACE_RECOGNITION)?;
            Box::new(FaceResNet::pretrained(&vs, &weights)?)
        }
        // `TrainConfig::check` refuses a pretrained start for networks without weights.
        (arch, _) => arch.build(&vs.root(), cfg.embedding_dim),
    };
    let head = build_head(
        cfg.loss,
        vs.root().set_group(1) / "head",
        cfg.embedding_dim,
        classes as i64,
        cfg.scale,
        cfg.margin,
    );
    if cfg.freeze_stages > 0 {
        let groups = cfg.arch.stage_prefixes();
        let frozen: Vec<&String> = groups.iter().take(cfg.freeze_stages).flatten().collect();
        for (name, t) in vs.variables() {
            if frozen.iter().any(|p| name.starts_with(p.as_str())) {
                // Frozen variables get no gradient; the optimisers skip them.
                let _ = t.set_requires_grad(false);
            }
        }
    }
    // Weights stay f32 whatever the precision (the master copy); autocast casts per op.
    Ok(Model { vs, net, head })
}

/// The optimiser of `cfg` over every trainable variable of `vs` (SGD uses Nesterov momentum
/// whenever the momentum is non-zero).
pub fn build_optimizer(cfg: &TrainConfig, vs: &nn::VarStore) -> Result<Optimizer> {
    let algorithm = match cfg.optimizer {
        OptimizerKind::Sgd => Algorithm::Sgd {
            momentum: cfg.momentum,
            dampening: 0.0,
            weight_decay: cfg.weight_decay,
            nesterov: cfg.momentum > 0.0,
        },
        OptimizerKind::Adamw => Algorithm::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.weight_decay,
        },
    };
    Optimizer::new(algorithm, vs, cfg.lr)
}

/// Group learning rates for the current step (backbone slower when pretrained).
pub fn set_lrs(opt: &mut Optimizer, cfg: &TrainConfig, lr: f64) {
    let mult = if cfg.init == Init::Pretrained {
        cfg.backbone_lr_mult
    } else {
        1.0
    };
    opt.set_lr_group(0, lr * mult);
    opt.set_lr_group(1, lr);
}

/// Set the class centres to the normalised mean embedding of each training person.
pub(crate) fn imprint(
    model: &Model,
    set: &Subset,
    input: &facepipe_model::InputSpec,
    batch: usize,
    device: Device,
) -> Result<()> {
    let Some(centres) = model.head.centres() else {
        return Ok(());
    };
    let emb = validate::embed_subset(model.net.as_ref(), set, input, batch, device)?;
    let labels = tch::Tensor::from_slice(set.labels.as_slice());
    let dim = emb.size()[1];
    let sums = tch::Tensor::zeros([set.classes as i64, dim], (Kind::Float, Device::Cpu))
        .index_add(0, &labels, &emb);
    let norm = sums
        .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    let mut centres = centres.shallow_clone();
    tch::no_grad(|| centres.f_copy_(&(sums / norm).to_device(centres.device())))?;
    Ok(())
}
