//! `hold`: opens COUNT keep-alive connections to TARGET from SOURCE (a
//! loopback address of its own, so that several of these together pass the
//! ephemeral-port limit of one address), sends one `GET PATH` on each and
//! reads the answer, then holds them all idle.
//!
//! It prints `held N` once every connection has had its answer, then waits
//! for a line (or end of file) on stdin, or for `--hold-max` seconds,
//! whichever comes first. Then it sends a second `GET` on every
//! `--recheck-every`-th connection, to show that connections held idle are
//! still served, prints `recheck ok=A failed=B`, closes everything and
//! exits. Blocking sockets on one thread: connecting is one round trip on
//! loopback, and an idle connection needs nothing from its client.
//!
//! Usage: hold TARGET SOURCE COUNT [--path P] [--hold-max SECS] [--recheck-every K]

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

struct Args {
    target: SocketAddr,
    source: SocketAddr,
    count: usize,
    path: String,
    hold_max: Duration,
    recheck_every: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut path = "/healthz".to_owned();
    let mut hold_max = Duration::from_secs(600);
    let mut recheck_every = 100;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--path" => path = value("--path")?,
            "--hold-max" => {
                let secs: u64 = value("--hold-max")?.parse().map_err(|e| format!("--hold-max: {e}"))?;
                hold_max = Duration::from_secs(secs);
            }
            "--recheck-every" => {
                recheck_every = value("--recheck-every")?.parse().map_err(|e| format!("--recheck-every: {e}"))?;
            }
            _ => positional.push(arg),
        }
    }
    let [target, source, count] = positional.as_slice() else {
        return Err("usage: hold TARGET SOURCE COUNT [--path P] [--hold-max SECS] [--recheck-every K]".into());
    };
    Ok(Args {
        target: target.parse().map_err(|e| format!("TARGET {target}: {e}"))?,
        source: format!("{source}:0").parse().map_err(|e| format!("SOURCE {source}: {e}"))?,
        count: count.parse().map_err(|e| format!("COUNT {count}: {e}"))?,
        path,
        hold_max,
        recheck_every: recheck_every.max(1),
    })
}

fn connect(args: &Args) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(args.source))?;
    socket.connect_timeout(&SockAddr::from(args.target), Duration::from_secs(5))?;
    socket.set_nodelay(true)?;
    let stream: TcpStream = socket.into();
    // Bounded: a server that stops answering fails the run, not hangs it.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sends one GET and reads its whole answer; returns the status code.
fn get(stream: &mut TcpStream, request: &[u8]) -> io::Result<u16> {
    stream.write_all(request)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if head.contains("\nconnection: close") {
            return Err(io::Error::other(format!("status {status} with connection: close")));
        }
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the body"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(status);
    }
}

/// Closes with a reset rather than a FIN: a closing client's sockets would
/// otherwise wait in TIME_WAIT for a minute, holding their source ports, and
/// the next run from the same address would find none free.
fn close_all(held: Vec<TcpStream>) {
    for stream in held {
        let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("hold: {message}");
            return ExitCode::from(64);
        }
    };
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", args.path, args.target);
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let result = connect(&args).and_then(|mut stream| {
            let status = get(&mut stream, request.as_bytes())?;
            if status == 200 {
                Ok(stream)
            } else {
                Err(io::Error::other(format!("status {status}")))
            }
        });
        match result {
            Ok(stream) => held.push(stream),
            Err(error) => {
                eprintln!("hold: connection {i} from {}: {error}", args.source.ip());
                println!("failed after {} connections", held.len());
                close_all(held);
                return ExitCode::FAILURE;
            }
        }
    }
    println!("held {} in {:.1} s", held.len(), started.elapsed().as_secs_f64());
    let _ = io::stdout().flush();

    // Until told (a line or end of file on stdin), or the time limit.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = io::stdin().lock().read_line(&mut String::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(args.hold_max);

    let (mut ok, mut failed) = (0, 0);
    for stream in held.iter_mut().step_by(args.recheck_every) {
        match get(stream, request.as_bytes()) {
            Ok(200) => ok += 1,
            Ok(status) => {
                failed += 1;
                eprintln!("hold: recheck answered {status}");
            }
            Err(error) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("hold: recheck failed: {error}");
                }
            }
        }
    }
    println!("recheck ok={ok} failed={failed}");
    close_all(held);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
