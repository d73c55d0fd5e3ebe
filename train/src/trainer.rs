//! The training loop: data → sampler → model → optimisers → evaluation → run directory.
//!
//! [`train`] reads top to bottom as its phases: [`Run::start`] (devices, process group, data,
//! run directory, model, resume, rank synchronisation), then per epoch [`Run::epoch`] (the
//! optimiser steps, [`Run::step`] each: a replay of the captured CUDA graph or the eager step,
//! [`crate::graph`]), [`Run::evaluate_and_select`] when due, and [`Run::checkpoint`]; finally
//! [`Run::finish`].

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use sasrec_models::amp::{self, AmpDtype, GradScaler};
use sasrec_models::{load_weights, loss, save_weights, SeqRecModel};
use sasrec_shared::cold::category_popularity_order;
use sasrec_shared::eval::{EvalConfig, EvalSet};
use sasrec_shared::features::EncodedFeatures;
use sasrec_shared::io::{write_atomic, write_atomic_path};
use sasrec_shared::metrics::AtK;
use sasrec_shared::run::RunDir;
use sasrec_shared::{Batch, Error as DataError, Part, Sampler, SamplerConfig, Split};
use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

use crate::config::{LossKind, Measure, Protocol, SelectMetric};
use crate::config::{RunConfig, Runtime};
use crate::ddp;
use crate::device::{
    device_name, host_batch, init_distributed, resolve_amp, resolve_device, to_device,
};
use crate::dist::ProcessGroup;
use crate::error::{bail, Context, Result};
use crate::evaluate::{
    evaluate, evaluate_sharded, BlockSizes, ColdWarm, Cutoff, PartMetrics, Ranks, Report,
};
use crate::graph::{self, GraphConditions, GraphStep, StaticInputs, StepMode, StepOutputs};
use crate::launch;
use crate::negatives::Negatives;
use crate::optim::{grad_values, DeviceSchedule};
use crate::optimizers::Optimizers;
use crate::settings::{Job, Settings};
use crate::state::{self, EvalRecord, LoopState, PartialEpoch};

/// Does what `settings.job` says; returns the JSON to print (the summary of a training run on
/// rank 0, the metrics of an evaluation), `None` on other ranks and for the launcher.
pub fn run(settings: &Settings) -> Result<Option<serde_json::Value>> {
    match &settings.job {
        Job::Evaluate { weights } => inference_only(settings, weights).map(Some),
        Job::Launch { nproc } => {
            let port = settings.distributed.map_or(29500, |d| d.master_port);
            launch::launch(*nproc, port, &launch::own_args())?;
            Ok(None)
        }
        Job::Train => train(settings),
    }
}

/// Trains (or resumes) and returns the summary written to `summary.json` (on rank 0; other
/// ranks of a `--multi_gpu` run return `None`).
pub fn train(settings: &Settings) -> Result<Option<serde_json::Value>> {
    let mut run = Run::start(settings)?;
    while run.wants_epoch() {
        let epoch_loss = run.epoch()?;
        if run.evaluation_due() {
            run.evaluate_and_select(epoch_loss)?;
        }
        run.checkpoint()?;
    }
    run.finish()
}

/// `sasrec-train --inference_only --state_dict_path W`: evaluates W on validation and test.
pub fn inference_only(settings: &Settings, weights: &Path) -> Result<serde_json::Value> {
    let device = resolve_device(settings.device)?;
    let runtime = Runtime {
        device: device_name(device),
        world_size: 1,
        ..Runtime::default()
    };
    let Loaded {
        cfg,
        split,
        features,
    } = load_data(settings, runtime, true)?;
    let vs = nn::VarStore::new(device);
    let model = SeqRecModel::new(&vs.root(), &cfg.spec.model)?;
    attach_features(&model, features.as_ref(), None)?;
    load_weights(&vs, weights).with_context(|| {
        format!(
            "loading {} into a {} model",
            weights.display(),
            cfg.spec.kind
        )
    })?;
    let (valid, test) = eval_sets(&cfg, &split)?;
    let sizes = BlockSizes::users(settings.eval_batch_size);
    let report = Report::new(&cfg.schedule.metrics_k, &split);
    let out = json!({
        "kind": cfg.spec.kind,
        "weights": weights.display().to_string(),
        "valid": evaluate(&model, &valid, sizes, &report)?,
        "test": evaluate(&model, &test, sizes, &report)?,
    });
    write_json(&settings.dir.inference(), &out)?;
    Ok(out)
}

/// The running sums of an epoch on this rank (on the device: no synchronisation per step).
struct EpochTally {
    /// Σ loss over the recorded batches.
    loss_sum: Tensor,
    /// Recorded (non-padding) batches.
    batches: usize,
    /// Steps skipped by the fp16 loss scaler.
    skipped: Tensor,
}

/// A training run in progress on this rank.
struct Run<'a> {
    settings: &'a Settings,
    cfg: RunConfig,
    dir: &'a RunDir,
    device: Device,
    pg: Option<ProcessGroup>,
    rank: usize,
    world: usize,
    amp: Option<AmpDtype>,
    vs: nn::VarStore,
    model: SeqRecModel,
    /// The parameters sorted by name (checkpoint and all-reduce order).
    params: Vec<(String, Tensor)>,
    tensors: Vec<Tensor>,
    /// Adam (and the item table's optimiser, `--item_optimizer`).
    opt: Optimizers,
    scaler: Option<GradScaler>,
    /// Bytes this rank sent in the row-sparse gradient exchange since the last epoch's log,
    /// and the steps that sent them ([`ddp::average_row_gradients`]).
    exchanged: (u64, u64),
    /// Whether full batches replay a CUDA graph ([`graph::run_mode`]).
    graph_mode: StepMode,
    /// The graph, when `graph_mode` is [`StepMode::Graph`].
    graph: Option<GraphStep>,
    st: LoopState,
    sampler: Sampler,
    /// Negatives of the sampled losses.
    negatives: Negatives,
    eval: Evaluation,
}

/// The fixed evaluation sets and, for `--cold_items` with a token feature column, the
/// category-popularity baseline's metrics on them (fixed too, so computed once).
struct Evaluation {
    valid: EvalSet,
    test: EvalSet,
    baseline: Option<(ColdWarm, ColdWarm)>,
    /// The `--metrics_k` cut-offs and the items' training popularity.
    report: Report,
}

impl Evaluation {
    /// The sets of `cfg` on `split` and the baseline of the items' `features`.
    fn new(cfg: &RunConfig, split: &Split, features: Option<&EncodedFeatures>) -> Result<Self> {
        let (valid, test) = eval_sets(cfg, split)?;
        let baseline = category_baseline(split, features, (&valid, &test), cfg);
        Ok(Self {
            valid,
            test,
            baseline,
            report: Report::new(&cfg.schedule.metrics_k, split),
        })
    }
}

impl<'a> Run<'a> {
    /// Everything before the first epoch, in order: device and process group, data and
    /// configuration, the run directory (rank 0), the model and optimiser, the checkpoint to
    /// resume from (rank 0) and rank 0's state on every rank, the sampler and evaluation sets,
    /// and the step mode (graph or eager).
    fn start(settings: &'a Settings) -> Result<Self> {
        let (pg, device) = open_devices(settings)?;
        let (rank, world) = pg.as_ref().map_or((0, 1), |p| (p.rank(), p.world_size()));
        let lead = rank == 0;
        let amp = resolve_amp(settings.amp, device)?;
        let runtime = runtime_of(pg.as_ref(), device, amp);
        let Loaded {
            cfg,
            split,
            features,
        } = load_data(settings, runtime, lead)?;
        let dir = &settings.dir;
        if lead {
            prepare_dir(dir, &cfg, &split)?;
        }
        let (vs, model, params, mut opt) = build_model(&cfg, device)?;
        attach_features(&model, features.as_ref(), lead.then_some(dir))?;
        let tensors: Vec<Tensor> = params.iter().map(|(_, p)| p.shallow_clone()).collect();
        let mut st = resume(dir, lead, &params, &mut opt)?;
        if let Some(pg) = &pg {
            sync_from_rank0(pg, device, &tensors, &mut opt, &mut st)?;
        }
        let scaler = grad_scaler(amp, device, &st);
        if lead {
            write_metrics(dir, &st)?;
        }
        let sampler = Sampler::new(
            split.clone(),
            sampler_config(&cfg, settings.num_workers, rank, world),
        )?;
        let eval = Evaluation::new(&cfg, &split, features.as_ref())?;
        let negatives = Negatives::new(&cfg.optim, &split, device);
        let (graph_mode, graph) = choose_step_mode(settings, &cfg, device, world)?;
        let run = Self {
            settings,
            cfg,
            dir,
            device,
            pg,
            rank,
            world,
            amp,
            vs,
            model,
            params,
            tensors,
            opt,
            scaler,
            exchanged: (0, 0),
            graph_mode,
            graph,
            st,
            sampler,
            negatives,
            eval,
        };
        run.log_start();
        Ok(run)
    }

    /// The run's opening log lines.
    fn log_start(&self) {
        let (cfg, st) = (&self.cfg, &self.st);
        tracing::info!(
            kind = %cfg.spec.kind,
            params = self.model.num_params(),
            device = ?self.device,
            amp = ?self.amp,
            ranks = self.world,
            batches_per_epoch = self.sampler.num_batches(),
            valid_users = self.eval.valid.len(),
            "training"
        );
        if st.stopped_early && st.epochs_done < cfg.schedule.num_epochs && self.lead() {
            tracing::warn!(
                "the run stopped early after epoch {} (no validation gain in \
                 --early_stop_patience evaluations); a larger --num_epochs does not restart \
                 it: train again in a new --train_dir",
                st.epochs_done
            );
        }
    }

    fn lead(&self) -> bool {
        self.rank == 0
    }

    /// Whether another epoch is to run.
    fn wants_epoch(&self) -> bool {
        self.st.epochs_done < self.cfg.schedule.num_epochs
            && !self.st.stopped_early
            && !self.step_limit_reached()
    }

    /// Whether `--max_steps` optimiser steps have been taken.
    fn step_limit_reached(&self) -> bool {
        self.settings.max_steps.is_some_and(|m| self.st.step >= m)
    }

    /// Whether the epoch just finished is evaluated (every `--eval_every` and the last,
    /// `--max_steps` included).
    fn evaluation_due(&self) -> bool {
        self.st
            .epochs_done
            .is_multiple_of(self.cfg.schedule.eval_every)
            || self.st.epochs_done == self.cfg.schedule.num_epochs
            || self.step_limit_reached()
    }

    /// One epoch of optimiser steps (the rest of it after a mid-epoch checkpoint); returns its
    /// mean loss over all ranks.
    fn epoch(&mut self) -> Result<f64> {
        let epoch = self.st.epochs_done;
        let resumed = self.st.partial.take().unwrap_or_default();
        let started = Instant::now();
        let mut tally = self.carried_tally(&resumed);
        self.run_batches(epoch, &resumed, started, &mut tally)?;
        self.settle_step_count();
        let (epoch_loss, batches) = self.global_loss(tally.loss_sum, tally.batches)?;
        self.check_finite(epoch_loss, epoch, "")?;
        let secs = resumed.seconds + started.elapsed().as_secs_f64();
        self.record_epoch(epoch, epoch_loss, secs, batches, &tally.skipped);
        Ok(epoch_loss)
    }

    /// The running sums of the epoch: those of a resumed partial epoch are carried by rank 0
    /// alone (they are global sums).
    fn carried_tally(&self, resumed: &PartialEpoch) -> EpochTally {
        let (carried_sum, carried_batches) = match self.lead() {
            true => (resumed.loss_sum, resumed.loss_batches),
            false => (0.0, 0),
        };
        EpochTally {
            loss_sum: Tensor::from(carried_sum)
                .to_kind(Kind::Float)
                .to_device(self.device),
            batches: carried_batches,
            skipped: Tensor::zeros([1], (Kind::Float, self.device)),
        }
    }

    /// The epoch's remaining batches, one optimiser step each, with the progress bar and the
    /// mid-epoch checkpoints; stops at `--max_steps`.
    fn run_batches(
        &mut self,
        epoch: usize,
        resumed: &PartialEpoch,
        started: Instant,
        tally: &mut EpochTally,
    ) -> Result<()> {
        let pb = self.progress_bar(epoch);
        pb.set_position(resumed.batches as u64);
        let sampler = self.sampler.clone();
        let mut done = resumed.batches;
        for batch in sampler.epoch(epoch as u64).skip(resumed.batches) {
            if self.step_limit_reached() {
                break; // every rank stops at the same global step
            }
            // Dropout differs per rank (its own rows) and is keyed by (seed, epoch, batch), so
            // a run resumed mid-epoch draws the masks of an uninterrupted one.
            tch::manual_seed(
                batch_seed(self.cfg.schedule.seed, epoch, done)
                    .wrapping_add(self.rank as i64 * 7919),
            );
            let (l, overflow) = self.step(&batch)?;
            done += 1;
            pb.inc(1);
            self.add_to_tally(tally, &batch, l, overflow, epoch, &pb)?;
            let every = self.settings.checkpoint_every_steps;
            if every.is_some_and(|n| self.st.step.is_multiple_of(n)) && done < sampler.num_batches()
            {
                let seconds = resumed.seconds + started.elapsed().as_secs_f64();
                self.checkpoint_mid_epoch(done, seconds, &tally.loss_sum, tally.batches)?;
            }
        }
        pb.finish_and_clear();
        Ok(())
    }

    /// Adds a step's loss and overflow flag to the tally; every 10 batches the running mean
    /// is checked and shown. An empty shard's padding row gives zero but defined gradients
    /// and all-reduce weight 0; its loss is not recorded.
    fn add_to_tally(
        &self,
        tally: &mut EpochTally,
        batch: &Batch,
        loss: Tensor,
        overflow: Option<Tensor>,
        epoch: usize,
        pb: &ProgressBar,
    ) -> Result<()> {
        if let Some(f) = overflow {
            tally.skipped += f;
        }
        if batch.is_padding() {
            return Ok(());
        }
        tally.loss_sum += loss;
        tally.batches += 1;
        if tally.batches.is_multiple_of(10) {
            let mean = f64::try_from(&tally.loss_sum)? / tally.batches as f64;
            self.check_finite(mean, epoch, &format!(" on rank {}", self.rank))?;
            pb.set_message(format!("loss {mean:.4}"));
        }
        Ok(())
    }

    /// The epoch's mean loss and batch count over all ranks, so that every rank takes the same
    /// decisions.
    fn global_loss(&self, mut loss_sum: Tensor, mut batches: usize) -> Result<(f64, usize)> {
        if let Some(pg) = &self.pg {
            let mut v = Tensor::stack(
                &[
                    loss_sum.shallow_clone(),
                    Tensor::from(batches as f32).to_device(self.device),
                ],
                0,
            );
            pg.all_reduce_sum(&mut v)?;
            loss_sum = v.get(0);
            batches = v.get(1).double_value(&[]) as usize;
        }
        Ok((f64::try_from(&loss_sum)? / batches.max(1) as f64, batches))
    }

    /// Records the finished epoch in the loop state and logs it.
    fn record_epoch(
        &mut self,
        epoch: usize,
        epoch_loss: f64,
        secs: f64,
        batches: usize,
        skipped: &Tensor,
    ) {
        let st = &mut self.st;
        st.train_seconds += secs;
        st.epochs_done += 1;
        st.losses.push(epoch_loss);
        st.grad_scale = self
            .scaler
            .as_ref()
            .map(|sc| (sc.scale_value(), sc.growth_tracker()));
        tracing::info!(
            epoch = epoch + 1,
            loss = format!("{epoch_loss:.4}"),
            seconds = format!("{secs:.2}"),
            batches_per_s = format!("{:.1}", batches as f64 / self.world as f64 / secs),
            lr = format!("{:.2e}", self.cfg.optim.lr_at(st.step as usize)),
            skipped_steps = skipped.double_value(&[0]) as usize,
            "epoch done"
        );
        self.log_exchange();
    }

    /// Under a row-sparse item optimizer with several ranks: the bytes a rank sent per step
    /// for the item table's rows, against the dense all-reduce's (I+1)·C·4 (docs/MODELS.md §7).
    fn log_exchange(&mut self) {
        let (bytes, steps) = std::mem::take(&mut self.exchanged);
        if steps == 0 {
            return;
        }
        let table = self
            .model
            .items()
            .id_param()
            .map_or(0, |p| p.numel() as u64 * 4);
        tracing::info!(
            sparse_bytes_per_step = bytes / steps,
            dense_bytes_per_step = table,
            "item-table gradient exchange"
        );
    }

    /// One optimiser step on `batch`: a replay of the captured graph for a full batch of a
    /// graph run ([`crate::graph`]), else [`Run::eager_step`]. Returns the detached loss and,
    /// with fp16 loss scaling, the overflow flag (1 when the update was skipped).
    fn step(&mut self, batch: &Batch) -> Result<StepOutputs> {
        let mode = graph::step_mode(self.graph_mode, batch.rows(), self.cfg.optim.batch_size);
        let out = match (mode, self.graph.take()) {
            (StepMode::Graph, Some(mut g)) => {
                let lr = self.cfg.optim.lr_at(self.st.step as usize);
                let out = g.step(batch, lr, self.opt.adam.t, |inputs, sched| {
                    self.device_step(inputs, sched)
                });
                self.graph = Some(g);
                out?
            }
            (_, g) => {
                self.graph = g;
                self.eager_step(batch)?
            }
        };
        self.st.step += 1;
        Ok(out)
    }

    /// The ordinary step: forward and loss, backward, gradient all-reduce, fp16 unscaling (an
    /// overflow skips Adam), Adam.
    fn eager_step(&mut self, batch: &Batch) -> Result<StepOutputs> {
        self.settle_step_count();
        let (rows, t, device) = (
            batch.rows() as i64,
            self.cfg.spec.model.maxlen as i64,
            self.device,
        );
        // The model checks seq and tm on the host, then copies them.
        let seq = host_batch(&batch.seq, &[rows, t], device);
        let pos = to_device(&batch.pos, &[rows, t], device);
        let neg = to_device(&batch.neg, &[rows, t], device);
        let tm = batch
            .intervals
            .as_ref()
            .map(|iv| host_batch(iv, &[rows, t, t], device));
        let l = self.forward_backward(&seq, tm.as_ref(), &pos, &neg)?;
        if let Some(pg) = &self.pg {
            let weight = pos.ne(0).sum(Kind::Float);
            ddp::average_gradients(pg, &self.tensors, &weight)?;
            let sent = ddp::average_row_gradients(pg, &self.params, &weight)?;
            self.exchanged = (self.exchanged.0 + sent, self.exchanged.1 + 1);
        }
        let found_inf = self.unscale()?;
        if !found_inf
            .as_ref()
            .is_some_and(|f| f.double_value(&[0]) != 0.0)
        {
            let step = self.st.step as usize;
            let optim = &self.cfg.optim;
            self.opt.step(optim.lr_at(step), optim.item_lr_at(step))?;
        }
        Ok((l.detach(), found_inf))
    }

    /// The step a CUDA graph captures, on its static inputs and device schedule: the eager
    /// step's computation with nothing read on the host (an fp16 overflow skips Adam on the
    /// device).
    fn device_step(
        &mut self,
        inputs: &StaticInputs,
        sched: &mut DeviceSchedule,
    ) -> Result<StepOutputs> {
        let l = self.forward_backward(&inputs.seq, inputs.tm.as_ref(), &inputs.pos, &inputs.neg)?;
        let found_inf = self.unscale()?;
        self.opt.adam.step_on_device(sched, found_inf.as_ref())?;
        Ok((l.detach(), found_inf))
    }

    /// Forward and loss (under autocast with `--use_amp`), zeroed gradients, backward (of the
    /// scaled loss with fp16); returns the loss.
    fn forward_backward(
        &mut self,
        seq: &Tensor,
        tm: Option<&Tensor>,
        pos: &Tensor,
        neg: &Tensor,
    ) -> Result<Tensor> {
        let forward = || self.loss(seq, tm, pos, neg);
        let l = match self.amp {
            Some(dtype) => amp::autocast(self.device, dtype, forward)?,
            None => forward()?,
        };
        self.opt.zero_grad()?;
        match &self.scaler {
            Some(sc) => sc.scale(&l).backward(),
            None => l.backward(),
        }
        Ok(l)
    }

    /// fp16: the gradients divided by the loss scale, the scale updated, and the overflow flag
    /// (on the device); `None` without loss scaling.
    fn unscale(&mut self) -> Result<Option<Tensor>> {
        let Some(sc) = &mut self.scaler else {
            return Ok(None);
        };
        Ok(Some(sc.unscale_and_update_on_device(&mut grad_values(
            &self.tensors,
        ))?))
    }

    /// Copies Adam's step count back from the graph's device schedule when replays advanced it:
    /// before an eager step, at the end of an epoch and before a mid-epoch checkpoint.
    fn settle_step_count(&mut self) {
        if let Some(t) = self.graph.as_mut().and_then(GraphStep::take_step_count) {
            self.opt.adam.t = t;
        }
    }

    /// The training loss of one batch (docs/MODELS.md §1.5): BCE with one sampled negative per
    /// position, full-softmax CE in item blocks, sampled softmax over `--num_negatives`
    /// negatives shared by the batch (and `--in_batch_negatives`), gBCE over `--num_negatives`
    /// negatives per sequence.
    fn loss(
        &self,
        seq: &Tensor,
        tm: Option<&Tensor>,
        pos: &Tensor,
        neg: &Tensor,
    ) -> Result<Tensor> {
        let optim = &self.cfg.optim;
        let feats = self.model.feats(seq, tm, true)?;
        let items = self.model.items();
        let l2 = optim.l2_emb;
        let n = optim.num_negatives as i64;
        let num_items = self.negatives.num_items(); // W: the warm items under --cold_items
        Ok(match optim.loss {
            LossKind::Bce => loss::bce_loss(&feats, items, pos, neg, l2),
            LossKind::Ce if num_items < self.cfg.spec.model.num_items => {
                let warm = loss::TablePrefix {
                    items,
                    rows: num_items as i64 + 1,
                };
                loss::ce_loss(&feats, &warm, pos, l2, optim.ce_chunk_size)
            }
            LossKind::Ce => loss::ce_loss(&feats, items, pos, l2, optim.ce_chunk_size),
            LossKind::SampledSoftmax => {
                let negs = self.negatives.draw(n, pos);
                let log_q = self.negatives.log_q();
                loss::sampled_softmax_loss(&feats, items, pos, &negs, log_q, l2)
            }
            LossKind::Gbce => {
                let negs = self.negatives.draw_per_row(pos.size()[0], n);
                loss::gbce_loss(&feats, items, pos, &negs, num_items, optim.gbce_t, l2)
            }
        })
    }

    /// Stops the run on a non-finite loss, naming the checkpoint that is kept.
    fn check_finite(&self, loss: f64, epoch: usize, where_: &str) -> Result<()> {
        if !loss.is_finite() {
            bail!(
                "non-finite training loss ({loss}) in epoch {}{where_}; stopped, the last good \
                 checkpoint ({}, {} epochs) is kept",
                epoch + 1,
                self.dir.checkpoint().display(),
                self.st.epochs_done
            );
        }
        Ok(())
    }

    fn progress_bar(&self, epoch: usize) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        if self.lead() {
            ProgressBar::new(self.sampler.num_batches() as u64)
        } else {
            ProgressBar::hidden()
        }
        .with_style(style)
        .with_prefix(format!(
            "epoch {}/{}",
            epoch + 1,
            self.cfg.schedule.num_epochs
        ))
    }

    /// Every rank scores its share of the validation and test users ([`evaluate_sharded`]);
    /// rank 0 keeps the best weights by the validation `--select_metric`, updates
    /// early stopping and `metrics.jsonl`; every rank then takes rank 0's early-stopping
    /// decision.
    fn evaluate_and_select(&mut self, epoch_loss: f64) -> Result<()> {
        let started = Instant::now();
        let sizes = BlockSizes::users(self.settings.eval_batch_size);
        let (mut valid, mut test) = match &self.pg {
            Some(pg) => (
                evaluate_sharded(&self.model, &self.eval.valid, sizes, &self.eval.report, pg)?,
                evaluate_sharded(&self.model, &self.eval.test, sizes, &self.eval.report, pg)?,
            ),
            None => (
                evaluate(&self.model, &self.eval.valid, sizes, &self.eval.report)?,
                evaluate(&self.model, &self.eval.test, sizes, &self.eval.report)?,
            ),
        };
        if let Some((v, t)) = self.eval.baseline {
            valid.category_popularity = Some(v);
            test.category_popularity = Some(t);
        }
        if self.lead() {
            let seconds = started.elapsed().as_secs_f64();
            self.record_evaluation(epoch_loss, valid, test, seconds)?;
        }
        if let Some(pg) = &self.pg {
            let mut stop = Tensor::from(self.st.stopped_early as u8 as f32).to_device(self.device);
            pg.broadcast(&mut stop, 0)?;
            self.st.stopped_early = stop.double_value(&[]) != 0.0;
        }
        Ok(())
    }

    fn record_evaluation(
        &mut self,
        epoch_loss: f64,
        valid: PartMetrics,
        test: PartMetrics,
        eval_seconds: f64,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let st = &mut self.st;
        let rec = EvalRecord {
            epoch: st.epochs_done,
            step: st.step,
            train_loss: epoch_loss,
            valid,
            test,
            train_seconds: st.train_seconds,
            eval_seconds,
        };
        let (valid, test) = (&rec.valid, &rec.test);
        tracing::info!(
            epoch = st.epochs_done,
            "valid NDCG@10 {:.4} HR@10 {:.4} (sampled) | {:.4} {:.4} (full); test NDCG@10 {:.4} HR@10 {:.4} (sampled) | {:.4} {:.4} (full); {:.2}s",
            valid.sampled.ndcg, valid.sampled.hr, valid.full.ndcg, valid.full.hr,
            test.sampled.ndcg, test.sampled.hr, test.full.ndcg, test.full.hr, rec.eval_seconds
        );
        log_cutoffs(&test.cutoffs);
        log_cold_start(test);
        let (metric, protocol) = (cfg.schedule.select_metric, cfg.schedule.select_protocol);
        let score = selection_score(valid, protocol, metric);
        if st.best.as_ref().is_none_or(|(b, _)| score > *b) {
            write_atomic_path(&self.dir.model(), |tmp| save_weights(&self.vs, tmp))?;
            st.best = Some((score, rec.clone()));
            st.bad_evals = 0;
        } else {
            st.bad_evals += 1;
            if cfg.schedule.early_stop_patience > 0
                && st.bad_evals >= cfg.schedule.early_stop_patience
            {
                tracing::info!(
                    "early stop: validation {metric} ({protocol:?}) has not improved for {} \
                     evaluations",
                    st.bad_evals
                );
                st.stopped_early = true;
            }
        }
        st.evals.push(rec);
        write_metrics(self.dir, st)
    }

    /// `--checkpoint_every_steps`: the epoch's loss sums so far (`loss_sum` over `batches` on
    /// this rank) are summed over the ranks and rank 0 writes the checkpoint with the epoch in
    /// progress: `done` global batches in `seconds`.
    fn checkpoint_mid_epoch(
        &mut self,
        done: usize,
        seconds: f64,
        loss_sum: &Tensor,
        batches: usize,
    ) -> Result<()> {
        self.settle_step_count();
        let mut sums = Tensor::stack(
            &[
                loss_sum.to_kind(Kind::Double),
                Tensor::from(batches as f64).to_device(self.device),
            ],
            0,
        );
        if let Some(pg) = &self.pg {
            pg.all_reduce_sum(&mut sums)?;
        }
        let partial = PartialEpoch {
            batches: done,
            loss_sum: sums.double_value(&[0]),
            loss_batches: sums.double_value(&[1]) as usize,
            seconds,
        };
        if self.lead() {
            self.st.partial = Some(partial);
            let saved = state::save(&self.dir.checkpoint(), &self.params, &self.opt, &self.st);
            self.st.partial = None;
            saved?;
        }
        Ok(())
    }

    /// Rank 0 writes the resumable checkpoint and redraws the curves.
    fn checkpoint(&self) -> Result<()> {
        if !self.lead() {
            return Ok(());
        }
        state::save(&self.dir.checkpoint(), &self.params, &self.opt, &self.st)?;
        let title = format!("{} on {}", self.cfg.spec.kind, self.cfg.dataset);
        if let Err(e) = crate::plot::draw(&self.dir.plot(), &title, &self.st) {
            tracing::warn!("training curve not drawn: {e:#}");
        }
        Ok(())
    }

    /// Leaves the process group and, on rank 0, writes and returns `summary.json`.
    fn finish(self) -> Result<Option<serde_json::Value>> {
        if let Some(g) = &self.graph {
            tracing::info!("CUDA graph: {} replays", g.replays());
        }
        if self.settings.dump_rank_weights {
            save_weights(&self.vs, self.dir.rank_weights(self.rank))?;
        }
        if let Some(pg) = self.pg {
            pg.barrier()?;
            pg.shutdown()?;
        }
        if self.rank != 0 {
            return Ok(None);
        }
        let summary = summarize(&self.cfg, &self.st);
        write_json(&self.dir.summary(), &summary)?;
        Ok(Some(summary))
    }
}

/// The device of this process and, under `--multi_gpu`, its process group.
fn open_devices(settings: &Settings) -> Result<(Option<ProcessGroup>, Device)> {
    Ok(match &settings.distributed {
        Some(d) => {
            let (pg, device) = init_distributed(d, settings.device)?;
            (Some(pg), device)
        }
        None => (None, resolve_device(settings.device)?),
    })
}

/// The network with its seeded initialisation, its parameters sorted by name (checkpoint and
/// all-reduce order) and their optimisers; under a row-sparse `--item_optimizer` the ID rows
/// reach autograd with a row-sparse gradient.
fn build_model(
    cfg: &RunConfig,
    device: Device,
) -> Result<(nn::VarStore, SeqRecModel, Vec<(String, Tensor)>, Optimizers)> {
    tch::manual_seed(epoch_seed(cfg.schedule.seed, usize::MAX >> 1) ^ 0x5eed);
    let vs = nn::VarStore::new(device);
    let model = SeqRecModel::new(&vs.root(), &cfg.spec.model)?;
    let params = sorted_params(&vs);
    let choice = cfg.optim.item_optimizer;
    model.items().set_sparse_id_grad(choice.row_sparse());
    let opt = Optimizers::new(&params, choice, cfg.optim.adam_beta2);
    Ok((vs, model, params, opt))
}

/// The loop state of the checkpoint in `dir` (rank 0, when there is one: the weights and Adam
/// moments are loaded in place), else a fresh one.
fn resume(
    dir: &RunDir,
    lead: bool,
    params: &[(String, Tensor)],
    opt: &mut Optimizers,
) -> Result<LoopState> {
    let ckpt = dir.checkpoint();
    if !(lead && ckpt.exists()) {
        return Ok(LoopState::default());
    }
    let st = state::load(&ckpt, params, opt)?;
    tracing::info!(
        epochs_done = st.epochs_done,
        step = st.step,
        batches_into_epoch = st.partial.map_or(0, |p| p.batches),
        "resuming from {}",
        ckpt.display()
    );
    Ok(st)
}

/// Where the run runs, as its config records it: the device, the mixed precision, the world
/// size and the process group's backend.
fn runtime_of(pg: Option<&ProcessGroup>, device: Device, amp: Option<AmpDtype>) -> Runtime {
    Runtime {
        device: device_name(device),
        amp,
        world_size: pg.map_or(1, |p| p.world_size()),
        backend: pg.map(|p| p.backend()),
    }
}

/// fp16's dynamic loss scaler (as torch.amp.GradScaler), restored from the loop state.
fn grad_scaler(amp: Option<AmpDtype>, device: Device, st: &LoopState) -> Option<GradScaler> {
    (amp == Some(AmpDtype::Fp16)).then(|| {
        let mut sc = GradScaler::new(device, 65536.0);
        if let Some((scale, growth)) = st.grad_scale {
            sc.restore(scale, growth);
        }
        sc
    })
}

/// This rank's sampler settings.
fn sampler_config(cfg: &RunConfig, num_workers: usize, rank: usize, world: usize) -> SamplerConfig {
    SamplerConfig {
        batch_size: cfg.optim.batch_size,
        maxlen: cfg.spec.model.maxlen,
        seed: cfg.schedule.seed,
        num_workers,
        rank,
        world_size: world,
        intervals: cfg.spec.intervals,
    }
}

/// Whether full batches replay a captured CUDA graph ([`graph::run_mode`]), and the graph.
fn choose_step_mode(
    settings: &Settings,
    cfg: &RunConfig,
    device: Device,
    world: usize,
) -> Result<(StepMode, Option<GraphStep>)> {
    let mode = graph::run_mode(&GraphConditions {
        cuda: device.is_cuda(),
        built: graph::BUILT_WITH_CUDA_GRAPHS,
        disabled: !settings.cuda_graph,
        world,
        loss: cfg.optim.loss,
        row_sparse: cfg.optim.item_optimizer.row_sparse(),
    });
    let graph = match &mode {
        StepMode::Graph => {
            tracing::info!(
                "CUDA graph: full batches replay one captured step (after {} warm-up \
                 steps); the ragged last batch of an epoch runs eagerly",
                graph::WARM_UP_STEPS
            );
            let (rows, t) = (cfg.optim.batch_size as i64, cfg.spec.model.maxlen as i64);
            Some(GraphStep::new(
                device,
                rows,
                t,
                cfg.spec.intervals.is_some(),
            )?)
        }
        StepMode::Eager(why) => {
            tracing::info!("eager steps: {why}");
            None
        }
    };
    Ok((mode, graph))
}

/// Loads the data and resolves the run configuration; `lead` (rank 0, or the only process)
/// creates the run directory.
fn load_data(settings: &Settings, runtime: Runtime, lead: bool) -> Result<Loaded> {
    let split = settings.data.load()?;
    if settings.intervals.is_some() && !split.data.has_timestamps() {
        return Err(DataError::no_timestamps(&split.data.path).into());
    }
    let (features_cfg, features) = match &settings.item_features {
        Some(f) => {
            let (c, e) = f.encode(&split)?;
            (Some(c), Some(e))
        }
        None => (None, None),
    };
    let cfg = settings.run_config(&split, features_cfg, runtime)?;
    if lead {
        let root = settings.dir.root();
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    }
    Ok(Loaded {
        cfg,
        split,
        features,
    })
}

/// What [`load_data`] gives: the run's configuration, the split and the items' encoded
/// features (with `--item_features`).
struct Loaded {
    cfg: RunConfig,
    split: Split,
    features: Option<EncodedFeatures>,
}

/// Puts the items' encoded features into the model's buffers and, on the lead rank, writes
/// them to the run directory (`item_features.safetensors`, read by the export).
fn attach_features(
    model: &SeqRecModel,
    features: Option<&EncodedFeatures>,
    dir: Option<&RunDir>,
) -> Result<()> {
    let Some(enc) = features else {
        return Ok(());
    };
    model.items().set_features(enc)?;
    if let Some(dir) = dir {
        let path = dir.item_features();
        let tensors = model.items().feature_tensors();
        write_atomic_path(&path, |tmp| Tensor::write_safetensors(&tensors, tmp))?;
    }
    Ok(())
}

/// Refuses to resume a run with other settings, then writes `config.json` and `items.tsv`.
fn prepare_dir(dir: &RunDir, cfg: &RunConfig, split: &Split) -> Result<()> {
    let (ckpt, config) = (dir.checkpoint(), dir.config());
    if ckpt.exists() {
        let text = std::fs::read_to_string(&config).with_context(|| {
            format!(
                "{} exists but {} cannot be read",
                ckpt.display(),
                config.display()
            )
        })?;
        let old: RunConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a sasrec-rs run config", config.display()))?;
        let diff = cfg.differences(&old);
        if !diff.is_empty() {
            bail!(
                "{} holds a run with different settings ({}); use another --train_dir or the same flags to resume",
                dir.root().display(),
                diff.join(", ")
            );
        }
    }
    write_json(&config, cfg)?;
    split.data.items.save(&dir.items())?;
    Ok(())
}

/// Rank 0's weights, optimiser state and loop counters on every rank (DDP's initial
/// broadcast).
fn sync_from_rank0(
    pg: &ProcessGroup,
    device: Device,
    tensors: &[Tensor],
    opt: &mut Optimizers,
    st: &mut LoopState,
) -> Result<()> {
    let mut all: Vec<Tensor> = tensors.iter().map(|t| t.shallow_clone()).collect();
    all.extend(opt.extra_state().into_iter().map(|(_, t)| t));
    let adam = &mut opt.adam;
    all.extend(adam.m.iter().chain(&adam.v).map(|t| t.shallow_clone()));
    ddp::broadcast_from_rank0(pg, &all)?;
    let (scale, growth) = st.grad_scale.unwrap_or((0.0, 0));
    let counters = [
        st.epochs_done as f64,
        st.step as f64,
        adam.t as f64,
        st.stopped_early as u8 as f64,
        scale,
        growth as f64,
        st.partial.map_or(-1.0, |p| p.batches as f64),
        st.partial.map_or(0.0, |p| p.seconds),
    ];
    let mut c = Tensor::from_slice(&counters).to_device(device);
    pg.broadcast(&mut c, 0)?;
    let c = Vec::<f64>::try_from(&c)?;
    st.epochs_done = c[0] as usize;
    st.step = c[1] as u64;
    adam.t = c[2] as u64;
    st.stopped_early = c[3] != 0.0;
    st.grad_scale = (c[4] > 0.0).then_some((c[4], c[5] as i64));
    // The epoch in progress: every rank skips its batches; its loss sums stay on rank 0.
    if pg.rank() != 0 {
        st.partial = (c[6] >= 0.0).then(|| PartialEpoch {
            batches: c[6] as usize,
            seconds: c[7],
            ..PartialEpoch::default()
        });
    }
    Ok(())
}

/// The category-popularity baseline of a `--cold_items` run whose item features have a token
/// column (the first one is the category): its metrics on the validation and test users,
/// cold and warm targets apart; `None` otherwise (docs/MODELS.md §6.4).
fn category_baseline(
    split: &Split,
    features: Option<&EncodedFeatures>,
    (valid, test): (&EvalSet, &EvalSet),
    cfg: &RunConfig,
) -> Option<(ColdWarm, ColdWarm)> {
    let tokens = features?.tokens.first()?;
    let counts = split.train_item_counts();
    let seed = cfg.schedule.eval_seed;
    let order = category_popularity_order(&counts, tokens, split.num_warm_items(), seed);
    let metrics = |set: &EvalSet| {
        let (sampled, full) = set.ranks_by_order(&order);
        Ranks {
            sampled,
            full,
            ..Ranks::default()
        }
        .cold_warm(set)
    };
    Some((metrics(valid)?, metrics(test)?))
}

/// The test metrics of cold and warm targets (and of the baseline), when `--cold_items` is on.
fn log_cold_start(test: &PartMetrics) {
    let Some(m) = test.cold_start else {
        return;
    };
    let line = |what: &str, g: &ColdWarm| {
        tracing::info!(
            "{what}: test NDCG@10 (full) cold {:.4} ({} users) | warm {:.4} ({} users); (sampled) cold {:.4} | warm {:.4}",
            g.cold.full.ndcg, g.cold.full.users, g.warm.full.ndcg, g.warm.full.users,
            g.cold.sampled.ndcg, g.warm.sampled.ndcg
        )
    };
    line("model", &m);
    if let Some(b) = &test.category_popularity {
        line("category popularity", b);
    }
}

fn eval_sets(cfg: &RunConfig, split: &Split) -> Result<(EvalSet, EvalSet)> {
    let ecfg = EvalConfig {
        maxlen: cfg.spec.model.maxlen,
        seed: cfg.schedule.eval_seed,
        max_users: cfg.schedule.eval_max_users,
        intervals: cfg.spec.intervals,
    };
    Ok((
        EvalSet::new(split, Part::Valid, ecfg)?,
        EvalSet::new(split, Part::Test, ecfg)?,
    ))
}

/// Seed of the torch generator for `epoch` (dropout, sampled-softmax negatives).
fn epoch_seed(seed: u64, epoch: usize) -> i64 {
    (seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64) & 0x7fff_ffff_ffff) as i64
}

/// The dropout seed of global batch `batch` of `epoch`.
fn batch_seed(seed: u64, epoch: usize, batch: usize) -> i64 {
    let e = epoch_seed(seed, epoch) as u64;
    (e.wrapping_mul(1_000_033).wrapping_add(batch as u64) & 0x7fff_ffff_ffff) as i64
}

fn sorted_params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The validation `metric` under `protocol`: HR@10 and NDCG@10 from the headline metrics,
/// MRR without a cut-off from them too, any other cut-off from `--metrics_k`'s (the settings
/// always report the selection cut-off; −∞ if a record lacks it).
fn selection_score(m: &PartMetrics, protocol: Protocol, metric: SelectMetric) -> f64 {
    let (headline, at): (_, fn(&Cutoff) -> AtK) = match protocol {
        Protocol::Sampled => (m.sampled, |c| c.sampled),
        Protocol::Full => (m.full, |c| c.full),
    };
    match (metric.measure, metric.k) {
        (Measure::Mrr, None) => headline.mrr,
        (Measure::Hr, Some(10)) => headline.hr,
        (Measure::Ndcg, Some(10)) => headline.ndcg,
        (measure, k) => {
            m.cutoffs
                .iter()
                .find(|c| Some(c.k) == k)
                .map(at)
                .map_or(f64::NEG_INFINITY, |a| match measure {
                    Measure::Hr => a.hr,
                    Measure::Ndcg => a.ndcg,
                    Measure::Mrr => a.mrr,
                })
        }
    }
}

/// The test metrics at every `--metrics_k` cut-off, one line.
fn log_cutoffs(cutoffs: &[Cutoff]) {
    let parts: Vec<String> = cutoffs
        .iter()
        .map(|c| {
            format!(
                "@{}: HR {:.4} NDCG {:.4} MRR {:.4} coverage {:.4} popularity rank {:.1}",
                c.k,
                c.full.hr,
                c.full.ndcg,
                c.full.mrr,
                c.lists.coverage,
                c.lists.mean_popularity_rank
            )
        })
        .collect();
    if !parts.is_empty() {
        tracing::info!("test (full ranking) {}", parts.join(" | "));
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, |w| writeln!(w, "{text}"))?;
    Ok(())
}

fn write_metrics(dir: &RunDir, st: &LoopState) -> Result<()> {
    let lines: Vec<String> = st
        .evals
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    write_atomic(&dir.metrics(), |w| {
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
        "kind": cfg.spec.kind,
        "dataset": cfg.dataset,
        "epochs": st.epochs_done,
        "stopped_early": st.stopped_early,
        "train_seconds": st.train_seconds,
        "seconds_per_epoch": st.train_seconds / st.epochs_done.max(1) as f64,
        "steps": st.step,
        "seconds_per_step": st.train_seconds / st.step.max(1) as f64,
        "selected_by": format!("validation {} ({:?})", cfg.schedule.select_metric, cfg.schedule.select_protocol).to_lowercase(),
        "metrics_k": cfg.schedule.metrics_k,
        "best_epoch": best.map(|r| r.epoch),
        "valid_at_best": best.map(|r| &r.valid),
        "test_at_best": best.map(|r| &r.test),
    })
}
