//! Endpoint addresses: `tcp://host:port` and `ipc:///path`, as written in the
//! `endpoints` config.

use std::fmt;
use std::str::FromStr;

/// Why an address is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// The scheme is neither `tcp://` nor `ipc://`.
    #[error("unsupported address {0:?}: expected tcp://HOST:PORT or ipc:///PATH")]
    Scheme(String),
    /// A `tcp://` address without a valid `:port`.
    #[error("bad port in address {0:?}: expected tcp://HOST:PORT with PORT in 0-65535")]
    Port(String),
    /// A `tcp://` address without a host.
    #[error("missing host in address {0:?}: expected tcp://HOST:PORT")]
    Host(String),
    /// An `ipc://` address without a path.
    #[error("missing path in address {0:?}: expected ipc:///PATH")]
    Path(String),
}

/// One ZeroMQ address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `tcp://host:port`; `host` is `*`, an IPv4 address, `[IPv6]` or a name.
    Tcp {
        /// The host as written (brackets kept for IPv6).
        host: String,
        /// The TCP port; 0 asks the system for a free one when binding.
        port: u16,
    },
    /// `ipc://path`, a Unix domain socket.
    Ipc(String),
}

impl Endpoint {
    /// The address to bind: `*` means every interface (`0.0.0.0`).
    pub fn bind_address(&self) -> String {
        match self {
            Endpoint::Tcp { host, port } if host == "*" => format!("tcp://0.0.0.0:{port}"),
            other => other.to_string(),
        }
    }

    /// The address to connect to: `*` means this machine (`127.0.0.1`), as
    /// fedmsg's hub does.
    pub fn connect_address(&self) -> String {
        match self {
            Endpoint::Tcp { host, port } if host == "*" => format!("tcp://127.0.0.1:{port}"),
            other => other.to_string(),
        }
    }

    /// The TCP port, if any.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Tcp { port, .. } => Some(*port),
            Endpoint::Ipc(_) => None,
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| EndpointError::Port(s.to_owned()))?;
            let port: u16 = port
                .parse()
                .map_err(|_| EndpointError::Port(s.to_owned()))?;
            if host.is_empty() || host.contains('/') {
                return Err(EndpointError::Host(s.to_owned()));
            }
            if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
                return Err(EndpointError::Host(s.to_owned()));
            }
            Ok(Endpoint::Tcp {
                host: host.to_owned(),
                port,
            })
        } else if let Some(path) = s.strip_prefix("ipc://") {
            if path.is_empty() {
                return Err(EndpointError::Path(s.to_owned()));
            }
            Ok(Endpoint::Ipc(path.to_owned()))
        } else {
            Err(EndpointError::Scheme(s.to_owned()))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Ipc(path) => write!(f, "ipc://{path}"),
        }
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for text in [
            "tcp://127.0.0.1:4001",
            "tcp://*:9940",
            "tcp://[::1]:5",
            "tcp://hub.example.org:9940",
            "ipc:///tmp/x.sock",
        ] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn star_binds_everywhere_and_connects_locally() {
        let e: Endpoint = "tcp://*:3000".parse().unwrap();
        assert_eq!(e.bind_address(), "tcp://0.0.0.0:3000");
        assert_eq!(e.connect_address(), "tcp://127.0.0.1:3000");
    }

    #[test]
    fn rejects_bad_addresses() {
        assert!(matches!(
            "udp://x:1".parse::<Endpoint>(),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            "tcp://x".parse::<Endpoint>(),
            Err(EndpointError::Port(_))
        ));
        assert!(matches!(
            "tcp://x:99999".parse::<Endpoint>(),
            Err(EndpointError::Port(_))
        ));
        assert!(matches!(
            "tcp://:5".parse::<Endpoint>(),
            Err(EndpointError::Host(_))
        ));
        assert!(matches!(
            "tcp://::1:5".parse::<Endpoint>(),
            Err(EndpointError::Host(_))
        ));
        assert!(matches!(
            "ipc://".parse::<Endpoint>(),
            Err(EndpointError::Path(_))
        ));
    }
}
