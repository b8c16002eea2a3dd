//! fedmsg-check: a monitoring check. Asks the `/health` of every service in
//! the configuration's `[metrics]` (and, with `--endpoints`, connects to
//! every endpoint), prints the verdict and one line per problem, and exits
//! 0/1/2/3 (OK, WARNING, CRITICAL, UNKNOWN) as a Nagios plugin does.

use clap::Parser;
use fedmsg::check::{CheckOptions, Status};
use fedmsg::cli::{self, ConfigArgs};
use std::process::ExitCode;
use std::time::Duration;

/// Check that the bus's services are alive (Nagios plugin conventions).
#[derive(Parser)]
#[command(name = "fedmsg-check", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this service of `[metrics]` (repeatable; default: all).
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// Also connect to every endpoint the configuration names.
    #[arg(long)]
    endpoints: bool,
    /// Seconds each question may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    timeout: f64,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let config = match args.config.load() {
        Ok(config) => config,
        Err(error) => {
            // UNKNOWN, as monitoring expects of a check that cannot run.
            cli::print(&format!("FEDMSG UNKNOWN - {error}\n"));
            return ExitCode::from(Status::Unknown.exit_code());
        }
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        cli::print("FEDMSG UNKNOWN - --timeout must be a positive number of seconds\n");
        return ExitCode::from(Status::Unknown.exit_code());
    }
    let options = CheckOptions {
        services: args.services,
        endpoints: args.endpoints,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            cli::print(&format!("FEDMSG UNKNOWN - cannot start: {error}\n"));
            return ExitCode::from(Status::Unknown.exit_code());
        }
    };
    let report = runtime.block_on(fedmsg::check::run(&config, &options));
    cli::print(&report.to_string());
    ExitCode::from(report.status.exit_code())
}
