//! fedmsg-verify: validate archived messages offline.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs};
use fedmsg::crypto::{Validator, ValidatorConfig};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

// glibc's allocator spends a fifth of the hot path handing memory between
// threads; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Check the signatures of archived messages (JSON lines, a JSON array, or a
/// datagrepper /raw page) and print one verdict per message. Exits 0 only if
/// every message is valid.
#[derive(Parser)]
#[command(name = "fedmsg-verify", version)]
struct Args {
    /// Files to read ("-" or none: standard input).
    files: Vec<PathBuf>,
    /// Validate as of this time (2023-06-01, 2023-06-01T12:00:00Z or epoch seconds).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The CA certificate (overrides ca_cert_location).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The CRL (overrides crl_location).
    #[arg(long, value_name = "FILE", conflicts_with = "no_crl")]
    crl: Option<PathBuf>,
    /// Do not check a CRL.
    #[arg(long)]
    no_crl: bool,
    /// Print only invalid messages and the totals.
    #[arg(long)]
    invalid_only: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => return cli::fail("fedmsg-verify", cli::EXIT_USAGE, e),
    };
    let at = match args
        .at
        .as_deref()
        .map(fedmsg::verify::parse_time)
        .transpose()
    {
        Ok(at) => at,
        Err(message) => {
            return cli::fail("fedmsg-verify", cli::EXIT_USAGE, anyhow::anyhow!(message))
        }
    };
    let mut settings = ValidatorConfig::from_config(&config);
    if let Some(ca) = args.ca {
        settings.ca_cert_location = ca;
    }
    if let Some(crl) = args.crl {
        settings.crl_location = Some(crl);
    }
    if args.no_crl {
        settings.crl_location = None;
    }
    let validator = Validator::new(settings);
    if let Err(why) = validator.store().status() {
        return cli::fail("fedmsg-verify", cli::EXIT_USAGE, anyhow::anyhow!(why));
    }
    let inputs: Vec<PathBuf> = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut total = fedmsg::verify::Tally::default();
    for input in inputs {
        let (name, bytes) = if input.as_os_str() == "-" {
            let mut bytes = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
                return cli::fail(
                    "fedmsg-verify",
                    cli::EXIT_USAGE,
                    anyhow::Error::new(e).context("cannot read standard input"),
                );
            }
            ("stdin".to_owned(), bytes)
        } else {
            match std::fs::read(&input) {
                Ok(bytes) => (input.display().to_string(), bytes),
                Err(e) => {
                    return cli::fail(
                        "fedmsg-verify",
                        cli::EXIT_USAGE,
                        anyhow::Error::new(e).context(format!("cannot read {}", input.display())),
                    )
                }
            }
        };
        let messages = match fedmsg::verify::read_messages(&bytes, &name) {
            Ok(messages) => messages,
            Err(e) => return cli::fail("fedmsg-verify", cli::EXIT_USAGE, e),
        };
        let result =
            fedmsg::verify::report(&validator, &name, messages, at, args.invalid_only, &mut out);
        match result {
            Ok(tally) => {
                total.valid += tally.valid;
                total.invalid += tally.invalid;
            }
            Err(e) => {
                let e = anyhow::Error::new(e);
                if cli::is_broken_pipe(&e) {
                    return ExitCode::from(cli::EXIT_OK);
                }
                return cli::fail("fedmsg-verify", cli::EXIT_FAILURE, e);
            }
        }
    }
    let _ = out.flush();
    eprintln!(
        "fedmsg-verify: {} valid, {} invalid",
        total.valid, total.invalid
    );
    if total.invalid == 0 {
        ExitCode::from(cli::EXIT_OK)
    } else {
        ExitCode::from(cli::EXIT_FAILURE)
    }
}
