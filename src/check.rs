//! `fedmsg-check`: tells monitoring whether the bus is alive, the way a
//! Nagios plugin does.
//!
//! It asks `/health` of every service in the configuration's `[metrics]`
//! table (or only those named), and with `endpoints` it also connects to
//! every address the configuration lists. The first line of the report is
//! the verdict, then one line per problem; the exit status is the Nagios
//! one:
//!
//! | status | exit | when |
//! |---|---|---|
//! | OK | 0 | every service healthy (and every endpoint reachable) |
//! | WARNING | 1 | a service degraded, or a publisher endpoint unreachable |
//! | CRITICAL | 2 | a service not answering (or not with a health report), or a relay endpoint unreachable |
//! | UNKNOWN | 3 | nothing to check, or the configuration is unusable |

use crate::config::Config;
use crate::endpoint::Endpoint;
use std::fmt;
use std::time::Duration;

/// A verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// All is well.
    Ok,
    /// Worth a look.
    Warning,
    /// Broken.
    Critical,
    /// Could not tell.
    Unknown,
}

impl Status {
    /// The Nagios exit status.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        })
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Services of `[metrics]` to ask (empty: all of them).
    pub services: Vec<String>,
    /// Also connect to every endpoint the configuration names.
    pub endpoints: bool,
    /// How long each question may take.
    pub timeout: Duration,
}

/// The outcome: a verdict and one line per problem.
#[derive(Debug, Clone)]
pub struct Report {
    /// The worst status found.
    pub status: Status,
    /// What was checked, for the first line.
    pub summary: String,
    /// One line per problem, each with its own status.
    pub problems: Vec<(Status, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "FEDMSG {} - {}", self.status, self.summary)?;
        for (status, line) in &self.problems {
            writeln!(f, "{status}: {line}")?;
        }
        Ok(())
    }
}

/// Runs the checks.
pub async fn run(config: &Config, options: &CheckOptions) -> Report {
    let mut problems = Vec::new();
    let mut services = Vec::new();
    for name in &options.services {
        match config.metrics.get(name) {
            Some(address) => services.push((name.clone(), *address)),
            None => problems.push((
                Status::Unknown,
                format!("{name}: no address for it under [metrics] in the configuration"),
            )),
        }
    }
    if options.services.is_empty() {
        services = config
            .metrics
            .iter()
            .map(|(name, address)| (name.clone(), *address))
            .collect();
    }
    let checks = services
        .iter()
        .map(|(name, address)| async move { service(name, *address, options.timeout).await });
    let mut healthy = 0;
    for problem in futures::future::join_all(checks).await {
        match problem {
            None => healthy += 1,
            Some(problem) => problems.push(problem),
        }
    }
    let mut reachable = 0;
    let mut addresses = Vec::new();
    if options.endpoints {
        for (name, list) in &config.endpoints {
            addresses.extend(list.iter().map(|e| (name.clone(), e.clone())));
        }
        addresses.extend(
            config
                .relay_inbound
                .iter()
                .map(|e| ("relay_inbound".to_owned(), e.clone())),
        );
        let checks = addresses
            .iter()
            .map(|(name, endpoint)| async move { reach(name, endpoint, options.timeout).await });
        for problem in futures::future::join_all(checks).await {
            match problem {
                None => reachable += 1,
                Some(problem) => problems.push(problem),
            }
        }
    }
    let mut summary = format!("{healthy} of {} services healthy", services.len());
    if options.endpoints {
        summary.push_str(&format!(
            ", {reachable} of {} endpoints reachable",
            addresses.len()
        ));
    }
    if services.is_empty() && !options.endpoints {
        problems.push((
            Status::Unknown,
            "nothing to check: the configuration has no [metrics] services (add them, or use --endpoints)".into(),
        ));
    }
    let status = problems.iter().map(|(s, _)| *s).max().unwrap_or(Status::Ok);
    Report {
        status,
        summary,
        problems,
    }
}

async fn service(
    name: &str,
    address: std::net::SocketAddr,
    timeout: Duration,
) -> Option<(Status, String)> {
    let (code, body) = match crate::metrics::get(address, "/health", timeout).await {
        Ok(answer) => answer,
        Err(error) => {
            return Some((
                Status::Critical,
                format!("{name}: no answer on {address} ({error})"),
            ))
        }
    };
    let health: serde_json::Value = match serde_json::from_str(&body) {
        Ok(value) => value,
        Err(_) => {
            return Some((
                Status::Critical,
                format!("{name}: {address} answered HTTP {code} without a health report"),
            ))
        }
    };
    let problems: Vec<&str> = health["problems"]
        .as_array()
        .map(|list| list.iter().filter_map(|p| p.as_str()).collect())
        .unwrap_or_default();
    let detail = if problems.is_empty() {
        String::new()
    } else {
        format!(": {}", problems.join("; "))
    };
    match health["status"].as_str() {
        Some("ok") if code == 200 => None,
        Some("degraded") => Some((Status::Warning, format!("{name}: degraded{detail}"))),
        Some(other) => Some((Status::Critical, format!("{name}: {other}{detail}"))),
        None => Some((
            Status::Critical,
            format!("{name}: {address} answered HTTP {code} without a status"),
        )),
    }
}

async fn reach(name: &str, endpoint: &Endpoint, timeout: Duration) -> Option<(Status, String)> {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let host = crate::transport::connect_host(host);
                tokio::net::TcpStream::connect((host, *port))
                    .await
                    .map(drop)
            }
            #[cfg(unix)]
            Endpoint::Ipc(path) => tokio::net::UnixStream::connect(path).await.map(drop),
            #[cfg(not(unix))]
            Endpoint::Ipc(_) => Err(std::io::Error::other("ipc:// needs Unix")),
        }
    };
    let error = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => return None,
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} ms", timeout.as_millis()),
    };
    // The relay is what every active publisher and most readers depend on;
    // a publisher may just not be running now.
    let status = if name == "relay_inbound" || name == "relay_outbound" {
        Status::Critical
    } else {
        Status::Warning
    };
    Some((
        status,
        format!("{name}: cannot connect to {endpoint} ({error})"),
    ))
}
