//! Routing by URI path: `<prefix>/kms/xks/v1/health` and `<prefix>/kms/xks/v1/keys/<id>/<op>`.
//!
//! The prefix is everything before the first `/kms/xks/`; domain prefixes may not contain that
//! string, so the split is unambiguous. Whether a domain serves the prefix is decided by the
//! caller against the snapshot.

/// Marker that separates the domain prefix from the XKS API path.
const API_MARKER: &str = "/kms/xks/";

/// The four XKS operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    KeyMetadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
}

impl Operation {
    /// The operation's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Health => "GetHealthStatus",
            Self::KeyMetadata => "GetKeyMetadata",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
        }
    }
}

/// A parsed XKS path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The domain prefix, possibly empty.
    pub prefix: &'a str,
    /// The operation, or `None` when the rest of the path is not an XKS v1 API.
    pub target: Option<(Operation, Option<&'a str>)>,
}

/// Splits a path into prefix and operation; `None` when it has no `/kms/xks/` part at all.
pub fn parse(path: &str) -> Option<Route<'_>> {
    let start = path.find(API_MARKER)?;
    let prefix = &path[..start];
    let rest = &path[start + API_MARKER.len()..];
    let target = match rest.split('/').collect::<Vec<_>>()[..] {
        ["v1", "health"] => Some((Operation::Health, None)),
        ["v1", "keys", key_id, operation] if !key_id.is_empty() => match operation {
            "metadata" => Some((Operation::KeyMetadata, Some(key_id))),
            "encrypt" => Some((Operation::Encrypt, Some(key_id))),
            "decrypt" => Some((Operation::Decrypt, Some(key_id))),
            _ => None,
        },
        _ => None,
    };
    Some(Route { prefix, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_operation() {
        let cases = [
            ("/domains/a/kms/xks/v1/health", Operation::Health, None),
            (
                "/domains/a/kms/xks/v1/keys/k-1/metadata",
                Operation::KeyMetadata,
                Some("k-1"),
            ),
            (
                "/domains/a/kms/xks/v1/keys/k-1/encrypt",
                Operation::Encrypt,
                Some("k-1"),
            ),
            (
                "/domains/a/kms/xks/v1/keys/k-1/decrypt",
                Operation::Decrypt,
                Some("k-1"),
            ),
        ];
        for (path, operation, key_id) in cases {
            let route = parse(path).expect("XKS path");
            assert_eq!(route.prefix, "/domains/a");
            assert_eq!(route.target, Some((operation, key_id)), "{path}");
        }
    }

    #[test]
    fn empty_prefix_is_allowed() {
        let route = parse("/kms/xks/v1/health").expect("XKS path");
        assert_eq!(route.prefix, "");
        assert_eq!(route.target, Some((Operation::Health, None)));
    }

    #[test]
    fn unknown_api_paths_have_no_target() {
        for path in [
            "/p/kms/xks/v2/health",
            "/p/kms/xks/v1/healthz",
            "/p/kms/xks/v1/health/",
            "/p/kms/xks/v1/keys/k/sign",
            "/p/kms/xks/v1/keys//encrypt",
            "/p/kms/xks/v1/keys/k/encrypt/extra",
            "/p/kms/xks/v1",
        ] {
            assert_eq!(parse(path).map(|route| route.target), Some(None), "{path}");
        }
        assert_eq!(parse("/p/kms/xks"), None);
        assert_eq!(parse("/"), None);
    }
}
