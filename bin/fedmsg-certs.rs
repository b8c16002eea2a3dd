//! fedmsg-certs: a small CA for a deployment, so every host can sign.

use clap::{Parser, Subcommand, ValueEnum};
use fedmsg::cli::{self, ConfigArgs};
use fedmsg::crypto::certs::{Authority, KeyKind};
use std::path::PathBuf;
use std::process::ExitCode;

/// `println!` that ends quietly on a closed pipe instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        fedmsg::cli::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

#[derive(Clone, Copy, ValueEnum)]
enum Key {
    /// Ed25519 (the `ed25519` scheme; fedmsg-rs peers only).
    Ed25519,
    /// RSA (fedmsg's `x509` scheme; Python fedmsg peers understand it).
    Rsa,
}

/// Create a CA, issue and revoke certificates, keep the CRL current.
#[derive(Parser)]
#[command(name = "fedmsg-certs", version)]
struct Args {
    /// Directory of the CA and certificates (default: the config's ssldir).
    #[arg(long, value_name = "DIR", global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA (ca.crt, ca.key), an empty CRL and the index.
    InitCa {
        /// The CA's common name.
        #[arg(long, default_value = "fedmsg CA")]
        cn: String,
        /// Key type.
        #[arg(long, value_enum, default_value = "ed25519")]
        key: Key,
        /// RSA key size (2048 or more).
        #[arg(long, default_value = "2048", value_parser = clap::value_parser!(u16).range(2048..))]
        rsa_bits: u16,
        /// Days of validity.
        #[arg(long, default_value = "3650")]
        days: i64,
    },
    /// Issue a certificate for SERVICE on HOST, named SERVICE-HOST.
    Issue {
        /// The service (the program name part of the publisher name).
        service: String,
        /// The host's name (FQDN or short).
        host: String,
        /// Key type.
        #[arg(long, value_enum, default_value = "ed25519")]
        key: Key,
        /// RSA key size (2048 or more).
        #[arg(long, default_value = "2048", value_parser = clap::value_parser!(u16).range(2048..))]
        rsa_bits: u16,
        /// Days of validity.
        #[arg(long, default_value = "365")]
        days: i64,
    },
    /// Revoke a certificate (by name or hex serial) and re-sign the CRL.
    Revoke {
        /// The certificate's name (SERVICE-HOST) or serial.
        name: String,
        /// Days until the new CRL's nextUpdate.
        #[arg(long, default_value = "30")]
        crl_days: i64,
    },
    /// Re-sign the CRL (run it from cron well before nextUpdate).
    Crl {
        /// Days until nextUpdate.
        #[arg(long, default_value = "30")]
        days: i64,
    },
    /// List issued certificates.
    List,
}

fn kind(key: Key, bits: u16) -> KeyKind {
    match key {
        Key::Ed25519 => KeyKind::Ed25519,
        Key::Rsa => KeyKind::Rsa(bits.into()),
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let config = match args.config.load() {
        Ok(config) => config,
        Err(e) => return cli::fail("fedmsg-certs", cli::EXIT_USAGE, e),
    };
    let dir = args.dir.unwrap_or_else(|| config.ssldir.clone());
    let ca = Authority::at(&dir);
    let result = match args.command {
        Command::InitCa {
            cn,
            key,
            rsa_bits,
            days,
        } => ca.create(&cn, kind(key, rsa_bits), days).map(|()| {
            say!("created CA {cn:?} in {}", dir.display());
            say!("# for the configuration of every host:");
            say!("ca_cert_location = \"{}\"", ca.ca_path().display());
            say!("crl_location = \"{}\"", ca.crl_path().display());
        }),
        Command::Issue {
            service,
            host,
            key,
            rsa_bits,
            days,
        } => {
            let name = format!("{service}-{host}");
            ca.issue(&name, kind(key, rsa_bits), days)
                .map(|(crt, key_path)| {
                    let short = host.split('.').next().unwrap_or(&host);
                    say!("issued {} and {}", crt.display(), key_path.display());
                    say!("# under [certnames] in the configuration:");
                    say!("\"{service}.{short}\" = \"{name}\"");
                    if service == "shell" {
                        say!("# (fedmsg-logger on {short} signs as shell.{short})");
                    }
                })
        }
        Command::Revoke { name, crl_days } => ca.revoke(&name, crl_days).map(|serials| {
            say!(
                "revoked {name} (serial {}); {} updated",
                serials.join(", "),
                ca.crl_path().display()
            );
        }),
        Command::Crl { days } => ca.write_crl(days).map(|()| {
            say!(
                "wrote {} (next update in {days} days)",
                ca.crl_path().display()
            )
        }),
        Command::List => ca.index().map(|index| {
            for entry in index.issued {
                let state = entry
                    .revoked
                    .map(|t| format!("revoked {t}"))
                    .unwrap_or_else(|| format!("valid until {}", entry.not_after));
                say!(
                    "{:>4} {:<8} {} ({state})",
                    entry.serial,
                    entry.key,
                    entry.common_name
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::from(cli::EXIT_OK),
        Err(e) => cli::fail("fedmsg-certs", cli::EXIT_FAILURE, e),
    }
}
