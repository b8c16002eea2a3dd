//! fedmsg-trigger: run a command for each matching message, without a shell.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs, MetricsArgs, TopicArgs};
use fedmsg::trigger::{self, TriggerOptions};
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run a command for each message that matches.
///
/// The command is started directly, never through a shell: its words come
/// from --command (split like plain shell words, quotes and backslashes
/// only) or from the arguments after `--`. Each message is written to its
/// standard input as one line of JSON, and described in FEDMSG_MESSAGE_TOPIC,
/// FEDMSG_MESSAGE_ID, FEDMSG_MESSAGE_TIMESTAMP, FEDMSG_MESSAGE_USERNAME,
/// FEDMSG_MESSAGE_I and FEDMSG_MESSAGE_MSG.
#[derive(Parser)]
#[command(name = "fedmsg-trigger", version)]
struct Args {
    #[command(flatten)]
    topics: TopicArgs,
    /// The command to run: a program and its arguments.
    #[arg(long, value_name = "COMMAND")]
    command: Option<String>,
    /// Run the queued messages this many seconds after the last match.
    #[arg(long, value_name = "SECONDS", default_value = "0")]
    wait_for: f64,
    /// Run at once when this many messages are queued (0: no limit).
    #[arg(long, value_name = "N", default_value = "0")]
    max_queue_size: usize,
    /// The command, after `--` (instead of --command).
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    program: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn options(args: &Args) -> anyhow::Result<TriggerOptions> {
    let mut command = match &args.command {
        Some(text) => trigger::split_command(text)?,
        None => Vec::new(),
    };
    command.extend(args.program.iter().cloned());
    if command.is_empty() {
        return Err(trigger::TriggerError::NoCommand.into());
    }
    if !(args.wait_for.is_finite() && args.wait_for >= 0.0) {
        anyhow::bail!(
            "--wait-for must be a non-negative number of seconds, got {}",
            args.wait_for
        );
    }
    Ok(TriggerOptions {
        topics: args.topics.topic.clone(),
        include: args.topics.include()?,
        exclude: args.topics.exclude()?,
        command,
        wait_for: Duration::from_secs_f64(args.wait_for),
        max_queue_size: args.max_queue_size,
    })
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let options = match options(&args) {
        Ok(options) => options,
        Err(e) => return cli::fail("fedmsg-trigger", cli::EXIT_USAGE, e),
    };
    let config = match args.metrics.apply(args.config.loader(), "trigger").load() {
        Ok(config) => config,
        Err(e) => return cli::fail("fedmsg-trigger", cli::EXIT_USAGE, e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail("fedmsg-trigger", cli::EXIT_FAILURE, e),
    };
    match runtime.block_on(trigger::run(&config, &options, cli::shutdown_signal())) {
        Ok(_) => ExitCode::from(cli::EXIT_OK),
        Err(e) => cli::fail("fedmsg-trigger", cli::EXIT_FAILURE, e),
    }
}
