//! Autocast with a chosen dtype. tch's `autocast` can only switch CUDA autocast on (with
//! libtorch's default dtype, fp16); bf16 needs `at::autocast::set_autocast_dtype`, reached
//! through the small C++ shim in `csrc/autocast.cpp` (built by `build.rs`).
//!
//! ```no_run
//! use facepipe_training::autocast::Autocast;
//! let x = tch::Tensor::randn([4, 8], (tch::Kind::Float, tch::Device::Cpu));
//! let w = tch::Tensor::randn([8, 2], (tch::Kind::Float, tch::Device::Cpu));
//! let y = {
//!     let _bf16 = Autocast::new(tch::Device::Cpu, tch::Kind::BFloat16)?;
//!     x.matmul(&w) // runs in bf16
//! };
//! assert_eq!(y.kind(), tch::Kind::BFloat16);
//! # Ok::<(), facepipe_training::Error>(())
//! ```

// Calls into the C++ shim (training/csrc): four functions taking and returning plain ints.
#![allow(unsafe_code)]

use std::marker::PhantomData;

use tch::{Device, Kind};

use crate::error::{Error, Result};

mod ffi {
    extern "C" {
        pub fn facepipe_autocast_get(device_type: i32, enabled: *mut i32, dtype: *mut i32) -> i32;
        pub fn facepipe_autocast_set(device_type: i32, enabled: i32, dtype: i32) -> i32;
        pub fn facepipe_autocast_enter() -> i32;
        pub fn facepipe_autocast_exit() -> i32;
    }
}

// c10::DeviceType and c10::ScalarType codes (stable parts of libtorch's ABI).
const DEVICE_CPU: i32 = 0;
const DEVICE_CUDA: i32 = 1;
const SCALAR_HALF: i32 = 5;
const SCALAR_BFLOAT16: i32 = 15;

fn device_code(device: Device) -> Result<i32> {
    match device {
        Device::Cpu => Ok(DEVICE_CPU),
        Device::Cuda(_) => Ok(DEVICE_CUDA),
        other => Err(Error::Invalid(format!(
            "autocast is only wired for CPU and CUDA, not {other:?}: use f32 precision"
        ))),
    }
}

fn kind_code(kind: Kind) -> Result<i32> {
    match kind {
        Kind::BFloat16 => Ok(SCALAR_BFLOAT16),
        Kind::Half => Ok(SCALAR_HALF),
        other => Err(Error::Invalid(format!(
            "autocast computes in BFloat16 or Half, not {other:?}"
        ))),
    }
}

fn code_kind(code: i32) -> Kind {
    match code {
        SCALAR_BFLOAT16 => Kind::BFloat16,
        SCALAR_HALF => Kind::Half,
        // Autocast accepts only the two above; anything else reads as plain f32.
        _ => Kind::Float,
    }
}

fn torch_failed(what: &str) -> Error {
    Error::Invalid(format!(
        "libtorch refused to {what}; train in f32 precision"
    ))
}

/// Whether autocast is on for `device`'s type on this thread, and its compute dtype.
pub fn state(device: Device) -> Result<(bool, Kind)> {
    let dev = device_code(device)?;
    let (mut enabled, mut dtype) = (0i32, 0i32);
    // SAFETY: the shim writes two ints through valid pointers and catches C++ exceptions.
    let rc = unsafe { ffi::facepipe_autocast_get(dev, &mut enabled, &mut dtype) };
    if rc != 0 {
        return Err(torch_failed("report the autocast state"));
    }
    Ok((enabled != 0, code_kind(dtype)))
}

fn set(dev: i32, enabled: bool, dtype: i32) -> Result<()> {
    // SAFETY: plain integer arguments; the shim catches C++ exceptions.
    let rc = unsafe { ffi::facepipe_autocast_set(dev, i32::from(enabled), dtype) };
    if rc != 0 {
        return Err(torch_failed("change the autocast settings"));
    }
    Ok(())
}

/// Autocast on `device`'s type in `dtype` for as long as the guard lives, on this thread
/// (libtorch keeps autocast state per thread, hence the guard is neither `Send` nor `Sync`).
/// Dropping it restores the previous enable flag and dtype, and clears libtorch's cache of
/// down-cast weights when the outermost autocast region ends.
#[derive(Debug)]
pub struct Autocast {
    dev: i32,
    prev_enabled: bool,
    prev_dtype: i32,
    _thread_bound: PhantomData<*const ()>,
}

impl Autocast {
    /// Turn autocast on in `dtype` (`Kind::BFloat16` or `Kind::Half`).
    pub fn new(device: Device, dtype: Kind) -> Result<Self> {
        Self::with(device, true, dtype)
    }

    /// Turn autocast off (e.g. for a loss that must stay in f32) until the guard drops.
    pub fn disabled(device: Device) -> Result<Self> {
        let (_, current) = state(device)?;
        let dtype = if current == Kind::Half {
            Kind::Half
        } else {
            Kind::BFloat16
        };
        Self::with(device, false, dtype)
    }

    fn with(device: Device, enabled: bool, dtype: Kind) -> Result<Self> {
        let dev = device_code(device)?;
        let code = kind_code(dtype)?;
        let (mut prev_enabled, mut prev_dtype) = (0i32, 0i32);
        // SAFETY: as in `state`.
        let rc = unsafe { ffi::facepipe_autocast_get(dev, &mut prev_enabled, &mut prev_dtype) };
        if rc != 0 {
            return Err(torch_failed("report the autocast state"));
        }
        set(dev, enabled, code)?;
        // SAFETY: no arguments; balanced by the exit in `drop`.
        unsafe { ffi::facepipe_autocast_enter() };
        Ok(Self {
            dev,
            prev_enabled: prev_enabled != 0,
            prev_dtype,
            _thread_bound: PhantomData,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: balances the enter in `with`; the shim catches C++ exceptions.
        unsafe { ffi::facepipe_autocast_exit() };
        if set(self.dev, self.prev_enabled, self.prev_dtype).is_err() {
            tracing::warn!("could not restore the previous autocast settings");
        }
    }
}

/// Run `f` under autocast in `dtype` on `device`, or plainly when `dtype` is `None`.
pub fn autocast<T>(device: Device, dtype: Option<Kind>, f: impl FnOnce() -> T) -> Result<T> {
    let _guard = dtype.map(|k| Autocast::new(device, k)).transpose()?;
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    // Autocast state is per thread and each test runs on its own thread, so these tests do
    // not disturb one another.
    #[test]
    fn cpu_bf16_autocast_casts_matmul_and_linear_and_restores_state() {
        let before = state(Device::Cpu).unwrap();
        assert!(!before.0, "CPU autocast starts off");
        let x = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
        assert_eq!(x.matmul(&w.tr()).kind(), Kind::Float);
        {
            let _g = Autocast::new(Device::Cpu, Kind::BFloat16).unwrap();
            assert_eq!(state(Device::Cpu).unwrap(), (true, Kind::BFloat16));
            assert_eq!(x.matmul(&w.tr()).kind(), Kind::BFloat16);
            assert_eq!(x.linear::<Tensor>(&w, None).kind(), Kind::BFloat16);
            {
                // A nested f32 region, then back to bf16.
                let _off = Autocast::disabled(Device::Cpu).unwrap();
                assert_eq!(x.matmul(&w.tr()).kind(), Kind::Float);
            }
            assert_eq!(x.matmul(&w.tr()).kind(), Kind::BFloat16);
            // An op autocast keeps in f32 stays f32.
            assert_eq!(x.sum(Kind::Float).kind(), Kind::Float);
        }
        assert_eq!(state(Device::Cpu).unwrap(), before);
        assert_eq!(x.matmul(&w.tr()).kind(), Kind::Float);
    }

    #[test]
    fn the_chosen_dtype_is_used_and_others_are_refused() {
        let before = state(Device::Cpu).unwrap();
        let x = Tensor::randn([2, 4], (Kind::Float, Device::Cpu));
        let y = autocast(Device::Cpu, Some(Kind::Half), || x.matmul(&x.tr())).unwrap();
        assert_eq!(y.kind(), Kind::Half);
        let y = autocast(Device::Cpu, None, || x.matmul(&x.tr())).unwrap();
        assert_eq!(y.kind(), Kind::Float);
        assert!(Autocast::new(Device::Cpu, Kind::Double).is_err());
        assert!(Autocast::new(Device::Mps, Kind::BFloat16).is_err());
        assert_eq!(state(Device::Cpu).unwrap(), before);
    }
}
