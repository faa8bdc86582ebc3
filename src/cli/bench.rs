//! `stripe-worker bench`: the load simulator's command line and its table.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::backend::doubles::latency::LatencySpec;
use crate::bench::{AdaptiveOptions, BenchBackend, BenchOptions, BenchReport, PointReport};

/// `bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// `memory`: the in-memory backend (the engine's own cost plus what is injected).
    /// `local`: the embedded SQLite backend (durable).
    #[arg(long, value_enum, default_value_t = BenchBackendArg::Memory)]
    pub backend: BenchBackendArg,
    /// Messages processed per concurrency point.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Further messages left waiting in the queues (memory does not grow with them).
    #[arg(long, default_value_t = 0)]
    pub backlog: usize,
    /// Concurrencies to run: each sets max_in_flight and max_in_flight_per_queue.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024,2048")]
    pub concurrency: Vec<usize>,
    /// Pollers per queue (default: one per 10 permits).
    #[arg(long)]
    pub pollers: Option<usize>,
    /// Latency of each SQS call, e.g. `20ms`.
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    pub sqs_latency: Duration,
    /// Latency of each DynamoDB (dedupe, state) call, e.g. `5ms`.
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    pub ddb_latency: Duration,
    /// Spread of each latency as a share of it, 0 to 1 (uniform, same mean).
    #[arg(long, default_value_t = 0.0, value_parser = super::share_up_to(1.0))]
    pub jitter: f64,
    /// Share of dedupe and state calls that fail (a quarter of them as throttles), 0 to 0.5.
    #[arg(long, default_value_t = 0.0, value_parser = super::share_up_to(0.5))]
    pub fault_rate: f64,
    /// A downstream that serves this many dedupe and state calls at once and throttles
    /// the rest.
    #[arg(long)]
    pub throttle_above: Option<usize>,
    /// Let each queue's limit adapt (AIMD) between --min-in-flight and the concurrency.
    #[arg(long)]
    pub adaptive: bool,
    /// With --adaptive: the lowest (and starting) limit per queue.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_in_flight: u32,
    /// With --adaptive: cut the limit when a window's mean processing time is above this
    /// (0: react to throttling only).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub latency_threshold: Duration,
    /// Tenants in the event mix.
    #[arg(long, default_value_t = 3)]
    pub tenants: usize,
    /// Seed of the mix, jitter and faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// With --backend local: keep the SQLite files here (one directory per point).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Which backend `bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchBackendArg {
    /// In memory.
    Memory,
    /// Embedded SQLite.
    Local,
}

/// Parse `250us`, `20ms`, `1.5s`, `15m`, `1h` or `0`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => raw.split_at(i),
        None => (raw, ""),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration such as 20ms"))?;
    let secs = match unit {
        "" if value == 0.0 => 0.0,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{raw}`: use a unit of us, ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{raw}` is out of range"))
}

/// Run the benchmark and print the table (or JSON).
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let options = BenchOptions {
        backend: match args.backend {
            BenchBackendArg::Memory => BenchBackend::Memory,
            BenchBackendArg::Local => BenchBackend::Local,
        },
        messages: args.messages,
        backlog: args.backlog,
        concurrency: args.concurrency,
        pollers: args.pollers,
        sqs: LatencySpec {
            mean: args.sqs_latency,
            jitter: args.jitter,
        },
        ddb: LatencySpec {
            mean: args.ddb_latency,
            jitter: args.jitter,
        },
        fault_rate: args.fault_rate,
        throttle_above: args.throttle_above,
        adaptive: args.adaptive.then(|| AdaptiveOptions {
            min_in_flight: usize::try_from(args.min_in_flight).unwrap_or(usize::MAX),
            latency_threshold_ms: u64::try_from(args.latency_threshold.as_millis())
                .unwrap_or(u64::MAX),
        }),
        tenants: args.tenants,
        seed: args.seed,
        data_dir: args.data_dir,
        config_env: std::env::vars().collect(),
        ..BenchOptions::default()
    };
    let json = args.json;
    if !json {
        writeln!(std::io::stdout(), "{}", header())?;
    }
    let report = crate::bench::run(&options, |point| {
        if !json {
            // A closed stdout is noticed (and reported) at the next write below.
            let _ = writeln!(std::io::stdout(), "{}", row(point));
        }
    })
    .await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", footer(&report))?;
    }
    let stalled = report.points.iter().any(|p| p.stalled);
    Ok(if stalled {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn header() -> String {
    format!(
        "{:>6} {:>7} {:>9} {:>9} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "conc",
        "pollers",
        "events/s",
        "bound/s",
        "eff",
        "eff(r)",
        "p50 ms",
        "p99 ms",
        "cpu us/ev",
        "rss MB",
        "+rss MB",
        "throttled",
        "limit"
    )
}

fn row(p: &PointReport) -> String {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_owned(), f);
    format!(
        "{:>6} {:>7} {:>9.0} {:>9} {:>6} {:>7} {:>8.2} {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>8}{}",
        p.concurrency,
        p.pollers_per_queue,
        p.events_per_sec,
        opt(p.bound_events_per_sec, &|b| format!("{b:.0}")),
        opt(p.efficiency, &|e| format!("{:.1}%", e * 100.0)),
        opt(p.realized_efficiency, &|e| format!("{:.1}%", e * 100.0)),
        p.p50_ms,
        p.p99_ms,
        p.cpu_us_per_event,
        p.peak_rss_mb,
        p.worker_rss_mb,
        p.throttled_calls,
        p.limit_mean.map_or("-".to_owned(), |m| format!(
            "{m:.0}/{}",
            p.limit_final.unwrap_or(0)
        )),
        if p.stalled { "  STALLED" } else { "" },
    )
}

fn footer(report: &BenchReport) -> String {
    let mut out = String::new();
    if let Some(p) = report.points.first() {
        out.push_str(&format!(
            "\nmix: subscription={} payment={} customer={} messages; per message {:.2} store calls, {:.3} settle calls\n",
            report.mix.subscription,
            report.mix.payment,
            report.mix.customer,
            p.path_calls.store,
            p.path_calls.settle,
        ));
        out.push_str(&format!(
            "critical path: receive {:.1} ms + {:.2} x {:.1} ms store + {:.3} x {:.1} ms settle = {:.1} ms per message (bound = concurrency / this)\n",
            report.sqs_latency_ms,
            p.path_calls.store,
            report.ddb_latency_ms,
            p.path_calls.settle,
            report.sqs_latency_ms,
            p.critical_path_ms,
        ));
    }
    out.push_str("eff: events/s over the bound; eff(r): over the bound of the delays the timers really gave (the simulator's own overshoot removed)\n");
    out.push_str("p50/p99: receive start to confirmed delete; cpu: user+system of the whole process per event; +rss: peak minus resident memory before the pool started\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5d").is_err());
    }
}
