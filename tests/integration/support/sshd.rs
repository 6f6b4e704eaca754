//! A private OpenSSH server for the tests and the benchmark: `sshd -D` on
//! a free loopback port with a throwaway host key, its own sshd_config and
//! an authorized_keys for a throwaway client key, all in a temporary
//! directory; and the client side's own ssh config (`ssh -F`), so nothing
//! of the user's ~/.ssh is read or written. Dropping it stops the server
//! and every session it serves.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn sshd_binary() -> PathBuf {
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("sshd is not installed: apt-get install openssh-server (.ci/run does)")
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "marvel-test", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen (apt-get install openssh-client)");
    assert!(out.status.success(), "ssh-keygen failed: {out:?}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("marvel-sshd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        // The privilege separation directory sshd insists on.
        let _ = std::fs::create_dir_all("/run/sshd");
        keygen(&d.join("host_key"));
        keygen(&d.join("id"));
        keygen(&d.join("other_id"));
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let config = format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {d}/host_key\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\n\
                 MaxSessions 64\n\
                 MaxStartups 64\n\
                 LogLevel ERROR\n",
                d = d.display()
            );
            std::fs::write(d.join("sshd_config"), config).unwrap();
            let log = std::fs::File::create(d.join("sshd.log")).unwrap();
            let mut child = Command::new(sshd_binary())
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: another one
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
                    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
                    std::fs::write(
                        d.join("known_hosts"),
                        format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
                    )
                    .unwrap();
                    std::fs::write(d.join("empty_known_hosts"), "").unwrap();
                    let sshd = Sshd { dir, port, child };
                    sshd.client_config("ssh_config", "id", "known_hosts");
                    sshd.client_config("ssh_config_unknown_host", "id", "empty_known_hosts");
                    sshd.client_config("ssh_config_wrong_key", "other_id", "known_hosts");
                    return sshd;
                }
                assert!(
                    Instant::now() < deadline,
                    "sshd did not listen within 10 s: {}",
                    std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("sshd attempt {attempt} failed; retrying on another port");
        }
        panic!(
            "sshd would not start: {}",
            std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
        );
    }

    fn client_config(&self, name: &str, key: &str, known_hosts: &str) {
        let d = self.dir.path().display();
        std::fs::write(
            self.dir.path().join(name),
            format!(
                "Host *\n\
                 \x20 IdentityFile {d}/{key}\n\
                 \x20 IdentitiesOnly yes\n\
                 \x20 IdentityAgent none\n\
                 \x20 UserKnownHostsFile {d}/{known_hosts}\n\
                 \x20 GlobalKnownHostsFile /dev/null\n\
                 \x20 StrictHostKeyChecking yes\n\
                 \x20 PasswordAuthentication no\n\
                 \x20 LogLevel ERROR\n"
            ),
        )
        .unwrap();
    }

    /// `ssh://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ssh://127.0.0.1:{}", self.port)
    }

    /// `ssh -F <its config>`, for `MARVEL_SSH_COMMAND`.
    pub fn ssh_command(&self) -> String {
        self.ssh_command_with("ssh_config")
    }

    /// The ssh command with a config whose known_hosts lacks the server.
    pub fn ssh_command_unknown_host(&self) -> String {
        self.ssh_command_with("ssh_config_unknown_host")
    }

    /// The ssh command with a key the server does not accept.
    pub fn ssh_command_wrong_key(&self) -> String {
        self.ssh_command_with("ssh_config_wrong_key")
    }

    fn ssh_command_with(&self, config: &str) -> String {
        format!("ssh -F {}", self.dir.path().join(config).display())
    }

    /// The per-connection sshd processes (the listener's children).
    pub fn sessions(&self) -> Vec<u32> {
        children(self.child.id())
    }

    /// Cuts every connection at once, as a network failure would.
    pub fn kill_sessions(&self) {
        for pid in self.sessions() {
            // SAFETY: kill(2) on a child of the sshd this fixture started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Processes whose parent is `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
