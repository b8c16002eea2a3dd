//! fedmsg-tail: watch the bus.

use clap::{Parser, ValueEnum};
use fedmsg::cli::{self, ConfigArgs, TopicArgs};
use fedmsg::tail::{self, Format, TailOptions, TailOutcome};
use fedmsg::template::{self, Scope, Template};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

// glibc's allocator spends a fifth of the hot path handing memory between
// threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// Print every message on the bus (or those matching --topic).
#[derive(Parser)]
#[command(name = "fedmsg-tail", version)]
struct Args {
    #[command(flatten)]
    topics: TopicArgs,
    /// Show only messages involving one of these users, comma-separated (by the [[meta]] rules).
    #[arg(long, value_name = "USERS", value_delimiter = ',')]
    users: Vec<String>,
    /// Show only messages about one of these packages, comma-separated (by the [[meta]] rules).
    #[arg(long, value_name = "PACKAGES", value_delimiter = ',')]
    packages: Vec<String>,
    /// Pretty-print each message (Python pprint layout, times in local time).
    #[arg(long)]
    pretty: bool,
    /// Indented JSON, coloured on a terminal, credentials stripped.
    #[arg(long)]
    really_pretty: bool,
    /// One line per message: title -- subtitle link.
    #[arg(long)]
    terse: bool,
    /// Print only these dotted keys, comma-separated (e.g. msg.log,topic).
    #[arg(long, value_name = "KEYS")]
    query: Option<String>,
    /// One compact JSON envelope per line, nothing else (for jq).
    #[arg(long)]
    json: bool,
    /// One line per message from TEMPLATE: envelope fields ({topic}, {msg.log}, {username|none}),
    /// {time} or {time:%H:%M:%S}, {title}, {subtitle}, {link}, {usernames}, {packages}, {json},
    /// {verdict}, {signer};
    /// \n, \t and \e are read as escapes.
    #[arg(long, value_name = "TEMPLATE", conflicts_with_all = ["json", "terse", "query", "pretty", "really_pretty"])]
    format: Option<String>,
    /// Exit after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Exit after this many seconds (exit code 124 if it fires).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Colour output: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    color: Color,
    /// Validate signatures (overrides validate_signatures).
    #[arg(long, overrides_with = "no_validate")]
    validate: bool,
    /// Do not validate signatures.
    #[arg(long)]
    no_validate: bool,
    /// With validation on, show invalid messages marked INVALID instead of dropping them.
    #[arg(long)]
    show_invalid: bool,
    /// Keep the position in FILE and, on start, catch up from the replay services.
    #[arg(long, value_name = "FILE")]
    state: Option<std::path::PathBuf>,
    /// First show history from the replay services: a duration (10m, 2h) or a time.
    #[arg(long, value_name = "DURATION|TIME")]
    since: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The non-empty items of a comma-separated flag, trimmed.
fn words(items: Vec<String>) -> Vec<String> {
    items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let mut loader = args.config.loader();
    if args.validate || args.no_validate {
        loader = loader.flag(
            if args.validate {
                "--validate"
            } else {
                "--no-validate"
            },
            "validate_signatures",
            args.validate,
        );
    }
    let config = match loader.load() {
        Ok(config) => config,
        Err(e) => return cli::fail("fedmsg-tail", cli::EXIT_USAGE, e),
    };
    let template = match args
        .format
        .as_deref()
        .map(|text| Template::parse(&template::unescape(text), Scope::Output))
        .transpose()
    {
        Ok(template) => template,
        Err(e) => {
            return cli::fail(
                "fedmsg-tail",
                cli::EXIT_USAGE,
                anyhow::anyhow!("--format: {e}"),
            )
        }
    };
    let format = if let Some(template) = template {
        Format::Template(template)
    } else if args.json {
        Format::Json
    } else if args.terse {
        Format::Terse
    } else if let Some(query) = &args.query {
        Format::Query(query.split(',').map(|k| k.trim().to_owned()).collect())
    } else if args.really_pretty {
        Format::ReallyPretty
    } else if args.pretty {
        Format::Pretty
    } else {
        Format::Default
    };
    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let (include, exclude) = match (args.topics.include(), args.topics.exclude()) {
        (Ok(include), Ok(exclude)) => (include, exclude),
        (Err(e), _) | (_, Err(e)) => return cli::fail("fedmsg-tail", cli::EXIT_USAGE, e),
    };
    let timeout = match args.timeout {
        Some(t) if !(t.is_finite() && t >= 0.0) => {
            eprintln!(
                "fedmsg-tail: error: --timeout must be a non-negative number of seconds, got {t}"
            );
            return ExitCode::from(cli::EXIT_USAGE);
        }
        other => other.map(Duration::from_secs_f64),
    };
    let since = match args
        .since
        .as_deref()
        .map(|t| tail::parse_since(t, chrono::Utc::now().timestamp() as f64))
        .transpose()
    {
        Ok(since) => since,
        Err(message) => return cli::fail("fedmsg-tail", cli::EXIT_USAGE, anyhow::anyhow!(message)),
    };
    let options = TailOptions {
        topics: args.topics.topic,
        include,
        exclude,
        users: words(args.users),
        packages: words(args.packages),
        format,
        color,
        count: args.count,
        timeout,
        show_invalid: args.show_invalid,
        state_file: args.state,
        since,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail("fedmsg-tail", cli::EXIT_FAILURE, e),
    };
    let stdout = std::io::stdout().lock();
    let result = runtime.block_on(tail::run(&config, &options, cli::shutdown_signal(), stdout));
    // Sockets and tasks go away with the runtime; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok((TailOutcome::TimedOut, _)) => ExitCode::from(cli::EXIT_TIMEOUT),
        Ok(_) => ExitCode::from(cli::EXIT_OK),
        Err(e) => {
            let e = anyhow::Error::new(e);
            if cli::is_broken_pipe(&e) {
                return ExitCode::from(cli::EXIT_OK);
            }
            cli::report("fedmsg-tail", &e);
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
