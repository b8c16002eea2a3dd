//! fedmsg-relay: forwards what active publishers (fedmsg-logger, scripts)
//! send to `relay_inbound` onto `endpoints.relay_outbound`.

use anyhow::Context;
use clap::Parser;
use fedmsg::cli::{self, ConfigArgs};
use std::process::ExitCode;

// glibc's allocator spends a fifth of the hot path handing memory between
// threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forward messages from active publishers to subscribers.
#[derive(Parser)]
#[command(name = "fedmsg-relay", version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.config.init_logging();
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => return cli::fail("fedmsg-relay", cli::EXIT_USAGE, e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail("fedmsg-relay", cli::EXIT_FAILURE, e),
    };
    let quiet = args.config.quiet > 0;
    let result = runtime.block_on(async {
        fedmsg::relay::run(&config, cli::shutdown_signal(), |bound| {
            if !quiet {
                cli::say_ready("fedmsg-relay", bound);
            }
        })
        .await
        .context("relay failed")
    });
    match result {
        Ok(_) => ExitCode::from(cli::EXIT_OK),
        Err(e) => {
            cli::report("fedmsg-relay", &e);
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
