//! Trusting a reply's sender (`mail.require_auth`): the `Authentication-Results` header of our
//! own receiving MTA (RFC 8601), read only from the topmost header with our authserv-id, and a
//! DKIM or DMARC pass aligned with the From domain.

/// What a reply must pass, per the receiving MTA's `Authentication-Results` (`mail.require_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthRequirement {
    #[default]
    None,
    /// A `dkim=pass` whose signing domain (`header.d`) is the From domain or a parent of it.
    Dkim,
    /// `dmarc=pass` (for the From domain when the result names it).
    Dmarc,
}

/// `mail.authserv_id` + `mail.require_auth`, checked once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundAuth {
    /// Lower case; only headers carrying it are trusted.
    pub authserv_id: Option<String>,
    pub require: AuthRequirement,
}

impl InboundAuth {
    /// Errors name the configuration key.
    pub fn from_settings(authserv_id: Option<&str>, require_auth: &str) -> anyhow::Result<Self> {
        let require = match require_auth.trim().to_lowercase().as_str() {
            "none" | "" => AuthRequirement::None,
            "dkim" => AuthRequirement::Dkim,
            "dmarc" => AuthRequirement::Dmarc,
            other => {
                anyhow::bail!("mail.require_auth: expected none, dkim or dmarc, got {other:?}")
            }
        };
        let authserv_id = authserv_id
            .map(|id| id.trim().to_lowercase())
            .filter(|id| !id.is_empty());
        if let Some(id) = &authserv_id
            && id.chars().any(|c| c.is_whitespace() || c == ';')
        {
            anyhow::bail!("mail.authserv_id: {id:?} is not an authserv-id (no spaces or ';')");
        }
        if require != AuthRequirement::None && authserv_id.is_none() {
            anyhow::bail!(
                "mail.require_auth = {require_auth:?} needs mail.authserv_id: the authserv-id of your receiving MTA, whose Authentication-Results are trusted"
            );
        }
        Ok(Self {
            authserv_id,
            require,
        })
    }

    /// `Ok(what passed)` or `Err(why not)`, from the `Authentication-Results` header values of a
    /// mail from `from` (bare address), top first. Only the TOPMOST header whose authserv-id is
    /// ours counts: our MTA prepends its own above everything the sender wrote, so any header
    /// with our id below it was written by someone else (RFC 8601 §5 asks MTAs to remove such
    /// copies, and not every one does).
    pub fn check(&self, results: &[String], from: &str) -> Result<String, String> {
        let Some(ours) = &self.authserv_id else {
            return Ok("no authentication required".into());
        };
        if self.require == AuthRequirement::None {
            return Ok("no authentication required".into());
        }
        let from_domain = from
            .rsplit_once('@')
            .map(|(_, d)| d.trim().trim_end_matches('.').to_lowercase())
            .unwrap_or_default();
        let trusted: Vec<Vec<AuthResult>> = results
            .iter()
            .filter_map(|h| parse_authentication_results(h))
            .filter(|(id, _)| id == ours)
            .map(|(_, r)| r)
            .take(1)
            .collect();
        if trusted.is_empty() {
            return Err(format!(
                "no Authentication-Results from {ours} (the trusted authserv-id): the sender could not be verified"
            ));
        }
        let method = match self.require {
            AuthRequirement::Dkim => "dkim",
            AuthRequirement::Dmarc => "dmarc",
            AuthRequirement::None => return Ok("no authentication required".into()),
        };
        let mut seen: Vec<String> = Vec::new();
        for r in trusted.iter().flatten().filter(|r| r.method == method) {
            let domain = match self.require {
                AuthRequirement::Dkim => r.prop("header.d").map(str::to_string).or_else(|| {
                    r.prop("header.i")
                        .and_then(|i| i.rsplit_once('@').map(|(_, d)| d.to_string()))
                }),
                _ => r.prop("header.from").map(str::to_string),
            }
            .map(|d| d.trim_end_matches('.').to_lowercase());
            let aligned = match (self.require, &domain) {
                (AuthRequirement::Dkim, Some(d)) => dkim_domain_aligned(d, &from_domain),
                (AuthRequirement::Dkim, None) => false,
                // A DMARC result is about the From domain by definition; one naming another
                // domain is about another mail.
                (_, Some(d)) => from_domain == *d,
                (_, None) => true,
            };
            if r.result == "pass" && aligned {
                return Ok(format!(
                    "{method}=pass{} by {ours}",
                    domain.map(|d| format!(" for {d}")).unwrap_or_default()
                ));
            }
            seen.push(format!(
                "{method}={}{}",
                r.result,
                domain.map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        }
        Err(if seen.is_empty() {
            format!("{ours} reported no {method} result for this mail")
        } else {
            format!(
                "{method} did not pass for {from_domain}: {ours} reported {}",
                seen.join(", ")
            )
        })
    }
}

/// A DKIM signature by `signer` (header.d) vouches for mail from `from_domain` when it is that
/// domain or a parent of it within the same registrable domain: `example.com` signs for
/// `mail.example.com`, but a public suffix (`com`, `co.uk`, `github.io`: anyone can register
/// below it) signs for nobody. The public suffix list is the `psl` crate's, compiled in.
fn dkim_domain_aligned(signer: &str, from_domain: &str) -> bool {
    if signer.is_empty() || from_domain.is_empty() {
        return false;
    }
    let parent = from_domain == signer || from_domain.ends_with(&format!(".{signer}"));
    // The registrable domain (public suffix + one label) of both must be the same, which also
    // refuses a signer that is itself a public suffix (it has none).
    let registrable = |d: &str| psl::domain_str(d).map(str::to_string);
    parent && registrable(signer).is_some_and(|r| Some(r) == registrable(from_domain))
}

/// One `method=result` of an Authentication-Results header, with its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthResult {
    method: String,
    result: String,
    /// `ptype.property` (lower case) → value.
    props: Vec<(String, String)>,
}

impl AuthResult {
    fn prop(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 8601: `authserv-id [version] ; method[/version]=result [reason=...] [ptype.prop=value]...
/// ; ...` with CFWS anywhere. The authserv-id (lower case) and the results; None when malformed.
fn parse_authentication_results(value: &str) -> Option<(String, Vec<AuthResult>)> {
    // Comments go first; quoted strings keep their content.
    let mut clean = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            if depth == 0 {
                clean.push(c);
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if depth == 0 => {
                quoted = !quoted;
                clean.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ';' if quoted => clean.push('\u{1}'),
            _ if depth == 0 => clean.push(if c.is_whitespace() { ' ' } else { c }),
            _ => {}
        }
    }
    let mut sections = clean.split(';');
    let id = sections.next()?.split_whitespace().next()?.to_lowercase();
    let mut results = Vec::new();
    for section in sections {
        let mut words = section.split_whitespace();
        let Some(first) = words.next() else { continue };
        let Some((method, result)) = first.split_once('=') else {
            continue;
        };
        let method = method
            .split('/')
            .next()
            .unwrap_or(method)
            .trim()
            .to_lowercase();
        let props = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_lowercase(), v.trim_matches('"').replace('\u{1}', ";")))
            .collect();
        results.push(AuthResult {
            method,
            result: result.trim().to_lowercase(),
            props,
        });
    }
    Some((id, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_results_are_trusted_only_from_our_authserv_id() {
        let dkim = InboundAuth::from_settings(Some("MX.Example.com"), "dkim").unwrap();
        let dmarc = InboundAuth::from_settings(Some("mx.example.com"), "dmarc").unwrap();
        let ours_pass = "mx.example.com; dkim=pass (2048-bit key) header.d=example.com \
            header.i=@example.com header.s=s1 header.b=abc; spf=pass smtp.mailfrom=example.com; \
            dmarc=pass (p=reject dis=none) header.from=example.com"
            .to_string();
        let forged = "evil.example; dkim=pass header.d=example.com; dmarc=pass".to_string();
        let ours_fail =
            "mx.example.com 1; dkim=fail reason=\"bad; sig\" header.d=example.com; dmarc=fail"
                .to_string();
        // From a subdomain of the signing domain: a parent domain's signature counts.
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@example.com")
                .is_ok()
        );
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@hq.example.com")
                .is_ok()
        );
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@example.org")
                .is_err()
        );
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@badexample.com")
                .is_err()
        );
        assert!(
            dmarc
                .check(std::slice::from_ref(&ours_pass), "mary@example.com")
                .is_ok()
        );
        // A signature by another domain (the sender's provider) is not the From domain's.
        let other = "mx.example.com; dkim=pass header.d=mailchimp.com".to_string();
        assert!(dkim.check(&[other], "mary@example.com").is_err());
        // Anyone can write an Authentication-Results header: only ours is read.
        let why = dkim
            .check(std::slice::from_ref(&forged), "mary@example.com")
            .unwrap_err();
        assert!(
            why.contains("no Authentication-Results from mx.example.com"),
            "{why}"
        );
        assert!(
            dmarc
                .check(&[forged.clone(), ours_fail.clone()], "mary@example.com")
                .is_err()
        );
        let why = dkim.check(&[ours_fail], "mary@example.com").unwrap_err();
        assert!(why.contains("dkim=fail"), "{why}");
        assert!(dkim.check(&[], "mary@example.com").is_err());
        // Nothing required: everything passes.
        let none = InboundAuth::from_settings(None, "none").unwrap();
        assert!(none.check(&[forged], "mary@example.com").is_ok());
        // Configuration errors name the key.
        let e = InboundAuth::from_settings(Some("mx"), "spf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mail.require_auth"), "{e}");
        let e = InboundAuth::from_settings(None, "dmarc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mail.authserv_id"), "{e}");
    }

    #[test]
    fn a_forged_authentication_results_below_ours_does_not_count() {
        let dkim = InboundAuth::from_settings(Some("mx.example.com"), "dkim").unwrap();
        let ours_fail = "mx.example.com; dkim=fail header.d=example.com".to_string();
        let forged_below = "mx.example.com; dkim=pass header.d=example.com".to_string();
        // Ours is on top (prepended by our MTA); the sender's forgery, with our id, below it.
        let why = dkim
            .check(
                &[ours_fail.clone(), forged_below.clone()],
                "mary@example.com",
            )
            .unwrap_err();
        assert!(why.contains("dkim=fail"), "{why}");
        assert!(
            dkim.check(&[forged_below, ours_fail], "mary@example.com")
                .is_ok()
        );
    }

    #[test]
    fn a_dkim_signature_by_a_public_suffix_vouches_for_nobody() {
        let dkim = InboundAuth::from_settings(Some("mx.example.com"), "dkim").unwrap();
        for (signer, from) in [
            ("com", "mary@x.com"),
            ("co.uk", "mary@x.co.uk"),
            ("github.io", "mary@x.github.io"),
            ("uk", "mary@x.co.uk"),
        ] {
            let header = format!("mx.example.com; dkim=pass header.d={signer}");
            assert!(
                dkim.check(&[header], from).is_err(),
                "header.d={signer} must not pass for {from}"
            );
        }
        for (signer, from) in [
            ("x.co.uk", "mary@hq.x.co.uk"),
            ("x.com", "mary@x.com"),
            ("x.github.io", "mary@x.github.io"),
        ] {
            let header = format!("mx.example.com; dkim=pass header.d={signer}");
            assert!(dkim.check(&[header], from).is_ok(), "{signer} for {from}");
        }
    }
}
