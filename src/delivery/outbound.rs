//! The `mail.outbound` URL (DESIGN §9), and the mail transport it names: `smtp://` and
//! `smtps://` ([`super::smtp`]) or `file:DIR` ([`super::file`]).
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};

use super::{Transport, file::FileTransport, smtp::SmtpTransport};

/// Builds the transport named by `mail.outbound`:
/// `smtp://[user:pass@]host[:port][?tls=required|opportunistic|none]` (STARTTLS; default
/// opportunistic; port 587 when omitted), `smtps://[user:pass@]host[:port]` (implicit TLS; port
/// 465 when omitted), `file:DIR` (created when missing). `ca_file`: extra PEM CA certificate(s)
/// trusted for SMTP. `pool_size`: SMTP connections kept open.
pub fn from_url(
    url: &str,
    ca_file: Option<&Path>,
    pool_size: u32,
) -> anyhow::Result<Arc<dyn Transport>> {
    match parse_outbound(url)? {
        Outbound::File { dir } => Ok(Arc::new(FileTransport::new(dir)?)),
        Outbound::Smtp(target) => Ok(Arc::new(SmtpTransport::new(target, ca_file, pool_size)?)),
    }
}

// ------------------------------------------------------------------------------------ the URL

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsMode {
    /// Plain SMTP, never TLS (a trusted local relay).
    None,
    /// STARTTLS when offered, plain otherwise.
    Opportunistic,
    /// STARTTLS or fail.
    Required,
    /// TLS from the first byte (smtps).
    Implicit,
}

/// A password that stays out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Password(pub(super) String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SmtpTarget {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: TlsMode,
    pub(super) credentials: Option<(String, Password)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outbound {
    Smtp(SmtpTarget),
    File { dir: PathBuf },
}

/// Parses `mail.outbound`. Errors never quote the URL (it may hold a password).
fn parse_outbound(url: &str) -> anyhow::Result<Outbound> {
    let url = url.trim();
    if let Some(rest) = url.strip_prefix("file:") {
        // `file:DIR`, and `file:///abs/dir` for those who write URLs.
        let dir = rest.strip_prefix("//").unwrap_or(rest);
        if dir.is_empty() {
            bail!("mail.outbound: file: needs a directory, e.g. file:mail/outbox");
        }
        return Ok(Outbound::File {
            dir: PathBuf::from(dir),
        });
    }
    let (implicit, rest) = if let Some(rest) = url.strip_prefix("smtps://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("smtp://") {
        (false, rest)
    } else {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        bail!(
            "mail.outbound: unknown scheme {scheme:?}: expected smtp://host:port, \
             smtps://host:port or file:DIR"
        );
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = match before_query.split_once('/') {
        Some((a, "")) => a,
        Some(_) => bail!("mail.outbound: an SMTP URL takes no path (only host:port and ?tls=...)"),
        None => before_query,
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => None,
        Some(u) => {
            let (user, pass) = u.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("mail.outbound: credentials must be user:password@")
            })?;
            let user = percent_decode(user).context("mail.outbound: the user name")?;
            let pass = percent_decode(pass).context("mail.outbound: the password")?;
            if user.is_empty() {
                bail!("mail.outbound: empty user name before ':' in the credentials");
            }
            Some((user, Password(pass)))
        }
    };
    let (host, port) = split_host_port(hostport)?;
    let port = match port {
        Some(p) => p,
        None if implicit => 465,
        None => 587,
    };
    let mut tls = if implicit {
        TlsMode::Implicit
    } else {
        TlsMode::Opportunistic
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("tls", value)) if !implicit => {
                tls = match value {
                    "required" => TlsMode::Required,
                    "opportunistic" => TlsMode::Opportunistic,
                    "none" => TlsMode::None,
                    other => bail!(
                        "mail.outbound: tls={other:?}: expected required, opportunistic or none"
                    ),
                }
            }
            Some(("tls", _)) => {
                bail!("mail.outbound: smtps:// is always TLS; ?tls= belongs to smtp:// URLs")
            }
            _ => bail!("mail.outbound: unknown parameter {pair:?} (only tls=... is known)"),
        }
    }
    Ok(Outbound::Smtp(SmtpTarget {
        host,
        port,
        tls,
        credentials,
    }))
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    Ok(percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .context("percent-decoded text is not UTF-8")?
        .into_owned())
}

/// `host:port`, `host`, `[v6]:port`, `[v6]`.
fn split_host_port(s: &str) -> anyhow::Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("mail.outbound: unclosed '[' in the host"))?;
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => bail!("mail.outbound: expected ':port' after ']'"),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        bail!("mail.outbound: no host in the SMTP URL");
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        bail!("mail.outbound: {host:?} is not a host name");
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => bail!("mail.outbound: port {p:?} is not a number from 1 to 65535"),
        },
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(url: &str) -> SmtpTarget {
        match parse_outbound(url).unwrap() {
            Outbound::Smtp(t) => t,
            other => panic!("{url}: expected SMTP, got {other:?}"),
        }
    }

    fn err(url: &str) -> String {
        format!("{:#}", parse_outbound(url).unwrap_err())
    }

    #[test]
    fn smtp_urls_default_to_opportunistic_starttls() {
        let t = smtp("smtp://mail.example.com:2525");
        assert_eq!(t.host, "mail.example.com");
        assert_eq!(t.port, 2525);
        assert_eq!(t.tls, TlsMode::Opportunistic);
        assert_eq!(t.credentials, None);
        assert_eq!(smtp("smtp://mail.example.com").port, 587);
        assert_eq!(smtp("smtp://127.0.0.1:25/").host, "127.0.0.1");
    }

    #[test]
    fn the_tls_parameter_picks_the_mode() {
        assert_eq!(smtp("smtp://h:25?tls=required").tls, TlsMode::Required);
        assert_eq!(
            smtp("smtp://h:25?tls=opportunistic").tls,
            TlsMode::Opportunistic
        );
        assert_eq!(smtp("smtp://h:25?tls=none").tls, TlsMode::None);
        assert_eq!(smtp("smtp://h:25/?tls=required").tls, TlsMode::Required);
    }

    #[test]
    fn smtps_is_implicit_tls() {
        let t = smtp("smtps://relay.example.com:4465");
        assert_eq!(t.tls, TlsMode::Implicit);
        assert_eq!(t.port, 4465);
        assert_eq!(smtp("smtps://relay.example.com").port, 465);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let t = smtp("smtps://approvals%40replyflow.test:p%40ss%3Aw%2Fo%25rd@127.0.0.1:4465");
        let (user, pass) = t.credentials.unwrap();
        assert_eq!(user, "approvals@replyflow.test");
        assert_eq!(pass.0, "p@ss:w/o%rd");
        // An unencoded '@' in the user name still works: the host follows the last '@'.
        let t = smtp("smtp://a@b.test:secret@h:25?tls=required");
        assert_eq!(t.credentials.unwrap().0, "a@b.test");
        assert_eq!(t.host, "h");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let t = smtp("smtp://[::1]:2525");
        assert_eq!((t.host.as_str(), t.port), ("::1", 2525));
        assert_eq!(smtp("smtps://[::1]").port, 465);
    }

    #[test]
    fn file_urls_name_a_directory() {
        assert_eq!(
            parse_outbound("file:mail/outbox").unwrap(),
            Outbound::File {
                dir: "mail/outbox".into()
            }
        );
        assert_eq!(
            parse_outbound("file:///var/spool/rf").unwrap(),
            Outbound::File {
                dir: "/var/spool/rf".into()
            }
        );
    }

    #[test]
    fn bad_urls_get_clear_errors() {
        assert!(
            err("http://x:25").contains("unknown scheme \"http\""),
            "{}",
            err("http://x:25")
        );
        assert!(err("mail.example.com:25").contains("unknown scheme"));
        assert!(err("file:").contains("needs a directory"));
        assert!(err("smtp://:25").contains("no host"));
        assert!(err("smtp://h:99999").contains("port \"99999\""));
        assert!(err("smtp://h:0").contains("port \"0\""));
        assert!(err("smtp://h:x").contains("port \"x\""));
        assert!(err("smtp://h:25?tls=always").contains("tls=\"always\""));
        assert!(err("smtp://h:25?pool=3").contains("unknown parameter \"pool=3\""));
        assert!(err("smtps://h:465?tls=required").contains("always TLS"));
        assert!(err("smtp://h:25/inbox").contains("no path"));
        assert!(err("smtp://user@h:25").contains("user:password@"));
        assert!(err("smtp://[::1:25").contains("unclosed"));
        assert!(err("smtp://u:%ff@h:25").contains("password"));
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        let e = err("smtp://user:hunter2@h:25?tls=always");
        assert!(!e.contains("hunter2"), "{e}");
        let t = from_url("smtp://user:hunter2@127.0.0.1:2525?tls=none", None, 2).unwrap();
        let debug = format!("{t:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("user"), "{debug}");
        assert!(format!("{:?}", smtp("smtp://u:hunter2@h:1")).contains("[redacted]"));
    }
}
