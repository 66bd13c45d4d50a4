//! Secrets never leave the process: connection strings are printed and logged with the
//! password replaced. (The MongoDB adapter redacts driver errors the same way.)

/// `mongodb://user:secret@host/…` → `mongodb://user:***@host/…`; strings without a
/// password are returned unchanged.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.to_string();
    };
    let rest = &uri[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The userinfo ends at the last '@' of the authority (passwords may contain '@'
    // only percent-encoded, but be lenient).
    let Some(at) = authority.rfind('@') else {
        return uri.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        None => return uri.to_string(),
    };
    format!("{}{}:***{}", &uri[..scheme_end], user, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::redact_uri;

    #[test]
    fn password_is_replaced_and_user_kept() {
        assert_eq!(
            redact_uri("mongodb://app:s3cr%40t@db1:27017,db2/?replicaSet=rs0"),
            "mongodb://app:***@db1:27017,db2/?replicaSet=rs0"
        );
        assert_eq!(
            redact_uri("mongodb+srv://u:p@cluster.example.net"),
            "mongodb+srv://u:***@cluster.example.net"
        );
    }

    #[test]
    fn uri_without_password_is_unchanged() {
        for uri in [
            "mongodb://127.0.0.1:27017/?replicaSet=rs0",
            "mongodb://user@host/",
            "not a uri",
        ] {
            assert_eq!(redact_uri(uri), uri);
        }
    }
}
