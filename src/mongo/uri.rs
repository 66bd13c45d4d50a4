//! Connection strings: building a `Client` from a URI and keeping the URI's password out
//! of every message we produce. The password is the only secret a MongoDB URI carries
//! (TLS keys live in files), so redaction means replacing it with `***`.

use std::time::Duration;

use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::core::error::{StoreError, StoreErrorKind};

/// How long the driver looks for a suitable server before an operation fails.
/// Long enough to ride out a replica-set election, short enough to surface an outage.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection-string schemes MongoDB understands.
const SCHEMES: [&str; 2] = ["mongodb+srv://", "mongodb://"];

/// `uri` with the password (if any) replaced by `***`; everything else unchanged.
/// `mongodb://user:pass@host/db` → `mongodb://user:***@host/db`.
pub fn redact_uri(uri: &str) -> String {
    redact_text(uri, &[])
}

/// `text` with every password removed: the passwords of `uris` wherever they appear
/// (also percent-decoded), and the password part of any MongoDB URI embedded in the
/// text. For error messages that may echo a connection string or part of it.
pub fn redact_text(text: &str, uris: &[&str]) -> String {
    let mut out = redact_embedded_uris(text);
    for uri in uris {
        if let Some(password) = password_of(uri) {
            if !password.is_empty() {
                out = out.replace(password, "***");
                let decoded = percent_decode(password);
                if !decoded.is_empty() && decoded != password {
                    out = out.replace(&decoded, "***");
                }
            }
        }
    }
    out
}

/// The raw (still percent-encoded) password of a MongoDB URI, if it has one.
fn password_of(uri: &str) -> Option<&str> {
    let scheme = SCHEMES.iter().find(|s| uri.starts_with(*s))?;
    let rest = &uri[scheme.len()..];
    let (userinfo, _) = split_userinfo(rest)?;
    userinfo.split_once(':').map(|(_, pass)| pass)
}

/// Splits `user:pass@hosts/...` at the `@` ending the user info, if there is one.
/// The user info ends at the last `@` before the path, since `@` in a password must be
/// percent-encoded but careless users do not always do so.
fn split_userinfo(rest: &str) -> Option<(&str, &str)> {
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((&rest[..at], &rest[at + 1..]))
}

/// Replaces the password of every `mongodb://` / `mongodb+srv://` URI found in `text`.
fn redact_embedded_uris(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = SCHEMES
            .iter()
            .filter_map(|s| rest.find(s).map(|i| (i, s.len())))
            .min_by_key(|&(i, len)| (i, usize::MAX - len));
        let Some((start, scheme_len)) = next else {
            out.push_str(rest);
            return out;
        };
        let body_start = start + scheme_len;
        out.push_str(&rest[..body_start]);
        let body = &rest[body_start..];
        // The URI ends at whitespace or a quote (as printed inside messages).
        let end = body
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ')'))
            .unwrap_or(body.len());
        let uri_body = &body[..end];
        match split_userinfo(uri_body) {
            Some((userinfo, hosts)) => {
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***@");
                    }
                    None => {
                        out.push_str(userinfo);
                        out.push('@');
                    }
                }
                out.push_str(hosts);
            }
            None => out.push_str(uri_body),
        }
        rest = &body[end..];
    }
}

/// Minimal percent-decoding for comparing a URI's password with text the driver
/// produced from the decoded value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Value of one hexadecimal digit.
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Parses `uri`, names the connection `app_name` (visible in the server's logs and
/// `currentOp`), bounds server selection to [`SERVER_SELECTION_TIMEOUT`] unless the URI
/// sets `serverSelectionTimeoutMS`, and builds a client. The driver connects
/// lazily and keeps its default retryable reads and writes.
pub async fn connect(uri: &str, app_name: &str) -> Result<Client, StoreError> {
    connect_sized(uri, app_name, None).await
}

/// [`connect`], with a connection pool of at least `pool` connections unless the URI
/// sets `maxPoolSize` (the driver's default is 10: a daemon of many pairs, each with its
/// own worker making several reads at once, needs more).
pub async fn connect_sized(
    uri: &str,
    app_name: &str,
    pool: Option<u32>,
) -> Result<Client, StoreError> {
    let mut options = ClientOptions::parse(uri).await.map_err(|e| {
        StoreError::new(
            StoreErrorKind::Fatal,
            format!(
                "invalid MongoDB URI {}: {}",
                redact_uri(uri),
                redact_text(&e.to_string(), &[uri])
            ),
        )
    })?;
    options.app_name = Some(app_name.to_string());
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
    }
    if let (None, Some(n)) = (options.max_pool_size, pool) {
        options.max_pool_size = Some(n.max(10));
    }
    Client::with_options(options).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Fatal,
            format!(
                "cannot create MongoDB client for {}: {}",
                redact_uri(uri),
                redact_text(&e.to_string(), &[uri])
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_replaced_in_plain_uri() {
        assert_eq!(
            redact_uri("mongodb://alice:s3cret@db1:27017,db2:27017/app?replicaSet=rs0"),
            "mongodb://alice:***@db1:27017,db2:27017/app?replicaSet=rs0"
        );
    }

    #[test]
    fn password_is_replaced_in_srv_uri() {
        assert_eq!(
            redact_uri("mongodb+srv://bob:p%40ss@cluster0.example.net/?retryWrites=true"),
            "mongodb+srv://bob:***@cluster0.example.net/?retryWrites=true"
        );
    }

    #[test]
    fn uri_without_password_is_unchanged() {
        for uri in [
            "mongodb://127.0.0.1:27017/?replicaSet=rs0",
            "mongodb://user@host/db",
            "mongodb+srv://cluster0.example.net",
        ] {
            assert_eq!(redact_uri(uri), uri);
        }
    }

    #[test]
    fn unencoded_at_sign_in_password_is_still_hidden() {
        assert_eq!(
            redact_uri("mongodb://u:pa@ss@host:1/db"),
            "mongodb://u:***@host:1/db"
        );
    }

    #[test]
    fn embedded_uris_and_known_passwords_are_removed_from_text() {
        let uri = "mongodb://admin:hunter%232@h:1/";
        let text =
            "connect to \"mongodb://admin:hunter%232@h:1/\" failed: auth hunter#2 rejected; \
                    also mongodb+srv://x:y@z";
        let red = redact_text(text, &[uri]);
        assert!(!red.contains("hunter"), "{red}");
        assert!(!red.contains(":y@"), "{red}");
        assert!(red.contains("mongodb://admin:***@h:1/"), "{red}");
        assert!(red.contains("mongodb+srv://x:***@z"), "{red}");
    }

    #[tokio::test]
    async fn connect_error_never_shows_the_password() {
        let uri = "mongodb://user:topsecret@host:notaport/";
        let err = connect(uri, "datasync-test").await.unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Fatal);
        assert!(!err.message.contains("topsecret"), "{}", err.message);
        assert!(err.message.contains("user:***@"), "{}", err.message);
    }
}
