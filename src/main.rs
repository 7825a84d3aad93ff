//! The `portico` binary: flags → configuration, logging, runtime. The only place anyhow is used.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use portico::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc: per-thread free lists with size classes for every size. glibc's malloc took
/// about 540 instructions for each 8 KiB read buffer hyper allocates per request (a
/// consolidation pass each time) and locks for every small allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.run.log_format);
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let threads = cli.run.threads;
    let result = match cli.command {
        Some(Command::Check(args)) => portico::check::run(&args).context("check failed"),
        Some(Command::Explain(args)) => portico::check::explain(&args).context("explain failed"),
        Some(Command::Services(args)) => portico::check::services(&args).context("services failed"),
        Some(Command::Echo(args)) => {
            block_on(threads, async move { Ok(portico::echo::run(args).await?) })
        }
        Some(Command::Demo(args)) => block_on(threads, async move {
            Ok(portico::run::demo(args, cli.run).await?)
        }),
        None => block_on(threads, async move { Ok(portico::run(cli.run).await?) }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portico: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(
    threads: Option<usize>,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    // One thread: everything runs on it, like one nginx worker, with no cross-thread wake-ups.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = threads.filter(|n| *n > 1) {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(work)?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    // Whatever RUST_LOG says, library lines that quote undecodable responses (Secrets
    // included) are dropped: see `portico::redact::QUOTING_TARGETS`.
    tracing_subscriber::registry()
        .with(filter)
        .with(layer.with_filter(portico::redact::log_filter()))
        .init();
}
