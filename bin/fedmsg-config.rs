//! fedmsg-config: print, query or check the merged configuration.

use clap::{Parser, ValueEnum};
use fedmsg::cli::{self, ConfigArgs};
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
    Toml,
}

/// Print the merged configuration (as JSON, like fedmsg), one key of it, or check it.
#[derive(Parser)]
#[command(name = "fedmsg-config", version)]
struct Args {
    /// Print only this dotted key (e.g. endpoints.relay_outbound); exit 1 if missing.
    #[arg(long, value_name = "KEY")]
    query: Option<String>,
    /// Only validate the configuration: exit 0 if valid, 1 if not.
    #[arg(long)]
    check: bool,
    /// Output format of the whole configuration.
    #[arg(long, value_enum, default_value = "json")]
    format: OutputFormat,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => {
            return cli::fail(
                "fedmsg-config",
                if args.check {
                    cli::EXIT_FAILURE
                } else {
                    cli::EXIT_USAGE
                },
                e,
            )
        }
    };
    if args.check {
        let files: Vec<String> = config.sources.iter().map(ToString::to_string).collect();
        cli::print(&format!("configuration is valid ({})\n", files.join(", ")));
        return ExitCode::from(cli::EXIT_OK);
    }
    if let Some(key) = &args.query {
        return match config.query(key) {
            Some(value) => {
                cli::print(&fedmsg::config::render_query(value));
                ExitCode::from(cli::EXIT_OK)
            }
            None => {
                eprintln!("Key `{key}` does not exist in config");
                ExitCode::from(cli::EXIT_FAILURE)
            }
        };
    }
    let text = match args.format {
        OutputFormat::Json => fedmsg::config::render_json(&config.merged),
        OutputFormat::Toml => toml::to_string_pretty(&config.merged).unwrap_or_default(),
    };
    cli::print(&text);
    if !text.ends_with('\n') {
        cli::print("\n");
    }
    ExitCode::from(cli::EXIT_OK)
}
