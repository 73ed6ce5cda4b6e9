//! Outgoing HTTP for plugins, through the host: the only network a plugin
//! ever gets (WASI sockets stay denied).
//!
//! A request must name a granted host; every address that host resolves to
//! must be public (or, with `http_private`, loopback/private), and the
//! connection goes to exactly those vetted addresses, so a DNS answer that
//! changes between the check and the connect cannot redirect it. Redirects
//! are returned to the plugin, not followed (its next request is checked
//! again). Each call has a request-count and a byte quota, and no request
//! outlives the call's wall budget.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::grants::Effective;

/// Headers the host sets itself; a plugin's values for them are dropped.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection", "upgrade"];

/// A request as the plugin sent it.
pub(crate) struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The answer handed back to the plugin.
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What one call has used of its quotas.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    requests: u32,
    bytes: u64,
}

/// Why an address is refused: `Some` for addresses a grant can never
/// reach, or private ones when `private` is not granted.
pub(crate) fn refused(ip: IpAddr, private: bool) -> Option<&'static str> {
    let (class, never) = classify(ip)?;
    (never || !private).then_some(class)
}

/// `None` for public addresses; otherwise what the address is, and whether
/// no grant may reach it.
fn classify(ip: IpAddr) -> Option<(&'static str, bool)> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return classify_v4(Ipv4Addr::new(a, b, c, d));
            }
            if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
                Some(("a cloud metadata address", true))
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some(("an unspecified or multicast address", true))
            } else if v6.is_unicast_link_local() {
                Some(("a link-local address", true))
            } else if v6.is_loopback() {
                Some(("a loopback address", false))
            } else if v6.is_unique_local() {
                Some(("a private (unique local) address", false))
            } else {
                None
            }
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<(&'static str, bool)> {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() || ip == Ipv4Addr::new(100, 100, 100, 200) {
        // 169.254.169.254 and Alibaba's 100.100.100.200 are cloud metadata.
        Some(("a link-local or cloud metadata address", true))
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
        Some(("an unspecified, broadcast or multicast address", true))
    } else if ip.is_loopback() {
        Some(("a loopback address", false))
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some(("a private address", false))
    } else {
        None
    }
}

/// Sends `request` if `effective` allows it, within `deadline`.
pub(crate) fn fetch(
    effective: &Effective,
    usage: &mut Usage,
    request: Request,
    deadline: Instant,
) -> Result<Response, String> {
    if effective.http.is_empty() {
        return Err(format!("this plugin has no `http` grant (it asked for {})", request.url));
    }
    if usage.requests >= effective.http_requests {
        return Err(format!("http request quota exhausted: {} requests per call", effective.http_requests));
    }
    let url = url::Url::parse(&request.url).map_err(|err| format!("bad URL `{}`: {err}", request.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("only http and https URLs are allowed, not `{}`", url.scheme()));
    }
    let host = url.host_str().ok_or_else(|| format!("no host in `{}`", request.url))?.to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let allowed = effective
        .http
        .iter()
        .any(|granted| *granted == host || *granted == bare || *granted == format!("{host}:{port}"));
    if !allowed {
        return Err(format!("host `{host}` is not granted (granted: {})", effective.http.join(", ")));
    }
    let addresses: Vec<SocketAddr> =
        (bare, port).to_socket_addrs().map_err(|err| format!("cannot resolve `{host}`: {err}"))?.collect();
    if addresses.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    for address in &addresses {
        if let Some(class) = refused(address.ip(), effective.http_private) {
            let hint = if classify(address.ip()).is_some_and(|(_, never)| !never) {
                " (the operator may allow it with `http_private`)"
            } else {
                ""
            };
            return Err(format!("`{host}` resolves to {}, {class}: refused{hint}", address.ip()));
        }
    }
    let sent = request.body.len() as u64;
    if usage.bytes + sent > effective.http_bytes {
        return Err(quota(effective, usage.bytes + sent));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining < Duration::from_millis(1) {
        return Err("the call's wall budget is spent".to_owned());
    }
    usage.requests += 1;
    usage.bytes += sent;
    let agent = ureq::AgentBuilder::new()
        .resolver(Pinned(addresses))
        .redirects(0)
        .timeout(remaining)
        .user_agent(concat!("engram-plugin-host/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut outgoing = agent.request_url(&request.method, &url);
    for (name, value) in &request.headers {
        if !RESERVED_HEADERS.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            outgoing = outgoing.set(name, value);
        }
    }
    let answer = if request.body.is_empty() { outgoing.call() } else { outgoing.send_bytes(&request.body) };
    let response = match answer {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(err)) => return Err(format!("request to `{host}` failed: {err}")),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| response.header(&name).map(|value| (name.clone(), value.to_owned())))
        .collect();
    let room = effective.http_bytes - usage.bytes;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(room + 1)
        .read_to_end(&mut body)
        .map_err(|err| format!("reading the answer from `{host}` failed: {err}"))?;
    usage.bytes += body.len() as u64;
    if body.len() as u64 > room {
        return Err(quota(effective, usage.bytes));
    }
    Ok(Response { status, headers, body })
}

fn quota(effective: &Effective, used: u64) -> String {
    format!("http byte quota exceeded: limit {} bytes per call, needed at least {used}", effective.http_bytes)
}

/// Connects only to the addresses vetted above.
struct Pinned(Vec<SocketAddr>);

impl ureq::Resolver for Pinned {
    fn resolve(&self, _netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for never in [
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(ip(never), true).is_some(), "{never} must always be refused");
        }
        for private in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "::1", "fd12::1"] {
            assert!(refused(ip(private), false).is_some(), "{private} is private");
            assert!(refused(ip(private), true).is_none(), "{private} is allowed with http_private");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(refused(ip(public), false).is_none(), "{public} is public");
        }
    }
}
