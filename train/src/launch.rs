//! The built-in single-node launcher (like `torchrun --standalone` for one node): starts this
//! same executable once per rank with the environment [`crate::dist::DistEnv::from_env`] reads.

use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::{bail, usage, Context, Result};

/// How often the children are polled.
const POLL: Duration = Duration::from_millis(100);
/// How long a child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Runs `nproc` copies of the current executable with `args` (the command line minus the
/// program name) as ranks 0..nproc of one group whose store rank 0 hosts on
/// 127.0.0.1:`master_port`; stdout and stderr are inherited.
///
/// With several ranks and no `OMP_NUM_THREADS` set, each rank gets `OMP_NUM_THREADS=1`, as
/// under torchrun. Waits for all of them. When a rank exits non-zero (or is killed by a signal) the others are
/// stopped (SIGTERM, then SIGKILL after 5 s) and the error names that rank and its status.
pub fn launch(nproc: usize, master_port: u16, args: &[std::ffi::OsString]) -> Result<()> {
    if nproc == 0 {
        usage!("--nproc_per_node must be at least 1");
    }
    let exe = std::env::current_exe().context("locating the current executable to launch ranks")?;
    tracing::info!(nproc, master_port, exe = %exe.display(), "launching ranks");
    let mut children: Vec<Option<Child>> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        match rank_command(&exe, rank, nproc, master_port, args).spawn() {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e).with_context(|| format!("starting rank {rank} ({})", exe.display()));
            }
        }
    }
    if let Some((rank, status)) = wait_for_failure(&mut children)? {
        stop_all(&mut children);
        bail!("rank {rank} exited with {status}; stopped the other ranks");
    }
    Ok(())
}

/// Rank `rank`'s command: this executable with `args` and torchrun's environment.
fn rank_command(
    exe: &std::path::Path,
    rank: usize,
    nproc: usize,
    master_port: u16,
    args: &[OsString],
) -> Command {
    let mut cmd = Command::new(exe);
    // As torchrun: several ranks on one node get one intra-op thread each unless the user
    // chose otherwise (N ranks × all cores would oversubscribe the CPU).
    if nproc > 1 && std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    cmd.args(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", nproc.to_string())
        .env("LOCAL_WORLD_SIZE", nproc.to_string())
        .env("GROUP_RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", master_port.to_string())
        .env_remove("TORCHELASTIC_USE_AGENT_STORE")
        .env_remove("TORCHELASTIC_RESTART_COUNT");
    cmd
}

/// Polls the children until all have exited successfully (`None`) or one has failed (its rank
/// and status).
fn wait_for_failure(children: &mut [Option<Child>]) -> Result<Option<(usize, ExitStatus)>> {
    while children.iter().any(Option::is_some) {
        for rank in 0..children.len() {
            let Some(child) = &mut children[rank] else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) if status.success() => {
                    children[rank] = None;
                    tracing::debug!(rank, "rank finished");
                }
                Ok(Some(status)) => {
                    children[rank] = None;
                    return Ok(Some((rank, status)));
                }
                Err(e) => {
                    stop_all(children);
                    return Err(e).with_context(|| format!("waiting for rank {rank}"));
                }
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(None)
}

/// SIGTERM every running child, give them [`GRACE`] to exit, then SIGKILL the rest and reap.
fn stop_all(children: &mut [Option<Child>]) {
    for child in children.iter_mut().flatten() {
        if !matches!(child.try_wait(), Ok(None)) {
            continue;
        }
        // No libc here: `kill -TERM` from the shell's coreutils; Child::kill (SIGKILL) below
        // is the fallback when that is unavailable.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    let deadline = Instant::now() + GRACE;
    loop {
        let running = children
            .iter_mut()
            .flatten()
            .map(|c| matches!(c.try_wait(), Ok(None)) as usize)
            .sum::<usize>();
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    for slot in children.iter_mut() {
        if let Some(mut child) = slot.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// The arguments this process was started with, minus the program name: what
/// [`launch`] passes on to every rank.
pub fn own_args() -> Vec<OsString> {
    std::env::args_os().skip(1).collect()
}
