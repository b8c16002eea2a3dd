//! fedmsg-logger: publish lines or JSON from the shell through fedmsg-relay.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs};
use fedmsg::logger::{self, LoggerOptions};
use std::process::ExitCode;

// glibc's allocator spends a fifth of the hot path handing memory between
// threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Send messages to the bus from scripts, cron jobs and git hooks.
///
/// Without --message, every line of standard input becomes one message
/// {"log": LINE}.
#[derive(Parser)]
#[command(name = "fedmsg-logger", version)]
struct Args {
    /// Send this text as one message instead of reading standard input.
    #[arg(long = "message", value_name = "TEXT")]
    message: Option<String>,
    /// Input is JSON: --message TEXT, or all of standard input, is one JSON document.
    #[arg(long)]
    json_input: bool,
    /// Each line of standard input is one JSON document (one message per line).
    #[arg(long)]
    json_lines: bool,
    /// Topic suffix.
    #[arg(long, default_value = "log")]
    topic: String,
    /// Module name: the topic part before --topic.
    #[arg(long, default_value = "logger")]
    modname: String,
    /// Certificate prefix for signing ("<prefix>.<host>").
    #[arg(long, default_value = "shell")]
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
        Err(e) => return cli::fail("fedmsg-logger", cli::EXIT_USAGE, e),
    };
    let options = LoggerOptions {
        message: args.message,
        json_input: args.json_input,
        json_lines: args.json_lines,
        topic: args.topic,
        modname: args.modname,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail("fedmsg-logger", cli::EXIT_FAILURE, e),
    };
    let stdin = std::io::stdin().lock();
    match runtime.block_on(logger::run(&config, &options, stdin)) {
        Ok(_) => ExitCode::from(cli::EXIT_OK),
        Err(e) => {
            let code = if e.is_input_error() {
                cli::EXIT_USAGE
            } else {
                cli::EXIT_FAILURE
            };
            cli::report("fedmsg-logger", &anyhow::Error::new(e));
            ExitCode::from(code)
        }
    }
}
