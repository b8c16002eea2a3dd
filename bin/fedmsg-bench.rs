//! fedmsg-bench: measure the bus against bare ZeroMQ in the same run.

use clap::{Parser, ValueEnum};

// glibc's allocator spends a fifth of the hot path handing memory between
// threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use fedmsg::bench::{self, Scenario, Signing};
use fedmsg::cli::{self, ConfigArgs};
use std::process::ExitCode;

/// `println!` that ends quietly on a closed pipe instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        fedmsg::cli::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

#[derive(Clone, Copy, ValueEnum)]
enum Sign {
    None,
    Ed25519,
    X509,
}

/// Publish and subscribe over loopback and report throughput, losses,
/// latency (paced runs), CPU and memory, optionally next to bare ZeroMQ.
#[derive(Parser)]
#[command(name = "fedmsg-bench", version)]
struct Args {
    /// Messages per publisher.
    #[arg(long, short = 'n', default_value = "100000")]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value = "300")]
    size: usize,
    /// Publishers.
    #[arg(long, default_value = "1")]
    publishers: usize,
    /// Subscribers.
    #[arg(long, default_value = "1")]
    subscribers: usize,
    /// Messages per second in total (paced, with latency); 0 = flat out.
    #[arg(long, default_value = "0")]
    rate: u64,
    /// Sign (and validate) messages.
    #[arg(long, value_enum, default_value = "none")]
    sign: Sign,
    /// Also run bare ZeroMQ with the same frames first, and print ratios to it.
    #[arg(long)]
    baseline: bool,
    /// Go through a relay (active publishers, as fedmsg-logger) instead of directly.
    #[arg(long)]
    relay: bool,
    /// Run the relay and each subscriber as processes of fedmsg-relay and
    /// `fedmsg-tail --json` (found next to this binary), and report the CPU
    /// and memory of each process.
    #[arg(long)]
    processes: bool,
    /// Time -n one-shot `echo x | fedmsg-logger` runs through a relay into a
    /// running fedmsg-tail (implies --relay --processes).
    #[arg(long, conflicts_with_all = ["rate", "baseline", "sign"])]
    oneshot: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    if args.publishers == 0 || args.subscribers == 0 || args.messages == 0 {
        return cli::fail(
            "fedmsg-bench",
            cli::EXIT_USAGE,
            anyhow::anyhow!("--messages, --publishers and --subscribers must be at least 1"),
        );
    }
    let scenario = Scenario {
        messages: args.messages,
        size: args.size,
        publishers: args.publishers,
        subscribers: args.subscribers,
        rate: (args.rate > 0).then_some(args.rate),
        signing: match args.sign {
            Sign::None => Signing::None,
            Sign::Ed25519 => Signing::Ed25519,
            Sign::X509 => Signing::X509,
        },
        relay: args.relay || args.oneshot,
        processes: args.processes || args.oneshot,
        oneshot: args.oneshot,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail("fedmsg-bench", cli::EXIT_FAILURE, e),
    };
    let result = runtime.block_on(async {
        let mut reports = Vec::new();
        if args.baseline {
            reports.push(bench::run_raw(&scenario).await?);
        }
        let mut ours = bench::run_fedmsg(&scenario).await?;
        if let Some(base) = reports.first() {
            ours.ratio = Some(ours.msgs_per_sec / base.msgs_per_sec.max(1e-9));
        }
        reports.push(ours);
        Ok::<_, bench::BenchError>(reports)
    });
    runtime.shutdown_background();
    match result {
        Ok(reports) => {
            if args.json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&reports).unwrap_or_default()
                );
            } else {
                cli::print(&bench::table(&reports));
            }
            ExitCode::from(cli::EXIT_OK)
        }
        Err(e) => cli::fail("fedmsg-bench", cli::EXIT_FAILURE, e),
    }
}
