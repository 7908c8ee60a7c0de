//! `keyhold-bench`: a load generator for AWS KMS External Key Store (XKS) proxies, Keyhold or
//! any other. It signs every request with SigV4, sends it over keep-alive HTTPS, and reports
//! throughput, latency percentiles from an HDR histogram, errors by XKS error name and,
//! given the server pids, server CPU time per request.

mod args;
mod client;
mod cpu;
mod report;
mod runner;
mod schedule;
mod signing;
mod startup;
mod workload;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use hyper::header::HeaderValue;
use keyhold::auth::Sigv4Secret;

use args::{Args, OutputFormat};
use client::{Targets, Trust};
use report::{Report, RunSettings};
use runner::RunPlan;
use signing::Signer;
use startup::WorkloadSettings;
use workload::{Payload, default_kms_key_arn};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(message) = args.validate() {
        eprintln!("keyhold-bench: {message}");
        return ExitCode::from(2);
    }
    let report = match run(&args) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("keyhold-bench: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let text = match args.output {
        OutputFormat::Text => report.to_text(),
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(error) => {
                eprintln!("keyhold-bench: cannot serialize the report: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Err(error) = std::io::stdout().write_all(text.as_bytes()) {
        eprintln!("keyhold-bench: cannot write the report: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let secret = std::env::var(&args.secret_env)
        .ok()
        .filter(|secret| !secret.is_empty())
        .with_context(|| {
            format!(
                "environment variable {} is not set; export the SigV4 secret access key in it",
                args.secret_env
            )
        })?;
    let trust = match (&args.ca_file, args.insecure) {
        (Some(path), _) => Some(Trust::CaFile(path)),
        (None, true) => Some(Trust::Insecure),
        (None, false) => None,
    };
    let targets = Arc::new(Targets::new(
        &args.url,
        trust,
        args.tls_server_name.as_deref(),
    )?);
    // Like a load balancer's clients, every connection sends the same Host header.
    let first_target = targets.for_connection(0);
    let host = args
        .host_header
        .as_deref()
        .unwrap_or(first_target.authority());
    let signer = Signer {
        access_key_id: args.access_key_id.clone(),
        secret: Sigv4Secret::new(secret),
        region: args.region.clone(),
        host: HeaderValue::from_str(host)
            .with_context(|| format!("invalid Host header value {host:?}"))?,
    };
    let payload = Payload {
        plaintext: random_bytes(args.plaintext_size)?,
        aad: random_bytes(args.aad_size)?,
        integrity_value: !args.no_integrity_value,
        kms_key_arn: args
            .kms_key_arn
            .clone()
            .unwrap_or_else(|| default_kms_key_arn(&args.region)),
    };
    cpu::total_cpu_time(&args.server_pid).context("invalid --server-pid")?;
    let plan = RunPlan {
        connections: usize::from(args.connections),
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        timeout: args.timeout,
        server_pids: args.server_pid.clone(),
        show_progress: !args.quiet,
    };

    let measurement = runtime(args.threads)?.block_on(async {
        let mut connection = first_target.connect().await?;
        let settings = WorkloadSettings {
            uri_path: &args.uri_path,
            key_id: &args.key_id,
            mix: &args.mix,
            payload: &payload,
        };
        let workload = startup::prepare(&mut connection, signer, &settings, args.timeout).await?;
        runner::run(&plan, targets.clone(), Arc::new(workload), connection).await
    })?;

    let settings = RunSettings {
        url: args.url[0].clone(),
        urls: args.url.clone(),
        uri_path: args.uri_path.clone(),
        operations: args.mix.to_string(),
        rate: args.rate,
        connections: plan.connections,
        plaintext_size: args.plaintext_size,
        aad_size: args.aad_size,
        integrity_value: payload.integrity_value,
        warmup_seconds: args.warmup.as_secs_f64(),
        duration_seconds: args.duration.as_secs_f64(),
    };
    Ok(Report::new(settings, &measurement, args.mix.is_mixed()))
}

/// Builds the async runtime: one thread runs everything in place, more use tokio's scheduler.
fn runtime(threads: Option<u16>) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        Some(threads) => usize::from(threads),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn random_bytes(len: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    keyhold::crypto::fill_random(&mut bytes).context("cannot draw random bytes")?;
    Ok(bytes)
}
