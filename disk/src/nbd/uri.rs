//! NBD URIs, as in the NBD project's `doc/uri.md`: `nbd://host[:port]/export` and
//! `nbd+unix:///export?socket=PATH`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The IANA-assigned NBD port (NBD protocol, "Newstyle negotiation").
pub const DEFAULT_PORT: u16 = 10809;
/// Longest string the protocol allows, export names included (NBD protocol, "Conventions").
pub const MAX_STRING_LEN: usize = 4096;

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdTransport {
    /// TCP to `host:port`. IPv6 literals are stored without brackets.
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix-domain socket.
    Unix {
        /// Path of the socket.
        socket: PathBuf,
    },
}

/// A parsed `nbd://` or `nbd+unix://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    transport: NbdTransport,
    export: String,
}

/// Whether `s` looks like an NBD URI (any `nbd*://` scheme), so callers can route it here.
#[must_use]
pub fn is_nbd_uri(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().starts_with("nbd"))
}

impl NbdUri {
    /// Parses an NBD URI.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for TLS (`nbds://`) and vsock URIs; [`Error::Usage`] for anything
    /// malformed, with the reason.
    pub fn parse(s: &str) -> Result<Self> {
        let usage = |why: &str| Error::Usage(format!("invalid nbd uri {s:?}: {why}"));
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| usage("expected scheme://"))?;
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "nbd" | "nbd+unix" => {}
            "nbds" | "nbds+unix" | "nbds+vsock" => {
                return Err(Error::unsupported(
                    "nbd uri",
                    format!("{scheme}:// (tls is not supported yet)"),
                ));
            }
            "nbd+vsock" => {
                return Err(Error::unsupported("nbd uri", "nbd+vsock:// (vsock)"));
            }
            _ => return Err(usage("scheme must be nbd or nbd+unix")),
        }
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let export = percent_decode(path.strip_prefix('/').unwrap_or(path))
            .ok_or_else(|| usage("bad percent-encoding in export name"))?;
        let export =
            String::from_utf8(export).map_err(|_| usage("export name is not valid utf-8"))?;
        if export.len() > MAX_STRING_LEN {
            return Err(usage(&format!(
                "export name is {} bytes, at most {MAX_STRING_LEN} allowed",
                export.len()
            )));
        }
        if export.contains('\0') {
            return Err(usage("export name contains nul"));
        }

        let transport = if scheme == "nbd" {
            if query.is_some_and(|q| !q.is_empty()) {
                return Err(usage("query parameters are not supported for nbd://"));
            }
            let (host, port) = parse_authority(authority).map_err(|why| usage(&why))?;
            NbdTransport::Tcp { host, port }
        } else {
            if !authority.is_empty() {
                return Err(usage(
                    "nbd+unix:// takes no host (use nbd+unix:///export?socket=PATH)",
                ));
            }
            let mut socket = None;
            for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "socket" => {
                        let v = percent_decode(v)
                            .ok_or_else(|| usage("bad percent-encoding in socket path"))?;
                        socket = Some(PathBuf::from(std::ffi::OsString::from(
                            String::from_utf8(v).map_err(|_| usage("socket path is not utf-8"))?,
                        )));
                    }
                    other => return Err(usage(&format!("unknown query parameter {other:?}"))),
                }
            }
            let socket = socket
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| usage("nbd+unix:// needs ?socket=PATH"))?;
            NbdTransport::Unix { socket }
        };
        Ok(Self { transport, export })
    }

    /// A URI for a Unix socket (mostly for tests and tools that start their own server).
    #[must_use]
    pub fn unix(socket: impl AsRef<Path>, export: impl Into<String>) -> Self {
        Self {
            transport: NbdTransport::Unix {
                socket: socket.as_ref().to_path_buf(),
            },
            export: export.into(),
        }
    }

    /// How to reach the server.
    #[must_use]
    pub fn transport(&self) -> &NbdTransport {
        &self.transport
    }

    /// The export name (may be empty: the server's default export).
    #[must_use]
    pub fn export(&self) -> &str {
        &self.export
    }
}

impl fmt::Display for NbdUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            NbdTransport::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}/{}", self.export)
            }
            NbdTransport::Tcp { host, port } => write!(f, "nbd://{host}:{port}/{}", self.export),
            NbdTransport::Unix { socket } => {
                write!(f, "nbd+unix:///{}?socket={}", self.export, socket.display())
            }
        }
    }
}

fn parse_authority(authority: &str) -> std::result::Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("user information is not supported".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("unterminated [ in ipv6 address")?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("junk after ipv6 address")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return Err("ipv6 addresses must be in brackets".into()),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("port {p:?} not in 1..=65535")),
            Ok(n) => n,
        },
    };
    Ok((host.to_string(), port))
}

/// Decodes `%XX` escapes; `None` if an escape is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdUri {
        NbdUri {
            transport: NbdTransport::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    #[test]
    fn parses_tcp_forms() {
        assert_eq!(
            NbdUri::parse("nbd://example.com").unwrap(),
            tcp("example.com", 10809, "")
        );
        assert_eq!(
            NbdUri::parse("nbd://example.com/").unwrap(),
            tcp("example.com", 10809, "")
        );
        assert_eq!(
            NbdUri::parse("nbd://h:1234/disk").unwrap(),
            tcp("h", 1234, "disk")
        );
        assert_eq!(
            NbdUri::parse("NBD://h/a%20b/c").unwrap(),
            tcp("h", 10809, "a b/c")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]:99/x").unwrap(),
            tcp("::1", 99, "x")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]/x").unwrap(),
            tcp("::1", 10809, "x")
        );
        assert_eq!(NbdUri::parse("nbd://h:/x").unwrap(), tcp("h", 10809, "x"));
        let u = NbdUri::parse("nbd://[::1]:99/x").unwrap();
        assert_eq!(u.to_string(), "nbd://[::1]:99/x");
        assert_eq!(u.export(), "x");
    }

    #[test]
    fn parses_unix_forms() {
        let u = NbdUri::parse("nbd+unix:///exp?socket=/tmp/s%20ock").unwrap();
        assert_eq!(u, NbdUri::unix("/tmp/s ock", "exp"));
        assert_eq!(
            u.transport(),
            &NbdTransport::Unix {
                socket: "/tmp/s ock".into()
            }
        );
        let u = NbdUri::parse("nbd+unix://?socket=/s").unwrap();
        assert_eq!(u, NbdUri::unix("/s", ""));
        assert_eq!(u.to_string(), "nbd+unix:///?socket=/s");
    }

    fn usage(s: &str) -> String {
        match NbdUri::parse(s) {
            Err(Error::Usage(m)) => m,
            other => panic!("expected usage error for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn rejects_each_malformed_part() {
        assert!(usage("nbd:/h").contains("expected scheme://"));
        assert!(usage("http://h/").contains("scheme must be nbd or nbd+unix"));
        assert!(usage("nbd:///x").contains("missing host"));
        assert!(usage("nbd://h:0/").contains("port \"0\" not in 1..=65535"));
        assert!(usage("nbd://h:70000/").contains("port \"70000\" not in 1..=65535"));
        assert!(usage("nbd://::1/").contains("ipv6 addresses must be in brackets"));
        assert!(usage("nbd://[::1/").contains("unterminated"));
        assert!(usage("nbd://[::1]x/").contains("junk after ipv6 address"));
        assert!(usage("nbd://u@h/").contains("user information"));
        assert!(usage("nbd://h/?tls=on").contains("query parameters are not supported"));
        assert!(usage("nbd://h/%zz").contains("bad percent-encoding"));
        assert!(usage("nbd://h/%ff").contains("not valid utf-8"));
        assert!(usage("nbd://h/a%00").contains("contains nul"));
        let long = format!("nbd://h/{}", "a".repeat(4097));
        assert!(usage(&long).contains("4097 bytes, at most 4096 allowed"));
        assert!(usage("nbd+unix://h/x?socket=/s").contains("takes no host"));
        assert!(usage("nbd+unix:///x").contains("needs ?socket=PATH"));
        assert!(usage("nbd+unix:///x?socket=").contains("needs ?socket=PATH"));
        assert!(usage("nbd+unix:///x?socket=/s&foo=1").contains("unknown query parameter \"foo\""));
    }

    #[test]
    fn tls_and_vsock_are_unsupported() {
        for s in ["nbds://h/x", "nbds+unix:///x?socket=/s", "nbd+vsock://1/x"] {
            let e = NbdUri::parse(s).unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{s}: {e:?}");
        }
        assert_eq!(
            NbdUri::parse("nbds://h/x").unwrap_err().to_string(),
            "unsupported nbd uri: nbds:// (tls is not supported yet)"
        );
    }

    #[test]
    fn recognises_nbd_uris() {
        assert!(is_nbd_uri("nbd://h/x"));
        assert!(is_nbd_uri("NBDS+unix:///x"));
        assert!(!is_nbd_uri("/var/lib/disk.img"));
        assert!(!is_nbd_uri("file:///x"));
    }
}
