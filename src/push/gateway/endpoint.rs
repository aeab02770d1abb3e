//! Where the gateway listens, from `push.url`: `http://host[:port]/path`, plain HTTP only.

use hyper::Uri;
use hyper::header::HeaderValue;

use super::GatewayError;

/// The gateway's address and the path of its push endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Host name or IP address to connect to (an IPv6 address without its brackets).
    pub(crate) host: String,
    /// TCP port (80 when the URL names none).
    pub(crate) port: u16,
    /// The `Host` header: the URL's authority as written.
    pub(crate) authority: HeaderValue,
    /// The request target: path and query, origin-form.
    pub(crate) target: Uri,
}

impl Endpoint {
    /// Parses `url`; anything but `http://` with a host is refused.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, GatewayError> {
        let refuse = |problem: &'static str| GatewayError::Url {
            url: url.to_owned(),
            problem,
        };
        let uri: Uri = url.parse().map_err(|_| refuse("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(refuse(
                "only http:// is spoken (run TLS to the gateway through a local proxy)",
            ));
        }
        let authority = uri.authority().ok_or_else(|| refuse("no host"))?;
        if authority.as_str().contains('@') {
            return Err(refuse("user information is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(refuse("no host"));
        }
        let target: Uri = uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .parse()
            .map_err(|_| refuse("bad path"))?;
        let authority =
            HeaderValue::from_str(authority.as_str()).map_err(|_| refuse("bad host"))?;
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(80),
            authority,
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_path_are_taken_apart() {
        let endpoint = Endpoint::parse("http://gorush.internal:8088/api/push").unwrap();
        assert_eq!(endpoint.host, "gorush.internal");
        assert_eq!(endpoint.port, 8088);
        assert_eq!(endpoint.authority, "gorush.internal:8088");
        assert_eq!(endpoint.target, "/api/push");
    }

    #[test]
    fn the_port_defaults_to_80_and_the_path_to_the_root() {
        let endpoint = Endpoint::parse("http://127.0.0.1").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("127.0.0.1", 80));
        assert_eq!(endpoint.target, "/");
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets_and_queries_stay() {
        let endpoint = Endpoint::parse("http://[::1]:5000/_matrix/push/v1/notify?x=1").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 5000));
        assert_eq!(endpoint.authority, "[::1]:5000");
        assert_eq!(endpoint.target, "/_matrix/push/v1/notify?x=1");
    }

    #[test]
    fn other_schemes_and_missing_hosts_are_refused() {
        for url in [
            "https://gorush:8088/api/push",
            "gorush:8088/api/push",
            "/api/push",
            "http://user:secret@gorush/api/push",
            "",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
    }
}
