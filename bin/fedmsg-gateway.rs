//! fedmsg-gateway: re-publishes the whole bus, verbatim, on one bound port
//! (`gateway_port`, default 9940) for readers outside the deployment.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs, MetricsArgs};
use std::process::ExitCode;

// glibc's allocator spends a fifth of the hot path handing memory between
// threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Re-publish every message of the bus on one port for outside readers.
#[derive(Parser)]
#[command(name = "fedmsg-gateway", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Port to bind (overrides `gateway_port`).
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Address to bind (overrides `gateway_host`; `*` is every interface).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Most messages waiting for one reader (overrides
    /// `gateway_high_water_mark`).
    #[arg(long, value_name = "N")]
    reader_high_water_mark: Option<u64>,
    /// Most readers connected at once (overrides `gateway_max_readers`).
    #[arg(long, value_name = "N")]
    max_readers: Option<u64>,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let mut loader = args.metrics.apply(args.config.loader(), "gateway");
    if let Some(port) = args.port {
        loader = loader.flag("--port", "gateway_port", i64::from(port));
    }
    if let Some(host) = &args.host {
        loader = loader.flag("--host", "gateway_host", host.clone());
    }
    if let Some(n) = args.reader_high_water_mark {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        loader = loader.flag("--reader-high-water-mark", "gateway_high_water_mark", n);
    }
    if let Some(n) = args.max_readers {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        loader = loader.flag("--max-readers", "gateway_max_readers", n);
    }
    let quiet = args.config.quiet > 0;
    cli::serve(
        "fedmsg-gateway",
        loader.load(),
        "gateway failed",
        |config| async move {
            fedmsg::gateway::run(&config, cli::shutdown_signal(), |bound| {
                if !quiet {
                    eprintln!("fedmsg-gateway: ready: outbound {bound}");
                }
            })
            .await
        },
    )
}
