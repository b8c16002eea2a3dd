//! fedmsg-signing-relay: fedmsg-relay that signs what it forwards with the
//! certificate `certnames.signing_relay` names.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs, MetricsArgs};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forward messages from active publishers to subscribers, signing them.
///
/// For hosts without certificates of their own: every unsigned message is
/// signed with the key and certificate of `certnames.signing_relay`;
/// messages that are signed already pass untouched.
#[derive(Parser)]
#[command(name = "fedmsg-signing-relay", version)]
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
        "fedmsg-signing-relay",
        args.metrics
            .apply(args.config.loader(), "signing_relay")
            .load(),
        "signing relay failed",
        |config| async move {
            fedmsg::relay::run_signing(&config, cli::shutdown_signal(), |bound| {
                if !quiet {
                    cli::say_ready("fedmsg-signing-relay", bound);
                }
            })
            .await
        },
    )
}
