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
/// Longest method a request may name.
const MAX_METHOD: usize = 32;
/// Most headers a request may carry.
const MAX_HEADERS: usize = 100;
/// Longest header name plus value.
const MAX_HEADER: usize = 8 << 10;

/// An RFC 9110 token character (methods and header names are tokens).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Checks what the HTTP client writes raw onto the wire, before any
/// connection: the method and header names must be tokens and header
/// values visible text (tab and space allowed), so no CR, LF or NUL can
/// forge a header (`Host`, `Content-Length`, `Transfer-Encoding`) or a
/// second request.
fn check_request(request: &Request) -> Result<(), String> {
    let method = &request.method;
    if method.is_empty() || method.len() > MAX_METHOD || !method.bytes().all(is_tchar) {
        return Err(format!(
            "invalid HTTP method {:?}: a method is a token of letters and digits",
            method.escape_debug().to_string()
        ));
    }
    if request.headers.len() > MAX_HEADERS {
        return Err(format!("{} headers: at most {MAX_HEADERS}", request.headers.len()));
    }
    for (name, value) in &request.headers {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(format!("invalid header name {:?}", name.escape_debug().to_string()));
        }
        if name.len() + value.len() > MAX_HEADER {
            return Err(format!("header `{name}` is longer than {MAX_HEADER} bytes"));
        }
        if !value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
            return Err(format!("invalid value for header `{name}`: control characters (CR, LF, NUL) are not allowed"));
        }
    }
    Ok(())
}

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
            let embedded = |high: u16, low: u16| {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                Ipv4Addr::new(a, b, c, d)
            };
            // Forms that embed an IPv4 address, judged by that address:
            // NAT64 (64:ff9b::/96), IPv4-compatible (::a.b.c.d, deprecated)
            // and 6to4 (2002:AABB:CCDD::/48).
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || (segments[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified())
            {
                return classify_v4(embedded(segments[6], segments[7]));
            }
            if segments[0] == 0x2002 {
                return classify_v4(embedded(segments[1], segments[2]));
            }
            // Local-use NAT64 (64:ff9b:1::/48) translates to whatever the
            // network's translator chooses; site-local (fec0::/10, deprecated)
            // and discard-only (100::/64) never lead anywhere a plugin needs.
            if segments[..3] == [0x64, 0xff9b, 1]
                || (segments[0] & 0xffc0) == 0xfec0
                || segments[..4] == [0x100, 0, 0, 0]
            {
                return Some(("a local-use translation, site-local or discard address", true));
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
    } else if a >= 240 || (a == 192 && b == 0 && ip.octets()[2] == 0) || (a == 198 && (b & 0xfe) == 18) {
        // 240.0.0.0/4 is reserved; 192.0.0.0/24 is IETF protocol
        // assignments (192.0.0.192 among them: a cloud metadata address);
        // 198.18.0.0/15 is for benchmarking networks.
        Some(("a reserved, protocol-assignment or benchmarking address", true))
    } else if ip.is_loopback() {
        Some(("a loopback address", false))
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some(("a private address", false))
    } else {
        None
    }
}

/// One granted host: `name` (the scheme's default port: 80 for http, 443
/// for https), `name:port`, or `name:*` (any port). IPv6 literals go in
/// brackets: `[::1]:8080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostGrant<'a> {
    /// The host, without brackets.
    pub host: &'a str,
    pub port: Ports,
}

/// The ports a host grant opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ports {
    /// The URL scheme's default port only.
    Default,
    /// This one.
    One(u16),
    /// Any.
    Any,
}

impl Ports {
    fn admits(self, port: u16, default_port: u16) -> bool {
        match self {
            Self::Default => port == default_port,
            Self::One(one) => port == one,
            Self::Any => true,
        }
    }
}

impl<'a> HostGrant<'a> {
    /// Reads a grant (already lowercase). A port that does not parse leaves
    /// the whole text as the host, which then matches no URL's host.
    pub(crate) fn parse(granted: &'a str) -> Self {
        let (host, port) = match granted.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => match port.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => (granted, None),
                },
                None => (granted, None),
            },
            // A bare IPv6 address has colons of its own and no port.
            None if granted.matches(':').count() > 1 => (granted, None),
            None => match granted.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (granted, None),
            },
        };
        match port {
            None => Self { host, port: Ports::Default },
            Some("*") => Self { host, port: Ports::Any },
            Some(port) => match port.parse() {
                Ok(port) => Self { host, port: Ports::One(port) },
                Err(_) => Self { host: granted, port: Ports::Default },
            },
        }
    }
}

/// Whether `host` (lowercase, without brackets) may reach loopback or
/// private addresses under `private`.
pub(crate) fn private_allowed(private: &crate::grants::PrivateHosts, host: &str) -> bool {
    match private {
        crate::grants::PrivateHosts::Every(every) => *every,
        crate::grants::PrivateHosts::Only(hosts) => {
            hosts.iter().any(|h| HostGrant::parse(&h.to_ascii_lowercase()).host == host)
        }
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
    check_request(&request)?;
    let url = url::Url::parse(&request.url).map_err(|err| format!("bad URL `{}`: {err}", request.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("only http and https URLs are allowed, not `{}`", url.scheme()));
    }
    let host = url.host_str().ok_or_else(|| format!("no host in `{}`", request.url))?.to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or(80);
    let default_port = if url.scheme() == "https" { 443 } else { 80 };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let grants: Vec<HostGrant<'_>> = effective.http.iter().map(|granted| HostGrant::parse(granted)).collect();
    if !grants.iter().any(|grant| grant.host == bare) {
        return Err(format!("host `{host}` is not granted (granted: {})", effective.http.join(", ")));
    }
    if !grants.iter().any(|grant| grant.host == bare && grant.port.admits(port, default_port)) {
        return Err(format!(
            "port {port} of `{host}` is not granted (a bare host grants ports 80 and 443 only; \
             the operator may grant `{host}:{port}`, or `{host}:*`)"
        ));
    }
    // A request counts from here: lookups and refusals use the quota too.
    usage.requests += 1;
    // The system resolver has timeouts of its own, longer than a budget.
    let lookup = (bare.to_owned(), port);
    let addresses: Vec<SocketAddr> = crate::offload::until(deadline, &format!("resolving `{host}`"), move || {
        lookup.to_socket_addrs().map(Iterator::collect)
    })?
    .map_err(|err| format!("cannot resolve `{host}`: {err}"))?;
    if addresses.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    for address in &addresses {
        if let Some(class) = refused(address.ip(), private_allowed(&effective.http_private, bare)) {
            let hint = if classify(address.ip()).is_some_and(|(_, never)| !never) {
                " (the operator may allow it for this host with `http_private`)"
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
        .take(room.saturating_add(1))
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
    fn host_grants_name_their_ports() {
        let grant = |text| HostGrant::parse(text);
        assert_eq!(grant("api.example.com"), HostGrant { host: "api.example.com", port: Ports::Default });
        assert_eq!(grant("localhost:8080"), HostGrant { host: "localhost", port: Ports::One(8080) });
        assert_eq!(grant("localhost:*"), HostGrant { host: "localhost", port: Ports::Any });
        assert_eq!(grant("[::1]:6379"), HostGrant { host: "::1", port: Ports::One(6379) });
        assert_eq!(grant("[::1]"), HostGrant { host: "::1", port: Ports::Default });
        assert_eq!(grant("::1"), HostGrant { host: "::1", port: Ports::Default });
        assert_eq!(grant("a.com:http").host, "a.com:http", "an unreadable port matches nothing");
        assert_eq!(grant("[::1]junk").host, "[::1]junk");
        assert!(Ports::Default.admits(443, 443) && !Ports::Default.admits(6379, 80));
        assert!(Ports::One(8080).admits(8080, 80) && !Ports::One(8080).admits(80, 80));
        assert!(Ports::Any.admits(6379, 80));
    }

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
            // IPv4-compatible, 6to4 and local-use NAT64 forms of metadata and private addresses.
            "::169.254.169.254",
            "::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "64:ff9b:1::a9fe:a9fe",
            "fec0::1",
            "100::1",
            "192.0.0.192",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.254",
        ] {
            assert!(refused(ip(never), true).is_some(), "{never} must always be refused");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "::10.1.2.3",
            "2002:c0a8:0101::1",
        ] {
            assert!(refused(ip(private), false).is_some(), "{private} is private");
            assert!(refused(ip(private), true).is_none(), "{private} is allowed with http_private");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
            "198.20.0.1",
            "192.0.1.1",
        ] {
            assert!(refused(ip(public), false).is_none(), "{public} is public");
        }
    }

    /// The effective grants of a plugin allowed to reach `host` (private included).
    fn granted(host: String) -> Effective {
        Effective {
            http: vec![host],
            http_private: crate::grants::PrivateHosts::Every(true),
            http_requests: 10,
            http_bytes: 1 << 20,
            ..Effective::default()
        }
    }

    #[test]
    fn a_forged_method_or_header_is_refused_before_any_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let effective = granted(format!("127.0.0.1:{port}"));
        let request = |method: &str, headers: Vec<(String, String)>| Request {
            method: method.to_owned(),
            url: format!("http://127.0.0.1:{port}/"),
            headers,
            body: Vec::new(),
        };
        let header = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
        let smuggle = "GET / HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\nGET";
        for (request, needle) in [
            (request(smuggle, Vec::new()), "invalid HTTP method"),
            (request("GET /", Vec::new()), "invalid HTTP method"),
            (request("", Vec::new()), "invalid HTTP method"),
            (request("GET", header("X-A\r\nTransfer-Encoding", "chunked")), "invalid header name"),
            (request("GET", header("X-A", "v\r\nContent-Length: 5")), "control characters"),
            (request("GET", header("X-A", "v\0")), "control characters"),
            (request("GET", header("X-A", &"v".repeat(9000))), "longer than"),
            (request("GET", (0..101).map(|i| (format!("X-{i}"), "v".to_owned())).collect()), "at most 100"),
        ] {
            let deadline = Instant::now() + Duration::from_millis(300);
            let err = fetch(&effective, &mut Usage::default(), request, deadline).err().expect("refused");
            assert!(err.contains(needle), "{err} lacks {needle}");
            match listener.accept() {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("a connection was made for a refused request: {other:?}"),
            }
        }
        // Well-formed methods and headers pass the check (and would connect).
        let ok = Request {
            method: "PATCH".into(),
            url: String::new(),
            headers: header("X-Trace", "a\tb é"),
            body: Vec::new(),
        };
        assert!(check_request(&ok).is_ok());
    }
}
