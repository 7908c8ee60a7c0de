//! Secondary authorization: allow and deny rules on the XKS `requestMetadata`, set per domain
//! and per key.
//!
//! A policy is JSON:
//!
//! ```json
//! {"rules": [
//!   {"name": "only-prod", "effect": "allow", "accounts": ["111122223333"]},
//!   {"name": "no-admins", "effect": "deny", "principals": ["arn:aws:iam::*:role/Admin*"],
//!    "operations": ["Decrypt"]}
//! ]}
//! ```
//!
//! A rule matches when every condition it names matches; a condition lists values and matches
//! when the request's field equals one of them (`principals` also takes `*` and `?`
//! wildcards). A matching deny rule rejects the request. When the policy has allow rules, a
//! request must match one of them. The account is taken from `kmsKeyArn`, or from
//! `awsPrincipalArn` when the request carries no key ARN (GetKeyMetadata).

use serde::{Deserialize, Serialize};

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The rules, in the order written; order does not change the result.
    pub rules: Vec<Rule>,
}

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Name shown in logs and denials.
    pub name: String,
    /// `allow` or `deny`.
    pub effect: Effect,
    /// AWS account ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    /// Principal ARN patterns with `*` and `?` wildcards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
    /// `kmsOperation` values, such as `Decrypt` or `GenerateDataKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<String>>,
    /// `awsSourceVpc` values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_vpcs: Option<Vec<String>>,
    /// `awsSourceVpce` values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_vpces: Option<Vec<String>>,
    /// `kmsViaService` values, such as `ebs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_services: Option<Vec<String>>,
}

/// Effect of a matching rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Lets the request through.
    Allow,
    /// Rejects the request.
    Deny,
}

/// The request fields that rules look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    /// `kmsKeyArn`.
    pub kms_key_arn: Option<&'a str>,
    /// `awsPrincipalArn`.
    pub principal_arn: Option<&'a str>,
    /// `kmsOperation`.
    pub operation: Option<&'a str>,
    /// `awsSourceVpc`.
    pub source_vpc: Option<&'a str>,
    /// `awsSourceVpce`.
    pub source_vpce: Option<&'a str>,
    /// `kmsViaService`.
    pub via_service: Option<&'a str>,
}

impl RequestContext<'_> {
    /// The AWS account: the fifth field of `kmsKeyArn`, else of `awsPrincipalArn`.
    pub fn account(&self) -> Option<&str> {
        self.kms_key_arn
            .or(self.principal_arn)
            .and_then(|arn| arn.split(':').nth(4))
            .filter(|account| !account.is_empty())
    }
}

impl Policy {
    /// Parses and checks a policy.
    ///
    /// # Errors
    ///
    /// Returns a message naming the problem: invalid JSON, an unknown field, a rule without a
    /// name or with an empty condition list.
    pub fn parse(text: &str) -> Result<Self, String> {
        let policy: Self =
            serde_json::from_str(text).map_err(|error| format!("invalid policy: {error}"))?;
        for rule in &policy.rules {
            if rule.name.trim().is_empty() {
                return Err("invalid policy: every rule needs a name".to_owned());
            }
            let lists = [
                &rule.accounts,
                &rule.principals,
                &rule.operations,
                &rule.source_vpcs,
                &rule.source_vpces,
                &rule.via_services,
            ];
            if let Some(account) =
                rule.accounts.iter().flatten().find(|account| {
                    account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit())
                })
            {
                return Err(format!(
                    "invalid policy: rule {:?} names account {account:?}; AWS account ids are 12 digits",
                    rule.name
                ));
            }
            if let Some(operation) = rule.operations.iter().flatten().find(|operation| {
                !operation.starts_with(|c: char| c.is_ascii_uppercase())
                    || !operation.bytes().all(|b| b.is_ascii_alphabetic())
            }) {
                return Err(format!(
                    "invalid policy: rule {:?} names operation {operation:?}; KMS operations are written like Encrypt, Decrypt or GenerateDataKey",
                    rule.name
                ));
            }
            if lists
                .iter()
                .any(|list| list.as_ref().is_some_and(Vec::is_empty))
            {
                return Err(format!(
                    "invalid policy: rule {:?} has an empty condition list, which could never match",
                    rule.name
                ));
            }
        }
        Ok(policy)
    }

    /// Decides a request.
    ///
    /// # Errors
    ///
    /// Returns the reason for a denial, naming the deny rule that matched or saying that no
    /// allow rule matched.
    pub fn evaluate(&self, request: &RequestContext<'_>) -> Result<(), String> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.effect == Effect::Deny && rule.matches(request))
        {
            return Err(format!("denied by rule {}", rule.name));
        }
        let mut allow_rules = self
            .rules
            .iter()
            .filter(|rule| rule.effect == Effect::Allow)
            .peekable();
        if allow_rules.peek().is_none() {
            return Ok(());
        }
        if allow_rules.any(|rule| rule.matches(request)) {
            Ok(())
        } else {
            Err("no allow rule matches the request".to_owned())
        }
    }
}

impl Rule {
    fn matches(&self, request: &RequestContext<'_>) -> bool {
        let exact = |list: &Option<Vec<String>>, value: Option<&str>| match list {
            None => true,
            Some(list) => value.is_some_and(|value| list.iter().any(|item| item == value)),
        };
        let principal = match &self.principals {
            None => true,
            Some(patterns) => request
                .principal_arn
                .is_some_and(|arn| patterns.iter().any(|pattern| wildcard_match(pattern, arn))),
        };
        principal
            && exact(&self.accounts, request.account())
            && exact(&self.operations, request.operation)
            && exact(&self.source_vpcs, request.source_vpc)
            && exact(&self.source_vpces, request.source_vpce)
            && exact(&self.via_services, request.via_service)
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters and `?` one.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/k";

    fn request<'a>(principal: &'a str, operation: &'a str) -> RequestContext<'a> {
        RequestContext {
            kms_key_arn: Some(ARN),
            principal_arn: Some(principal),
            operation: Some(operation),
            ..RequestContext::default()
        }
    }

    #[test]
    fn wildcards_match_like_globs() {
        assert!(wildcard_match(
            "arn:aws:iam::*:role/Admin*",
            "arn:aws:iam::1:role/AdminX"
        ));
        assert!(wildcard_match("a?c", "abc"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(!wildcard_match("arn:*:role/Admin", "arn:x:role/Admins"));
    }

    #[test]
    fn deny_rule_wins_and_is_named() {
        let policy = Policy::parse(
            r#"{"rules":[{"name":"prod","effect":"allow","accounts":["111122223333"]},
                {"name":"no-admin-decrypt","effect":"deny","principals":["arn:aws:iam::*:role/Admin*"],"operations":["Decrypt"]}]}"#,
        )
        .expect("valid policy");
        let admin = "arn:aws:iam::111122223333:role/AdminRole";
        assert_eq!(
            policy.evaluate(&request(admin, "Decrypt")),
            Err("denied by rule no-admin-decrypt".to_owned())
        );
        assert_eq!(policy.evaluate(&request(admin, "Encrypt")), Ok(()));
    }

    #[test]
    fn allow_rules_require_a_match() {
        let policy = Policy::parse(
            r#"{"rules":[{"name":"other","effect":"allow","accounts":["999999999999"]}]}"#,
        )
        .expect("valid policy");
        let result = policy.evaluate(&request("arn:aws:iam::111122223333:user/u", "Encrypt"));
        assert_eq!(result, Err("no allow rule matches the request".to_owned()));
    }

    #[test]
    fn absent_field_does_not_match_condition() {
        let policy =
            Policy::parse(r#"{"rules":[{"name":"vpc","effect":"allow","sourceVpcs":["vpc-1"]}]}"#)
                .expect("valid policy");
        assert!(policy.evaluate(&request("p", "Encrypt")).is_err());
        let mut in_vpc = request("p", "Encrypt");
        in_vpc.source_vpc = Some("vpc-1");
        assert!(policy.evaluate(&in_vpc).is_ok());
    }

    #[test]
    fn account_falls_back_to_principal() {
        let context = RequestContext {
            principal_arn: Some("arn:aws:iam::444455556666:user/u"),
            ..RequestContext::default()
        };
        assert_eq!(context.account(), Some("444455556666"));
        assert_eq!(request("p", "x").account(), Some("111122223333"));
    }

    #[test]
    fn parse_rejects_bad_policies() {
        for text in [
            "not json",
            r#"{"rules":[{"name":"","effect":"allow"}]}"#,
            r#"{"rules":[{"name":"a","effect":"maybe"}]}"#,
            r#"{"rules":[{"name":"a","effect":"deny","accounts":[]}]}"#,
            r#"{"rules":[{"name":"a","effect":"deny","acounts":["1"]}]}"#,
            r#"{"rules":[{"name":"a","effect":"deny","accounts":["not-an-account"]}]}"#,
            r#"{"rules":[{"name":"a","effect":"deny","operations":["decrypt"]}]}"#,
        ] {
            assert!(Policy::parse(text).is_err(), "accepted: {text}");
        }
    }
}
