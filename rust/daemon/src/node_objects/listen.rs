//! Where a node's object server listens, and the address it tells the head.
//!
//! The node's `--bind` address if it has one (the address its head connection comes from,
//! e.g. 127.0.0.2 in a test of three nodes); else 127.0.0.1 under a loopback head (nothing
//! off the machine can be part of such a cluster), else every interface. The address
//! reported in `NodeRegister.object_address` must be one other machines can dial: for a
//! wildcard listener it is the local address of the route toward the head.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use flame_core::error::{FlameError, Result};
use tokio::net::TcpListener;

/// A bound listener and the address to report (`http(s)://ip:port`).
pub struct ObjectListener {
    pub(super) listener: TcpListener,
    pub address: String,
}

impl ObjectListener {
    /// Bind for a node of `head` (its address, normalized) with `bind` and `port` (0 = any
    /// free port); `tls` chooses the scheme of the reported address.
    ///
    /// # Errors
    /// `InvalidArgument` naming the address when it cannot be bound (in use, not local).
    pub async fn bind(head: &str, bind: Option<IpAddr>, port: u16, tls: bool) -> Result<Self> {
        let head_host = host_of(head);
        let ip = bind.unwrap_or_else(|| match &head_host {
            Some(h) if is_loopback(h) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        });
        let at = SocketAddr::new(ip, port);
        let listener = TcpListener::bind(at).await.map_err(|e| {
            FlameError::InvalidArgument(format!(
                "the object server cannot listen on {at} (object_port / --object-port): {e}"
            ))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| FlameError::Internal(format!("the object server's address: {e}")))?;
        let shown = if ip.is_unspecified() {
            route_toward(head, head_host.as_deref()).unwrap_or(ip)
        } else {
            ip
        };
        let host = match shown {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let scheme = if tls { "https" } else { "http" };
        Ok(Self {
            listener,
            address: format!("{scheme}://{host}:{}", local.port()),
        })
    }
}

fn host_of(head: &str) -> Option<String> {
    let uri: tonic::transport::Uri = head.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    Some(host.to_string())
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The local address this machine would use to reach the head (no packet is sent: a UDP
/// socket's `connect` only picks the route).
fn route_toward(head: &str, host: Option<&str>) -> Option<IpAddr> {
    let uri: tonic::transport::Uri = head.parse().ok()?;
    let port = uri.port_u16().unwrap_or(8080);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host?, port))
        .ok()?
        .next()?;
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_listens_on_its_bind_address_or_loopback_and_reports_a_dialable_one() {
        let l = ObjectListener::bind(
            "http://127.0.0.1:1",
            Some("127.0.0.2".parse().unwrap()),
            0,
            false,
        )
        .await
        .unwrap();
        assert!(l.address.starts_with("http://127.0.0.2:"), "{}", l.address);
        let l = ObjectListener::bind("https://localhost:1", None, 0, true)
            .await
            .unwrap();
        assert!(l.address.starts_with("https://127.0.0.1:"), "{}", l.address);
        // A wildcard listener reports the address of the route toward the head.
        let l = ObjectListener::bind(
            "http://127.0.0.3:1",
            Some("0.0.0.0".parse().unwrap()),
            0,
            false,
        )
        .await
        .unwrap();
        assert!(!l.address.contains("0.0.0.0"), "{}", l.address);
        let taken = l.listener.local_addr().unwrap().port();
        let err = ObjectListener::bind(
            "http://127.0.0.1:1",
            Some("0.0.0.0".parse().unwrap()),
            taken,
            false,
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("--object-port"), "{err}");
    }
}
