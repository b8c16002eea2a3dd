//! What every `fedmsg-*` binary shares: the common configuration flags,
//! logging set-up, exit codes and the Ctrl-C future.

use crate::config::{Config, ConfigError, Loader};
use std::path::PathBuf;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the work failed (relay unreachable, socket error...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad usage, configuration or input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: `--timeout` fired before the work was done (as `timeout(1)`).
pub const EXIT_TIMEOUT: u8 = 124;

/// Flags every command accepts, with fedmsg's names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Read only this TOML file over the built-in defaults.
    #[arg(
        long = "config",
        visible_alias = "config-filename",
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// Override `topic_prefix`.
    #[arg(long, value_name = "PREFIX", global = true)]
    pub topic_prefix: Option<String>,
    /// Override `environment`.
    #[arg(long, value_name = "ENV", global = true)]
    pub environment: Option<String>,
    /// Override `high_water_mark`.
    #[arg(long, value_name = "N", global = true)]
    pub high_water_mark: Option<u64>,
    /// Override `zmq_linger` (milliseconds).
    #[arg(long, value_name = "MS", global = true)]
    pub linger: Option<u64>,
    /// Accepted for fedmsg compatibility; ignored (no sleeps here).
    #[arg(long, value_name = "SECONDS", hide = true, global = true)]
    pub post_init_sleep: Option<f64>,
    /// Accepted for fedmsg compatibility; ignored.
    #[arg(long, value_name = "N", hide = true, global = true)]
    pub io_threads: Option<u64>,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (-q errors only, -qq nothing).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
    /// Print this command's shell completions (bash, zsh, fish, elvish,
    /// powershell) and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
    /// Print this command's man page (roff) and exit.
    #[arg(long)]
    pub man: bool,
}

impl ConfigArgs {
    /// The loader for these flags: standard locations, `--config`, then the
    /// flag overrides.
    pub fn loader(&self) -> Loader {
        let mut loader = Loader::new().file(self.config.clone());
        if let Some(v) = &self.topic_prefix {
            loader = loader.flag("--topic-prefix", "topic_prefix", v.clone());
        }
        if let Some(v) = &self.environment {
            loader = loader.flag("--environment", "environment", v.clone());
        }
        if let Some(v) = self.high_water_mark {
            loader = loader.flag(
                "--high-water-mark",
                "high_water_mark",
                v.min(i64::MAX as u64) as i64,
            );
        }
        if let Some(v) = self.linger {
            loader = loader.flag("--linger", "zmq_linger", v.min(i64::MAX as u64) as i64);
        }
        loader
    }

    /// Loads the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.loader().load()
    }

    /// Sets up logging on stderr: `RUST_LOG` if set, else from -v/-q
    /// (default: warnings).
    pub fn init_logging(&self) {
        let level = match (self.verbose as i8) - (self.quiet as i8) {
            i8::MIN..=-2 => "off",
            -1 => "error",
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init();
    }
}

/// Parses the command line. `--completions SHELL` and `--man` print what
/// is generated from the command's clap definition and exit 0, before the
/// rest of the arguments are checked.
pub fn parse<A: clap::Parser>() -> A {
    let mut command = A::command();
    let matches = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(std::env::args_os());
    if let Ok(matches) = matches {
        let name = command.get_name().to_owned();
        let mut out = Vec::new();
        let shell = matches
            .try_get_one::<clap_complete::Shell>("completions")
            .ok()
            .flatten();
        let man = matches.try_get_one::<bool>("man").ok().flatten() == Some(&true);
        if let Some(shell) = shell {
            clap_complete::generate(*shell, &mut command, name, &mut out);
        } else if man {
            if let Err(error) = clap_mangen::Man::new(command).render(&mut out) {
                eprintln!("{name}: error: cannot render the man page: {error}");
                std::process::exit(i32::from(EXIT_FAILURE));
            }
        }
        if !out.is_empty() {
            print(&String::from_utf8_lossy(&out));
            std::process::exit(i32::from(EXIT_OK));
        }
    }
    A::parse()
}

/// `--topic`, `--include` and `--exclude`, shared by the commands that
/// watch the bus (tail, trigger).
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    /// Subscribe to topics starting with this prefix (repeatable).
    #[arg(long, value_name = "PREFIX")]
    pub topic: Vec<String>,
    /// Show only topics matching this regular expression.
    #[arg(long, value_name = "RE")]
    pub include: Option<String>,
    /// Hide topics matching this regular expression.
    #[arg(long, value_name = "RE", default_value = "_heartbeat")]
    pub exclude: String,
}

impl TopicArgs {
    /// The `--include` expression, compiled.
    pub fn include(&self) -> anyhow::Result<Option<regex::Regex>> {
        self.include
            .as_deref()
            .map(|text| topic_regex("--include", text))
            .transpose()
    }

    /// The `--exclude` expression, compiled; `--exclude ''` hides nothing.
    pub fn exclude(&self) -> anyhow::Result<Option<regex::Regex>> {
        (!self.exclude.is_empty())
            .then(|| topic_regex("--exclude", &self.exclude))
            .transpose()
    }
}

fn topic_regex(flag: &str, text: &str) -> anyhow::Result<regex::Regex> {
    use anyhow::Context as _;
    regex::Regex::new(text).with_context(|| format!("invalid {flag} regular expression {text:?}"))
}

/// `--metrics ADDR`, shared by the long-running commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve /metrics (Prometheus) and /health on this loopback address,
    /// e.g. 127.0.0.1:9941 (sets this command's entry of `[metrics]`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

impl MetricsArgs {
    /// Adds the flag, if given, to `loader` as `metrics.<service>`.
    pub fn apply(&self, loader: Loader, service: &str) -> Loader {
        match &self.metrics {
            Some(address) => {
                loader.flag("--metrics", &format!("metrics.{service}"), address.clone())
            }
            None => loader,
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// True when an error chain ends in a closed pipe (`| head`): a clean exit.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || cause.downcast_ref::<crate::tail::TailError>().is_some_and(|e| matches!(e, crate::tail::TailError::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}

/// Writes `text` to standard output. A closed pipe (`| head`) ends the
/// process quietly with status 0, as it should for a command-line tool;
/// `println!` would panic instead.
pub fn print(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_OK));
        }
        eprintln!("error: cannot write output: {error}");
        std::process::exit(i32::from(EXIT_FAILURE));
    }
}

/// Reports `error` and returns the exit code `code`.
pub fn fail(program: &str, code: u8, error: impl Into<anyhow::Error>) -> std::process::ExitCode {
    report(program, &error.into());
    std::process::ExitCode::from(code)
}

/// Prints an error chain on one line, prefixed with the program name.
pub fn report(program: &str, error: &anyhow::Error) {
    eprintln!("{program}: error: {error:#}");
}

/// Runs a long-lived service binary's entry point: `config` as loaded (an
/// error is a usage error, exit 2), a tokio runtime, then `service` until it
/// returns (after Ctrl-C or SIGTERM, which it is expected to wait for); its
/// error is printed as one line with `what` as context, exit 1.
pub fn serve<C, F, T, E>(
    program: &str,
    config: Result<Config, C>,
    what: &'static str,
    service: impl FnOnce(Config) -> F,
) -> std::process::ExitCode
where
    C: Into<anyhow::Error>,
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail(program, EXIT_USAGE, e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(program, EXIT_FAILURE, e),
    };
    match runtime.block_on(service(config)).map_err(Into::into) {
        Ok(_) => std::process::ExitCode::from(EXIT_OK),
        Err(e) => fail(program, EXIT_FAILURE, e.context(what)),
    }
}

/// The line a relay prints on standard error once it is bound (tests and
/// scripts wait for it).
pub fn say_ready(program: &str, bound: &crate::relay::Bound) {
    let inbound: Vec<String> = bound.inbound.iter().map(ToString::to_string).collect();
    eprintln!(
        "{program}: ready: inbound {} outbound {}",
        inbound.join(","),
        bound.outbound
    );
}
