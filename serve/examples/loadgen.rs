//! A closed-loop HTTP load generator for `sasrec-serve` (what `serve/benches/load.sh` runs):
//! `--clients` connections each POST `--body` to `--url` back to back for `--seconds`, then one
//! line is printed:
//!
//! ```text
//! clients=32 seconds=10.00 requests=9120 rps=912.0 p50_ms=34.81 p99_ms=52.10 non_2xx=0 errors=0
//! ```
//!
//! (`--json` prints the same fields as one JSON object). Latency is measured per request from
//! send to the end of the body; requests still running at the deadline are not counted.
//! Percentiles are nearest-rank over every completed request. The exit status is 1 when a
//! request failed or answered non-2xx, so a script notices a broken run.
//!
//! ```bash
//! cargo run --release -p sasrec-serve --example loadgen -- \
//!   --url http://127.0.0.1:8080/recommend --clients 32 --seconds 10 --body body.json
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

/// Flags.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Closed-loop HTTP POST load generator")]
struct Args {
    /// Where to POST.
    #[arg(long)]
    url: String,
    /// Concurrent connections, each sending its next request when the last one is answered.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Duration of the measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The request body (sent as `application/json`).
    #[arg(long)]
    body: PathBuf,
    /// Threads of the client's runtime (the server shares the machine; 1 as `wrk -t 1`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of `key=value` pairs.
    #[arg(long)]
    json: bool,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of every 2xx answer, microseconds.
    latencies_us: Vec<u64>,
    /// Answers with another status.
    non_2xx: u64,
    /// Requests that got no answer (connection or protocol errors).
    errors: u64,
}

/// The summary line.
#[derive(Debug, serde::Serialize)]
struct Report {
    clients: usize,
    seconds: f64,
    requests: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    errors: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(r) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&r).expect("a flat struct serialises")
                );
            } else {
                println!(
                    "clients={} seconds={:.2} requests={} rps={:.1} p50_ms={:.2} p99_ms={:.2} \
                     non_2xx={} errors={}",
                    r.clients,
                    r.seconds,
                    r.requests,
                    r.rps,
                    r.p50_ms,
                    r.p99_ms,
                    r.non_2xx,
                    r.errors
                );
            }
            if r.non_2xx + r.errors > 0 || r.requests == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    use anyhow::Context;
    anyhow::ensure!(args.clients >= 1, "--clients: must be at least 1");
    anyhow::ensure!(args.threads >= 1, "--threads: must be at least 1");
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds {}: must be a positive number",
        args.seconds
    );
    let body =
        std::fs::read(&args.body).with_context(|| format!("--body {}", args.body.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let duration = Duration::from_secs_f64(args.seconds);
    let tallies = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + duration;
        let started = Instant::now();
        let clients: Vec<_> = (0..args.clients)
            .map(|_| tokio::spawn(client(args.url.clone(), body.clone(), deadline)))
            .collect();
        let mut tallies = Vec::with_capacity(clients.len());
        for c in clients {
            tallies.push(c.await.context("a client task panicked")??);
        }
        Ok::<_, anyhow::Error>((tallies, started.elapsed()))
    })?;
    Ok(summarise(args.clients, tallies.1, tallies.0))
}

/// One connection sending `body` until `deadline`.
async fn client(
    url: String,
    body: Vec<u8>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Tally> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let mut tally = Tally::default();
    loop {
        let sent = Instant::now();
        let request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone()) // a few hundred bytes
            .send();
        let answer = async {
            let r = request.await?;
            let ok = r.status().is_success();
            r.bytes().await?;
            Ok::<_, reqwest::Error>(ok)
        };
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => return Ok(tally), // the deadline passed mid-request
            Ok(Ok(true)) => tally.latencies_us.push(sent.elapsed().as_micros() as u64),
            Ok(Ok(false)) => tally.non_2xx += 1,
            Ok(Err(_)) => tally.errors += 1,
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(tally);
        }
    }
}

/// Throughput over the measured wall time and nearest-rank percentiles of every 2xx latency.
fn summarise(clients: usize, elapsed: Duration, tallies: Vec<Tally>) -> Report {
    let mut lat: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1] as f64 / 1e3
    };
    let secs = elapsed.as_secs_f64();
    Report {
        clients,
        seconds: secs,
        requests: lat.len(),
        rps: lat.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        non_2xx: tallies.iter().map(|t| t.non_2xx).sum(),
        errors: tallies.iter().map(|t| t.errors).sum(),
    }
}
