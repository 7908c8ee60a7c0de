//! A throwaway PostgreSQL server for tests: a new cluster made with `initdb` in a temporary
//! directory, listening on 127.0.0.1 on a free port, stopped and deleted on drop.
//!
//! The Debian `postgresql` package is installed with apt-get when no `initdb` is found. As
//! PostgreSQL refuses to run as root, the server runs as the `postgres` user when the tests run
//! as root. Clients log in with a password (SCRAM-SHA-256) as the superuser
//! [`SUPERUSER`]; [`Postgres::create_database`] makes a database owned by an unprivileged role.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

/// Superuser made by `initdb`.
pub(crate) const SUPERUSER: &str = "postgres";

/// Password of every role in the test cluster.
pub(crate) const PASSWORD: &str = "keyhold-test-password";

/// Unprivileged role that owns the databases of [`Postgres::create_database`].
pub(crate) const OWNER: &str = "keyhold";

/// Serializes the apt-get install within one test binary; across binaries apt-get waits for
/// its own lock.
static INSTALL: Mutex<()> = Mutex::new(());

/// Numbers the databases of one test binary.
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A running test cluster.
pub(crate) struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
    tls: bool,
}

impl Postgres {
    /// Creates and starts a cluster, installing PostgreSQL first when it is missing.
    pub(crate) fn start() -> Self {
        Self::start_with(false)
    }

    /// Creates and starts a cluster that also accepts TLS, with a server certificate for
    /// `localhost` and 127.0.0.1 signed by the CA in [`Postgres::ca_file`].
    pub(crate) fn start_with_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let bin = find_or_install_bin();
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("keyhold-postgres-")
            .tempdir()
            .expect("create temporary directory");
        if run_as_postgres {
            chown_to_postgres(dir.path());
        }
        let password_file = dir.path().join("superuser-password");
        fs::write(&password_file, PASSWORD).expect("write password file");
        if run_as_postgres {
            chown_to_postgres(&password_file);
        }

        let data = dir.path().join("data");
        let initdb = bin.join("initdb");
        let output = run(
            run_as_postgres,
            &initdb,
            &[
                "--pgdata",
                path_str(&data),
                "--username",
                SUPERUSER,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--pwfile",
                path_str(&password_file),
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        assert!(
            output.status.success(),
            "initdb failed: {}",
            describe(&output)
        );

        if tls {
            let certificates = dir.path().join("tls");
            fs::create_dir(&certificates).expect("create TLS directory");
            keyhold::api::tls::write_dev_certificates(&certificates)
                .expect("write TLS certificates");
            if run_as_postgres {
                for name in ["", "server.pem", "server.key", "ca.pem"] {
                    chown_to_postgres(&certificates.join(name));
                }
            }
        }

        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            run_as_postgres,
            tls,
        };
        cluster.start_server();
        cluster
    }

    /// Returns the CA certificate that signed the server certificate of a TLS cluster.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    /// Port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Returns a connection URL for `user` and `database`, without a password.
    pub(crate) fn url(&self, user: &str, database: &str) -> String {
        format!(
            "postgresql://{user}@127.0.0.1:{}/{database}?connect_timeout=5",
            self.port
        )
    }

    /// Creates a new empty database owned by [`OWNER`] and returns its name.
    pub(crate) fn create_database(&self) -> String {
        let name = format!("keyhold_test_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        let mut client = self.superuser();
        let role_exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&OWNER])
            .expect("query roles")
            .is_some();
        if !role_exists {
            client
                .batch_execute(&format!("CREATE ROLE {OWNER} LOGIN PASSWORD '{PASSWORD}'"))
                .expect("create role");
        }
        client
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {OWNER}"))
            .expect("create database");
        name
    }

    /// Opens a superuser connection to the `postgres` database.
    pub(crate) fn superuser(&self) -> postgres::Client {
        let mut config: postgres::Config = self.url(SUPERUSER, "postgres").parse().expect("url");
        config.password(PASSWORD);
        config
            .connect(postgres::NoTls)
            .expect("connect as superuser")
    }

    /// Writes a password file readable by its owner only and returns its path.
    pub(crate) fn password_file(&self) -> PathBuf {
        let path = self.dir.path().join("client-password");
        fs::write(&path, format!("{PASSWORD}\n")).expect("write password file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// Stops the server at once, as a crash or a lost network would, keeping its data.
    pub(crate) fn stop(&self) {
        let output = self.pg_ctl(&["--mode=immediate", "stop"]);
        assert!(
            output.status.success(),
            "pg_ctl stop failed: {}",
            describe(&output)
        );
    }

    /// Starts the server again on the same port after [`Postgres::stop`].
    pub(crate) fn restart(&self) {
        let output = self.pg_ctl_start();
        assert!(
            output.status.success(),
            "PostgreSQL did not start again: {}\nserver log:\n{}",
            describe(&output),
            fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn start_server(&mut self) {
        // Another process may take the port between the check and the bind, so try again.
        for _ in 0..3 {
            self.port = free_port();
            if self.pg_ctl_start().status.success() {
                return;
            }
        }
        panic!(
            "PostgreSQL did not start; server log:\n{}",
            fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn pg_ctl_start(&self) -> Output {
        let log = self.dir.path().join("server.log");
        let mut options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let certificates = self.dir.path().join("tls");
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                certificates.join("server.pem").display(),
                certificates.join("server.key").display()
            ));
        }
        self.pg_ctl(&[
            "--log",
            path_str(&log),
            "--options",
            &options,
            "--wait",
            "--timeout=60",
            "start",
        ])
    }

    /// Runs `pg_ctl --pgdata DATA ARGS...`.
    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.dir.path().join("data");
        let mut all = vec!["--pgdata", path_str(&data)];
        all.extend_from_slice(args);
        run(self.run_as_postgres, &self.bin.join("pg_ctl"), &all)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let status = self.pg_ctl(&["status"]);
        // pg_ctl status exits with 3 when no server runs, for example after `stop`.
        if status.status.code() == Some(3) {
            return;
        }
        let output = self.pg_ctl(&["--mode=immediate", "stop"]);
        if !output.status.success() {
            eprintln!("pg_ctl stop failed: {}", describe(&output));
        }
    }
}

/// Finds the newest installed PostgreSQL's `bin` directory, installing the Debian package when
/// none is there.
fn find_or_install_bin() -> PathBuf {
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(bin) = newest_bin() {
        return bin;
    }
    assert!(
        is_root(),
        "PostgreSQL is not installed and only root can install it: run `apt-get install \
         postgresql` or scripts/test"
    );
    for args in [
        &["-o", "DPkg::Lock::Timeout=300", "update", "-qq"][..],
        &[
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "-qq",
            "postgresql",
        ][..],
    ] {
        let output = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("run apt-get");
        assert!(
            output.status.success(),
            "apt-get {args:?} failed: {}",
            describe(&output)
        );
    }
    newest_bin().expect("initdb after installing postgresql")
}

/// Returns `/usr/lib/postgresql/<newest version>/bin` when it contains `initdb`.
fn newest_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

fn chown_to_postgres(path: &Path) {
    let output = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .output()
        .expect("run chown");
    assert!(
        output.status.success(),
        "chown failed: {}",
        describe(&output)
    );
}

/// Runs a PostgreSQL program, as the `postgres` user when `as_postgres` is set.
fn run(as_postgres: bool, program: &Path, args: &[&str]) -> Output {
    let mut command = if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command
        .args(args)
        // The server must not inherit the test's working directory, which the postgres user may
        // be unable to enter.
        .current_dir("/")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
