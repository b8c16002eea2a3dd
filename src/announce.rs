//! `fedmsg-announce`: one announcement from standard input, as fedmsg's
//! command sends it: every line stripped, joined with newlines, published on
//! `<prefix>.<env>.announce.announcement` as
//! `{"message": TEXT, "link": URL or null}` through `fedmsg-relay`.
//!
//! Deployments usually let only a few hosts announce, with a routing policy
//! on `...announce.announcement` (certificates with the `announce` prefix).

use crate::config::Config;
use crate::logger::LoggerError;
use crate::publish::Publisher;
use serde_json::json;
use std::io::Read;

/// The announcement's text: each input line stripped, joined with `\n`.
pub fn text_of(input: &str) -> String {
    input.lines().map(str::trim).collect::<Vec<_>>().join("\n")
}

/// Reads `input` to its end and publishes it as one announcement.
pub async fn run(config: &Config, input: impl Read, link: Option<&str>) -> Result<(), LoggerError> {
    let mut text = String::new();
    let mut input = input;
    input.read_to_string(&mut text)?;
    let message = json!({ "message": text_of(&text), "link": link });
    let publisher = Publisher::connect(config).await?;
    publisher
        .publish("announcement", "announce", &message)
        .await?;
    publisher.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stripped_and_joined() {
        assert_eq!(
            text_of("  Outage tonight \n\n\tdetails\n"),
            "Outage tonight\n\ndetails"
        );
        assert_eq!(text_of(""), "");
    }
}
