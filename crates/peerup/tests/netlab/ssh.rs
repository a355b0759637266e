//! A real OpenSSH server in a lab host, on 127.0.0.1 with a throwaway host key and client key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lab::{COMMAND, Finished, Lab, READY};
use super::proc::{Proc, Stream};

/// Programs the SSH test needs.
pub const TOOLS: [&str; 3] = ["/usr/sbin/sshd", "ssh", "ssh-keygen"];

/// `sshd -D` in a lab host.
pub struct Sshd {
    pub proc: Proc,
    pub port: u16,
    dir: PathBuf,
}

fn keygen(lab: &Lab, path: &Path) {
    let path = path.to_str().expect("utf-8 path");
    let args = ["-q", "-t", "ed25519", "-N", "", "-C", "peerup-netlab", "-f", path];
    lab.run(None, "ssh-keygen", Path::new("ssh-keygen"), &args, &[], COMMAND).ok();
}

impl Sshd {
    /// Starts sshd in `host` on 127.0.0.1:`port`, allowing root in with a new client key only.
    pub fn start(lab: &Lab, host: &str, port: u16) -> Sshd {
        Sshd::start_on(lab, host, "127.0.0.1", port)
    }

    /// Like `start`, listening on `listen` (an address of `host`).
    pub fn start_on(lab: &Lab, host: &str, listen: &str, port: u16) -> Sshd {
        let dir = lab.work().join(format!("sshd-{host}-{port}"));
        std::fs::create_dir_all(&dir).expect("sshd dir");
        keygen(lab, &dir.join("host_key"));
        keygen(lab, &dir.join("client_key"));
        let authorized = dir.join("authorized_keys");
        std::fs::copy(dir.join("client_key.pub"), &authorized).expect("authorized_keys");
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600)).unwrap();
        let d = dir.display();
        let config = format!(
            "Port {port}\n\
             ListenAddress {listen}\n\
             HostKey {d}/host_key\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             LogLevel VERBOSE\n"
        );
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).expect("sshd_config");
        // sshd insists on its privilege separation directory (the Debian service creates it).
        let privsep = Path::new("/run/sshd");
        if !privsep.exists() {
            std::fs::create_dir_all(privsep).expect("/run/sshd");
            std::fs::set_permissions(privsep, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port_s = port.to_string();
        let args = ["-D", "-e", "-f", config_path.to_str().unwrap(), "-p", &port_s];
        let mut proc =
            lab.spawn(Some(host), &format!("{host}-sshd"), Path::new("/usr/sbin/sshd"), &args, &[]);
        let ready = format!("Server listening on {listen} port {port}");
        proc.expect_line(&format!("`{ready}`"), Some(Stream::Err), READY, |l| l.contains(&ready));
        Sshd { proc, port, dir }
    }

    /// Runs `ssh … root@127.0.0.1 <command>` in `host` against local port `port` (sshd's own port,
    /// or a proxy's).
    pub fn ssh(&self, lab: &Lab, host: &str, port: u16, command: &str) -> Finished {
        let (options, home) = self.client_options(host);
        let port = port.to_string();
        let mut args: Vec<&str> = options.iter().map(String::as_str).collect();
        args.extend(["-p", &port, "-o", "LogLevel=ERROR", "root@127.0.0.1", command]);
        let env = [("HOME", home.to_str().unwrap())];
        lab.run(
            Some(host),
            &format!("{host}-ssh"),
            Path::new("ssh"),
            &args,
            &env,
            Duration::from_secs(90),
        )
    }

    /// The options an ssh client in `host` needs to log in as root with the generated key (no
    /// config file, no host key check, no prompts), and the `HOME` to run it with.
    pub fn client_options(&self, host: &str) -> (Vec<String>, PathBuf) {
        let key = self.dir.join("client_key");
        let home = self.dir.join(format!("home-{host}"));
        std::fs::create_dir_all(&home).expect("ssh home");
        let mut args = vec!["-F", "/dev/null", "-i", key.to_str().expect("utf-8 path")];
        for o in [
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "ConnectTimeout=30",
        ] {
            args.extend(["-o", o]);
        }
        (args.into_iter().map(String::from).collect(), home)
    }
}
