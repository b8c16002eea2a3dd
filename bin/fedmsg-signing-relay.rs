//! fedmsg-signing-relay: fedmsg-relay that signs what it forwards with the
//! certificate `certnames.signing_relay` names.

use anyhow::Context;
use clap::Parser;
use fedmsg::cli::{self, ConfigArgs};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forward messages from active publishers to subscribers, signing them.
///
/// For hosts without certificates of their own: every unsigned message is
/// signed with the key and certificate of `certnames.signing_relay`;
/// messages that are signed already pass untouched.
#[derive(Parser)]
#[command(name = "fedmsg-signing-relay", version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.config.init_logging();
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => return cli::fail("fedmsg-signing-relay", cli::EXIT_USAGE, e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail("fedmsg-signing-relay", cli::EXIT_FAILURE, e),
    };
    let quiet = args.config.quiet > 0;
    let result = runtime.block_on(async {
        fedmsg::relay::run_signing(&config, cli::shutdown_signal(), |bound| {
            if !quiet {
                cli::say_ready("fedmsg-signing-relay", bound);
            }
        })
        .await
        .context("signing relay failed")
    });
    match result {
        Ok(_) => ExitCode::from(cli::EXIT_OK),
        Err(e) => {
            cli::report("fedmsg-signing-relay", &e);
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
