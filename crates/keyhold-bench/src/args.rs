//! Command-line options of `keyhold-bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::workload::Mix;

/// Largest plaintext the XKS API requires every proxy to accept, in bytes.
pub(crate) const MAX_PLAINTEXT_SIZE: usize = 4300;

/// Largest AAD the XKS API requires every proxy to accept, in bytes.
pub(crate) const MAX_AAD_SIZE: usize = 8192;

/// Load generator for AWS KMS External Key Store (XKS) proxies: sends SigV4-signed requests
/// over keep-alive HTTPS connections, in closed loop or open loop at a fixed rate, and reports
/// throughput, latency percentiles and errors by XKS error name.
///
/// The SigV4 secret access key is read from the environment variable named by --secret-env
/// (default XKS_SECRET_ACCESS_KEY), never from the command line.
#[derive(Debug, Parser)]
#[command(name = "keyhold-bench", version, about, max_term_width = 100)]
pub(crate) struct Args {
    /// Base URL of the proxy, for example https://localhost:8443 (http:// for a server without
    /// TLS). Repeat the option or give a comma-separated list to spread the connections over
    /// several nodes as a TCP load balancer would: connection i goes to URL i mod N
    #[arg(long, value_name = "URL", required = true, value_delimiter = ',')]
    pub(crate) url: Vec<String>,

    /// XksProxyUriPath of the key store, for example /domains/acme/kms/xks/v1
    #[arg(long, value_name = "PATH")]
    pub(crate) uri_path: String,

    /// External key id for metadata, encrypt and decrypt
    #[arg(long, value_name = "ID", default_value = "", hide_default_value = true)]
    pub(crate) key_id: String,

    /// SigV4 access key id
    #[arg(long, env = "XKS_ACCESS_KEY_ID", value_name = "ID")]
    pub(crate) access_key_id: String,

    /// Name of the environment variable that contains the SigV4 secret access key
    #[arg(long, value_name = "NAME", default_value = "XKS_SECRET_ACCESS_KEY")]
    pub(crate) secret_env: String,

    /// SigV4 region in the credential scope
    #[arg(long, default_value = "us-east-1")]
    pub(crate) region: String,

    /// Host header to send and sign on every connection [default: the host and port of the
    /// first --url]
    #[arg(long, value_name = "HOST")]
    pub(crate) host_header: Option<String>,

    /// PEM file of the CA certificates the server certificate must chain to
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub(crate) ca_file: Option<PathBuf>,

    /// Accept any server certificate without verifying it
    #[arg(long)]
    pub(crate) insecure: bool,

    /// TLS server name to send and verify on every connection [default: HOST of each --url]
    #[arg(long, value_name = "NAME")]
    pub(crate) tls_server_name: Option<String>,

    /// Operations to send, each with an optional weight: health, metadata, encrypt, decrypt;
    /// for example encrypt:4,decrypt:4,health:1
    #[arg(long = "op", value_name = "OPS", default_value = "encrypt", value_parser = Mix::parse)]
    pub(crate) mix: Mix,

    /// Number of keep-alive connections, each with one request in flight at a time
    #[arg(long, short = 'c', default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub(crate) connections: u16,

    /// Open loop: send this many requests per second on a fixed schedule and measure latency
    /// from each request's due time [default: closed loop, as fast as responses come back]
    #[arg(long, value_name = "RPS", value_parser = parse_rate)]
    pub(crate) rate: Option<f64>,

    /// Measured duration, for example 10s, 500ms or 1m
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,

    /// Unmeasured warm-up before the measured duration
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,

    /// Time limit for one request; a request over it fails with Timeout
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,

    /// Encrypt plaintext size in bytes, 1 to 4,300
    #[arg(long, value_name = "BYTES", default_value_t = 32, value_parser = parse_plaintext_size)]
    pub(crate) plaintext_size: usize,

    /// AAD size in bytes for encrypt and decrypt, 0 for none, at most 8,192
    #[arg(long, value_name = "BYTES", default_value_t = 0, value_parser = parse_aad_size)]
    pub(crate) aad_size: usize,

    /// Do not ask encrypt for the ciphertext data integrity value (SHA_256)
    #[arg(long)]
    pub(crate) no_integrity_value: bool,

    /// requestMetadata.kmsKeyArn to send [default: arn:aws:kms:REGION:111122223333:key/keyhold-bench]
    #[arg(long, value_name = "ARN")]
    pub(crate) kms_key_arn: Option<String>,

    /// Process id of the server, to report its CPU time (utime + stime from /proc/PID/stat)
    /// per request. Repeat the option or give a comma-separated list for several nodes, whose
    /// CPU times are summed. The resolution is one clock tick per process, 10 ms on Linux
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,

    /// Worker threads of the load generator [default: the CPUs it may run on]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: Option<u16>,

    /// Report format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,

    /// Do not draw the progress bar on stderr
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned lines for people
    Text,
    /// One JSON object for scripts
    Json,
}

impl Args {
    /// Checks the combinations that clap cannot express.
    ///
    /// # Errors
    ///
    /// Returns a message naming the option to change.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let needs_key = self
            .mix
            .operations()
            .any(|op| op != crate::workload::Operation::Health);
        if needs_key && self.key_id.is_empty() {
            return Err("--key-id is required for metadata, encrypt and decrypt".to_owned());
        }
        let valid_key_id = self.key_id.len() <= 128
            && self
                .key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid_key_id {
            return Err(format!(
                "invalid --key-id {:?}; XKS key ids are 1 to 128 characters of A-Z, a-z, 0-9, '-', '.' and '_'",
                self.key_id
            ));
        }
        if !self.uri_path.starts_with('/') {
            return Err(format!(
                "invalid --uri-path {:?}; it must start with '/', for example /kms/xks/v1",
                self.uri_path
            ));
        }
        if self.duration.is_zero() {
            return Err("--duration must be longer than zero".to_owned());
        }
        if usize::from(self.connections) < self.url.len() {
            return Err(format!(
                "--connections {} is fewer than the {} URLs of --url; give each URL at least \
                 one connection",
                self.connections,
                self.url.len()
            ));
        }
        let mut pids = self.server_pid.clone();
        pids.sort_unstable();
        if let Some(pair) = pids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!(
                "--server-pid {} is given twice; its CPU time would be counted twice",
                pair[0]
            ));
        }
        Ok(())
    }
}

/// Parses a duration such as `10s`, `500ms`, `2m` or `1.5s`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("invalid duration {text:?}; add a unit: ms, s or m"))?;
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("invalid duration unit {unit:?}; use ms, s or m")),
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid duration {text:?}; expected a number and a unit such as 10s")
    })?;
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("duration {text:?} is out of range"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("invalid rate {text:?}; expected requests per second, e.g. 1800"))?;
    if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
        return Err(format!(
            "rate {text} is out of range; use more than 0 and at most 10,000,000"
        ));
    }
    Ok(rate)
}

fn parse_plaintext_size(text: &str) -> Result<usize, String> {
    parse_size(text, 1, MAX_PLAINTEXT_SIZE)
}

fn parse_aad_size(text: &str) -> Result<usize, String> {
    parse_size(text, 0, MAX_AAD_SIZE)
}

fn parse_size(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let size: usize = text
        .parse()
        .map_err(|_| format!("invalid size {text:?}; expected a number of bytes"))?;
    if (min..=max).contains(&size) {
        Ok(size)
    } else {
        Err(format!(
            "size {size} is out of range; use {min} to {max} bytes"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec![
            "keyhold-bench",
            "--url",
            "https://localhost:8443",
            "--uri-path",
            "/domains/acme/kms/xks/v1",
            "--access-key-id",
            "KHABCDEFGHIJKLMNOPQRSTUV",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for text in ["10", "s", "10h", "-1s", "1..2s"] {
            assert!(parse_duration(text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn defaults_are_closed_loop_encrypt() {
        let args = parse(&["--key-id", "k1"]).expect("valid");
        assert_eq!(args.connections, 16);
        assert_eq!(args.rate, None);
        assert_eq!(args.plaintext_size, 32);
        assert_eq!(args.aad_size, 0);
        assert!(!args.no_integrity_value);
        assert_eq!(args.mix.to_string(), "encrypt");
        assert_eq!(args.validate(), Ok(()));
    }

    #[test]
    fn sizes_and_rates_are_bounded() {
        assert!(parse(&["--plaintext-size", "4300"]).is_ok());
        assert!(parse(&["--plaintext-size", "4301"]).is_err());
        assert!(parse(&["--plaintext-size", "0"]).is_err());
        assert!(parse(&["--aad-size", "8192"]).is_ok());
        assert!(parse(&["--aad-size", "8193"]).is_err());
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--rate", "1800"]).is_ok());
        assert!(parse(&["--connections", "0"]).is_err());
        assert!(parse(&["--ca-file", "ca.pem", "--insecure"]).is_err());
    }

    #[test]
    fn url_and_server_pid_take_lists() {
        let args = parse(&[
            "--url",
            "https://localhost:8444,https://localhost:8445",
            "--server-pid",
            "101",
            "--server-pid",
            "102,103",
        ])
        .expect("valid");
        assert_eq!(
            args.url,
            [
                "https://localhost:8443",
                "https://localhost:8444",
                "https://localhost:8445"
            ]
        );
        assert_eq!(args.server_pid, [101, 102, 103]);
    }

    #[test]
    fn url_is_required_and_pids_are_numbers() {
        let no_url = Args::try_parse_from([
            "keyhold-bench",
            "--uri-path",
            "/kms/xks/v1",
            "--access-key-id",
            "KHABCDEFGHIJKLMNOPQRSTUV",
        ]);
        assert!(no_url.is_err());
        assert!(parse(&["--server-pid", "101,abc"]).is_err());
        let single = parse(&["--op", "health"]).expect("valid");
        assert_eq!(single.url, ["https://localhost:8443"]);
        assert!(single.server_pid.is_empty());
    }

    #[test]
    fn validate_rejects_idle_urls_and_repeated_pids() {
        let urls = "https://localhost:8444,https://localhost:8445";
        let enough =
            parse(&["--op", "health", "--url", urls, "--connections", "3"]).expect("valid");
        assert_eq!(enough.validate(), Ok(()));
        let too_few =
            parse(&["--op", "health", "--url", urls, "--connections", "2"]).expect("parses");
        assert!(
            too_few
                .validate()
                .is_err_and(|e| e.contains("--connections 2 is fewer than the 3 URLs"))
        );
        let repeated = parse(&["--op", "health", "--server-pid", "7,8,7"]).expect("parses");
        assert!(
            repeated
                .validate()
                .is_err_and(|e| e.contains("--server-pid 7 is given twice"))
        );
    }

    #[test]
    fn validate_requires_key_id_except_for_health() {
        let health = parse(&["--op", "health"]).expect("valid");
        assert_eq!(health.validate(), Ok(()));
        let encrypt = parse(&[]).expect("valid");
        assert!(encrypt.validate().is_err_and(|e| e.contains("--key-id")));
        let bad = parse(&["--key-id", "a/b"]).expect("parses");
        assert!(
            bad.validate()
                .is_err_and(|e| e.contains("invalid --key-id"))
        );
    }
}
