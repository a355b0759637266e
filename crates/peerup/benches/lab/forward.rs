//! The latency floor of a two-process tunnel, measured in the same run: two bare TCP forwarders
//! in a chain, pubpeer 127.0.0.1 → relay host → the sink, crossing the same sockets and
//! processes as `peerup proxy` → daemon → sink, with no encryption and no protocol. Each accepts,
//! connects on and copies both ways with tokio's `copy_bidirectional` on a multi-thread runtime
//! (as peerup runs), TCP_NODELAY on every socket.
//!
//! The benchmark binary is the forwarder: started with `BENCH_FORWARD="<listen> <target>"` it
//! prints `READY` once listening and forwards until killed (`serve_if_asked`, first in `main`).

use std::path::PathBuf;

use tokio::net::{TcpListener, TcpStream};

use crate::cases::Case;
use crate::lab::{Lab, READY};
use crate::measure::Tracked;
use crate::node::RELAY_IP;
use crate::proc::{Proc, Stream};

const ENV: &str = "BENCH_FORWARD";
/// The chain's ports: pubpeer's listener (the case's port) and the relay host's.
pub(crate) const PORT: u16 = 7201;
const RELAY_PORT: u16 = 7202;

/// When this process was started as a forwarder, forwards and never returns.
pub(crate) fn serve_if_asked() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let Some((listen, target)) = spec.split_once(' ') else {
        eprintln!("{ENV}={spec:?}: want \"<listen addr> <target addr>\"");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let result = runtime.and_then(|rt| rt.block_on(serve(listen, target)));
    eprintln!("forwarder {listen} → {target}: {result:?}");
    std::process::exit(1);
}

async fn serve(listen: &str, target: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("READY");
    loop {
        let (mut client, _) = listener.accept().await?;
        let target = target.to_string();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

/// The running chain.
pub(crate) struct Forwarders {
    near: Proc,
    far: Proc,
}

impl Forwarders {
    /// Starts the chain to the relay host's sink on `sink_port`.
    pub(crate) fn start(lab: &Lab, sink_port: u16) -> Forwarders {
        let exe: PathBuf = std::env::current_exe().expect("the benchmark's own path");
        let one = |host: &str, listen: String, target: String| {
            let spec = format!("{listen} {target}");
            let name = format!("{host}-forward");
            let mut p = lab.spawn(Some(host), &name, &exe, &[], &[(ENV, &spec)]);
            p.expect_line("`READY`", Some(Stream::Out), READY, |l| l == "READY");
            p
        };
        let far = one("relay", format!("0.0.0.0:{RELAY_PORT}"), format!("127.0.0.1:{sink_port}"));
        let near = one("pubpeer", format!("127.0.0.1:{PORT}"), format!("{RELAY_IP}:{RELAY_PORT}"));
        Forwarders { near, far }
    }

    /// The benchmark case going through it.
    pub(crate) fn case(&self) -> Case {
        let mut c = Case::new(
            "floor-public",
            "two bare forwarders (floor, no encryption)",
            "pubpeer → relay host",
            "pubpeer",
        );
        c.port = PORT;
        c.tracked = vec![
            Tracked::one("forwarder (pubpeer)", self.near.pid()),
            Tracked::one("forwarder (relay host)", self.far.pid()),
        ];
        c.info.push("tokio copy_bidirectional, multi-thread runtime, TCP_NODELAY".into());
        c
    }
}
