//! The one place where a backend name becomes a Burn `Device`.
//!
//! Burn 0.22 compiles backends in through cargo features and picks them at run time through a
//! `Device` value. Everything else in the workspace takes a `&Device` and never asks which
//! backend it is.

use burn::tensor::Device;

use crate::ModelError;

/// The backends this workspace knows, whether or not this build compiled them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// wgpu with automatic API choice (Metal / Vulkan / DX12), WGSL shaders. Feature `wgpu`.
    Wgpu,
    /// wgpu pinned to Vulkan, SPIR-V shaders. Feature `vulkan`.
    Vulkan,
    /// wgpu pinned to Metal, MSL shaders. Feature `metal`.
    Metal,
    /// NVIDIA CUDA. Feature `cuda`.
    Cuda,
    /// Pure-Rust CPU backend. Feature `flex`.
    Flex,
}

impl Backend {
    pub const ALL: [Backend; 5] = [Self::Wgpu, Self::Vulkan, Self::Metal, Self::Cuda, Self::Flex];

    pub fn name(self) -> &'static str {
        match self {
            Self::Wgpu => "wgpu",
            Self::Vulkan => "vulkan",
            Self::Metal => "metal",
            Self::Cuda => "cuda",
            Self::Flex => "flex",
        }
    }

    pub fn parse(name: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|backend| backend.name() == name.to_ascii_lowercase())
            .ok_or_else(|| ModelError::Backend(format!(
                "unknown backend `{name}`: expected one of wgpu, vulkan, metal, cuda, flex"
            )))
    }

    /// Whether this binary was built with the cargo feature of the same name.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Vulkan => cfg!(feature = "vulkan"),
            Self::Metal => cfg!(feature = "metal"),
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Flex => cfg!(feature = "flex"),
        }
    }

    /// The backends compiled into this build, in order of preference for a default.
    pub fn compiled() -> Vec<Backend> {
        [Self::Cuda, Self::Metal, Self::Vulkan, Self::Wgpu, Self::Flex]
            .into_iter()
            .filter(|backend| backend.is_compiled())
            .collect()
    }

    /// The device for this backend, or an error naming the cargo feature to enable.
    pub fn device(self) -> Result<Device, ModelError> {
        if !self.is_compiled() {
            return Err(ModelError::Backend(format!(
                "backend `{}` is not compiled into this build: rebuild with `--features {}`",
                self.name(),
                self.name()
            )));
        }
        #[allow(unreachable_code)]
        Ok(match self {
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "vulkan")]
            Self::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "metal")]
            Self::Metal => Device::metal(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "cuda")]
            Self::Cuda => Device::cuda(0),
            #[cfg(feature = "flex")]
            Self::Flex => Device::flex(),
            #[allow(unreachable_patterns)]
            _ => unreachable!("checked by is_compiled"),
        })
    }
}

/// Whether tensors on `device` run on the CPU backend (flex), with or without autodiff: the
/// place to take CPU-specific scheduling and kernels.
/// The threads the CPU backend computes on (`--threads`, `RAYON_NUM_THREADS`, else the cores).
pub fn cpu_threads() -> usize {
    #[cfg(feature = "flex")]
    return prefix_tune_kernels::team::threads();
    #[cfg(not(feature = "flex"))]
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets the CPU backend's threads (before any CPU work).
pub fn set_cpu_threads(threads: usize) -> Result<(), crate::ModelError> {
    #[cfg(feature = "flex")]
    return prefix_tune_kernels::team::set_threads(threads).map_err(|e| crate::ModelError::Backend(format!("cannot set {threads} CPU threads: {e}")));
    #[cfg(not(feature = "flex"))]
    {
        let _ = threads;
        Err(crate::ModelError::Backend("--threads: this build has no CPU backend (flex)".into()))
    }
}

pub fn is_cpu(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    return matches!(device.clone().without_autodiff().as_dispatch(), burn::backend::DispatchDevice::Flex(_));
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// The device for `--backend NAME`, or for the first compiled-in backend when no name is given.
pub fn device(name: Option<&str>) -> Result<Device, ModelError> {
    device_for(name.map(Backend::parse).transpose()?)
}

/// The device of `backend`, or of the first compiled-in backend when none is given.
pub fn device_for(backend: Option<Backend>) -> Result<Device, ModelError> {
    let backend = match backend {
        Some(backend) => backend,
        None => *Backend::compiled().first().ok_or_else(|| {
            ModelError::Backend("no backend compiled in: build with one of the features wgpu, vulkan, metal, cuda, flex".into())
        })?,
    };
    backend.device()
}

/// Where a command runs: `--backend` and `--dtype`, the same flags for every command that
/// runs a model.
#[derive(clap::Args, Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceArgs {
    /// wgpu, vulkan, metal, cuda or flex (default: the first compiled in).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// bf16: the frozen model's matrix products in bf16 with f32 sums (CPU backend: AMX tiles,
    /// else AVX2+FMA, else portable loops); a prefix, its gradients and optimizer stay f32.
    #[arg(long, value_enum, default_value_t = crate::bf16::Dtype::F32)]
    #[serde(default)]
    pub dtype: crate::bf16::Dtype,
}

impl DeviceArgs {
    /// The device of `--backend`.
    pub fn device(&self) -> Result<Device, ModelError> {
        device_for(self.backend)
    }
}
