//! `udp-floor --bind ADDR`: the node scenario's floor responder
//! ([`lodestone_benches::udp_floor`]), a process of its own so the scenario
//! pins and measures it exactly as it does `lodestone node`.

use std::net::SocketAddr;
use std::process::ExitCode;

use lodestone_benches::udp_floor::{Replies, serve};
use nix::sys::socket::{setsockopt, sockopt};

/// `lodestone node --socket-buffer`'s default.
const SOCKET_BUFFER: usize = 8 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bind = match args.as_slice() {
        [flag, addr] if flag == "--bind" => addr.parse::<SocketAddr>(),
        _ => {
            eprintln!("usage: udp-floor --bind ADDR");
            return ExitCode::from(2);
        }
    };
    let bind = match bind {
        Ok(bind) => bind,
        Err(e) => {
            eprintln!("udp-floor: bad address: {e}");
            return ExitCode::from(2);
        }
    };
    let replies = match Replies::from_lodestone() {
        Ok(replies) => replies,
        Err(e) => {
            eprintln!("udp-floor: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread, the least a node can run on.
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .and_then(|runtime| {
            runtime.block_on(async {
                let socket = std::net::UdpSocket::bind(bind)?;
                // The buffers `lodestone node` asks for by default: gathered
                // bursts must not overflow a smaller one.
                setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER)?;
                setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER)?;
                socket.set_nonblocking(true)?;
                serve(tokio::net::UdpSocket::from_std(socket)?, &replies).await
            })
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
