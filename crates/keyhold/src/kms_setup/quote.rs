//! Quoting for the languages that `kms_setup` writes (POSIX shell, HCL, YAML) and the AWS CLI
//! command builder.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// An `aws` command built argument by argument and rendered as one line of POSIX shell.
///
/// The AWS CLI does not pass every string on as written. It reads `file://` and `fileb://`
/// values from local files, and version 1 also fetches `http://` and `https://` values. Its
/// argument parser takes a value that starts with `-` for an option. Such values, and values
/// with control characters, go into `--cli-input-json` instead, whose members the AWS CLI uses
/// unchanged. Sources: `awscli/paramfile.py` of AWS CLI 1.45 and the AWS KMS Developer Guide,
/// "Create an external key store".
pub(super) struct AwsCliCommand {
    /// Shell-quoted words, starting with `aws`.
    words: Vec<String>,
    /// Shell-quoted options of the AWS CLI itself, written after the operation's parameters.
    global_options: Vec<String>,
    /// Members for `--cli-input-json`, named like the API parameters.
    input_json: Map<String, Value>,
}

impl AwsCliCommand {
    pub(super) fn new(service: &str, operation: &str) -> Self {
        Self {
            words: vec!["aws".to_owned(), service.to_owned(), operation.to_owned()],
            global_options: Vec::new(),
            input_json: Map::new(),
        }
    }

    /// Adds `flag value` for a string parameter of the operation.
    pub(super) fn parameter(&mut self, flag: &str, value: &str) {
        if needs_input_json(value) {
            self.input_json
                .insert(member_name(flag), Value::String(value.to_owned()));
        } else {
            self.words.push(flag.to_owned());
            self.words.push(shell_quote(value));
        }
    }

    /// Adds a structure parameter, in the shorthand syntax `Key=value,Key=value` when every
    /// value allows it and as a JSON object otherwise.
    pub(super) fn structure(&mut self, flag: &str, members: &[(&str, &str)]) {
        let value = if members.iter().all(|(_, value)| is_shorthand_safe(value)) {
            members
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            let object: Map<String, Value> = members
                .iter()
                .map(|(key, value)| ((*key).to_owned(), Value::String((*value).to_owned())))
                .collect();
            Value::Object(object).to_string()
        };
        self.words.push(flag.to_owned());
        self.words.push(shell_quote(&value));
    }

    /// Adds an option of the AWS CLI itself, such as `--region`, which `--cli-input-json`
    /// cannot carry.
    pub(super) fn global_option(&mut self, flag: &str, value: &str) {
        self.global_options.push(flag.to_owned());
        self.global_options.push(shell_quote(value));
    }

    pub(super) fn render(mut self) -> String {
        self.words.append(&mut self.global_options);
        if !self.input_json.is_empty() {
            let json = Value::Object(std::mem::take(&mut self.input_json)).to_string();
            self.words.push("--cli-input-json".to_owned());
            self.words.push(shell_quote(&json));
        }
        self.words.join(" ")
    }
}

/// Returns whether the AWS CLI would change or misread `value` as a command-line argument.
fn needs_input_json(value: &str) -> bool {
    let lowercase = value.to_ascii_lowercase();
    ["file://", "fileb://", "http://", "https://"]
        .iter()
        .any(|prefix| lowercase.starts_with(prefix))
        || value.starts_with('-')
        || value.chars().any(char::is_control)
}

/// Converts an option such as `--custom-key-store-id` to its API member name,
/// `CustomKeyStoreId`.
pub(super) fn member_name(flag: &str) -> String {
    flag.trim_start_matches('-')
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Returns whether the AWS CLI shorthand parser reads `value` back unchanged: no `,` or quote,
/// no leading character with a meaning of its own and no trailing space, which it strips.
fn is_shorthand_safe(value: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/+=<>._- ".contains(c);
    value.starts_with(|c: char| c.is_ascii_alphanumeric() || "/+<".contains(c))
        && !value.ends_with(' ')
        && value.chars().all(allowed)
}

/// Quotes `value` as one POSIX shell word. Plain words stay bare. Anything else goes in single
/// quotes, inside which the shell expands nothing, with each `'` written as `'\''`.
fn shell_quote(value: &str) -> String {
    // Only characters that no common shell treats specially stay bare. `=` is not one of
    // them, because zsh expands a word that starts with it.
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+:,./_-".contains(&b));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Quotes `value` as an HCL string literal. Besides `"` and `\`, HCL treats `${` and `%{` as
/// the start of a template expression, which doubling the first character escapes.
pub(super) fn hcl_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                quoted.push(c);
                quoted.push(c);
            }
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Quotes `value` as a YAML double-quoted scalar that contains only printable ASCII, so that
/// no YAML reader rejects or reinterprets a character.
pub(super) fn yaml_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            ' '..='~' => quoted.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(quoted, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(quoted, "\\U{:08X}", u32::from(c));
            }
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms_setup::SECRET_PLACEHOLDER;

    #[test]
    fn hcl_quote_escapes_control_characters() {
        assert_eq!(hcl_quote("a\u{7}b\u{85}c\td"), "\"a\\u0007b\\u0085c\\td\"");
        assert_eq!(hcl_quote("$ % $x %y {}"), "\"$ % $x %y {}\"");
        assert_eq!(hcl_quote("$$${"), "\"$$$${\"");
    }

    #[test]
    fn shell_quote_forms() {
        assert_eq!(
            shell_quote("plain-word_1.2:3,4@5%6+7/8"),
            "plain-word_1.2:3,4@5%6+7/8"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("=x"), "'=x'");
        assert_eq!(shell_quote("a\nb"), "'a\nb'");
        assert_eq!(shell_quote("~"), "'~'");
    }

    #[test]
    fn yaml_quote_is_printable_ascii() {
        assert_eq!(yaml_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            yaml_quote("x\ny\u{7f}\u{85}é🔑"),
            r#""x\u000Ay\u007F\u0085\u00E9\U0001F511""#
        );
        assert_eq!(
            yaml_quote("#: - { } [ ] & * ! | > ' % @ `"),
            "\"#: - { } [ ] & * ! | > ' % @ `\""
        );
    }

    #[test]
    fn member_names_follow_api() {
        assert_eq!(member_name("--custom-key-store-id"), "CustomKeyStoreId");
        assert_eq!(
            member_name("--xks-proxy-uri-endpoint"),
            "XksProxyUriEndpoint"
        );
        assert_eq!(member_name("--description"), "Description");
    }

    #[test]
    fn shorthand_safety() {
        assert!(is_shorthand_safe(
            "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo="
        ));
        assert!(is_shorthand_safe(SECRET_PLACEHOLDER));
        for value in [
            "", "a,b", "=a", " a", "a ", "\"a\"", "'a'", "[a]", "{a}", "a\nb",
        ] {
            assert!(!is_shorthand_safe(value), "{value:?}");
        }
    }
}
