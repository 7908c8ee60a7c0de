//! Files and commands for the AWS side of Keyhold: the proxy configuration file for the AWS KMS
//! console, the `aws kms create-custom-key-store` and `aws kms create-key` commands, a Terraform
//! `aws_kms_key` resource and a CloudFormation template for VPC endpoint service connectivity.
//!
//! Every function here is pure: it builds text and JSON and performs no I/O. Each value is
//! quoted for the language it lands in (POSIX shell, HCL, YAML), so that a hostile value such
//! as a key description stays inside its string whether or not it passed validation.
//! Validation is a separate step ([`validate_key_store`], [`validate_proxy_endpoint`]) so that
//! callers can report bad values before they show any output. Output for values that fail
//! validation is still quoted safely.
//!
//! The AWS rules used here come from the AWS KMS API Reference (CreateCustomKeyStore,
//! CreateKey), the AWS KMS Developer Guide ("Create an external key store", "Configure VPC
//! endpoint service connectivity") and the `aws_kms_key` page of the Terraform AWS provider.

use std::fmt;
use std::fmt::Write as _;

use serde_json::{Value, json};

use quote::{AwsCliCommand, hcl_quote, yaml_quote};

mod quote;

/// Stand-in for the secret access key when the caller no longer has it, because Keyhold shows
/// a secret only once, when `keyhold credential create` creates the credential.
pub const SECRET_PLACEHOLDER: &str = "<secret access key shown once by keyhold credential create>";

/// Stand-in for the VPC endpoint service name, which AWS assigns when the CloudFormation stack
/// creates the service. The stack's `EndpointServiceName` output contains the real name.
pub const ENDPOINT_SERVICE_NAME_PLACEHOLDER: &str =
    "<EndpointServiceName output of the CloudFormation stack>";

/// The only port AWS KMS connects to, for both connectivity options.
const KMS_PORT: u16 = 443;

/// Longest `CustomKeyStoreName` AWS KMS accepts, in characters.
const MAX_NAME_LEN: usize = 256;

/// Number of characters after `cks-` in the key store ids AWS KMS issues.
const CUSTOM_KEY_STORE_ID_SUFFIX_LEN: usize = 17;

/// Length limits AWS KMS sets on `XksProxyUriEndpoint` and `XksProxyUriPath`, in characters.
const URI_LEN_RANGE: std::ops::RangeInclusive<usize> = 10..=128;

/// CloudFormation template for VPC endpoint service connectivity, with quoted `"@NAME@"`
/// markers that [`vpc_endpoint_service_template`] replaces.
const VPC_ENDPOINT_SERVICE_TEMPLATE: &str = include_str!("kms_setup/vpc_endpoint_service.cfn.yaml");

/// An AWS KMS external key store registered for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalKeyStore {
    /// `CustomKeyStoreName`, also the key store's identifier inside Keyhold.
    pub name: String,
    /// `CustomKeyStoreId` that AWS KMS assigned, such as `cks-1234567890abcdef0`. It does not
    /// exist before the key store is created, so [`key_store_setup`] ignores it.
    pub custom_key_store_id: String,
    /// AWS Region of the key store, such as `eu-west-1`.
    pub region: String,
    /// AWS account that owns the key store, 12 digits.
    pub account_id: String,
}

/// Address at which AWS KMS reaches the domain's XKS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// `https://` and the DNS name of Keyhold, with an optional port, such as
    /// `https://xks.example.com` or `https://xks.example.com:8443`. AWS KMS itself always
    /// connects on port 443, so the port only sets where the VPC load balancer forwards to.
    pub uri_endpoint: String,
    /// `XksProxyUriPath`, such as `/domains/acme/kms/xks/v1`.
    pub uri_path: String,
    /// Private DNS name of the VPC endpoint service, which Keyhold's TLS certificate must
    /// cover. `None` uses the DNS name in `uri_endpoint`. AWS KMS requires each key store with
    /// VPC endpoint service connectivity to have its own private DNS name in its Region. It
    /// also rejects a name that equals the endpoint of a key store with public endpoint
    /// connectivity in the same Region, even in another account.
    pub vpc_private_dns_name: Option<String>,
}

/// Ways to create a KMS key in an external key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateKeyInstructions {
    /// One `aws kms create-key` command line for a POSIX shell.
    pub aws_cli: String,
    /// A Terraform `aws_kms_key` resource.
    pub terraform: String,
}

/// Everything a customer needs to create the external key store in AWS KMS.
///
/// The fields contain the secret access key when one was given, so `Debug` shows only
/// `warnings`.
pub struct KeyStoreSetup {
    /// Proxy configuration file that the AWS KMS console accepts when it creates or edits an
    /// external key store.
    pub proxy_configuration_file: Value,
    /// `aws kms create-custom-key-store` command line for public endpoint connectivity.
    pub public_endpoint_command: String,
    /// `aws kms create-custom-key-store` command line for VPC endpoint service connectivity.
    /// It contains [`ENDPOINT_SERVICE_NAME_PLACEHOLDER`], to be replaced by the
    /// `EndpointServiceName` output of `vpc_endpoint_service_template`.
    pub vpc_endpoint_service_command: String,
    /// CloudFormation template (YAML) for the network resources of VPC endpoint service
    /// connectivity in the customer's account. YAML rather than JSON because its comments
    /// explain each resource and the steps that follow the stack.
    pub vpc_endpoint_service_template: String,
    /// Problems to show next to the output, such as a port that public endpoint connectivity
    /// cannot use.
    pub warnings: Vec<String>,
}

impl fmt::Debug for KeyStoreSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStoreSetup")
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// Checks every field of `store` against the forms AWS KMS issues or accepts.
///
/// The name rule is stricter than the one of AWS KMS, which takes any 1 to 256 characters,
/// because Keyhold uses the name as an identifier and in shell commands.
///
/// # Errors
///
/// Returns a message that names the first invalid value and the expected form.
pub fn validate_key_store(store: &ExternalKeyStore) -> Result<(), String> {
    validate_name(&store.name)?;
    validate_custom_key_store_id(&store.custom_key_store_id)?;
    validate_region(&store.region)?;
    validate_account_id(&store.account_id)
}

/// Checks `endpoint` against the patterns AWS KMS enforces for `XksProxyUriEndpoint` and
/// `XksProxyUriPath`, and checks that the host names are DNS names.
///
/// A port in `uri_endpoint` is accepted. AWS KMS connects on port 443 only, so the port becomes
/// the target port of the VPC load balancer, and [`key_store_setup`] warns about it.
///
/// # Errors
///
/// Returns a message that names the first invalid value and the expected form.
pub fn validate_proxy_endpoint(endpoint: &ProxyEndpoint) -> Result<(), String> {
    validate_uri_endpoint(&endpoint.uri_endpoint)?;
    validate_uri_path(&endpoint.uri_path)?;
    if let Some(name) = &endpoint.vpc_private_dns_name
        && !is_dns_name(name)
    {
        return Err(format!(
            "invalid private DNS name {name:?}: expected a DNS name such as \
             xks-private.example.com"
        ));
    }
    Ok(())
}

/// Builds the command line and the Terraform resource that create a symmetric encryption KMS
/// key in `store`, backed by the Keyhold key `xks_key_id`.
///
/// `xks_key_id` and `description` are not validated. Any text is quoted safely, and AWS KMS
/// rejects an id that is not `[A-Za-z0-9._-]{1,128}` or a description over 8192 characters.
pub fn create_key_instructions(
    store: &ExternalKeyStore,
    xks_key_id: &str,
    description: &str,
) -> CreateKeyInstructions {
    let mut command = AwsCliCommand::new("kms", "create-key");
    command.parameter("--origin", "EXTERNAL_KEY_STORE");
    command.parameter("--custom-key-store-id", &store.custom_key_store_id);
    command.parameter("--xks-key-id", xks_key_id);
    command.parameter("--key-spec", "SYMMETRIC_DEFAULT");
    command.parameter("--key-usage", "ENCRYPT_DECRYPT");
    command.global_option("--region", &store.region);
    command.parameter("--description", description);

    CreateKeyInstructions {
        aws_cli: command.render(),
        terraform: terraform_kms_key(store, xks_key_id, description),
    }
}

/// Builds the proxy configuration file, both `create-custom-key-store` commands and the
/// CloudFormation template for `store` and `endpoint`.
///
/// `secret` is the raw secret access key of the credential `access_key_id`, and `None` puts
/// [`SECRET_PLACEHOLDER`] in its place. `store.custom_key_store_id` is not used, because AWS KMS
/// assigns it when the key store is created. Inputs are not validated: call
/// [`validate_key_store`] and [`validate_proxy_endpoint`] first.
pub fn key_store_setup(
    store: &ExternalKeyStore,
    endpoint: &ProxyEndpoint,
    access_key_id: &str,
    secret: Option<&str>,
) -> KeyStoreSetup {
    let secret = secret.unwrap_or(SECRET_PLACEHOLDER);
    let proxy_configuration_file = json!({
        "XksProxyUriPath": endpoint.uri_path,
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": access_key_id,
            "RawSecretAccessKey": secret,
        },
    });

    // AWS KMS rejects a port in XksProxyUriEndpoint and always connects on port 443.
    let (host, port) = split_uri_endpoint(&endpoint.uri_endpoint);
    let private_dns_name = endpoint
        .vpc_private_dns_name
        .as_deref()
        .unwrap_or(host)
        .to_ascii_lowercase();
    let credential = [
        ("AccessKeyId", access_key_id),
        ("RawSecretAccessKey", secret),
    ];

    let mut public = create_custom_key_store_command(store, endpoint, &format!("https://{host}"));
    public.parameter("--xks-proxy-connectivity", "PUBLIC_ENDPOINT");
    public.structure("--xks-proxy-authentication-credential", &credential);

    let mut vpc =
        create_custom_key_store_command(store, endpoint, &format!("https://{private_dns_name}"));
    vpc.parameter("--xks-proxy-connectivity", "VPC_ENDPOINT_SERVICE");
    vpc.parameter(
        "--xks-proxy-vpc-endpoint-service-name",
        ENDPOINT_SERVICE_NAME_PLACEHOLDER,
    );
    vpc.structure("--xks-proxy-authentication-credential", &credential);

    let target_port = port.unwrap_or(KMS_PORT);
    let mut warnings = Vec::new();
    if target_port != KMS_PORT {
        warnings.push(format!(
            "AWS KMS connects to a public endpoint on port {KMS_PORT} only, so the public \
             endpoint command uses https://{host} without port {target_port}. Keyhold, or a \
             load balancer in front of it, must accept connections for {host} on port \
             {KMS_PORT}. The VPC endpoint service template needs no change, because its load \
             balancer forwards port {KMS_PORT} to port {target_port}."
        ));
    }

    KeyStoreSetup {
        proxy_configuration_file,
        public_endpoint_command: public.render(),
        vpc_endpoint_service_command: vpc.render(),
        vpc_endpoint_service_template: vpc_endpoint_service_template(
            store,
            &private_dns_name,
            target_port,
        ),
        warnings,
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid key store name {name:?}: use 1 to {MAX_NAME_LEN} characters from A-Z, a-z, \
             0-9, '.', '_' and '-'"
        ))
    }
}

// AWS documents no pattern for CustomKeyStoreId (the API model allows 1 to 64 characters of
// any kind). Every id in the AWS KMS documentation is `cks-` and 17 hex digits, such as
// cks-1234567890abcdef0. Letters past `f` are accepted in case AWS issues them.
fn validate_custom_key_store_id(id: &str) -> Result<(), String> {
    let valid = id.strip_prefix("cks-").is_some_and(|suffix| {
        suffix.len() == CUSTOM_KEY_STORE_ID_SUFFIX_LEN
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid custom key store id {id:?}: expected cks- followed by \
             {CUSTOM_KEY_STORE_ID_SUFFIX_LEN} lowercase letters or digits, such as \
             cks-1234567890abcdef0, as create-custom-key-store returns it"
        ))
    }
}

// Region codes are lowercase words joined by '-' that end in a number, such as eu-west-1,
// us-gov-west-1, ap-southeast-3 and eusc-de-east-1.
fn validate_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let valid = match parts.split_last() {
        Some((number, words)) => {
            words.len() >= 2
                && words
                    .iter()
                    .all(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase()))
                && (1..=2).contains(&number.len())
                && number.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid region {region:?}: expected an AWS Region code such as eu-west-1, \
             us-gov-west-1 or ap-southeast-3"
        ))
    }
}

fn validate_account_id(account_id: &str) -> Result<(), String> {
    if account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "invalid account id {account_id:?}: expected exactly 12 digits, such as 111122223333"
        ))
    }
}

// AWS KMS pattern: ^https://[a-zA-Z0-9.-]+$, 10 to 128 characters. The port is Keyhold's own
// addition and is removed before the value reaches AWS.
fn validate_uri_endpoint(uri_endpoint: &str) -> Result<(), String> {
    let valid = uri_endpoint
        .strip_prefix("https://")
        .is_some_and(|authority| {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let port_valid = port.is_none_or(|port| parse_port(port).is_some());
            is_dns_name(host)
                && URI_LEN_RANGE.contains(&"https://".len().saturating_add(host.len()))
                && port_valid
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid XKS proxy URI endpoint {uri_endpoint:?}: expected https:// followed by a \
             DNS name and an optional port, such as https://xks.example.com or \
             https://xks.example.com:8443, at most 128 characters without the port"
        ))
    }
}

// AWS KMS pattern: ^(/[a-zA-Z0-9\/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$, 10 to 128
// characters.
fn validate_uri_path(uri_path: &str) -> Result<(), String> {
    let valid = URI_LEN_RANGE.contains(&uri_path.len())
        && uri_path
            .rsplit_once("/kms/xks/v")
            .is_some_and(|(prefix, version)| {
                let prefix_valid = prefix.is_empty()
                    || (prefix.len() > 1
                        && prefix.starts_with('/')
                        && prefix
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')));
                let version_valid =
                    (1..=2).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_digit());
                prefix_valid && version_valid
            });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid XKS proxy URI path {uri_path:?}: expected /kms/xks/v1 after an optional \
             prefix, such as /domains/acme/kms/xks/v1, 10 to 128 characters"
        ))
    }
}

/// Returns whether `name` is a DNS name of at least two labels, each 1 to 63 letters, digits
/// and inner hyphens.
fn is_dns_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Splits `https://host:port` into the host and the port. Input without the scheme or with a
/// port that is not a decimal number comes back whole as the host, quoted later like any
/// other value.
fn split_uri_endpoint(uri_endpoint: &str) -> (&str, Option<u16>) {
    let authority = uri_endpoint
        .strip_prefix("https://")
        .unwrap_or(uri_endpoint);
    if let Some((host, port)) = authority.rsplit_once(':')
        && let Some(port) = parse_port(port)
    {
        return (host, Some(port));
    }
    (authority, None)
}

/// Parses a TCP port written in decimal digits only, rejecting 0 and forms such as `+443`
/// that `u16::from_str` accepts.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|port| *port > 0)
}

fn create_custom_key_store_command(
    store: &ExternalKeyStore,
    endpoint: &ProxyEndpoint,
    uri_endpoint: &str,
) -> AwsCliCommand {
    let mut command = AwsCliCommand::new("kms", "create-custom-key-store");
    command.parameter("--custom-key-store-name", &store.name);
    command.parameter("--custom-key-store-type", "EXTERNAL_KEY_STORE");
    command.parameter("--xks-proxy-uri-endpoint", uri_endpoint);
    command.parameter("--xks-proxy-uri-path", &endpoint.uri_path);
    command.global_option("--region", &store.region);
    command
}

fn terraform_kms_key(store: &ExternalKeyStore, xks_key_id: &str, description: &str) -> String {
    let label = terraform_label(&store.name, xks_key_id);
    let attributes = [
        ("region", store.region.as_str()),
        ("custom_key_store_id", store.custom_key_store_id.as_str()),
        ("xks_key_id", xks_key_id),
        ("key_usage", "ENCRYPT_DECRYPT"),
        ("customer_master_key_spec", "SYMMETRIC_DEFAULT"),
        ("description", description),
    ];

    let mut text = String::from(
        "# KMS key in an AWS KMS external key store, backed by a key in Keyhold.\n\
         # The region argument needs version 6.0 or later of the hashicorp/aws provider.\n",
    );
    let _ = writeln!(text, "resource \"aws_kms_key\" \"{label}\" {{");
    for (name, value) in attributes {
        let _ = writeln!(text, "  {name:<24} = {}", hcl_quote(value));
    }
    text.push_str("}\n");
    text
}

/// Builds a Terraform resource name from the key store name and the key id. Terraform names
/// contain letters, digits, `_` and `-` and start with a letter or `_`.
fn terraform_label(store_name: &str, xks_key_id: &str) -> String {
    let mut label: String = format!("{store_name}_{xks_key_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !label.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        label.insert_str(0, "key_");
    }
    label
}

fn vpc_endpoint_service_template(
    store: &ExternalKeyStore,
    private_dns_name: &str,
    target_port: u16,
) -> String {
    let description = format!(
        "Network resources that let AWS KMS reach Keyhold through a VPC endpoint service, for \
         the external key store {} of account {} in {}",
        store.name, store.account_id, store.region
    );
    let principal = format!("cks.kms.{}.amazonaws.com", store.region);
    fill_markers(
        VPC_ENDPOINT_SERVICE_TEMPLATE,
        &[
            ("\"@DESCRIPTION@\"", yaml_quote(&description)),
            ("\"@TARGET_PORT@\"", yaml_quote(&target_port.to_string())),
            ("\"@PRIVATE_DNS_NAME@\"", yaml_quote(private_dns_name)),
            ("\"@KMS_PRINCIPAL@\"", yaml_quote(&principal)),
        ],
    )
}

/// Replaces each marker in `template` with its value in one pass, so that a value that
/// contains a marker's text is never replaced again.
fn fill_markers(template: &str, markers: &[(&str, String)]) -> String {
    let mut output = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("\"@") {
        output.push_str(&rest[..start]);
        rest = &rest[start..];
        match markers.iter().find(|(marker, _)| rest.starts_with(marker)) {
            Some((marker, value)) => {
                output.push_str(value);
                rest = &rest[marker.len()..];
            }
            None => {
                output.push('"');
                rest = &rest[1..];
            }
        }
    }
    output.push_str(rest);
    output
}

#[cfg(test)]
mod tests {
    use super::quote::member_name;
    use super::*;

    fn store() -> ExternalKeyStore {
        ExternalKeyStore {
            name: "acme-prod".to_owned(),
            custom_key_store_id: "cks-1234567890abcdef0".to_owned(),
            region: "eu-west-1".to_owned(),
            account_id: "111122223333".to_owned(),
        }
    }

    fn endpoint(uri_endpoint: &str) -> ProxyEndpoint {
        ProxyEndpoint {
            uri_endpoint: uri_endpoint.to_owned(),
            uri_path: "/domains/acme/kms/xks/v1".to_owned(),
            vpc_private_dns_name: None,
        }
    }

    /// Splits a command line the way a POSIX shell does for the subset `shell_quote` writes:
    /// bare words, single-quoted text and `\'`.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                ' ' => words.extend(word.take()),
                '\'' => {
                    let current = word.get_or_insert_with(String::new);
                    for quoted in chars.by_ref() {
                        if quoted == '\'' {
                            break;
                        }
                        current.push(quoted);
                    }
                }
                '\\' => {
                    let escaped = chars.next().expect("character after backslash");
                    word.get_or_insert_with(String::new).push(escaped);
                }
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word);
        words
    }

    /// Returns the value after `flag`, or from `--cli-input-json` when the flag is absent.
    fn argument(line: &str, flag: &str) -> Option<String> {
        let words = shell_words(line);
        if let Some(index) = words.iter().position(|word| word == flag) {
            return words.get(index + 1).cloned();
        }
        let index = words.iter().position(|word| word == "--cli-input-json")?;
        let input: Value = serde_json::from_str(&words[index + 1]).expect("input JSON");
        input[member_name(flag)].as_str().map(str::to_owned)
    }

    #[test]
    fn valid_key_store_passes() {
        assert_eq!(validate_key_store(&store()), Ok(()));
    }

    #[test]
    fn key_store_name_rules() {
        for name in ["a", "acme.prod_1-x", &"n".repeat(256)] {
            let store = ExternalKeyStore {
                name: name.to_owned(),
                ..store()
            };
            assert_eq!(validate_key_store(&store), Ok(()), "{name}");
        }
        for name in [
            "",
            "has space",
            "semi;colon",
            "quote'",
            "ünïcode",
            &"n".repeat(257),
        ] {
            let store = ExternalKeyStore {
                name: name.to_owned(),
                ..store()
            };
            let message = validate_key_store(&store).expect_err(name);
            assert!(message.contains(&format!("{name:?}")), "{message}");
            assert!(message.contains("1 to 256 characters"), "{message}");
        }
    }

    #[test]
    fn custom_key_store_id_rules() {
        for id in ["cks-1234567890abcdef0", "cks-zzzzzzzzzzzzzzzzz"] {
            let store = ExternalKeyStore {
                custom_key_store_id: id.to_owned(),
                ..store()
            };
            assert_eq!(validate_key_store(&store), Ok(()), "{id}");
        }
        for id in [
            "",
            "cks-1234567890ABCDEF0",
            "cks-1234567890abcdef",
            "cks-1234567890abcdef01",
            "CKS-1234567890abcdef0",
            "xks-1234567890abcdef0",
            "cks-1234567890abcde 0",
        ] {
            let store = ExternalKeyStore {
                custom_key_store_id: id.to_owned(),
                ..store()
            };
            let message = validate_key_store(&store).expect_err(id);
            assert!(message.contains(&format!("{id:?}")), "{message}");
            assert!(message.contains("cks-1234567890abcdef0"), "{message}");
        }
    }

    #[test]
    fn region_rules() {
        for region in [
            "eu-west-1",
            "us-gov-west-1",
            "ap-southeast-3",
            "eusc-de-east-1",
            "il-central-1",
        ] {
            let store = ExternalKeyStore {
                region: region.to_owned(),
                ..store()
            };
            assert_eq!(validate_key_store(&store), Ok(()), "{region}");
        }
        for region in [
            "",
            "eu",
            "eu-1",
            "EU-west-1",
            "eu-west",
            "eu-west-",
            "eu--west-1",
            "eu-west-1a",
            "eu-west-123",
            "eu-west-1; rm -rf /",
        ] {
            let store = ExternalKeyStore {
                region: region.to_owned(),
                ..store()
            };
            let message = validate_key_store(&store).expect_err(region);
            assert!(message.contains(&format!("{region:?}")), "{message}");
            assert!(message.contains("such as eu-west-1"), "{message}");
        }
    }

    #[test]
    fn account_id_rules() {
        for account_id in [
            "",
            "11112222333",
            "1111222233334",
            "11112222333a",
            "-11122223333",
        ] {
            let store = ExternalKeyStore {
                account_id: account_id.to_owned(),
                ..store()
            };
            let message = validate_key_store(&store).expect_err(account_id);
            assert!(message.contains(&format!("{account_id:?}")), "{message}");
            assert!(message.contains("exactly 12 digits"), "{message}");
        }
    }

    #[test]
    fn proxy_endpoint_rules() {
        for uri_endpoint in ["https://xks.example.com", "https://xks.example.com:8443"] {
            assert_eq!(
                validate_proxy_endpoint(&endpoint(uri_endpoint)),
                Ok(()),
                "{uri_endpoint}"
            );
        }
        for uri_endpoint in [
            "http://xks.example.com",
            "https://xks.example.com/",
            "https://xks.example.com:0",
            "https://xks.example.com:+443",
            "https://xks.example.com:70000",
            "https://xks_1.example.com",
            "https://localhost",
            &format!("https://{}.{}.example.com", "a".repeat(60), "b".repeat(60)),
        ] {
            let message = validate_proxy_endpoint(&endpoint(uri_endpoint)).expect_err(uri_endpoint);
            assert!(message.contains(&format!("{uri_endpoint:?}")), "{message}");
            assert!(
                message.contains("https://xks.example.com:8443"),
                "{message}"
            );
        }

        for uri_path in [
            "/kms/xks/v1",
            "/domains/acme/kms/xks/v1",
            "/a_b-c/kms/xks/v12",
        ] {
            let endpoint = ProxyEndpoint {
                uri_path: uri_path.to_owned(),
                ..endpoint("https://xks.example.com")
            };
            assert_eq!(validate_proxy_endpoint(&endpoint), Ok(()), "{uri_path}");
        }
        for uri_path in [
            "",
            "kms/xks/v1",
            "/kms/xks/v",
            "/kms/xks/v123",
            "//kms/xks/v1",
            "/a b/kms/xks/v1",
            "/domains/acme/kms/xks/v1/",
        ] {
            let endpoint = ProxyEndpoint {
                uri_path: uri_path.to_owned(),
                ..endpoint("https://xks.example.com")
            };
            let message = validate_proxy_endpoint(&endpoint).expect_err(uri_path);
            assert!(message.contains(&format!("{uri_path:?}")), "{message}");
            assert!(message.contains("/kms/xks/v1"), "{message}");
        }

        let endpoint = ProxyEndpoint {
            vpc_private_dns_name: Some("not a name".to_owned()),
            ..endpoint("https://xks.example.com")
        };
        let message = validate_proxy_endpoint(&endpoint).expect_err("private DNS name");
        assert!(message.contains("\"not a name\""), "{message}");
    }

    #[test]
    fn create_key_command_has_every_argument() {
        let instructions = create_key_instructions(&store(), "key-1", "Payments key");
        let command = &instructions.aws_cli;
        assert!(command.starts_with("aws kms create-key "), "{command}");
        let expected = [
            ("--origin", "EXTERNAL_KEY_STORE"),
            ("--custom-key-store-id", "cks-1234567890abcdef0"),
            ("--xks-key-id", "key-1"),
            ("--key-spec", "SYMMETRIC_DEFAULT"),
            ("--key-usage", "ENCRYPT_DECRYPT"),
            ("--region", "eu-west-1"),
            ("--description", "Payments key"),
        ];
        for (flag, value) in expected {
            assert_eq!(argument(command, flag).as_deref(), Some(value), "{command}");
        }
        assert!(!command.contains("--cli-input-json"), "{command}");
        assert!(!command.contains('\n'), "{command}");
    }

    #[test]
    fn create_key_quotes_hostile_descriptions() {
        let descriptions = [
            "it's \"quoted\"",
            "$(touch /tmp/owned) `id` $HOME ${PATH}",
            "'; rm -rf / #",
            "back\\slash and 'nested' \\' quotes",
            "ünïcödé ✓ 🔑",
            "",
            " leading and trailing spaces ",
        ];
        for description in descriptions {
            let command = create_key_instructions(&store(), "key-1", description).aws_cli;
            assert_eq!(
                argument(&command, "--description").as_deref(),
                Some(description),
                "{command}"
            );
            assert!(!command.contains("--cli-input-json"), "{command}");
        }
    }

    #[test]
    fn create_key_moves_misread_values_to_input_json() {
        let descriptions = [
            "file:///etc/passwd",
            "FILEB://key.bin",
            "https://example.com/description",
            "--origin AWS_KMS",
            "-",
            "line one\nline two",
            "tab\tand nul\0",
        ];
        for description in descriptions {
            let command = create_key_instructions(&store(), "key-1", description).aws_cli;
            let words = shell_words(&command);
            assert!(!words.contains(&"--description".to_owned()), "{command}");
            assert_eq!(
                argument(&command, "--description").as_deref(),
                Some(description),
                "{command}"
            );
            assert!(!command.contains('\n'), "{command}");
            assert!(!command.contains('\0'), "{command}");
        }
    }

    #[test]
    fn terraform_resource_escapes_templates() {
        let description = "Key for ${var.secret} and %{ if true }x%{ endif } \"q\" \\ $${ok}\nend";
        let terraform = create_key_instructions(&store(), "key-1", description).terraform;
        assert!(
            terraform.contains("resource \"aws_kms_key\" \"acme-prod_key-1\" {"),
            "{terraform}"
        );
        let expected = "\"Key for $${var.secret} and %%{ if true }x%%{ endif } \\\"q\\\" \\\\ \
                        $$${ok}\\nend\"";
        assert!(
            terraform.contains(&format!("description              = {expected}\n")),
            "{terraform}"
        );
        assert!(
            terraform.contains("custom_key_store_id      = \"cks-1234567890abcdef0\"\n"),
            "{terraform}"
        );
        assert!(
            terraform.contains("xks_key_id               = \"key-1\"\n"),
            "{terraform}"
        );
        assert!(
            terraform.contains("region                   = \"eu-west-1\"\n"),
            "{terraform}"
        );
    }

    #[test]
    fn terraform_label_is_an_identifier() {
        assert_eq!(terraform_label("acme.prod", "key.1"), "acme_prod_key_1");
        assert_eq!(terraform_label("1st", "k"), "key_1st_k");
        assert_eq!(terraform_label("-x", "k"), "key_-x_k");
        assert_eq!(terraform_label("a b", "\"}\n"), "a_b____");
    }

    #[test]
    fn fill_markers_replaces_once() {
        let filled = fill_markers(
            "a: \"@A@\"\nb: \"@B@\"\nc: \"@C\"\n",
            &[
                ("\"@A@\"", "\"@B@\"".to_owned()),
                ("\"@B@\"", "\"b\"".to_owned()),
            ],
        );
        assert_eq!(filled, "a: \"@B@\"\nb: \"b\"\nc: \"@C\"\n");
    }

    #[test]
    fn setup_uses_placeholder_without_secret() {
        let setup = key_store_setup(&store(), &endpoint("https://xks.example.com"), "AKID", None);
        let file = &setup.proxy_configuration_file;
        assert_eq!(file["XksProxyUriPath"], "/domains/acme/kms/xks/v1");
        assert_eq!(
            file["XksProxyAuthenticationCredential"]["AccessKeyId"],
            "AKID"
        );
        assert_eq!(
            file["XksProxyAuthenticationCredential"]["RawSecretAccessKey"],
            SECRET_PLACEHOLDER
        );
        let credential = format!("AccessKeyId=AKID,RawSecretAccessKey={SECRET_PLACEHOLDER}");
        for command in [
            &setup.public_endpoint_command,
            &setup.vpc_endpoint_service_command,
        ] {
            assert_eq!(
                argument(command, "--xks-proxy-authentication-credential").as_deref(),
                Some(credential.as_str()),
                "{command}"
            );
        }
        assert!(SECRET_PLACEHOLDER.contains("shown once"));
    }

    #[test]
    fn setup_uses_real_secret() {
        let secret = "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo=";
        let setup = key_store_setup(
            &store(),
            &endpoint("https://xks.example.com"),
            "ABCDEFGHIJKLMNOPQRSTUVWX",
            Some(secret),
        );
        let file = &setup.proxy_configuration_file;
        assert_eq!(
            file["XksProxyAuthenticationCredential"]["RawSecretAccessKey"],
            secret
        );
        assert!(!file.to_string().contains(SECRET_PLACEHOLDER));
        let credential =
            format!("AccessKeyId=ABCDEFGHIJKLMNOPQRSTUVWX,RawSecretAccessKey={secret}");
        assert_eq!(
            argument(
                &setup.public_endpoint_command,
                "--xks-proxy-authentication-credential"
            )
            .as_deref(),
            Some(credential.as_str())
        );
        assert!(!format!("{setup:?}").contains(secret));
    }

    #[test]
    fn setup_uses_json_credential_when_shorthand_breaks() {
        let setup = key_store_setup(
            &store(),
            &endpoint("https://xks.example.com"),
            "AKID",
            Some("a,b=c"),
        );
        let value = argument(
            &setup.public_endpoint_command,
            "--xks-proxy-authentication-credential",
        )
        .expect("credential");
        let credential: Value = serde_json::from_str(&value).expect("JSON credential");
        assert_eq!(credential["RawSecretAccessKey"], "a,b=c");
        assert_eq!(credential["AccessKeyId"], "AKID");
    }

    #[test]
    fn public_command_arguments() {
        let setup = key_store_setup(&store(), &endpoint("https://xks.example.com"), "AKID", None);
        let command = &setup.public_endpoint_command;
        assert!(
            command.starts_with("aws kms create-custom-key-store "),
            "{command}"
        );
        let expected = [
            ("--custom-key-store-name", "acme-prod"),
            ("--custom-key-store-type", "EXTERNAL_KEY_STORE"),
            ("--xks-proxy-uri-endpoint", "https://xks.example.com"),
            ("--xks-proxy-uri-path", "/domains/acme/kms/xks/v1"),
            ("--xks-proxy-connectivity", "PUBLIC_ENDPOINT"),
            ("--region", "eu-west-1"),
        ];
        for (flag, value) in expected {
            assert_eq!(argument(command, flag).as_deref(), Some(value), "{command}");
        }
        // AWS CLI version 1 would fetch an https:// argument, so the endpoint goes in JSON.
        assert!(!shell_words(command).contains(&"--xks-proxy-uri-endpoint".to_owned()));
        assert!(
            !command.contains("--xks-proxy-vpc-endpoint-service-name"),
            "{command}"
        );
        assert!(setup.warnings.is_empty(), "{:?}", setup.warnings);
    }

    #[test]
    fn vpc_command_arguments() {
        let setup = key_store_setup(
            &store(),
            &endpoint("https://XKS.example.com:8443"),
            "AKID",
            None,
        );
        let command = &setup.vpc_endpoint_service_command;
        let expected = [
            ("--xks-proxy-connectivity", "VPC_ENDPOINT_SERVICE"),
            ("--xks-proxy-uri-endpoint", "https://xks.example.com"),
            (
                "--xks-proxy-vpc-endpoint-service-name",
                ENDPOINT_SERVICE_NAME_PLACEHOLDER,
            ),
            ("--region", "eu-west-1"),
        ];
        for (flag, value) in expected {
            assert_eq!(argument(command, flag).as_deref(), Some(value), "{command}");
        }
    }

    #[test]
    fn vpc_command_uses_private_dns_name() {
        let endpoint = ProxyEndpoint {
            vpc_private_dns_name: Some("acme.xks-private.example.com".to_owned()),
            ..endpoint("https://xks.example.com")
        };
        let setup = key_store_setup(&store(), &endpoint, "AKID", None);
        assert_eq!(
            argument(
                &setup.vpc_endpoint_service_command,
                "--xks-proxy-uri-endpoint"
            )
            .as_deref(),
            Some("https://acme.xks-private.example.com")
        );
        assert_eq!(
            argument(&setup.public_endpoint_command, "--xks-proxy-uri-endpoint").as_deref(),
            Some("https://xks.example.com")
        );
        let template = &setup.vpc_endpoint_service_template;
        assert!(
            template.contains("Default: \"acme.xks-private.example.com\"\n"),
            "{template}"
        );
    }

    #[test]
    fn port_other_than_443_warns() {
        let setup = key_store_setup(
            &store(),
            &endpoint("https://xks.example.com:8443"),
            "AKID",
            None,
        );
        assert_eq!(
            argument(&setup.public_endpoint_command, "--xks-proxy-uri-endpoint").as_deref(),
            Some("https://xks.example.com")
        );
        assert_eq!(setup.warnings.len(), 1, "{:?}", setup.warnings);
        assert!(
            setup.warnings[0].contains("port 443 only"),
            "{:?}",
            setup.warnings
        );
        assert!(setup.warnings[0].contains("8443"), "{:?}", setup.warnings);

        let template = &setup.vpc_endpoint_service_template;
        assert!(template.contains("Default: \"8443\"\n"), "{template}");

        let explicit = key_store_setup(
            &store(),
            &endpoint("https://xks.example.com:443"),
            "A",
            None,
        );
        assert!(explicit.warnings.is_empty(), "{:?}", explicit.warnings);
    }

    #[test]
    fn template_names_region_principal() {
        for region in ["eu-west-1", "us-gov-west-1", "ap-southeast-3"] {
            let store = ExternalKeyStore {
                region: region.to_owned(),
                ..store()
            };
            let setup = key_store_setup(&store, &endpoint("https://xks.example.com"), "A", None);
            let template = &setup.vpc_endpoint_service_template;
            let principal = format!("AllowedPrincipals: [\"cks.kms.{region}.amazonaws.com\"]");
            assert!(template.contains(&principal), "{template}");
            assert!(template.contains("Default: \"443\"\n"), "{template}");
            assert!(
                template.contains("Default: \"xks.example.com\"\n"),
                "{template}"
            );
            assert!(
                template.contains("AcceptanceRequired: false\n"),
                "{template}"
            );
            assert!(!template.contains("\"@"), "unfilled marker in {template}");
        }
    }

    #[test]
    fn template_quotes_hostile_name() {
        let store = ExternalKeyStore {
            name: "x\"\n  Evil: !Ref AWS::NoValue #".to_owned(),
            ..store()
        };
        let setup = key_store_setup(&store, &endpoint("https://xks.example.com"), "A", None);
        let template = &setup.vpc_endpoint_service_template;
        let description = template
            .lines()
            .find(|line| line.starts_with("Description: "))
            .expect("Description line");
        assert!(
            description.contains(r#"external key store x\"\u000A  Evil: !Ref AWS::NoValue # of"#),
            "{description}"
        );
        assert!(!template.contains("\n  Evil"), "{template}");
    }
}
