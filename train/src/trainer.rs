//! The training loop: data → sampler → model → Adam → evaluation → run directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sasrec_models::amp::{self, AmpDtype, GradScaler};
use sasrec_models::{load_weights, loss, save_weights, SeqRecModel};
use sasrec_shared::eval::{EvalConfig, EvalSet};
use sasrec_shared::io::write_atomic;
use sasrec_shared::{Error as DataError, Part, Sampler, SamplerConfig, Split};
use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

use crate::cli::{AmpDtypeArg, LossKind, Protocol, TrainArgs};
use crate::config::{RunConfig, Runtime};
use crate::ddp;
use crate::dist::{Backend, DistEnv, ProcessGroup};
use crate::evaluate::{evaluate, PartMetrics};
use crate::optim::{defined_grads, Adam};
use crate::state::{self, EvalRecord, LoopState};

/// File names inside `--train_dir`.
pub mod files {
    /// Resolved hyper-parameters.
    pub const CONFIG: &str = "config.json";
    /// Best weights by validation NDCG@10, reference tensor names.
    pub const MODEL: &str = "model.safetensors";
    /// Item index ↔ raw item id.
    pub const ITEMS: &str = "items.tsv";
    /// One JSON object per evaluation.
    pub const METRICS: &str = "metrics.jsonl";
    /// The resumable checkpoint.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// The training curves.
    pub const PLOT: &str = "training_curve.png";
    /// Final summary.
    pub const SUMMARY: &str = "summary.json";
}

/// The `--device` spelling of a device: `cpu`, `cuda:N`.
fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Picks the device: CUDA when asked for (or by default) and available, else the CPU with a
/// notice.
pub fn resolve_device(flag: Option<&str>) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    match flag {
        None | Some("cuda") => {
            if cuda {
                Ok(Device::Cuda(0))
            } else {
                if flag.is_some() {
                    tracing::warn!("--device cuda: CUDA is not available, training on the CPU");
                } else {
                    tracing::info!("CUDA is not available: training on the CPU");
                }
                Ok(Device::Cpu)
            }
        }
        Some("cpu") => Ok(Device::Cpu),
        Some(other) => match other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
        {
            Some(i) if cuda && i < tch::Cuda::device_count() as usize => Ok(Device::Cuda(i)),
            Some(i) => bail!(
                "--device {other}: no CUDA device {i} (found {})",
                tch::Cuda::device_count()
            ),
            None => bail!("--device {other}: expected cpu, cuda or cuda:N"),
        },
    }
}

/// Seed of the torch generator for `epoch` (dropout, sampled-softmax negatives).
fn epoch_seed(seed: u64, epoch: usize) -> i64 {
    (seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64) & 0x7fff_ffff_ffff) as i64
}

fn sorted_params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, |w| writeln!(w, "{text}"))?;
    Ok(())
}

/// Everything prepared for a run.
struct Setup {
    cfg: RunConfig,
    split: Split,
    device: Device,
    dir: PathBuf,
}

/// Loads the data and resolves the configuration; `lead` (rank 0, or the only process)
/// creates the run directory.
fn setup(args: &TrainArgs, device: Device, runtime: Runtime, lead: bool) -> Result<Setup> {
    let split = args.data.load()?;
    if !args.no_time && !split.data.has_timestamps() {
        return Err(DataError::no_timestamps(&split.data.path).into());
    }
    let cfg = RunConfig::resolve(
        args,
        split.num_items(),
        split.data.path.display().to_string(),
        split.data.stats(),
        runtime,
    );
    cfg.model.validate()?;
    if args.loss == LossKind::SampledSoftmax && args.num_negatives == 0 {
        bail!("--num_negatives must be at least 1 for --loss sampled_softmax");
    }
    let dir = args.train_dir();
    if lead {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(Setup {
        cfg,
        split,
        device,
        dir,
    })
}

fn eval_sets(s: &Setup) -> Result<(EvalSet, EvalSet)> {
    let ecfg = EvalConfig {
        maxlen: s.cfg.model.maxlen,
        seed: s.cfg.eval_seed,
        max_users: s.cfg.eval_max_users,
        intervals: s.cfg.intervals,
    };
    Ok((
        EvalSet::new(&s.split, Part::Valid, ecfg)?,
        EvalSet::new(&s.split, Part::Test, ecfg)?,
    ))
}

/// `sasrec-train --inference_only --state_dict_path W`: evaluates W on validation and test.
pub fn inference_only(args: &TrainArgs, weights: &Path) -> Result<serde_json::Value> {
    let device = resolve_device(args.device.as_deref())?;
    let runtime = Runtime {
        device: device_name(device),
        world_size: 1,
        ..Runtime::default()
    };
    let s = setup(args, device, runtime, true)?;
    let vs = nn::VarStore::new(s.device);
    let model = SeqRecModel::new(&vs.root(), &s.cfg.model)?;
    load_weights(&vs, weights)
        .with_context(|| format!("loading {} into a {} model", weights.display(), s.cfg.kind))?;
    let (valid, test) = eval_sets(&s)?;
    let bs = args.eval_batch_size;
    let out = json!({
        "kind": s.cfg.kind,
        "weights": weights.display().to_string(),
        "valid": evaluate(&model, &valid, bs)?,
        "test": evaluate(&model, &test, bs)?,
    });
    write_json(&s.dir.join("inference.json"), &out)?;
    Ok(out)
}

fn selection_score(m: &PartMetrics, protocol: Protocol) -> f64 {
    match protocol {
        Protocol::Sampled => m.sampled.ndcg,
        Protocol::Full => m.full.ndcg,
    }
}

/// The process group of a `--multi_gpu` rank and the device it trains on: NCCL ranks use
/// `cuda:LOCAL_RANK`; Gloo ranks the `--device` choice (with `cuda:LOCAL_RANK` for CUDA).
fn init_distributed(args: &TrainArgs) -> Result<(ProcessGroup, Device)> {
    let env = DistEnv::from_env(args.master_port)?.ok_or_else(|| {
        anyhow::anyhow!("--multi_gpu rank without RANK/WORLD_SIZE in the environment")
    })?;
    let cuda = tch::Cuda::is_available() && args.device.as_deref() != Some("cpu");
    let backend = args
        .backend
        .unwrap_or(if cuda { Backend::Nccl } else { Backend::Gloo });
    let device = match backend {
        Backend::Nccl => Device::Cuda(env.local_rank),
        Backend::Gloo if cuda => {
            Device::Cuda(env.local_rank % tch::Cuda::device_count().max(1) as usize)
        }
        Backend::Gloo => Device::Cpu,
    };
    let pg = ProcessGroup::new(&env, backend, Duration::from_secs(args.dist_timeout))?;
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

/// The autocast type under `--use_amp` on `device`.
fn resolve_amp(args: &TrainArgs, device: Device) -> Result<Option<AmpDtype>> {
    if !args.use_amp {
        return Ok(None);
    }
    Ok(Some(match args.amp_dtype {
        AmpDtypeArg::Auto if amp::bf16_supported(device) => AmpDtype::Bf16,
        AmpDtypeArg::Auto | AmpDtypeArg::Fp16 => AmpDtype::Fp16,
        AmpDtypeArg::Bf16 if amp::bf16_supported(device) => AmpDtype::Bf16,
        AmpDtypeArg::Bf16 => {
            bail!("--amp_dtype bf16: {device:?} has no native bf16 (compute capability < 8); use --amp_dtype fp16")
        }
    }))
}

/// A host batch as a tensor for `device`: on CUDA in pinned host memory, so that its copy to
/// the device is asynchronous and overlaps with the computation already queued.
fn host_batch<T: tch::kind::Element>(v: &[T], shape: &[i64], device: Device) -> Tensor {
    let t = Tensor::from_slice(v).view(shape);
    if device.is_cuda() {
        t.pin_memory(device)
    } else {
        t
    }
}

/// A host batch copied to `device` (asynchronously from pinned memory on CUDA).
fn to_device<T: tch::kind::Element>(v: &[T], shape: &[i64], device: Device) -> Tensor {
    let t = host_batch(v, shape, device);
    t.to_device_(device, t.kind(), true, false)
}

/// The loop counters every rank must agree on, as one f64 tensor for a broadcast.
fn counters(st: &LoopState, adam: &Adam) -> Vec<f64> {
    let (scale, growth) = st.grad_scale.unwrap_or((0.0, 0));
    vec![
        st.epochs_done as f64,
        st.step as f64,
        adam.t as f64,
        st.stopped_early as u8 as f64,
        scale,
        growth as f64,
    ]
}

/// Trains (or resumes) and returns the summary written to `summary.json` (on rank 0; other
/// ranks of a `--multi_gpu` run return `None`).
pub fn train(args: &TrainArgs) -> Result<Option<serde_json::Value>> {
    let (pg, device) = if args.multi_gpu {
        let (pg, device) = init_distributed(args)?;
        (Some(pg), device)
    } else {
        (None, resolve_device(args.device.as_deref())?)
    };
    let (rank, world) = pg.as_ref().map_or((0, 1), |p| (p.rank(), p.world_size()));
    let lead = rank == 0;
    let amp_dtype = resolve_amp(args, device)?;
    let runtime = Runtime {
        device: device_name(device),
        amp: amp_dtype,
        world_size: world,
        backend: pg.as_ref().map(|p| p.backend()),
    };
    let s = setup(args, device, runtime, lead)?;
    let cfg = &s.cfg;
    let ckpt_path = s.dir.join(files::CHECKPOINT);
    let config_path = s.dir.join(files::CONFIG);
    if lead && ckpt_path.exists() {
        let old: RunConfig =
            serde_json::from_str(&std::fs::read_to_string(&config_path).with_context(|| {
                format!(
                    "{} exists but {} cannot be read",
                    ckpt_path.display(),
                    config_path.display()
                )
            })?)
            .with_context(|| format!("{}: not a sasrec-rs run config", config_path.display()))?;
        let diff = cfg.differences(&old);
        if !diff.is_empty() {
            bail!(
                "{} holds a run with different settings ({}); use another --train_dir or the same flags to resume",
                s.dir.display(),
                diff.join(", ")
            );
        }
    }
    if lead {
        write_json(&config_path, cfg)?;
        s.split.data.items.save(&s.dir.join(files::ITEMS))?;
    }

    tch::manual_seed(epoch_seed(cfg.seed, usize::MAX >> 1) ^ 0x5eed);
    let vs = nn::VarStore::new(s.device);
    let model = SeqRecModel::new(&vs.root(), &cfg.model)?;
    let params = sorted_params(&vs);
    let tensors: Vec<Tensor> = params.iter().map(|(_, p)| p.shallow_clone()).collect();
    let mut adam = Adam::new(
        params
            .iter()
            .map(|(n, p)| (n.clone(), p.shallow_clone()))
            .collect(),
    );
    let mut st = if lead && ckpt_path.exists() {
        let st = state::load(&ckpt_path, &params, &mut adam)?;
        tracing::info!(
            epochs_done = st.epochs_done,
            step = st.step,
            "resuming from {}",
            ckpt_path.display()
        );
        st
    } else {
        LoopState::default()
    };
    if let Some(pg) = &pg {
        // Rank 0's weights, moments and counters everywhere (DDP's initial broadcast).
        let mut all: Vec<Tensor> = tensors.iter().map(|t| t.shallow_clone()).collect();
        all.extend(adam.m.iter().chain(&adam.v).map(|t| t.shallow_clone()));
        ddp::broadcast_from_rank0(pg, &all)?;
        let mut c = Tensor::from_slice(&counters(&st, &adam)).to_device(device);
        pg.broadcast(&mut c, 0)?;
        let c = Vec::<f64>::try_from(&c)?;
        st.epochs_done = c[0] as usize;
        st.step = c[1] as u64;
        adam.t = c[2] as u64;
        st.stopped_early = c[3] != 0.0;
        st.grad_scale = (c[4] > 0.0).then_some((c[4], c[5] as i64));
    }
    let mut scaler = (amp_dtype == Some(AmpDtype::Fp16)).then(|| {
        let mut sc = GradScaler::new(device, 65536.0);
        if let Some((scale, growth)) = st.grad_scale {
            sc.restore(scale, growth);
        }
        sc
    });
    if lead {
        write_metrics(&s.dir, &st)?;
    }

    let sampler = Sampler::new(
        s.split.clone(),
        SamplerConfig {
            batch_size: cfg.optim.batch_size,
            maxlen: cfg.model.maxlen,
            seed: cfg.seed,
            num_workers: args.num_workers,
            rank,
            world_size: world,
            intervals: cfg.intervals,
        },
    )?;
    let (valid_set, test_set) = eval_sets(&s)?;
    tracing::info!(
        kind = %cfg.kind,
        params = model.num_params(),
        device = ?s.device,
        amp = ?amp_dtype,
        ranks = world,
        batches_per_epoch = sampler.num_batches(),
        valid_users = valid_set.len(),
        "training"
    );
    let t = cfg.model.maxlen as i64;
    let num_items = cfg.model.num_items as i64;
    let style =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> ");

    if st.stopped_early && st.epochs_done < cfg.num_epochs && lead {
        tracing::warn!(
            "the run stopped early after epoch {} (no validation gain in --early_stop_patience \
             evaluations); a larger --num_epochs does not restart it: train again in a new \
             --train_dir",
            st.epochs_done
        );
    }
    while st.epochs_done < cfg.num_epochs && !st.stopped_early {
        let epoch = st.epochs_done;
        // Dropout differs per rank (its own rows), reproducibly.
        tch::manual_seed(epoch_seed(cfg.seed, epoch).wrapping_add(rank as i64 * 7919));
        let pb = if lead {
            ProgressBar::new(sampler.num_batches() as u64)
        } else {
            ProgressBar::hidden()
        }
        .with_style(style.clone())
        .with_prefix(format!("epoch {}/{}", epoch + 1, cfg.num_epochs));
        let started = Instant::now();
        let mut loss_sum = Tensor::zeros([], (Kind::Float, s.device));
        let mut batches = 0usize;
        let mut skipped = 0usize;
        for batch in sampler.epoch(epoch as u64) {
            // An empty shard's padding row gives zero but defined gradients and all-reduce
            // weight 0; its loss is not recorded.
            let real = !batch.is_padding();
            let rows = batch.rows() as i64;
            // The model checks seq and tm on the host, then copies them.
            let seq = host_batch(&batch.seq, &[rows, t], s.device);
            let pos = to_device(&batch.pos, &[rows, t], s.device);
            let neg = to_device(&batch.neg, &[rows, t], s.device);
            let tm = batch
                .intervals
                .as_ref()
                .map(|iv| host_batch(iv, &[rows, t, t], s.device));
            let forward = || -> Result<Tensor> {
                let feats = model.feats(&seq, tm.as_ref(), true)?;
                let item_emb = model.item_emb();
                Ok(match cfg.optim.loss {
                    LossKind::Bce => loss::bce_loss(&feats, item_emb, &pos, &neg, cfg.optim.l2_emb),
                    LossKind::Ce => loss::ce_loss(&feats, item_emb, &pos, cfg.optim.l2_emb),
                    LossKind::SampledSoftmax => {
                        let n = cfg.optim.num_negatives as i64;
                        let negs =
                            Tensor::randint_low(1, num_items + 1, [n], (Kind::Int64, s.device));
                        loss::sampled_softmax_loss(&feats, item_emb, &pos, &negs, cfg.optim.l2_emb)
                    }
                })
            };
            let l = match amp_dtype {
                Some(dtype) => amp::autocast(s.device, dtype, forward)?,
                None => forward()?,
            };
            adam.zero_grad()?;
            match &scaler {
                Some(sc) => sc.scale(&l).backward(),
                None => l.backward(),
            }
            if let Some(pg) = &pg {
                ddp::average_gradients(pg, &tensors, &pos.ne(0).sum(Kind::Float))?;
            }
            let overflow = match &mut scaler {
                Some(sc) => sc.unscale_and_update(&mut defined_grads(&tensors))?,
                None => false,
            };
            if overflow {
                skipped += 1;
            } else {
                adam.step(cfg.optim.lr_at(st.step as usize))?;
            }
            st.step += 1;
            pb.inc(1);
            if !real {
                continue;
            }
            loss_sum += l.detach();
            batches += 1;
            if batches.is_multiple_of(10) {
                let mean = f64::try_from(&loss_sum)? / batches as f64;
                if !mean.is_finite() {
                    bail!(
                        "non-finite training loss ({mean}) in epoch {} on rank {rank}; stopped, the last good checkpoint ({}, {} epochs) is kept",
                        epoch + 1,
                        ckpt_path.display(),
                        st.epochs_done
                    );
                }
                pb.set_message(format!("loss {mean:.4}"));
            }
        }
        pb.finish_and_clear();
        if let Some(pg) = &pg {
            // The epoch loss over all ranks, so that every rank takes the same decision below.
            let mut v = Tensor::stack(
                &[
                    loss_sum.shallow_clone(),
                    Tensor::from(batches as f32).to_device(s.device),
                ],
                0,
            );
            pg.all_reduce_sum(&mut v)?;
            loss_sum = v.get(0);
            batches = v.get(1).double_value(&[]) as usize;
        }
        let epoch_loss = f64::try_from(&loss_sum)? / batches.max(1) as f64;
        if !epoch_loss.is_finite() {
            bail!(
                "non-finite training loss ({epoch_loss}) in epoch {}; stopped, the last good checkpoint ({}, {} epochs) is kept",
                epoch + 1,
                ckpt_path.display(),
                st.epochs_done
            );
        }
        let secs = started.elapsed().as_secs_f64();
        st.train_seconds += secs;
        st.epochs_done += 1;
        st.losses.push(epoch_loss);
        st.grad_scale = scaler
            .as_ref()
            .map(|sc| (sc.scale_value(), sc.growth_tracker()));
        tracing::info!(
            epoch = epoch + 1,
            loss = format!("{epoch_loss:.4}"),
            seconds = format!("{secs:.2}"),
            batches_per_s = format!("{:.1}", batches as f64 / world as f64 / secs),
            lr = format!("{:.2e}", cfg.optim.lr_at(st.step as usize)),
            skipped_steps = skipped,
            "epoch done"
        );
        if st.epochs_done % cfg.eval_every == 0 || st.epochs_done == cfg.num_epochs {
            if lead {
                evaluate_and_record(
                    args,
                    &s,
                    &vs,
                    &model,
                    (&valid_set, &test_set),
                    epoch_loss,
                    &mut st,
                )?;
            }
            if let Some(pg) = &pg {
                // Rank 0 decides early stopping; the others wait here while it evaluates.
                let mut stop = Tensor::from(st.stopped_early as u8 as f32).to_device(s.device);
                pg.broadcast(&mut stop, 0)?;
                st.stopped_early = stop.double_value(&[]) != 0.0;
            }
        }
        if lead {
            state::save(&ckpt_path, &params, &adam, &st)?;
            if let Err(e) = crate::plot::draw(
                &s.dir.join(files::PLOT),
                &format!("{} on {}", cfg.kind, cfg.dataset),
                &st,
            ) {
                tracing::warn!("training curve not drawn: {e:#}");
            }
        }
    }
    if args.dump_rank_weights {
        save_weights(&vs, s.dir.join(format!("rank{rank}.safetensors")))?;
    }
    if let Some(pg) = pg {
        pg.barrier()?;
        pg.shutdown()?;
    }
    if !lead {
        return Ok(None);
    }
    let summary = summarize(cfg, &st);
    write_json(&s.dir.join(files::SUMMARY), &summary)?;
    Ok(Some(summary))
}

/// Evaluates on validation and test (rank 0), keeps the best weights by the selection
/// protocol's validation NDCG@10 and updates early stopping and `metrics.jsonl`.
fn evaluate_and_record(
    args: &TrainArgs,
    s: &Setup,
    vs: &nn::VarStore,
    model: &SeqRecModel,
    (valid_set, test_set): (&EvalSet, &EvalSet),
    epoch_loss: f64,
    st: &mut LoopState,
) -> Result<()> {
    let cfg = &s.cfg;
    let started = Instant::now();
    let valid = evaluate(model, valid_set, args.eval_batch_size)?;
    let test = evaluate(model, test_set, args.eval_batch_size)?;
    let rec = EvalRecord {
        epoch: st.epochs_done,
        step: st.step,
        train_loss: epoch_loss,
        valid: serde_json::to_value(valid)?,
        test: serde_json::to_value(test)?,
        train_seconds: st.train_seconds,
        eval_seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        epoch = st.epochs_done,
        "valid NDCG@10 {:.4} HR@10 {:.4} (sampled) | {:.4} {:.4} (full); test NDCG@10 {:.4} HR@10 {:.4} (sampled) | {:.4} {:.4} (full); {:.2}s",
        valid.sampled.ndcg, valid.sampled.hr, valid.full.ndcg, valid.full.hr,
        test.sampled.ndcg, test.sampled.hr, test.full.ndcg, test.full.hr, rec.eval_seconds
    );
    let score = selection_score(&valid, cfg.select_protocol);
    if st.best.as_ref().is_none_or(|(b, _)| score > *b) {
        let tmp = sasrec_shared::io::temp_path(&s.dir.join(files::MODEL));
        save_weights(vs, &tmp)?;
        std::fs::rename(&tmp, s.dir.join(files::MODEL))?;
        st.best = Some((score, rec.clone()));
        st.bad_evals = 0;
    } else {
        st.bad_evals += 1;
        if cfg.early_stop_patience > 0 && st.bad_evals >= cfg.early_stop_patience {
            tracing::info!(
                "early stop: validation NDCG@10 ({:?}) has not improved for {} evaluations",
                cfg.select_protocol,
                st.bad_evals
            );
            st.stopped_early = true;
        }
    }
    st.evals.push(rec);
    write_metrics(&s.dir, st)?;
    Ok(())
}

fn write_metrics(dir: &Path, st: &LoopState) -> Result<()> {
    let lines: Vec<String> = st
        .evals
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    write_atomic(&dir.join(files::METRICS), |w| {
        for l in &lines {
            writeln!(w, "{l}")?;
        }
        Ok(())
    })?;
    Ok(())
}

fn summarize(cfg: &RunConfig, st: &LoopState) -> serde_json::Value {
    let best = st.best.as_ref().map(|(_, r)| r);
    json!({
        "kind": cfg.kind,
        "dataset": cfg.dataset,
        "epochs": st.epochs_done,
        "stopped_early": st.stopped_early,
        "train_seconds": st.train_seconds,
        "seconds_per_epoch": st.train_seconds / st.epochs_done.max(1) as f64,
        "steps": st.step,
        "seconds_per_step": st.train_seconds / st.step.max(1) as f64,
        "selected_by": format!("validation NDCG@10 ({:?})", cfg.select_protocol).to_lowercase(),
        "best_epoch": best.map(|r| r.epoch),
        "valid_at_best": best.map(|r| r.valid.clone()),
        "test_at_best": best.map(|r| r.test.clone()),
    })
}
