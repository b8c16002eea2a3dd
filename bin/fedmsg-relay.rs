//! fedmsg-relay: forwards what active publishers (fedmsg-logger, scripts)
//! send to `relay_inbound` onto `endpoints.relay_outbound`.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs, MetricsArgs};
use std::process::ExitCode;

// glibc's allocator spends a fifth of the hot path handing memory between
// threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forward messages from active publishers to subscribers.
#[derive(Parser)]
#[command(name = "fedmsg-relay", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let quiet = args.config.quiet > 0;
    cli::serve(
        "fedmsg-relay",
        args.metrics.apply(args.config.loader(), "relay").load(),
        "relay failed",
        |config| async move {
            fedmsg::relay::run(&config, cli::shutdown_signal(), |bound| {
                if !quiet {
                    cli::say_ready("fedmsg-relay", bound);
                }
            })
            .await
        },
    )
}
