//! Admin commands for domains, credentials, keys, policies, principals, tokens and external key
//! stores. Each command sends one admin API request through [`Client`], to the local data
//! directory or to the server given with `--server`, and prints the response for people or as
//! JSON.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use hyper::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::{
    CredentialCommand, DomainCommand, KeyCommand, KeyStoreCommand, OutputArgs, OutputFormat,
    PolicyCommand, PrincipalCommand, TokenCommand, VersionCommand, output,
};

/// Formats a JSON field for people: strings as they are, numbers and booleans written out, and
/// `null` or missing fields as `fallback`.
fn field_text(value: &Value, fallback: &str) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => fallback.to_owned(),
        other => other.to_string(),
    }
}

/// Prints the objects of `list` as a table of `columns` (header, field), or the array as JSON.
fn print_list(format: OutputArgs, list: &Value, columns: &[(&str, &str)]) {
    let empty = Vec::new();
    let items = list.as_array().unwrap_or(&empty);
    let rows = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, field)| field_text(&item[*field], ""))
                .collect()
        })
        .collect::<Vec<Vec<String>>>();
    let headers: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
    output::print_table(format.output, &headers, &rows, list);
}

/// Prints `label: value` lines of `fields` (label, field, fallback), or the object as JSON.
fn print_object(format: OutputArgs, object: &Value, fields: &[(&str, &str, &str)]) {
    let lines: Vec<(&str, String)> = fields
        .iter()
        .map(|(label, field, fallback)| (*label, field_text(&object[*field], fallback)))
        .collect();
    output::print_record(format.output, &lines, object);
}

/// Percent-encodes every byte except the unreserved characters of RFC 3986, so that `text`
/// stays one path segment.
fn path_segment(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn domain_path(domain: &str) -> String {
    format!("/v1/domains/{}", path_segment(domain))
}

fn key_path(domain: &str, key_id: &str) -> String {
    format!("{}/keys/{}", domain_path(domain), path_segment(key_id))
}

pub(super) fn domain(client: &Client, command: DomainCommand) -> anyhow::Result<()> {
    match command {
        DomainCommand::Create {
            id,
            uri_prefix,
            display_name,
            quota,
        } => {
            let domain = client.call(
                Method::POST,
                "/v1/domains",
                Some(&json!({
                    "id": id,
                    "uriPrefix": uri_prefix,
                    "displayName": display_name,
                    "quotaRps": quota,
                })),
            )?;
            output::print(&format!(
                "Created domain {} with XksProxyUriPath {}\n",
                field_text(&domain["id"], ""),
                field_text(&domain["xksProxyUriPath"], "")
            ));
        }
        DomainCommand::List(format) => {
            let answer = client.call(Method::GET, "/v1/domains", None)?;
            print_list(
                format,
                &answer["domains"],
                &[
                    ("ID", "id"),
                    ("STATUS", "status"),
                    ("XKS URI PATH", "xksProxyUriPath"),
                    ("NAME", "displayName"),
                ],
            );
        }
        DomainCommand::Show { id, output: format } => {
            let domain = client.call(Method::GET, &domain_path(&id), None)?;
            print_object(
                format,
                &domain,
                &[
                    ("id", "id", ""),
                    ("name", "displayName", ""),
                    ("status", "status", ""),
                    ("XksProxyUriPath", "xksProxyUriPath", ""),
                    ("quota (requests/s)", "quotaRps", "none"),
                    ("created", "createdAt", ""),
                ],
            );
        }
        DomainCommand::Disable { id } => {
            client.call(Method::POST, &format!("{}/disable", domain_path(&id)), None)?;
            output::print(&format!(
                "Domain {id} is DISABLED: every XKS request for it now fails with InvalidStateException\n"
            ));
        }
        DomainCommand::Enable { id } => {
            client.call(Method::POST, &format!("{}/enable", domain_path(&id)), None)?;
            output::print(&format!("Domain {id} is ENABLED\n"));
        }
    }
    Ok(())
}

pub(super) fn credential(client: &Client, command: CredentialCommand) -> anyhow::Result<()> {
    match command {
        CredentialCommand::Create { domain } => {
            let created = client.call(
                Method::POST,
                &format!("{}/credentials", domain_path(&domain)),
                None,
            )?;
            output::print(&format!("{:#}\n", created["proxyConfiguration"]));
            output::note(
                "This is the only time the secret is shown. Load this proxy configuration file \
                 in the AWS KMS console, or store it now.",
            );
        }
        CredentialCommand::List {
            domain,
            output: format,
        } => {
            let answer = client.call(
                Method::GET,
                &format!("{}/credentials", domain_path(&domain)),
                None,
            )?;
            print_list(
                format,
                &answer["credentials"],
                &[
                    ("ACCESS KEY ID", "accessKeyId"),
                    ("CREATED", "createdAt"),
                    ("AGE (DAYS)", "ageDays"),
                    ("STATUS", "status"),
                    ("REVOKED", "revokedAt"),
                ],
            );
        }
        CredentialCommand::Revoke {
            domain,
            access_key_id,
        } => {
            client.call(
                Method::DELETE,
                &format!(
                    "{}/credentials/{}",
                    domain_path(&domain),
                    path_segment(&access_key_id)
                ),
                None,
            )?;
            output::print(&format!(
                "Revoked credential {access_key_id} of domain {domain}\n"
            ));
        }
    }
    Ok(())
}

const KEY_FIELDS: &[(&str, &str, &str)] = &[
    ("domain", "domainId", ""),
    ("key id", "keyId", ""),
    ("name", "name", ""),
    ("description", "description", ""),
    ("status", "status", ""),
    ("usage", "usage", ""),
    ("protection", "protection", ""),
    ("primary version", "primaryVersion", ""),
    ("bound KMS key ARN", "boundKmsKeyArn", "none"),
    ("binds on first use", "bindOnFirstUse", ""),
    ("rotation period (s)", "rotationPeriodSecs", "none"),
    ("deletion date", "deletionAt", "none"),
    ("own policy", "hasPolicy", ""),
    ("created", "createdAt", ""),
];

pub(super) fn key(client: &Client, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            domain,
            key_id,
            usage,
            name,
            description,
            bind_kms_key_arn,
            bind_on_first_use,
            protection,
            rotation_period,
        } => {
            let usage: Vec<String> = usage
                .split(',')
                .map(|name| name.trim().to_uppercase())
                .collect();
            let key = client.call(
                Method::POST,
                &format!("{}/keys", domain_path(&domain)),
                Some(&json!({
                    "keyId": key_id,
                    "name": name,
                    "description": description,
                    "usage": usage,
                    "protection": protection,
                    "bindKmsKeyArn": bind_kms_key_arn,
                    "bindOnFirstUse": bind_on_first_use,
                    "rotationPeriod": rotation_period,
                })),
            )?;
            output::print(&format!(
                "Created key {} in domain {}\n",
                field_text(&key["keyId"], ""),
                field_text(&key["domainId"], "")
            ));
        }
        KeyCommand::SelfService {
            domain,
            name,
            key_store,
            output_dir,
        } => self_service(client, &domain, &name, &key_store, output_dir.as_deref())?,
        KeyCommand::List {
            domain,
            output: format,
        } => {
            let answer =
                client.call(Method::GET, &format!("{}/keys", domain_path(&domain)), None)?;
            let mut keys = answer["keys"].clone();
            for key in keys.as_array_mut().into_iter().flatten() {
                key["usageText"] = json!(
                    key["usage"]
                        .as_array()
                        .map(|names| names
                            .iter()
                            .map(|name| field_text(name, ""))
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                        .to_lowercase()
                );
            }
            print_list(
                format,
                &keys,
                &[
                    ("KEY ID", "keyId"),
                    ("STATUS", "status"),
                    ("USAGE", "usageText"),
                    ("VERSION", "primaryVersion"),
                    ("PROTECTION", "protection"),
                    ("NAME", "name"),
                ],
            );
        }
        KeyCommand::Show {
            domain,
            key_id,
            output: format,
        } => {
            let key = client.call(Method::GET, &key_path(&domain, &key_id), None)?;
            let mut fields = KEY_FIELDS.to_vec();
            let mut shown = key.clone();
            if let Some(object) = key.get("hsmObject") {
                shown["hsmLabel"] = object["label"].clone();
                shown["hsmExtractable"] = object["extractable"].clone();
                shown["hsmSensitive"] = object["sensitive"].clone();
                fields.extend([
                    ("HSM object", "hsmLabel", ""),
                    ("CKA_EXTRACTABLE", "hsmExtractable", ""),
                    ("CKA_SENSITIVE", "hsmSensitive", ""),
                ]);
            }
            match format.output {
                OutputFormat::Json => output::print(&format!("{key:#}\n")),
                OutputFormat::Text => print_object(format, &shown, &fields),
            }
        }
        KeyCommand::Rotate { domain, key_id } => {
            let key = client.call(
                Method::POST,
                &format!("{}/rotate", key_path(&domain, &key_id)),
                None,
            )?;
            output::print(&format!(
                "Rotated key {key_id} in domain {domain}: version {} is now primary\n",
                field_text(&key["primaryVersion"], "?")
            ));
        }
        KeyCommand::SetRotation {
            domain,
            key_id,
            period,
        } => {
            client.call(
                Method::PUT,
                &format!("{}/rotation", key_path(&domain, &key_id)),
                Some(&json!({ "period": period })),
            )?;
            if period == "off" {
                output::print(&format!("Automatic rotation of key {key_id} is off\n"));
            } else {
                output::print(&format!("Key {key_id} now rotates every {period}\n"));
            }
        }
        KeyCommand::Version(command) => version(client, command)?,
        KeyCommand::ScheduleDeletion {
            domain,
            key_id,
            days,
        } => {
            let key = client.call(
                Method::POST,
                &format!("{}/schedule-deletion", key_path(&domain, &key_id)),
                Some(&json!({ "days": days })),
            )?;
            output::print(&format!(
                "Key {key_id} is PENDING_DELETION; its material will be destroyed at {} unless \
                 `keyhold key cancel-deletion {domain} {key_id}` runs first\n",
                field_text(&key["deletionAt"], "?")
            ));
        }
        KeyCommand::CancelDeletion { domain, key_id } => {
            let key = client.call(
                Method::POST,
                &format!("{}/cancel-deletion", key_path(&domain, &key_id)),
                None,
            )?;
            output::print(&format!(
                "Deletion of key {key_id} canceled; it is {} again\n",
                field_text(&key["status"], "?")
            ));
        }
        KeyCommand::Disable { domain, key_id } => set_status(client, &domain, &key_id, "disable")?,
        KeyCommand::Enable { domain, key_id } => set_status(client, &domain, &key_id, "enable")?,
    }
    Ok(())
}

fn set_status(client: &Client, domain: &str, key_id: &str, action: &str) -> anyhow::Result<()> {
    let key = client
        .call(
            Method::POST,
            &format!("{}/{action}", key_path(domain, key_id)),
            None,
        )
        .with_context(|| format!("cannot {action} key {key_id}"))?;
    output::print(&format!(
        "Key {key_id} in domain {domain} is now {}\n",
        field_text(&key["status"], "?")
    ));
    Ok(())
}

fn version(client: &Client, command: VersionCommand) -> anyhow::Result<()> {
    let (domain, key_id, number, action, body) = match command {
        VersionCommand::List {
            domain,
            key_id,
            output: format,
        } => {
            let answer = client.call(
                Method::GET,
                &format!("{}/versions", key_path(&domain, &key_id)),
                None,
            )?;
            print_list(
                format,
                &answer["versions"],
                &[
                    ("VERSION", "version"),
                    ("STATE", "state"),
                    ("PRIMARY", "primary"),
                    ("CREATED", "createdAt"),
                ],
            );
            return Ok(());
        }
        VersionCommand::Disable {
            domain,
            key_id,
            version,
        } => (domain, key_id, version, "disable", None),
        VersionCommand::Enable {
            domain,
            key_id,
            version,
        } => (domain, key_id, version, "enable", None),
        // Without --yes the request still goes to the admin API, which rejects and audits it.
        VersionCommand::Destroy {
            domain,
            key_id,
            version,
            yes,
        } => (
            domain,
            key_id,
            version,
            "destroy",
            Some(json!({ "confirm": yes })),
        ),
    };

    let unconfirmed = body.as_ref().is_some_and(|body| body["confirm"] == false);
    client
        .call(
            Method::POST,
            &format!("{}/versions/{number}/{action}", key_path(&domain, &key_id)),
            body.as_ref(),
        )
        .map_err(|error| {
            if unconfirmed {
                anyhow::anyhow!(
                    "destroying version {number} of key {key_id} erases its material for good, \
                     so its ciphertexts can never be decrypted again; repeat with --yes to do it"
                )
            } else {
                error
            }
        })?;

    output::print(&match action {
        "disable" => format!(
            "Version {number} of key {key_id} is DISABLED: its ciphertexts fail with InvalidStateException\n"
        ),
        "enable" => format!("Version {number} of key {key_id} is ENABLED\n"),
        _ => format!("Destroyed the material of version {number} of key {key_id}\n"),
    });
    Ok(())
}

fn self_service(
    client: &Client,
    domain: &str,
    name: &str,
    key_store: &str,
    output_dir: Option<&Path>,
) -> anyhow::Result<()> {
    let created = client.call(
        Method::POST,
        &format!("{}/self-service/keys", domain_path(domain)),
        Some(&json!({ "keyName": name, "keyStore": key_store })),
    )?;
    let aws_cli = field_text(&created["awsCli"], "");
    let terraform = field_text(&created["terraform"], "");
    output::print(&format!(
        "Created external key {} ({name}) in domain {domain}.\n\
         \n\
         Create the matching AWS KMS key in custom key store {} with the AWS CLI:\n\
         \n{aws_cli}\n\
         \n\
         or with Terraform:\n\
         \n{terraform}\n",
        field_text(&created["xksKeyId"], ""),
        field_text(&created["customKeyStoreId"], ""),
    ));
    if let Some(dir) = output_dir {
        write_files(
            dir,
            &[("create-key.sh", &aws_cli), ("kms-key.tf", &terraform)],
        )?;
    }
    Ok(())
}

/// Writes each (file name, content) pair into `dir`, ending each file with a newline.
fn write_files(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    for (name, content) in files {
        let path = dir.join(name);
        let mut content = (*content).to_owned();
        if !content.ends_with('\n') {
            content.push('\n');
        }
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
        output::note(&format!("wrote {}", path.display()));
    }
    Ok(())
}

pub(super) fn policy(client: &Client, command: PolicyCommand) -> anyhow::Result<()> {
    let path = |domain: &str, key: Option<&str>| match key {
        Some(key_id) => format!("{}/policy", key_path(domain, key_id)),
        None => format!("{}/policy", domain_path(domain)),
    };
    let owner = |domain: &str, key: Option<&str>| match key {
        Some(key_id) => format!("key {key_id} in domain {domain}"),
        None => format!("domain {domain}"),
    };
    match command {
        PolicyCommand::Set { domain, key, file } => {
            let text = read_policy_file(&file)?;
            let document: Value = serde_json::from_str(&text)
                .with_context(|| format!("policy file {} is not JSON", file.display()))?;
            let answer = client.call(
                Method::PUT,
                &path(&domain, key.as_deref()),
                Some(&json!({ "policy": document })),
            )?;
            let rules = answer["policy"]["rules"].as_array().map_or(0, Vec::len);
            let plural = if rules == 1 { "" } else { "s" };
            output::print(&format!(
                "Set the policy of {} with {rules} rule{plural}\n",
                owner(&domain, key.as_deref())
            ));
        }
        PolicyCommand::Show { domain, key } => {
            let answer = client.call(Method::GET, &path(&domain, key.as_deref()), None)?;
            if answer["policy"].is_null() {
                output::note(&format!(
                    "{} has no policy: every authenticated request is allowed",
                    owner(&domain, key.as_deref())
                ));
            } else {
                output::print(&format!("{:#}\n", answer["policy"]));
            }
        }
        PolicyCommand::Clear { domain, key } => {
            client.call(Method::DELETE, &path(&domain, key.as_deref()), None)?;
            output::print(&format!(
                "Removed the policy of {}\n",
                owner(&domain, key.as_deref())
            ));
        }
    }
    Ok(())
}

fn read_policy_file(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the policy from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))
}

const PRINCIPAL_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("ROLES", "rolesText"),
    ("CREATED", "createdAt"),
    ("CREATED BY", "createdBy"),
];

/// Adds a `rolesText` field such as `domain-admin:acme operator` for the table and record views.
fn with_roles_text(mut principal: Value) -> Value {
    let roles = principal["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .map(|role| match role["domain"].as_str() {
                    Some(domain) => format!("{}:{domain}", field_text(&role["role"], "")),
                    None => field_text(&role["role"], ""),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    principal["rolesText"] = json!(roles);
    principal
}

pub(super) fn principal(client: &Client, command: PrincipalCommand) -> anyhow::Result<()> {
    match command {
        PrincipalCommand::Create { name, roles } => {
            let roles = roles
                .iter()
                .map(|role| match role.split_once(':') {
                    Some((role, domain)) => json!({ "role": role, "domain": domain }),
                    None => json!({ "role": role }),
                })
                .collect::<Vec<_>>();
            client.call(
                Method::POST,
                "/v1/principals",
                Some(&json!({ "name": name, "roles": roles })),
            )?;
            output::print(&format!(
                "Created principal {name}; give it a token with `keyhold token create {name}`\n"
            ));
        }
        PrincipalCommand::List {
            domain,
            output: format,
        } => {
            let path = match &domain {
                Some(domain) => format!("{}/principals", domain_path(domain)),
                None => "/v1/principals".to_owned(),
            };
            let answer = client.call(Method::GET, &path, None)?;
            let list = Value::Array(
                answer["principals"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(with_roles_text)
                    .collect(),
            );
            print_list(format, &list, PRINCIPAL_COLUMNS);
        }
        PrincipalCommand::Show {
            name,
            output: format,
        } => {
            let principal = client.call(
                Method::GET,
                &format!("/v1/principals/{}", path_segment(&name)),
                None,
            )?;
            print_object(
                format,
                &with_roles_text(principal),
                &[
                    ("name", "name", ""),
                    ("roles", "rolesText", ""),
                    ("created", "createdAt", ""),
                    ("created by", "createdBy", ""),
                ],
            );
        }
        PrincipalCommand::Delete { name } => {
            client.call(
                Method::DELETE,
                &format!("/v1/principals/{}", path_segment(&name)),
                None,
            )?;
            output::print(&format!("Deleted principal {name} and its tokens\n"));
        }
    }
    Ok(())
}

pub(super) fn token(client: &Client, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            principal,
            description,
            expires_in_days,
        } => {
            let created = client.call(
                Method::POST,
                &format!("/v1/principals/{}/tokens", path_segment(&principal)),
                Some(&json!({ "description": description, "expiresInDays": expires_in_days })),
            )?;
            output::print(&format!("{}\n", field_text(&created["token"], "")));
            output::note(&format!(
                "Token {} of principal {principal}{}. This is the only time it is shown; \
                 only its SHA-256 digest is stored.",
                field_text(&created["id"], ""),
                created["expiresAt"]
                    .as_str()
                    .map(|at| format!(", valid until {at}"))
                    .unwrap_or_default()
            ));
        }
        TokenCommand::List {
            principal,
            output: format,
        } => {
            let answer = client.call(
                Method::GET,
                &format!("/v1/principals/{}/tokens", path_segment(&principal)),
                None,
            )?;
            print_list(
                format,
                &answer["tokens"],
                &[
                    ("ID", "id"),
                    ("STATUS", "status"),
                    ("CREATED", "createdAt"),
                    ("EXPIRES", "expiresAt"),
                    ("LAST USED", "lastUsedAt"),
                    ("DESCRIPTION", "description"),
                ],
            );
        }
        TokenCommand::Revoke { principal, id } => {
            client.call(
                Method::DELETE,
                &format!(
                    "/v1/principals/{}/tokens/{}",
                    path_segment(&principal),
                    path_segment(&id)
                ),
                None,
            )?;
            output::print(&format!(
                "Revoked token {id} of principal {principal}; it stops working at once\n"
            ));
        }
    }
    Ok(())
}

const KEY_STORE_FIELDS: &[(&str, &str, &str)] = &[
    ("name", "name", ""),
    ("custom key store id", "customKeyStoreId", ""),
    ("region", "region", ""),
    ("account", "accountId", ""),
    ("registered", "createdAt", ""),
];

pub(super) fn key_store(client: &Client, command: KeyStoreCommand) -> anyhow::Result<()> {
    let store_path = |domain: &str, name: &str| {
        format!("{}/key-stores/{}", domain_path(domain), path_segment(name))
    };
    match command {
        KeyStoreCommand::Register {
            domain,
            name,
            custom_key_store_id,
            region,
            account_id,
        } => {
            client.call(
                Method::POST,
                &format!("{}/key-stores", domain_path(&domain)),
                Some(&json!({
                    "name": name,
                    "customKeyStoreId": custom_key_store_id,
                    "region": region,
                    "accountId": account_id,
                })),
            )?;
            output::print(&format!(
                "Registered external key store {name} ({custom_key_store_id}, {region}) for \
                 domain {domain}\n"
            ));
        }
        KeyStoreCommand::List {
            domain,
            output: format,
        } => {
            let answer = client.call(
                Method::GET,
                &format!("{}/key-stores", domain_path(&domain)),
                None,
            )?;
            print_list(
                format,
                &answer["keyStores"],
                &[
                    ("NAME", "name"),
                    ("CUSTOM KEY STORE ID", "customKeyStoreId"),
                    ("REGION", "region"),
                    ("ACCOUNT", "accountId"),
                    ("REGISTERED", "createdAt"),
                ],
            );
        }
        KeyStoreCommand::Show {
            domain,
            name,
            output: format,
        } => {
            let row = client.call(Method::GET, &store_path(&domain, &name), None)?;
            print_object(format, &row, KEY_STORE_FIELDS);
        }
        KeyStoreCommand::Remove { domain, name } => {
            client.call(Method::DELETE, &store_path(&domain, &name), None)?;
            output::print(&format!(
                "Removed the registration of external key store {name}; its keys stay\n"
            ));
        }
        KeyStoreCommand::Setup {
            domain,
            name,
            output_dir,
        } => {
            let setup = client.call(
                Method::GET,
                &format!("{}/setup", store_path(&domain, &name)),
                None,
            )?;
            for warning in setup["warnings"].as_array().into_iter().flatten() {
                output::note(&format!("warning: {}", field_text(warning, "")));
            }
            let configuration = format!("{:#}", setup["proxyConfigurationFile"]);
            let public = field_text(&setup["publicEndpointCommand"], "");
            let vpc = field_text(&setup["vpcEndpointServiceCommand"], "");
            let template = field_text(&setup["vpcEndpointServiceTemplate"], "");
            match output_dir {
                Some(dir) => write_files(
                    &dir,
                    &[
                        ("proxy-configuration.json", &configuration),
                        ("create-custom-key-store-public.sh", &public),
                        ("create-custom-key-store-vpc.sh", &vpc),
                        ("vpc-endpoint-service.cfn.yaml", &template),
                    ],
                )?,
                None => output::print(&format!(
                    "Proxy configuration file for the AWS KMS console:\n\n{configuration}\n\n\
                     Create the custom key store with public endpoint connectivity:\n\n{public}\n\n\
                     or with VPC endpoint service connectivity:\n\n{vpc}\n\n\
                     The CloudFormation template of the VPC endpoint service is long; write it \
                     to files with --output-dir DIR.\n"
                )),
            }
        }
    }
    Ok(())
}
