//! Harness for the end-to-end tests: temporary data directories, the real `keyhold` binary as
//! CLI and as a `serve` child process on 127.0.0.1, and XKS requests sent with curl or with the
//! botocore client in `tests/clients`.
//!
//! Every server listens on 127.0.0.1 only. curl reaches it as `localhost` through `--resolve`,
//! so the Host header and TLS name are `localhost:PORT` while no name lookup takes place.

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

pub(crate) mod postgres_server;

use std::fs::File;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use keyhold::auth::sigv4::{self, RequestParts, Sigv4Secret};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The binary under test, built by Cargo for these tests.
pub(crate) const KEYHOLD: &str = env!("CARGO_BIN_EXE_keyhold");

/// The botocore SigV4 client script.
pub(crate) const BOTOCORE_CLIENT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/botocore_xks.py");

/// SigV4 region used by every client in these tests.
pub(crate) const REGION: &str = "us-east-1";

/// The `--aws-sigv4` value that makes curl sign for the XKS service.
pub(crate) const CURL_SIGV4: &str = "aws:amz:us-east-1:kms-xks-proxy";

/// KMS key ARN sent in `requestMetadata.kmsKeyArn` unless a test sets another.
pub(crate) const KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// Maximum time from starting a server until it must respond on `/ping`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Maximum time in seconds for one curl transfer, passed as `--max-time`.
const CURL_MAX_TIME_SECS: &str = "20";

/// Number of attempts to start a server. Another process may take the chosen port between the
/// check and the bind.
const START_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------------------------
// CLI and data directories
// ---------------------------------------------------------------------------------------------

/// Output of one `keyhold` command.
#[derive(Debug)]
pub(crate) struct CliOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CliOutput {
    fn from_output(output: &Output) -> Self {
        Self {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A SigV4 credential as printed by `keyhold credential create`.
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    /// `XksProxyUriPath`, for example `/domains/acme/kms/xks/v1`.
    pub(crate) uri_path: String,
}

impl Credential {
    /// Returns the full request path of an XKS API below this credential's URI path.
    pub(crate) fn path(&self, api: &str) -> String {
        format!("{}{api}", self.uri_path)
    }

    /// Returns a copy whose secret access key is replaced.
    pub(crate) fn with_secret(&self, secret_access_key: &str) -> Self {
        Self {
            secret_access_key: secret_access_key.to_owned(),
            ..self.clone()
        }
    }

    /// Returns a copy whose access key id is replaced.
    pub(crate) fn with_access_key_id(&self, access_key_id: &str) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            ..self.clone()
        }
    }
}

/// A temporary directory containing a Keyhold data directory (`<temp>/data`) and server logs.
pub(crate) struct DataDir {
    temp: TempDir,
    path: PathBuf,
}

impl DataDir {
    /// Creates an empty temporary directory. The data directory inside it does not exist yet.
    pub(crate) fn empty() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("keyhold-test-")
            .tempdir()
            .expect("create temporary directory");
        let path = temp.path().join("data");
        Self { temp, path }
    }

    /// Creates a data directory with `keyhold init`.
    pub(crate) fn init() -> Self {
        let data = Self::empty();
        let stdout = data.run_ok(&["init"]);
        let token = stdout
            .split_whitespace()
            .find(|word| word.starts_with("khat_"))
            .unwrap_or_else(|| panic!("init printed no operator token:\n{stdout}"));
        std::fs::write(data.scratch().join("operator-token"), token).expect("keep the token");
        data
    }

    /// Returns the admin API token that `keyhold init` printed for the principal `operator`.
    pub(crate) fn operator_token(&self) -> String {
        std::fs::read_to_string(self.scratch().join("operator-token"))
            .expect("the data directory was made by DataDir::init")
    }

    /// Returns the data directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the temporary directory around the data directory, for logs and scratch files.
    pub(crate) fn scratch(&self) -> &Path {
        self.temp.path()
    }

    /// Returns the CA certificate file that signed the server certificate `init` wrote.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.path.join("tls").join("ca.pem")
    }

    /// Runs `keyhold --data-dir DIR ARGS...` and returns its output, whatever the exit status.
    pub(crate) fn run(&self, args: &[&str]) -> CliOutput {
        self.run_with_env(args, &[])
    }

    /// Runs `keyhold --data-dir DIR ARGS...` with extra environment variables.
    pub(crate) fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let mut command = Command::new(KEYHOLD);
        command
            .arg("--data-dir")
            .arg(&self.path)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("KEYHOLD_DATA_DIR")
            .env_remove("KEYHOLD_SERVER")
            .env_remove("KEYHOLD_TOKEN")
            .env_remove("KEYHOLD_CA_CERT")
            .stdin(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        CliOutput::from_output(&command.output().expect("run the keyhold binary"))
    }

    /// Runs a command that must succeed and returns its stdout.
    pub(crate) fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "keyhold {args:?} failed with {}\nstdout: {}\nstderr: {}",
            output.status,
            output.stdout,
            output.stderr
        );
        output.stdout
    }

    /// Creates a domain with the default URI path prefix `/domains/ID`.
    pub(crate) fn create_domain(&self, id: &str, extra_args: &[&str]) {
        let mut args = vec!["domain", "create", id];
        args.extend_from_slice(extra_args);
        self.run_ok(&args);
    }

    /// Creates a credential and parses the proxy configuration file printed on stdout.
    pub(crate) fn create_credential(&self, domain: &str) -> Credential {
        let stdout = self.run_ok(&["credential", "create", domain]);
        let configuration: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
            panic!("credential create printed invalid JSON ({error}): {stdout}")
        });
        let field = |pointer: &str| {
            configuration
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("credential create output lacks {pointer}: {stdout}"))
                .to_owned()
        };
        Credential {
            access_key_id: field("/XksProxyAuthenticationCredential/AccessKeyId"),
            secret_access_key: field("/XksProxyAuthenticationCredential/RawSecretAccessKey"),
            uri_path: field("/XksProxyUriPath"),
        }
    }

    /// Creates a key with the given external key id.
    pub(crate) fn create_key(&self, domain: &str, key_id: &str, extra_args: &[&str]) {
        let mut args = vec!["key", "create", domain, "--key-id", key_id];
        args.extend_from_slice(extra_args);
        self.run_ok(&args);
    }

    /// Replaces text in `keyhold.toml`, panicking when a text to replace is missing, so a
    /// changed template cannot silently leave a setting as it was.
    pub(crate) fn configure(&self, changes: &[(&str, &str)]) {
        let path = self.path.join("keyhold.toml");
        let mut text = std::fs::read_to_string(&path).expect("read keyhold.toml");
        for (from, to) in changes {
            assert!(text.contains(from), "keyhold.toml lacks {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).expect("write keyhold.toml");
    }

    /// Runs a SQL script against `keyhold.db` with Python's sqlite3 module, which shares no
    /// code with Keyhold's own SQLite build.
    pub(crate) fn run_sql(&self, script: &str) {
        let program = "import sqlite3, sys\n\
                       connection = sqlite3.connect(sys.argv[1])\n\
                       connection.executescript(sys.argv[2])\n\
                       connection.commit()\n\
                       connection.close()\n";
        let output = Command::new("python3")
            .arg("-c")
            .arg(program)
            .arg(self.path.join("keyhold.db"))
            .arg(script)
            .output()
            .expect("run python3");
        assert!(
            output.status.success(),
            "SQL script failed: {}\n{script}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// A `keyhold serve` child process on 127.0.0.1, killed on drop.
pub(crate) struct Server {
    child: Child,
    port: u16,
    admin_port: u16,
    log_path: PathBuf,
    ca_file: PathBuf,
}

impl Server {
    /// Starts `keyhold serve` on a free port and waits until it responds on `/ping`.
    pub(crate) fn start(data: &DataDir) -> Self {
        Self::start_with(data, &[], &[])
    }

    /// Starts `keyhold serve` with extra environment variables, such as `RUST_LOG`.
    pub(crate) fn start_with_env(data: &DataDir, env: &[(&str, &str)]) -> Self {
        Self::start_with(data, env, &[])
    }

    /// Starts `keyhold serve` with extra environment variables and extra curl arguments for the
    /// `/ping` probe, such as the client certificate that mutual TLS requires.
    pub(crate) fn start_with(data: &DataDir, env: &[(&str, &str)], ping_args: &[String]) -> Self {
        let mut last_log = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(data, env, ping_args, attempt) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!(
            "keyhold serve did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    /// Starts one server. Returns its log as the error when it exited or never responded on
    /// `/ping`.
    fn try_start(
        data: &DataDir,
        env: &[(&str, &str)],
        ping_args: &[String],
        attempt: usize,
    ) -> Result<Self, String> {
        let port = free_port();
        let admin_port = free_port();
        let log_path = data.scratch().join(format!("serve-{port}-{attempt}.log"));
        let log = File::create(&log_path).expect("create server log file");
        let mut command = Command::new(KEYHOLD);
        command
            .arg("--data-dir")
            .arg(data.path())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .env_remove("RUST_LOG")
            .env_remove("KEYHOLD_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn keyhold serve");
        let mut server = Self {
            child,
            port,
            admin_port,
            log_path,
            ca_file: data.ca_file(),
        };

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", server.log()));
            }
            let mut args = ping_args.to_vec();
            args.push(server.url("/ping"));
            let ping = server.curl(&args, None);
            if ping.status == 200 && ping.body == "pong\n" {
                return Ok(server);
            }
            sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no answer on /ping within {STARTUP_TIMEOUT:?}:\n{}",
            server.log()
        ))
    }

    /// Returns the process id of the server.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the TCP port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Returns the admin listener's TCP port on 127.0.0.1.
    pub(crate) fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Returns the URL of a path on the admin listener.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.admin_port)
    }

    /// Calls the admin API with a bearer token and an optional JSON body. Returns the status
    /// and the parsed JSON response, or `Value::Null` when the body is not JSON.
    pub(crate) fn admin(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut args = vec![
            "-X".to_owned(),
            method.to_owned(),
            "-H".to_owned(),
            format!("Authorization: Bearer {token}"),
        ];
        if let Some(body) = body {
            args.extend([
                "-H".to_owned(),
                "Content-Type: application/json".to_owned(),
                "--data-binary".to_owned(),
                body.to_string(),
            ]);
        }
        args.push(self.admin_url(path));
        let output = self.admin_curl(&args);
        let json = serde_json::from_str(&output.body).unwrap_or(Value::Null);
        (output.status, json)
    }

    /// Runs curl against the admin listener. `args` must include a URL from
    /// [`Server::admin_url`]; the listener's `localhost` name resolves to 127.0.0.1.
    pub(crate) fn admin_curl(&self, args: &[String]) -> CurlOutput {
        let mut full = vec![
            "--resolve".to_owned(),
            format!("localhost:{}:127.0.0.1", self.admin_port),
        ];
        full.extend_from_slice(args);
        self.curl(&full, None)
    }

    /// Returns the Host header curl sends, `localhost:PORT`.
    pub(crate) fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Returns the URL of a path on this server.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Returns the file that receives the server's stderr.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Stops the server with SIGTERM, as systemd does, and returns its exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for keyhold") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keyhold {pid} did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads everything the server wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Reads the server log as bytes, for searches that must not depend on UTF-8.
    pub(crate) fn log_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.log_path).unwrap_or_default()
    }

    /// Runs curl against this server. `args` must include the URL. `stdin` is piped to curl
    /// for `--data-binary @-`.
    pub(crate) fn curl(&self, args: &[String], stdin: Option<&[u8]>) -> CurlOutput {
        let mut command = self.curl_command(args);
        command.arg("-w").arg("\n%{http_code}");
        let output = run_with_stdin(&mut command, stdin);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
        CurlOutput {
            exit: output.status,
            status: code.trim().parse().unwrap_or(0),
            body: body.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Sends the same signed POST to `path` `count` times over one curl process, which reuses
    /// its connection, and returns each response in order.
    pub(crate) fn curl_burst(
        &self,
        credential: &Credential,
        path: &str,
        body: &Value,
        count: usize,
    ) -> Vec<HttpResponse> {
        let mut args = sigv4_args(credential);
        args.extend(std::iter::repeat_n(self.url(path), count));
        let mut command = self.curl_command(&args);
        command.arg("-w").arg("\n%{http_code}\n");
        let output = run_with_stdin(&mut command, Some(body.to_string().as_bytes()));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "curl burst failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            2 * count,
            "curl burst printed {} lines for {count} requests:\n{stdout}",
            lines.len()
        );
        lines
            .chunks(2)
            .map(|pair| HttpResponse {
                status: pair[1].parse().expect("HTTP status code from curl"),
                body: pair[0].to_owned(),
            })
            .collect()
    }

    fn curl_command(&self, args: &[String]) -> Command {
        let mut command = Command::new("curl");
        command
            .arg("-sS")
            .arg("--max-time")
            .arg(CURL_MAX_TIME_SECS)
            .arg("--cacert")
            .arg(&self.ca_file)
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", self.port))
            .args(args);
        command
    }

    /// Sends a POST signed by curl's `--aws-sigv4` and returns the response.
    pub(crate) fn post(&self, credential: &Credential, path: &str, body: &Value) -> HttpResponse {
        self.post_bytes(credential, path, body.to_string().as_bytes())
    }

    /// Sends a POST with a raw body signed by curl's `--aws-sigv4`.
    pub(crate) fn post_bytes(
        &self,
        credential: &Credential,
        path: &str,
        body: &[u8],
    ) -> HttpResponse {
        let mut args = sigv4_args(credential);
        args.push(self.url(path));
        self.curl(&args, Some(body)).into_response()
    }

    /// Sends a POST signed in this process with `keyhold::auth::sigv4::sign` for the given
    /// `X-Amz-Date`, so tests can send dates curl would never produce.
    pub(crate) fn post_signed_at(
        &self,
        credential: &Credential,
        path: &str,
        body: &Value,
        unix_time: i64,
    ) -> HttpResponse {
        let body = body.to_string();
        self.post_signed(credential, path, &body, &body, unix_time)
    }

    /// Signs `signed_body` in this process but sends `sent_body`, so tests can change a body
    /// after signing.
    pub(crate) fn post_signed(
        &self,
        credential: &Credential,
        path: &str,
        signed_body: &str,
        sent_body: &str,
        unix_time: i64,
    ) -> HttpResponse {
        let host = self.host();
        let amz_date = sigv4::format_amz_date(unix_time);
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(&host).expect("host header"));
        headers.insert(
            "x-amz-date",
            HeaderValue::from_str(&amz_date).expect("date header"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let authorization = sigv4::sign(
            &RequestParts {
                method: "POST",
                path,
                query: "",
                headers: &headers,
                body: signed_body.as_bytes(),
            },
            &credential.access_key_id,
            &Sigv4Secret::new(credential.secret_access_key.clone()),
            REGION,
        )
        .expect("sign request");

        let args = vec![
            "-H".to_owned(),
            format!("Host: {host}"),
            "-H".to_owned(),
            format!("X-Amz-Date: {amz_date}"),
            "-H".to_owned(),
            "Content-Type: application/json".to_owned(),
            "-H".to_owned(),
            format!("Authorization: {authorization}"),
            "--data-binary".to_owned(),
            "@-".to_owned(),
            self.url(path),
        ];
        self.curl(&args, Some(sent_body.as_bytes())).into_response()
    }

    /// Sends an unauthenticated GET.
    pub(crate) fn get(&self, path: &str) -> HttpResponse {
        self.curl(&[self.url(path)], None).into_response()
    }

    /// Sends a POST signed by botocore's SigV4Auth through `tests/clients/botocore_xks.py`.
    pub(crate) fn post_botocore(
        &self,
        credential: &Credential,
        path: &str,
        body: &Value,
    ) -> HttpResponse {
        let body_file = tempfile::NamedTempFile::new_in(self.log_path.parent().expect("log dir"))
            .expect("create request body file");
        std::fs::write(body_file.path(), body.to_string()).expect("write request body file");
        let output = Command::new("python3")
            .arg(BOTOCORE_CLIENT)
            .arg("--url")
            .arg(self.url(path))
            .arg("--access-key-id")
            .arg(&credential.access_key_id)
            .arg("--secret-access-key")
            .arg(&credential.secret_access_key)
            .arg("--region")
            .arg(REGION)
            .arg("--body-file")
            .arg(body_file.path())
            .arg("--ca-file")
            .arg(&self.ca_file)
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "botocore client failed with {}: {}{stdout}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let (status, body) = stdout
            .split_once('\n')
            .unwrap_or_else(|| panic!("botocore client printed no status line: {stdout}"));
        HttpResponse {
            status: status
                .parse()
                .expect("HTTP status from the botocore client"),
            body: body.to_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server may already have exited. Either way it must be gone before the data
        // directory is deleted.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Returns the shared value in `slot`, creating it when no running test still uses it. The value
/// is dropped when the last test using it ends, so a shared server never outlives its tests.
pub(crate) fn shared<T>(slot: &Mutex<Weak<T>>, create: impl FnOnce() -> T) -> Arc<T> {
    let mut weak = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(value) = weak.upgrade() {
        return value;
    }
    let value = Arc::new(create());
    *weak = Arc::downgrade(&value);
    value
}

/// Returns the curl arguments that sign a POST with `credential` and send stdin as its body.
pub(crate) fn sigv4_args(credential: &Credential) -> Vec<String> {
    vec![
        "--aws-sigv4".to_owned(),
        CURL_SIGV4.to_owned(),
        "--user".to_owned(),
        format!(
            "{}:{}",
            credential.access_key_id, credential.secret_access_key
        ),
        "-H".to_owned(),
        "Content-Type: application/json".to_owned(),
        "--data-binary".to_owned(),
        "@-".to_owned(),
    ]
}

fn run_with_stdin(command: &mut Command, stdin: Option<&[u8]>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn curl");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("curl stdin");
        pipe.write_all(bytes).expect("write curl stdin");
    }
    child.wait_with_output().expect("wait for curl")
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// One curl run: exit status, HTTP status (0 when no response arrived), body and stderr.
#[derive(Debug)]
pub(crate) struct CurlOutput {
    pub(crate) exit: ExitStatus,
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) stderr: String,
}

impl CurlOutput {
    /// Converts a transfer that must have completed into its HTTP response.
    pub(crate) fn into_response(self) -> HttpResponse {
        assert!(
            self.exit.success(),
            "curl failed with {}: {}",
            self.exit,
            self.stderr
        );
        HttpResponse {
            status: self.status,
            body: self.body,
        }
    }
}

/// An HTTP status and body.
#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl HttpResponse {
    /// Parses the body as JSON, panicking with the body when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| {
            panic!(
                "response body is not JSON ({error}); status {}: {}",
                self.status, self.body
            )
        })
    }

    /// Returns the `errorName` of an XKS error body, if there is one.
    pub(crate) fn error_name(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.body)
            .ok()?
            .get("errorName")?
            .as_str()
            .map(str::to_owned)
    }

    /// Returns the value of a string field of a JSON body.
    pub(crate) fn field(&self, name: &str) -> String {
        self.json()
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("response lacks string field {name}: {}", self.body))
            .to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// XKS request bodies and values
// ---------------------------------------------------------------------------------------------

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(1);

/// Returns a `kmsRequestId` that no other request of this test process uses.
pub(crate) fn next_request_id() -> String {
    let number = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("keyhold-test-{}-{number}", std::process::id())
}

/// Builds a GetHealthStatus request body.
pub(crate) fn health_request() -> Value {
    json!({
        "requestMetadata": {
            "kmsRequestId": next_request_id(),
            "kmsOperation": "KmsHealthCheck",
        }
    })
}

/// Builds a GetKeyMetadata request body, which has no `kmsKeyArn`.
pub(crate) fn key_metadata_request() -> Value {
    json!({
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::111122223333:user/keyhold-test",
            "kmsOperation": "CreateKey",
            "kmsRequestId": next_request_id(),
        }
    })
}

fn crypto_metadata(operation: &str, kms_key_arn: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::111122223333:user/keyhold-test",
        "kmsKeyArn": kms_key_arn,
        "kmsOperation": operation,
        "kmsRequestId": next_request_id(),
    })
}

/// Builds an Encrypt request body that requests the SHA-256 integrity value.
pub(crate) fn encrypt_request(plaintext: &[u8], aad: Option<&[u8]>) -> Value {
    encrypt_request_for(plaintext, aad, KMS_KEY_ARN)
}

/// Builds an Encrypt request body with the given `kmsKeyArn`.
pub(crate) fn encrypt_request_for(
    plaintext: &[u8],
    aad: Option<&[u8]>,
    kms_key_arn: &str,
) -> Value {
    let mut body = json!({
        "requestMetadata": crypto_metadata("Encrypt", kms_key_arn),
        "plaintext": b64(plaintext),
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    });
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(b64(aad));
    }
    body
}

/// Builds a Decrypt request body from an Encrypt response body.
pub(crate) fn decrypt_request(encrypted: &Value, aad: Option<&[u8]>) -> Value {
    decrypt_request_for(encrypted, aad, KMS_KEY_ARN)
}

/// Builds a Decrypt request body from an Encrypt response body, with the given `kmsKeyArn`.
pub(crate) fn decrypt_request_for(
    encrypted: &Value,
    aad: Option<&[u8]>,
    kms_key_arn: &str,
) -> Value {
    let mut body = json!({
        "requestMetadata": crypto_metadata("Decrypt", kms_key_arn),
        "ciphertext": encrypted["ciphertext"],
        "encryptionAlgorithm": "AES_GCM",
        "initializationVector": encrypted["initializationVector"],
        "authenticationTag": encrypted["authenticationTag"],
    });
    if let Some(metadata) = encrypted.get("ciphertextMetadata") {
        body["ciphertextMetadata"] = metadata.clone();
    }
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(b64(aad));
    }
    body
}

/// Encodes bytes as standard base64 with padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64, panicking with the field name when it is invalid.
pub(crate) fn unb64(text: &str, field: &str) -> Vec<u8> {
    STANDARD
        .decode(text)
        .unwrap_or_else(|error| panic!("{field} is not valid base64 ({error}): {text}"))
}

/// Computes the XKS ciphertext data integrity value independently of Keyhold:
/// base64(SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag)).
pub(crate) fn expected_integrity_value(
    aad: &[u8],
    metadata: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [aad, metadata, iv, ciphertext, tag] {
        context.update(part);
    }
    b64(context.finish().as_ref())
}

/// Current time as Unix seconds.
pub(crate) fn unix_now() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(elapsed.as_secs()).expect("time fits in i64")
}

/// Calls `probe` until it returns `Some` or `timeout` passes. Returns the value and the time
/// from the call of this function to the end of the first successful probe.
pub(crate) fn wait_for<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<(T, Duration)> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some((value, started.elapsed()));
        }
        if started.elapsed() > timeout {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Asserts that an error `errorMessage`, when present, is printable ASCII (0x20 to 0x7E) and
/// shorter than 512 characters, as the XKS API requires.
pub(crate) fn assert_error_message_format(response: &HttpResponse, case: &str) {
    let body = response.json();
    let Some(message) = body.get("errorMessage") else {
        return;
    };
    let message = message
        .as_str()
        .unwrap_or_else(|| panic!("{case}: errorMessage is not a string: {}", response.body));
    assert!(
        message.len() < 512,
        "{case}: errorMessage has {} characters, the limit is 511",
        message.len()
    );
    assert!(
        message.bytes().all(|byte| (0x20..=0x7e).contains(&byte)),
        "{case}: errorMessage has a byte outside printable ASCII: {message:?}"
    );
}

/// Asserts that a JSON response body is one line, as the XKS examples show.
pub(crate) fn assert_single_line(response: &HttpResponse, case: &str) {
    assert!(
        !response.body.contains('\n') && !response.body.contains('\r'),
        "{case}: response body spans several lines: {:?}",
        response.body
    );
}

// ---------------------------------------------------------------------------------------------
// Encrypt and decrypt with one key, shared by the lifecycle and multi-node tests
// ---------------------------------------------------------------------------------------------

/// Encrypts `data key` with `key_id`.
pub(crate) fn encrypt_with_key(
    server: &Server,
    credential: &Credential,
    key_id: &str,
) -> HttpResponse {
    let path = credential.path(&format!("/keys/{key_id}/encrypt"));
    server.post(credential, &path, &encrypt_request(b"data key", None))
}

/// Decrypts an encrypt response's fields with `key_id`.
pub(crate) fn decrypt_with_key(
    server: &Server,
    credential: &Credential,
    key_id: &str,
    encrypted: &Value,
) -> HttpResponse {
    let path = credential.path(&format!("/keys/{key_id}/decrypt"));
    server.post(credential, &path, &decrypt_request(encrypted, None))
}

/// Encrypts `data key` with `key_id` and returns the response body, which must be a success.
pub(crate) fn encrypted_with_key(server: &Server, credential: &Credential, key_id: &str) -> Value {
    let response = encrypt_with_key(server, credential, key_id);
    assert_eq!(response.status, 200, "encrypt {key_id}: {}", response.body);
    response.json()
}

/// Returns the key version named in an encrypt response's `ciphertextMetadata`: a format byte,
/// then the version as a big-endian 32-bit integer.
pub(crate) fn metadata_version(encrypted: &Value) -> u32 {
    let metadata = unb64(
        encrypted["ciphertextMetadata"]
            .as_str()
            .expect("ciphertextMetadata"),
        "ciphertextMetadata",
    );
    assert_eq!(metadata.len(), 5, "metadata: {metadata:?}");
    u32::from_be_bytes([metadata[1], metadata[2], metadata[3], metadata[4]])
}
