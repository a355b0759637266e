//! A bare TCP forwarder, the floor for a tunnel's added latency: it accepts, connects on, and
//! copies both ways with tokio (as peerup's pipes do), with no encryption and no protocol. Two of
//! them in a chain (client side, server side) are what any two-process tunnel must at least cost;
//! docs/performance.md item 28 compares peerup with it in the NAT lab.
//!
//! ```text
//! cargo build --release -p peerup-core --example forward
//! target/release/examples/forward <listen addr> <target addr> [current-thread]
//! ```

use tokio::net::{TcpListener, TcpStream};

async fn serve(listen: String, target: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(target)) = (args.next(), args.next()) else {
        eprintln!("usage: forward <listen addr> <target addr> [current-thread]");
        std::process::exit(2);
    };
    let mut runtime = match args.next().as_deref() {
        Some("current-thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(serve(listen, target))
}
