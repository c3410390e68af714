//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, a free
//! loopback port, the unix socket in that directory too, `pg_ctl start -w`; stopped
//! and removed when dropped. Uses Debian's binaries (`/usr/lib/postgresql/<version>/bin`,
//! the newest version there), else `pg_config --bindir`, else `initdb` on the PATH. When
//! none is found it tries to install Debian's `postgresql` (as root with apt-get), as
//! `scripts/deps.sh test` does. PostgreSQL refuses to run as root, so under uid 0 the
//! server runs as `nobody` (the directory is handed to it).

#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One install attempt per test process, even with tests in parallel.
static INSTALL: Mutex<Option<bool>> = Mutex::new(None);

/// The user the server runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `Some(user)` when commands must run as that user.
    run_as: Option<&'static str>,
    pub port: u16,
    /// `postgres://freshet@127.0.0.1:PORT/postgres`
    pub url: String,
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn find_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn bindir() -> Option<PathBuf> {
    if let Some(bin) = find_bindir() {
        return Some(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if bin.join("initdb").is_file() && bin.join("pg_ctl").is_file() {
            return Some(bin);
        }
    }
    None
}

/// Installs Debian's postgresql when root and apt-get are there; whether it worked.
fn install() -> bool {
    let mut done = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ok) = *done {
        return ok;
    }
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root
        && Path::new("/usr/bin/apt-get").exists()
        && {
            eprintln!("PostgreSQL is missing: installing Debian's postgresql");
            let update = Command::new("apt-get")
                .args(["update", "-q"])
                .stdout(Stdio::null())
                .status();
            update.is_ok()
                && Command::new("apt-get")
                    .args([
                        "install",
                        "-y",
                        "-q",
                        "--no-install-recommends",
                        "postgresql",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
        }
        && find_bindir().is_some();
    *done = Some(ok);
    ok
}

impl TestPostgres {
    /// Starts a server, or `None` (with a message saying why) when PostgreSQL is
    /// neither installed nor installable here. Under CI a missing PostgreSQL fails.
    pub fn start() -> Option<TestPostgres> {
        let bin = match bindir() {
            Some(bin) => bin,
            None if install() => bindir()?,
            None => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL binaries are missing under CI: scripts/deps.sh test installs them"
                );
                eprintln!(
                    "SKIPPED: PostgreSQL binaries (initdb, pg_ctl) are not installed and \
                     cannot be installed here; run scripts/deps.sh test"
                );
                return None;
            }
        };
        let run_as = (unsafe { libc::geteuid() } == 0).then_some(UNPRIVILEGED);
        let dir = tempfile::Builder::new()
            .prefix("freshet-pg-")
            .tempdir()
            .expect("temp dir");
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the PostgreSQL directory");
        }
        let port = free_port();
        let pg = TestPostgres {
            url: format!("postgres://freshet@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            run_as,
            port,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "freshet".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        Some(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts it again after [`TestPostgres::stop`], on the same port.
    pub fn restart(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        );
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
