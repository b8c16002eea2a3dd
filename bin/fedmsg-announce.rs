//! fedmsg-announce: send an announcement read from standard input.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Announce something to everyone on the bus.
///
/// Standard input, every line stripped, is the announcement's text; it goes
/// out through fedmsg-relay on <prefix>.<env>.announce.announcement.
#[derive(Parser)]
#[command(name = "fedmsg-announce", version)]
struct Args {
    /// A URL with more details.
    #[arg(long, value_name = "URL")]
    link: Option<String>,
    /// Certificate prefix for signing ("<prefix>.<host>").
    #[arg(long, default_value = "announce")]
    cert_prefix: String,
    /// Seconds to wait for the relay before giving up.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let mut loader =
        args.config
            .loader()
            .flag("--cert-prefix", "cert_prefix", args.cert_prefix.clone());
    if let Some(t) = args.timeout {
        loader = loader.flag("--timeout", "timeout", t);
    }
    let config = match loader.load() {
        Ok(config) => config,
        Err(e) => return cli::fail("fedmsg-announce", cli::EXIT_USAGE, e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail("fedmsg-announce", cli::EXIT_FAILURE, e),
    };
    let stdin = std::io::stdin().lock();
    match runtime.block_on(fedmsg::announce::run(&config, stdin, args.link.as_deref())) {
        Ok(()) => ExitCode::from(cli::EXIT_OK),
        Err(e) => {
            cli::report("fedmsg-announce", &anyhow::Error::new(e));
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
