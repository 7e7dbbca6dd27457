//! Private network namespaces (`ip netns`): the machine's own firewall and addresses are never touched. Each
//! namespace has a unique name, its loopback up, and is deleted when the guard drops.

use std::fs::File;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::tools;

/// A network namespace that exists while this guard lives.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    ip: PathBuf,
}

impl NetNs {
    /// Creates a namespace named `vt-{tag}-{pid}-{n}` with `lo` up, or `None` with the reason printed (not root,
    /// no `ip`) outside CI; on CI that is a failure.
    pub fn new(tag: &str) -> Option<NetNs> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let ip = tools::tool("ip", "iproute2")?;
        if !rustix::process::geteuid().is_root() {
            return tools::skip("network namespaces need root");
        }
        let name = format!(
            "vt-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(&ip)
            .args(["netns", "add", &name])
            .output()
            .expect("ip runs");
        if !out.status.success() {
            return tools::skip(&format!(
                "cannot create a network namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let ns = NetNs { name, ip };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// The same as [`NetNs::command`], for tokio.
    pub fn tokio_command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.ip);
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A command that runs `program` inside the namespace with its own `/etc/hosts`: in a private mount namespace
    /// (`unshare --mount`), `hosts` is bind-mounted over `/etc/hosts` before `program` starts, so name lookups of
    /// `program` see it while the machine's hosts file is never written. `None` (with the reason printed, a
    /// failure on CI) when `unshare` or `mount` is missing.
    pub fn tokio_command_with_hosts(
        &self,
        hosts: &std::path::Path,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Option<tokio::process::Command> {
        let unshare = tools::tool("unshare", "util-linux")?;
        tools::tool("mount", "mount")?;
        let mut c = tokio::process::Command::new(&self.ip);
        c.args(["netns", "exec", &self.name])
            .arg(unshare)
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(hosts)
            .arg(program);
        Some(c)
    }

    /// Runs `args` inside the namespace and returns its output, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .output()
            .expect("ip netns exec runs")
    }

    /// Runs `args` inside the namespace, feeding `stdin`, and returns its output.
    pub fn output_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command(args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ip netns exec runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }

    /// Runs `args` inside the namespace and returns its stdout; panics with its stderr when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "`{}` in {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Moves the calling thread into the namespace: sockets it creates from now on live there.
    pub fn enter_current_thread(&self) {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("the namespace file");
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns into the network namespace");
    }

    /// A multi-threaded tokio runtime whose threads (workers and blocking pool) all live in the namespace, so an
    /// in-process server started on it binds inside. Build and `block_on` it from a thread that called
    /// [`NetNs::enter_current_thread`].
    pub fn runtime(&self, workers: usize) -> tokio::runtime::Runtime {
        let path = format!("/run/netns/{}", self.name);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .on_thread_start(move || {
                let file = File::open(&path).expect("the namespace file");
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns into the network namespace");
            })
            .build()
            .expect("a runtime")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new(&self.ip)
            .args(["netns", "del", &self.name])
            .output();
    }
}
