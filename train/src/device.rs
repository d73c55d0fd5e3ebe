//! Where a run executes: the device, the process group of a data-parallel rank, the autocast
//! type, and host batches moved to the device.

use sasrec_models::amp::{self, AmpDtype};
use tch::{Device, Tensor};

use crate::config::AmpChoice;
use crate::dist::{Backend, DistEnv, ProcessGroup};
use crate::error::{failed, usage, Result};
use crate::settings::{DeviceRequest, Distributed};

/// The `--device` spelling of a device: `cpu`, `cuda:N`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The device of a single process: CUDA when asked for (or by default) and available, else
/// the CPU with a notice; `cuda:N` must exist.
pub fn resolve_device(request: DeviceRequest) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Auto | DeviceRequest::Cuda(None) if cuda => Ok(Device::Cuda(0)),
        DeviceRequest::Auto => {
            tracing::info!("CUDA is not available: training on the CPU");
            Ok(Device::Cpu)
        }
        DeviceRequest::Cuda(None) => {
            tracing::warn!("--device cuda: CUDA is not available, training on the CPU");
            Ok(Device::Cpu)
        }
        DeviceRequest::Cuda(Some(i)) if cuda && i < tch::Cuda::device_count() as usize => {
            Ok(Device::Cuda(i))
        }
        DeviceRequest::Cuda(Some(i)) => usage!(
            "--device cuda:{i}: no CUDA device {i} (found {})",
            tch::Cuda::device_count()
        ),
    }
}

/// The process group of a `--multi_gpu` rank and the device it trains on: NCCL ranks use
/// `cuda:LOCAL_RANK`; Gloo ranks the `--device` choice (with `cuda:LOCAL_RANK` for CUDA).
pub fn init_distributed(d: &Distributed, request: DeviceRequest) -> Result<(ProcessGroup, Device)> {
    let env = DistEnv::from_env(d.master_port)?
        .ok_or_else(|| failed!("--multi_gpu rank without RANK/WORLD_SIZE in the environment"))?;
    let cuda = tch::Cuda::is_available() && request != DeviceRequest::Cpu;
    let backend = d
        .backend
        .unwrap_or(if cuda { Backend::Nccl } else { Backend::Gloo });
    let device = match backend {
        Backend::Nccl => Device::Cuda(env.local_rank),
        Backend::Gloo if cuda => {
            Device::Cuda(env.local_rank % tch::Cuda::device_count().max(1) as usize)
        }
        Backend::Gloo => Device::Cpu,
    };
    let pg = ProcessGroup::new(&env, backend, d.timeout)?;
    tracing::info!(
        world_size = env.world_size,
        %backend,
        device = ?device,
        "data parallel: rank {} of {}",
        env.rank,
        env.world_size
    );
    Ok((pg, device))
}

/// The autocast type of `--use_amp --amp_dtype A` on `device`, `None` for fp32.
pub fn resolve_amp(arg: Option<AmpChoice>, device: Device) -> Result<Option<AmpDtype>> {
    let Some(arg) = arg else { return Ok(None) };
    Ok(Some(match arg {
        AmpChoice::Auto if amp::bf16_supported(device) => AmpDtype::Bf16,
        AmpChoice::Auto | AmpChoice::Fp16 => AmpDtype::Fp16,
        AmpChoice::Bf16 if amp::bf16_supported(device) => AmpDtype::Bf16,
        AmpChoice::Bf16 => {
            usage!("--amp_dtype bf16: {device:?} has no native bf16 (compute capability < 8); use --amp_dtype fp16")
        }
    }))
}

/// A host batch as a tensor for `device`: on CUDA in pinned host memory, so that its copy to
/// the device is asynchronous and overlaps with the computation already queued.
pub fn host_batch<T: tch::kind::Element>(v: &[T], shape: &[i64], device: Device) -> Tensor {
    let t = Tensor::from_slice(v).view(shape);
    if device.is_cuda() {
        t.pin_memory(device)
    } else {
        t
    }
}

/// A host batch copied to `device` (asynchronously from pinned memory on CUDA).
pub fn to_device<T: tch::kind::Element>(v: &[T], shape: &[i64], device: Device) -> Tensor {
    let t = host_batch(v, shape, device);
    t.to_device_(device, t.kind(), true, false)
}
