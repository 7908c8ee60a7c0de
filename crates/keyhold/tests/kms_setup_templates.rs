//! Checks the AWS-side output of `keyhold::kms_setup` with the tools that read it: cfn-lint for
//! the CloudFormation template, python-hcl2 for the Terraform resource, and shlex and bash for
//! the AWS CLI commands, through `tests/clients/check_templates.py`.
//!
//! Each generated file gets a `FILE.expected.json` sidecar. The expected values are written
//! out here rather than taken from the library, so that the checker compares the output with
//! an independent statement of what it must contain.

use std::path::Path;
use std::process::{Command, Output};

use keyhold::kms_setup::{
    ENDPOINT_SERVICE_NAME_PLACEHOLDER, ExternalKeyStore, ProxyEndpoint, SECRET_PLACEHOLDER,
    create_key_instructions, key_store_setup, validate_key_store, validate_proxy_endpoint,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/check_templates.py"
);

const ACCESS_KEY_ID: &str = "ABCDEFGHIJKLMNOPQRSTUVWX";

const SECRET: &str = "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo=";

/// One key store with its endpoint and the values the output must contain.
struct Case {
    store: ExternalKeyStore,
    endpoint: ProxyEndpoint,
    secret: Option<&'static str>,
    /// `--xks-proxy-uri-endpoint` of the public endpoint command.
    public_uri_endpoint: &'static str,
    /// Private DNS name, also the host of the VPC command's `--xks-proxy-uri-endpoint`.
    private_dns_name: &'static str,
    target_port: u16,
    xks_key_id: &'static str,
    terraform_name: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            store: ExternalKeyStore {
                name: "acme-prod".to_owned(),
                custom_key_store_id: "cks-1234567890abcdef0".to_owned(),
                region: "eu-west-1".to_owned(),
                account_id: "111122223333".to_owned(),
            },
            endpoint: ProxyEndpoint {
                uri_endpoint: "https://xks.example.com".to_owned(),
                uri_path: "/domains/acme/kms/xks/v1".to_owned(),
                vpc_private_dns_name: None,
            },
            secret: Some(SECRET),
            public_uri_endpoint: "https://xks.example.com",
            private_dns_name: "xks.example.com",
            target_port: 443,
            xks_key_id: "key-1",
            terraform_name: "acme-prod_key-1",
        },
        Case {
            store: ExternalKeyStore {
                name: "gov.store_2".to_owned(),
                custom_key_store_id: "cks-9876543210fedcba9".to_owned(),
                region: "us-gov-west-1".to_owned(),
                account_id: "444455556666".to_owned(),
            },
            endpoint: ProxyEndpoint {
                uri_endpoint: "https://Keyhold.Example.org:8443".to_owned(),
                uri_path: "/kms/xks/v1".to_owned(),
                vpc_private_dns_name: Some("gov.xks-private.example.org".to_owned()),
            },
            secret: None,
            public_uri_endpoint: "https://Keyhold.Example.org",
            private_dns_name: "gov.xks-private.example.org",
            target_port: 8443,
            xks_key_id: "Key_2.a",
            terraform_name: "gov_store_2_Key_2_a",
        },
        Case {
            store: ExternalKeyStore {
                name: "1st".to_owned(),
                custom_key_store_id: "cks-00000000000000000".to_owned(),
                region: "ap-southeast-3".to_owned(),
                account_id: "777788889999".to_owned(),
            },
            endpoint: ProxyEndpoint {
                uri_endpoint: "https://xks-1.example.net:9443".to_owned(),
                uri_path: "/t-1/a_b/kms/xks/v1".to_owned(),
                vpc_private_dns_name: None,
            },
            secret: Some("0000EXAMPLEFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9+vE="),
            public_uri_endpoint: "https://xks-1.example.net",
            private_dns_name: "xks-1.example.net",
            target_port: 9443,
            xks_key_id: "k",
            terraform_name: "key_1st_k",
        },
    ]
}

/// Descriptions that break naive quoting in shell, HCL or the AWS CLI. `{dir}` becomes the
/// output directory, so that a command substitution that ran would leave a file there.
const DESCRIPTIONS: &[&str] = &[
    "Payments key",
    "",
    "it's \"quoted\" and 'single'",
    "$(touch {dir}/substituted) `touch {dir}/backticks` $HOME ${PATH}",
    "'; touch {dir}/quote-escape; echo '",
    "line one\nline two\r\n\ttabbed",
    "file:///etc/passwd",
    "https://example.com/description",
    "--origin AWS_KMS",
    "${var.secret} %{ if true }yes%{ endif } $${literal} %%{literal}",
    "back\\slash \\\" \\n \\u0041",
    "ünïcödé ✓ 🔑 \u{7f}\u{85}",
    "nul\0byte",
    "#not a comment",
    " leading and trailing spaces ",
];

#[test]
fn generated_files_pass_checker() {
    let dir = TempDir::new().expect("create temporary directory");
    let mut files = 0;

    for (number, case) in cases().iter().enumerate() {
        assert_eq!(validate_key_store(&case.store), Ok(()));
        assert_eq!(validate_proxy_endpoint(&case.endpoint), Ok(()));
        files += write_key_store_setup(dir.path(), number, case);

        for (index, description) in DESCRIPTIONS.iter().enumerate() {
            let description = description.replace("{dir}", &dir.path().display().to_string());
            write_create_key(dir.path(), &format!("{number}-{index}"), case, &description);
            files += 2;
        }
    }

    let output = run_checker(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "checker failed with {}:\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("{files} passed, 0 failed")),
        "{stdout}"
    );
    for name in ["substituted", "backticks", "quote-escape"] {
        assert!(
            !dir.path().join(name).exists(),
            "a description ran a command that created {name}"
        );
    }
}

#[test]
fn checker_rejects_broken_files() {
    let dir = TempDir::new().expect("create temporary directory");
    let case = &cases()[0];
    write_key_store_setup(dir.path(), 0, case);
    write_create_key(dir.path(), "0", case, "Payments key");

    // Spoil one file of each kind in a way a quoting or template bug would.
    let template = dir.path().join("vpc-endpoint-service-0.cfn.yaml");
    let text = std::fs::read_to_string(&template).expect("read template");
    let spoiled = text.replace("AcceptanceRequired: false", "AcceptanceRequired: true");
    assert_ne!(text, spoiled);
    std::fs::write(&template, spoiled).expect("write template");

    let terraform = dir.path().join("create-key-0.tf");
    let text = std::fs::read_to_string(&terraform).expect("read Terraform");
    let spoiled = text.replace("\"Payments key\"", "\"${var.injected}\"");
    assert_ne!(text, spoiled);
    std::fs::write(&terraform, spoiled).expect("write Terraform");

    let command = dir.path().join("create-key-0.sh");
    let text = std::fs::read_to_string(&command).expect("read command");
    std::fs::write(&command, format!("{} --origin AWS_KMS\n", text.trim_end()))
        .expect("write command");

    let output = run_checker(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL vpc-endpoint-service-0.cfn.yaml"),
        "{stdout}"
    );
    assert!(stdout.contains("AcceptanceRequired"), "{stdout}");
    assert!(stdout.contains("FAIL create-key-0.tf"), "{stdout}");
    assert!(stdout.contains("live template sequence"), "{stdout}");
    assert!(stdout.contains("FAIL create-key-0.sh"), "{stdout}");
    assert!(
        stdout.contains("--origin is given more than once"),
        "{stdout}"
    );
    assert!(stdout.contains("2 passed, 3 failed"), "{stdout}");
}

/// Writes the CloudFormation template and both create-custom-key-store commands with their
/// sidecars and returns the number of files to check.
fn write_key_store_setup(dir: &Path, number: usize, case: &Case) -> usize {
    let setup = key_store_setup(&case.store, &case.endpoint, ACCESS_KEY_ID, case.secret);
    let region = case.store.region.as_str();

    write_checked(
        dir,
        &format!("vpc-endpoint-service-{number}.cfn.yaml"),
        &setup.vpc_endpoint_service_template,
        &json!({
            "regions": [region],
            "allowed_principals": [format!("cks.kms.{region}.amazonaws.com")],
            "parameter_defaults": {
                "TargetPort": case.target_port,
                "PrivateDnsName": case.private_dns_name,
            },
        }),
    );

    let credential = json!({
        "AccessKeyId": ACCESS_KEY_ID,
        "RawSecretAccessKey": case.secret.unwrap_or(SECRET_PLACEHOLDER),
    });
    let common = json!({
        "--custom-key-store-name": case.store.name,
        "--custom-key-store-type": "EXTERNAL_KEY_STORE",
        "--xks-proxy-uri-path": case.endpoint.uri_path,
        "--xks-proxy-authentication-credential": credential,
        "--region": region,
    });

    let mut public = common.clone();
    public["--xks-proxy-uri-endpoint"] = json!(case.public_uri_endpoint);
    public["--xks-proxy-connectivity"] = json!("PUBLIC_ENDPOINT");
    write_checked(
        dir,
        &format!("public-endpoint-{number}.sh"),
        &format!("{}\n", setup.public_endpoint_command),
        &json!({"command": ["aws", "kms", "create-custom-key-store"], "parameters": public}),
    );

    let mut vpc = common;
    vpc["--xks-proxy-uri-endpoint"] = json!(format!("https://{}", case.private_dns_name));
    vpc["--xks-proxy-connectivity"] = json!("VPC_ENDPOINT_SERVICE");
    vpc["--xks-proxy-vpc-endpoint-service-name"] = json!(ENDPOINT_SERVICE_NAME_PLACEHOLDER);
    write_checked(
        dir,
        &format!("vpc-endpoint-service-{number}.sh"),
        &format!("{}\n", setup.vpc_endpoint_service_command),
        &json!({"command": ["aws", "kms", "create-custom-key-store"], "parameters": vpc}),
    );
    3
}

/// Writes the create-key command and the Terraform resource with their sidecars.
fn write_create_key(dir: &Path, suffix: &str, case: &Case, description: &str) {
    let instructions = create_key_instructions(&case.store, case.xks_key_id, description);
    let store = &case.store;

    write_checked(
        dir,
        &format!("create-key-{suffix}.sh"),
        &format!("{}\n", instructions.aws_cli),
        &json!({
            "command": ["aws", "kms", "create-key"],
            "parameters": {
                "--origin": "EXTERNAL_KEY_STORE",
                "--custom-key-store-id": store.custom_key_store_id,
                "--xks-key-id": case.xks_key_id,
                "--key-spec": "SYMMETRIC_DEFAULT",
                "--key-usage": "ENCRYPT_DECRYPT",
                "--region": store.region,
                "--description": description,
            },
        }),
    );

    write_checked(
        dir,
        &format!("create-key-{suffix}.tf"),
        &instructions.terraform,
        &json!({
            "resource_type": "aws_kms_key",
            "resource_name": case.terraform_name,
            "attributes": {
                "region": store.region,
                "custom_key_store_id": store.custom_key_store_id,
                "xks_key_id": case.xks_key_id,
                "key_usage": "ENCRYPT_DECRYPT",
                "customer_master_key_spec": "SYMMETRIC_DEFAULT",
                "description": description,
            },
        }),
    );
}

fn write_checked(dir: &Path, name: &str, contents: &str, expected: &Value) {
    std::fs::write(dir.join(name), contents).expect("write generated file");
    let sidecar = serde_json::to_string_pretty(expected).expect("serialize expectations");
    std::fs::write(dir.join(format!("{name}.expected.json")), sidecar).expect("write expectations");
}

fn run_checker(dir: &Path) -> Output {
    Command::new("python3")
        .arg(CHECKER)
        .arg(dir)
        .output()
        .expect("run python3 with the template checker")
}
