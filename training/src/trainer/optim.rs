//! The trainer's optimisers — SGD (momentum, Nesterov, weight decay) and AdamW — written over
//! tch tensors so that their state (momentum buffers, Adam moments and step counts) can be
//! saved in the checkpoint and restored on `--resume`; tch's `nn::Optimizer` keeps that state
//! inside libtorch where it cannot be read. The update rules follow libtorch's `torch::optim`
//! step for step, so the two agree to rounding (see the tests).
//!
//! Parameters keep the var store's group (0: backbone, 1: head), and each group has its own
//! learning rate.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tch::{nn, Tensor};

use crate::error::{Error, Result};

/// An update rule and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Algorithm {
    Sgd {
        momentum: f64,
        dampening: f64,
        weight_decay: f64,
        nesterov: bool,
    },
    /// Adam with decoupled weight decay (the weights shrink by `lr · weight_decay` each step).
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl Algorithm {
    /// Names of the per-parameter state tensors, in the order they are kept.
    fn state_names(&self) -> &'static [&'static str] {
        match self {
            Algorithm::Sgd { momentum, .. } if *momentum != 0.0 => &["momentum_buffer"],
            Algorithm::Sgd { .. } => &[],
            Algorithm::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }
}

/// One trainable variable and the optimiser state that belongs to it (created at its first
/// update, as libtorch does, so a frozen variable never gets any).
#[derive(Debug)]
struct Param {
    name: String,
    group: usize,
    var: Tensor,
    state: Vec<Tensor>,
    /// Updates applied so far (AdamW's bias correction needs it).
    steps: i64,
}

/// An optimiser over every trainable variable of a var store.
#[derive(Debug)]
pub struct Optimizer {
    algorithm: Algorithm,
    lrs: Vec<f64>,
    params: Vec<Param>,
}

const STEP_SUFFIX: &str = "step";

impl Optimizer {
    /// An optimiser for the trainable variables of `vs`, every group starting at `lr`.
    pub fn new(algorithm: Algorithm, vs: &nn::VarStore, lr: f64) -> Result<Self> {
        let vars = vs
            .variables_
            .lock()
            .map_err(|_| Error::Internal("the var store lock is poisoned".into()))?;
        // Var-store names are only on the named map; match trainable tensors to them by storage.
        let names: HashMap<usize, &String> = vars
            .named_variables
            .iter()
            .map(|(name, t)| (t.data_ptr() as usize, name))
            .collect();
        let mut params = Vec::with_capacity(vars.trainable_variables.len());
        for v in &vars.trainable_variables {
            let name = names
                .get(&(v.tensor.data_ptr() as usize))
                .ok_or_else(|| {
                    Error::Internal("a trainable variable has no name in the var store".into())
                })?
                .to_string();
            params.push(Param {
                name,
                group: v.group,
                var: v.tensor.shallow_clone(),
                state: Vec::new(),
                steps: 0,
            });
        }
        // A stable order, so runs and checkpoints do not depend on hash-map order.
        params.sort_by(|a, b| a.name.cmp(&b.name));
        let groups = params.iter().map(|p| p.group + 1).max().unwrap_or(1);
        Ok(Self {
            algorithm,
            lrs: vec![lr; groups],
            params,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Set the learning rate of every group.
    pub fn set_lr(&mut self, lr: f64) {
        self.lrs.iter_mut().for_each(|l| *l = lr);
    }

    /// Set the learning rate of one var-store group (ignored when no variable is in it).
    pub fn set_lr_group(&mut self, group: usize, lr: f64) {
        if let Some(l) = self.lrs.get_mut(group) {
            *l = lr;
        }
    }

    pub fn lr_group(&self, group: usize) -> Option<f64> {
        self.lrs.get(group).copied()
    }

    /// Every trainable variable, frozen ones included.
    pub fn variables(&self) -> impl Iterator<Item = &Tensor> {
        self.params.iter().map(|p| &p.var)
    }

    /// Zero the gradients (kept allocated; they are overwritten by the next backward).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// Zero the gradients, back-propagate `loss` and update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        self.zero_grad();
        loss.f_backward()?;
        self.step()
    }

    /// One update from the current gradients; variables without a gradient are left alone.
    pub fn step(&mut self) -> Result<()> {
        let algorithm = self.algorithm;
        let lrs = self.lrs.clone();
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                let grad = p.var.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lrs.get(p.group).copied().unwrap_or(0.0);
                match algorithm {
                    Algorithm::Sgd {
                        momentum,
                        dampening,
                        weight_decay,
                        nesterov,
                    } => sgd_update(p, &grad, lr, momentum, dampening, weight_decay, nesterov)?,
                    Algorithm::AdamW {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    } => adamw_update(p, &grad, lr, beta1, beta2, eps, weight_decay)?,
                }
                p.steps += 1;
            }
            Ok(())
        })
    }

    /// The state as named tensors: `<variable>.<state>` and `<variable>.step` (an i64 scalar)
    /// for every variable updated at least once.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let names = self.algorithm.state_names();
        let mut out = Vec::new();
        for p in self.params.iter().filter(|p| p.steps > 0) {
            for (n, t) in names.iter().zip(&p.state) {
                out.push((
                    format!("{}.{n}", p.name),
                    t.f_to_device(tch::Device::Cpu)?.f_contiguous()?,
                ));
            }
            out.push((format!("{}.{STEP_SUFFIX}", p.name), Tensor::from(p.steps)));
        }
        Ok(out)
    }

    /// Write the state to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        Tensor::write_safetensors(&self.state_tensors()?, path)?;
        Ok(())
    }

    /// Replace the state with the one in `path` (written by [`Optimizer::save`] for the same
    /// model and algorithm).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = Tensor::read_safetensors(path)?;
        self.load_tensors(tensors, path)
    }

    fn load_tensors(&mut self, tensors: Vec<(String, Tensor)>, path: &Path) -> Result<()> {
        // State of another model or algorithm: resuming it would train the wrong thing.
        let mismatch = |what: String, saved: String, requested: String| Error::CheckpointMismatch {
            path: path.to_path_buf(),
            what: format!("optimiser state {what}"),
            saved,
            requested,
        };
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let names = self.algorithm.state_names();
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let Some(step) = by_name.remove(&format!("{}.{STEP_SUFFIX}", p.name)) else {
                restored.push((Vec::new(), 0));
                continue;
            };
            let steps = step.f_int64_value(&[])?;
            let mut state = Vec::with_capacity(names.len());
            for n in names {
                let key = format!("{}.{n}", p.name);
                let t = by_name.remove(&key).ok_or_else(|| {
                    mismatch(
                        key.clone(),
                        "absent".into(),
                        "needed by this optimiser".into(),
                    )
                })?;
                if t.size() != p.var.size() {
                    return Err(mismatch(
                        key,
                        format!("of shape {:?}", t.size()),
                        format!("of shape {:?}", p.var.size()),
                    ));
                }
                state.push(t.f_to_kind(p.var.kind())?.f_to_device(p.var.device())?);
            }
            restored.push((state, steps));
        }
        if let Some(extra) = by_name.keys().min() {
            return Err(mismatch(
                extra.clone(),
                "present".into(),
                "for no variable of this model".into(),
            ));
        }
        for (p, (state, steps)) in self.params.iter_mut().zip(restored) {
            p.state = state;
            p.steps = steps;
        }
        Ok(())
    }

    /// Names of the variables that have state (for tests and diagnostics).
    pub fn stateful_variables(&self) -> HashSet<&str> {
        self.params
            .iter()
            .filter(|p| p.steps > 0)
            .map(|p| p.name.as_str())
            .collect()
    }
}

// libtorch's SGD: d = g + wd·w; b = d at the first step, else μ·b + (1 − dampening)·d;
// Nesterov uses d + μ·b, plain momentum uses b; w −= lr·d.
fn sgd_update(
    p: &mut Param,
    grad: &Tensor,
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
) -> Result<()> {
    let mut d = if weight_decay != 0.0 {
        grad.f_add(&p.var.f_mul_scalar(weight_decay)?)?
    } else {
        grad.shallow_clone()
    };
    if momentum != 0.0 {
        if p.state.is_empty() {
            p.state.push(d.f_detach_copy()?);
        } else {
            let buf = &mut p.state[0];
            let _ = buf.f_mul_scalar_(momentum)?;
            let _ = buf.f_add_(&d.f_mul_scalar(1.0 - dampening)?)?;
        }
        let buf = &p.state[0];
        d = if nesterov {
            d.f_add(&buf.f_mul_scalar(momentum)?)?
        } else {
            buf.shallow_clone()
        };
    }
    let _ = p.var.f_add_(&d.f_mul_scalar(-lr)?)?;
    Ok(())
}

// libtorch's AdamW: w ·= 1 − lr·wd; m = β1·m + (1 − β1)·g; v = β2·v + (1 − β2)·g²;
// w −= lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
fn adamw_update(
    p: &mut Param,
    grad: &Tensor,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
) -> Result<()> {
    if weight_decay != 0.0 {
        let _ = p.var.f_mul_scalar_(1.0 - lr * weight_decay)?;
    }
    if p.state.is_empty() {
        p.state.push(p.var.f_zeros_like()?);
        p.state.push(p.var.f_zeros_like()?);
    }
    let t = (p.steps + 1) as i32;
    let bias1 = 1.0 - beta1.powi(t);
    let bias2 = 1.0 - beta2.powi(t);
    let (m, rest) = p.state.split_at_mut(1);
    let (m, v) = (&mut m[0], &mut rest[0]);
    let _ = m.f_mul_scalar_(beta1)?;
    let _ = m.f_add_(&grad.f_mul_scalar(1.0 - beta1)?)?;
    let _ = v.f_mul_scalar_(beta2)?;
    let _ = v.f_add_(&grad.f_mul(grad)?.f_mul_scalar(1.0 - beta2)?)?;
    let denom = v.f_sqrt()?.f_div_scalar(bias2.sqrt())?.f_add_scalar(eps)?;
    let _ = p.var.f_add_(&m.f_div(&denom)?.f_mul_scalar(-lr / bias1)?)?;
    Ok(())
}

/// Gradients of every variable are finite (or absent), and so is each of `also` (the loss):
/// one read from the device for all of them, not one per variable.
pub fn grads_finite(opt: &Optimizer, also: &[&Tensor]) -> bool {
    tch::no_grad(|| {
        let mut checks: Vec<Tensor> = opt
            .variables()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .map(|g| g.isfinite().all())
            .collect();
        checks.extend(also.iter().map(|t| t.isfinite().all()));
        if checks.is_empty() {
            return true;
        }
        Tensor::f_stack(&checks, 0)
            .and_then(|t| t.all().f_int64_value(&[]))
            .is_ok_and(|all| all != 0)
    })
}

/// Divide every gradient by `factor` (loss-scale removal).
pub fn unscale_grads(opt: &Optimizer, factor: f64) -> Result<()> {
    tch::no_grad(|| {
        for v in opt.variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.f_div_scalar_(factor)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{Module, OptimizerConfig};
    use tch::{Device, Kind};

    fn scalar_store(w0: f64) -> (nn::VarStore, Tensor) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[1], nn::Init::Const(w0));
        (vs, w)
    }

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[0])
    }

    /// Gradient of loss = ½·k·w² is k·w: a constant, hand-checkable gradient.
    fn step_quadratic(opt: &mut Optimizer, w: &Tensor, k: f64) {
        let loss = (w * w).sum(Kind::Float) * (0.5 * k);
        opt.backward_step(&loss).unwrap();
    }

    #[test]
    fn sgd_nesterov_matches_a_hand_computed_step() {
        // w = 1, grad = 2·w = 2, wd 0.1, μ 0.9, lr 0.1, Nesterov.
        let (vs, w) = scalar_store(1.0);
        let alg = Algorithm::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.1,
            nesterov: true,
        };
        let mut opt = Optimizer::new(alg, &vs, 0.1).unwrap();
        step_quadratic(&mut opt, &w, 2.0);
        // d = 2 + 0.1·1 = 2.1; b = 2.1; d' = 2.1 + 0.9·2.1 = 3.99; w = 1 − 0.399 = 0.601.
        assert!((value(&w) - 0.601).abs() < 1e-6, "{}", value(&w));
        step_quadratic(&mut opt, &w, 2.0);
        // d = 2·0.601 + 0.0601 = 1.2621; b = 0.9·2.1 + 1.2621 = 3.1521;
        // d' = 1.2621 + 0.9·3.1521 = 4.09899; w = 0.601 − 0.409899 = 0.191101.
        assert!((value(&w) - 0.191101).abs() < 1e-6, "{}", value(&w));
    }

    #[test]
    fn adamw_matches_a_hand_computed_step() {
        let (vs, w) = scalar_store(1.0);
        let alg = Algorithm::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut opt = Optimizer::new(alg, &vs, 0.1).unwrap();
        step_quadratic(&mut opt, &w, 2.0);
        // w ·= 1 − 0.1·0.01 → 0.999; g = 2 (taken before the decay); m̂ = 2, v̂ = 4;
        // w = 0.999 − 0.1·2/(2 + 1e-8) ≈ 0.899.
        assert!((value(&w) - 0.899).abs() < 1e-6, "{}", value(&w));
        step_quadratic(&mut opt, &w, 2.0);
        // g = 1.798; w ·= 0.999 → 0.898101; m = 0.9·0.2 + 0.1·1.798 = 0.3598, m̂ = m/0.19;
        // v = 0.999·0.004 + 0.001·1.798² = 0.007228804, v̂ = v/0.001999;
        // w = 0.898101 − 0.1·m̂/√v̂.
        let m_hat = 0.3598 / 0.19;
        let v_hat: f64 = 0.007_228_804 / (1.0 - 0.999f64.powi(2));
        let expect = 0.898_101 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!(
            (value(&w) - expect).abs() < 1e-6,
            "{} vs {expect}",
            value(&w)
        );
        assert_eq!(opt.params[0].steps, 2);
    }

    /// A two-group model: a backbone layer at the root and a head in group 1.
    fn two_group_model() -> (nn::VarStore, nn::Sequential) {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let head = root.set_group(1) / "head";
        let net = nn::seq()
            .add(nn::linear(&root / "l1", 6, 8, Default::default()))
            .add_fn(|x| x.tanh())
            .add(nn::linear(&head / "l2", 8, 3, Default::default()));
        (vs, net)
    }

    /// Train the same two-group model for five steps with ours and with tch's optimiser
    /// (per-group rates changing every step, as the schedule does) and compare the weights.
    fn compare_with_tch(ours: Algorithm, theirs: impl FnOnce(&nn::VarStore) -> nn::Optimizer) {
        let (vs, net) = two_group_model();
        let (mut tvs, tnet) = two_group_model();
        // Same starting weights (tests share libtorch's RNG, so a seed alone would not do).
        tvs.copy(&vs).unwrap();
        let initial: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        let mut opt = Optimizer::new(ours, &vs, 0.05).unwrap();
        let mut theirs = theirs(&tvs);
        let x = Tensor::randn([16, 6], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [16], (Kind::Int64, Device::Cpu));
        for step in 0..5 {
            let lr = 0.05 * (1.0 + step as f64) / 5.0;
            opt.set_lr_group(0, lr * 0.1);
            opt.set_lr_group(1, lr);
            theirs.set_lr_group(0, lr * 0.1);
            theirs.set_lr_group(1, lr);
            opt.backward_step(&net.forward(&x).cross_entropy_for_logits(&y))
                .unwrap();
            theirs.backward_step(&tnet.forward(&x).cross_entropy_for_logits(&y));
        }
        let (a, b) = (vs.variables(), tvs.variables());
        assert_eq!(initial.len(), 4);
        for (name, start) in &initial {
            let diff = (&a[name] - &b[name]).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name}: max |ours − tch| {diff}");
            let moved = (&a[name] - start).abs().max().double_value(&[]);
            assert!(moved > 1e-4, "{name} did not train ({moved})");
        }
        assert_eq!(opt.stateful_variables().len(), 4);
    }

    #[test]
    fn sgd_matches_tch_over_several_steps_with_group_rates() {
        let sgd = Algorithm::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 5e-4,
            nesterov: true,
        };
        compare_with_tch(sgd, |vs| {
            nn::Sgd {
                momentum: 0.9,
                dampening: 0.0,
                wd: 5e-4,
                nesterov: true,
            }
            .build(vs, 0.05)
            .unwrap()
        });
    }

    #[test]
    fn adamw_matches_tch_over_several_steps_with_group_rates() {
        let adamw = Algorithm::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        };
        compare_with_tch(adamw, |vs| {
            nn::adamw(0.9, 0.999, 0.05).build(vs, 0.05).unwrap()
        });
    }

    #[test]
    fn state_round_trips_and_a_wrong_state_is_refused() {
        let alg = Algorithm::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let (vs, net) = two_group_model();
        let mut opt = Optimizer::new(alg, &vs, 0.01).unwrap();
        let x = Tensor::randn([4, 6], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0]);
        opt.backward_step(&net.forward(&x).cross_entropy_for_logits(&y))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        opt.save(&path).unwrap();

        let mut back = Optimizer::new(alg, &vs, 0.01).unwrap();
        back.load(&path).unwrap();
        assert_eq!(back.stateful_variables().len(), 4);
        for (p, q) in opt.params.iter().zip(&back.params) {
            assert_eq!(p.steps, q.steps);
            for (a, b) in p.state.iter().zip(&q.state) {
                assert!(a.equal(b), "{}", p.name);
            }
        }

        // SGD state is not AdamW state.
        let sgd = Algorithm::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: true,
        };
        let mut wrong = Optimizer::new(sgd, &vs, 0.01).unwrap();
        let err = wrong.load(&path).unwrap_err();
        match &err {
            Error::CheckpointMismatch { path: p, what, .. } => {
                assert_eq!(p, &path);
                assert!(what.starts_with("optimiser state "), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }
}
