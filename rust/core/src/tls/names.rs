//! The names a head's server certificate must carry so that clients can check it whatever
//! address they use: the bind address (or every interface address for a wildcard bind), the
//! host name, and the loopback names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The names for the head's certificate when it binds `bind_host`: the bind host itself, or
/// every local interface address if it is a wildcard (`0.0.0.0`, `::`); then the machine's
/// host name, `localhost`, `127.0.0.1` and `::1`. No duplicates, bind host first.
pub fn server_names(bind_host: &str) -> Vec<String> {
    let host = bind_host.trim_start_matches('[').trim_end_matches(']');
    let mut names = Vec::new();
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => {
            names.extend(interface_addresses().iter().map(IpAddr::to_string))
        }
        _ if host.is_empty() => names.extend(interface_addresses().iter().map(IpAddr::to_string)),
        _ => names.push(host.to_string()),
    }
    if let Some(name) = host_name() {
        names.push(name);
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// The machine's host name, if it is a usable DNS name (a certificate cannot carry others).
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.to_string();
    rustls_pki_types::DnsName::try_from(name.as_str()).ok()?;
    Some(name)
}

/// Every address of every interface that is up, IPv4 and IPv6 (link-local IPv6 addresses are
/// left out: without a zone they cannot name this machine in a URL).
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as libc::c_uint == 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null and its family says which sockaddr it points to.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !link_local_v6 && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}
