//! Whether a head serves TLS: config `tls = "auto" | "on" | "off"` and the `--tls` flag.
//!
//! A head reachable from the network always uses TLS (tokens and task payloads must not
//! cross it in clear text); plaintext is allowed only on a loopback address, where only
//! this machine's users can connect and the bearer token still keeps other users out.

use std::net::IpAddr;

use flame_core::FlameError;

/// The `tls` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS unless the head binds a loopback address.
    #[default]
    Auto,
    On,
    /// Plaintext; refused for a non-loopback bind.
    Off,
}

/// What a head's TLS looks like: the mode and extra names for its certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// Extra names (DNS or IP) for the head's certificate, beyond those of its bind
    /// address (e.g. a DNS name in front of the head): config `tls_names = [...]`.
    pub names: Vec<String>,
}

impl TlsMode {
    /// Parse the config value.
    ///
    /// # Errors
    /// `InvalidArgument` naming the setting and what it may be.
    pub fn parse(text: &str) -> Result<TlsMode, FlameError> {
        match text {
            "auto" => Ok(TlsMode::Auto),
            "on" => Ok(TlsMode::On),
            "off" => Ok(TlsMode::Off),
            other => Err(FlameError::InvalidArgument(format!(
                "tls = {other:?} is not a choice; use \"auto\", \"on\" or \"off\""
            ))),
        }
    }

    /// Whether a head bound to `host` serves TLS.
    ///
    /// # Errors
    /// `InvalidArgument` for `off` with a non-loopback `host`, naming the setting.
    pub fn enabled_for(self, host: &str) -> Result<bool, FlameError> {
        let loopback = is_loopback(host);
        match self {
            TlsMode::On => Ok(true),
            TlsMode::Auto => Ok(!loopback),
            TlsMode::Off if loopback => Ok(false),
            TlsMode::Off => Err(FlameError::InvalidArgument(format!(
                "a head that listens on {host} always uses TLS; remove tls = \"off\" (plaintext \
                 is only for loopback addresses such as 127.0.0.1)"
            ))),
        }
    }
}

/// Whether `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_tls_except_on_loopback_and_off_is_refused_off_loopback() {
        for host in ["127.0.0.1", "127.0.0.3", "::1", "[::1]", "localhost"] {
            assert!(!TlsMode::Auto.enabled_for(host).unwrap(), "{host}");
            assert!(!TlsMode::Off.enabled_for(host).unwrap(), "{host}");
            assert!(TlsMode::On.enabled_for(host).unwrap(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.1.2.3", "head.example.com"] {
            assert!(TlsMode::Auto.enabled_for(host).unwrap(), "{host}");
            let err = TlsMode::Off.enabled_for(host).unwrap_err().to_string();
            assert!(
                err.contains("always uses TLS") && err.contains("tls = \"off\""),
                "{err}"
            );
        }
        assert_eq!(TlsMode::parse("on").unwrap(), TlsMode::On);
        let err = TlsMode::parse("yes").unwrap_err().to_string();
        assert!(err.contains("tls = \"yes\""), "{err}");
    }
}
