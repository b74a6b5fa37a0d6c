//! A PostgreSQL server of a test's own, on its own port and data directory, that the test may stop
//! and start again: for TLS-only servers, and for PostgreSQL going away under the service.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a server is stopped: the signals `pg_ctl stop -m smart|fast|immediate` send.
#[derive(Debug, Clone, Copy)]
pub enum Shutdown {
    /// SIGINT: sessions are ended (SQLSTATE 57P01 `admin_shutdown`), then the server exits.
    Fast,
    /// SIGQUIT: every process exits at once, as in a crash (57P02 to whoever hears it).
    Immediate,
    /// SIGSTOP: the server stops answering but keeps its connections open (a hung host, a
    /// partition); [`PrivatePostgres::resume`] sends SIGCONT.
    Freeze,
}

/// A private PostgreSQL: `initdb` into a scratch directory, `postgres` run as the `postgres` user.
pub struct PrivatePostgres {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    settings: Vec<String>,
    server: Option<Child>,
}

impl PrivatePostgres {
    /// Initialises a cluster under `dir` (emptied first) whose `pg_hba.conf` is `hba`; `prepare`
    /// may put files in `dir` (certificates) before it is handed to the `postgres` user.
    pub fn init(dir: PathBuf, port: u16, hba: &str, prepare: impl FnOnce(&Path)) -> Self {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        prepare(&dir);
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb");
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir));
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(dir.join("data")));
        std::fs::write(dir.join("data/pg_hba.conf"), hba).expect("pg_hba.conf");
        Self {
            dir,
            port,
            bin,
            settings: Vec::new(),
            server: None,
        }
    }

    /// Starts the server with `settings` (`name=value`, as `-c` options; kept for restarts) and
    /// waits until it accepts TCP connections.
    pub fn start(&mut self, settings: &[String]) {
        self.settings = settings.to_vec();
        self.restart();
    }

    /// Starts the server again with the settings of [`Self::start`].
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()));
        for setting in &self.settings {
            command.arg("-c").arg(setting);
        }
        self.server = Some(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start postgres"),
        );
        let isready = self.bin.join("pg_isready");
        let port = self.port.to_string();
        wait_until("the private PostgreSQL accepts connections", || {
            Command::new(&isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .status()
                .is_ok_and(|status| status.success())
        });
    }

    /// Stops the server as `how` says and waits until it is gone.
    pub fn stop(&mut self, how: Shutdown) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        // postgres runs under runuser: signal the postmaster (its pid heads postmaster.pid), then
        // reap runuser.
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned));
        let signal = match how {
            Shutdown::Fast => "-INT",
            Shutdown::Immediate => "-QUIT",
            Shutdown::Freeze => {
                // The postmaster first, so that it forks no new backend, then its children
                // (backends) so that no session answers either. The other way round, a backend
                // forked between the two (a pool reconnecting, on a loaded machine) kept answering
                // the readiness probe.
                if let Some(pid) = &pid {
                    let _ = Command::new("kill").args(["-STOP", pid]).status();
                }
                let _ = Command::new("pkill")
                    .args(["-STOP", "-P"])
                    .arg(pid.clone().unwrap_or_default())
                    .status();
                self.server = Some(server);
                return;
            }
        };
        match pid {
            Some(pid) => {
                let _ = Command::new("kill").args([signal, &pid]).status();
            }
            None => {
                let _ = server.kill();
            }
        }
        let _ = server.wait();
    }

    /// Resumes a server stopped with [`Shutdown::Freeze`].
    pub fn resume(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
            .expect("a running server has a postmaster.pid");
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        let _ = Command::new("pkill").args(["-CONT", "-P", &pid]).status();
        // runuser stops itself when its child stops (as su does, for job control).
        if let Some(server) = &self.server {
            let _ = Command::new("kill")
                .args(["-CONT", &server.id().to_string()])
                .status();
        }
    }

    /// A plain-TCP URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.resume();
        }
        self.stop(Shutdown::Fast);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `command` to success, quietly.
pub fn run(command: &mut Command) {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed");
}

/// Polls `ready` every 100 ms for up to 30 s.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}
