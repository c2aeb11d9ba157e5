//! A network namespace joined to this host by a veth pair: a second "host" for tests that
//! need one cut off from the rest (a drill sandbox that must not reach production). Needs
//! root, which CI has. Names and the /30 are unique per process; everything is removed on
//! drop, processes inside first (`ip netns delete` does not kill them).

use std::process::Command;

use crate::process::run;

pub struct Netns {
    pub name: String,
    host_if: String,
    /// This host's address on the link, and the namespace's.
    pub host_addr: String,
    pub ns_addr: String,
}

fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {}: {}; this test needs root and iproute2 (apt-get install iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A namespace `tm<tag><pid>` with a point-to-point link to this host.
    pub fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let name = format!("tm{tag}{id}");
        let (host_if, ns_if) = (format!("tm{id}h"), format!("tm{id}n"));
        // 10.231.0.0/16 in /30s: one per process.
        let block = (id % 16_000) * 4;
        let (hi, lo) = (block / 256, block % 256);
        let host_addr = format!("10.231.{hi}.{}", lo + 1);
        let ns_addr = format!("10.231.{hi}.{}", lo + 2);
        let _ = run(Command::new("ip").args(["netns", "delete", &name]));
        let _ = run(Command::new("ip").args(["link", "delete", &host_if]));
        let me = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_addr: host_addr.clone(),
            ns_addr: ns_addr.clone(),
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_addr}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        me
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_if])
            .status();
    }
}
