//! `openloop`: offers `GET PATH` to TARGET at RATE requests per second for
//! SECONDS, open loop: each request is due at `start + i / RATE` and is sent
//! then (in batches, every millisecond) whatever the earlier ones' fate, on
//! CONNS keep-alive connections with HTTP/1.1 pipelining, request `i` on
//! connection `i % CONNS`. A request's latency is from when it was due to
//! when its response ended, so a generator or server that falls behind shows
//! it. oha (-q with --latency-correction) does the same, but one oha process
//! on one core tops out below drover's capacity on the other; this one sends
//! requests as bytes it prepared once and parses only status lines and
//! lengths.
//!
//! Two ways to offer the load (MODE):
//! - `clients`: like independent clients, one request at a time per
//!   connection: a request due while every connection waits for an answer
//!   waits for the first free one (that wait counts in its latency);
//! - `pipelined`: request `i` on connection `i % CONNS`, sent when due
//!   whatever the answers still owed on that connection. Cheaper, but a
//!   server reads a connection's requests one after another, so the queue
//!   is in the socket, out of the server's sight.
//!
//! Writes one line per request to OUT: `due end status` (seconds from the
//! start; status 0 when the connection failed before the answer), then
//! prints `sent N` on stdout.
//!
//! Usage: openloop TARGET PATH RATE SECONDS CONNS MODE OUT [HEADER...]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Answers still missing this long after the last request was due are
/// counted as failed.
const GRACE: Duration = Duration::from_secs(5);

struct Args {
    target: SocketAddr,
    path: String,
    rate: f64,
    seconds: f64,
    conns: usize,
    pipelined: bool,
    out: String,
    headers: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        return Err("usage: openloop TARGET PATH RATE SECONDS CONNS clients|pipelined OUT [HEADER...]".into());
    }
    let pipelined = match args[5].as_str() {
        "clients" => false,
        "pipelined" => true,
        other => return Err(format!("MODE: clients or pipelined, not {other}")),
    };
    let number = |i: usize, name: &str| {
        args[i].parse::<f64>().map_err(|_| format!("{name}: not a number: {}", args[i]))
    };
    Ok(Args {
        target: args[0].parse().map_err(|_| format!("TARGET: not an address: {}", args[0]))?,
        path: args[1].clone(),
        rate: number(2, "RATE")?,
        seconds: number(3, "SECONDS")?,
        conns: args[4].parse().map_err(|_| format!("CONNS: not a count: {}", args[4]))?,
        pipelined,
        out: args[6].clone(),
        headers: args[7..].to_vec(),
    })
}

/// One request's record.
#[derive(Clone, Copy)]
struct Record {
    due: f64,
    end: f64,
    status: u16,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("openloop: {error}");
            return ExitCode::from(64);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let local = tokio::task::LocalSet::new();
    let records = local.block_on(&runtime, run(&args));
    let mut out = match std::fs::File::create(&args.out) {
        Ok(file) => std::io::BufWriter::new(file),
        Err(error) => {
            eprintln!("openloop: {}: {error}", args.out);
            return ExitCode::FAILURE;
        }
    };
    for r in &records {
        let _ = writeln!(out, "{:.6} {:.6} {}", r.due, r.end, r.status);
    }
    let _ = out.flush();
    println!("sent {}", records.len());
    ExitCode::SUCCESS
}

async fn run(args: &Args) -> Vec<Record> {
    let mut request = format!("GET {} HTTP/1.1\r\nhost: {}\r\n", args.path, args.target);
    for header in &args.headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request: Rc<[u8]> = request.into_bytes().into();
    let total = (args.rate * args.seconds) as u64;
    let start = Instant::now() + Duration::from_millis(200);
    let results: Rc<RefCell<Vec<Record>>> = Rc::new(RefCell::new(Vec::with_capacity(total as usize)));
    if !args.pipelined {
        return clients(args, request, total, start, results).await;
    }
    let mut tasks = Vec::new();
    for k in 0..args.conns {
        let stream = match TcpStream::connect(args.target).await {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("openloop: connect {}: {error}", args.target);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let pending: Rc<RefCell<VecDeque<f64>>> = Rc::new(RefCell::new(VecDeque::new()));
        let (rate, conns) = (args.rate, args.conns as u64);
        let mine: Vec<f64> = (k as u64..total).step_by(conns as usize).map(|i| i as f64 / rate).collect();
        let (last_due, expected) = (args.seconds, mine.len());
        // The sender keeps its half open until the receiver is done: a
        // half-closed connection may lose the answers still on their way.
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        tasks.push(tokio::task::spawn_local(sender(
            write,
            mine,
            start,
            request.clone(),
            pending.clone(),
            finished,
        )));
        tasks.push(tokio::task::spawn_local(receiver(
            read,
            start,
            last_due,
            expected,
            pending,
            results.clone(),
            done,
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut records = std::mem::take(&mut *results.borrow_mut());
    records.sort_by(|a, b| a.due.total_cmp(&b.due));
    records
}

/// Requests due and not yet taken by a connection, and a wake-up for idle
/// connections.
struct Queue {
    due: RefCell<VecDeque<f64>>,
    ready: tokio::sync::Notify,
    /// Every request has been queued.
    closed: std::cell::Cell<bool>,
}

/// `clients` mode: CONNS connections, one request in flight each, taking
/// requests from one queue filled at the rate.
async fn clients(
    args: &Args,
    request: Rc<[u8]>,
    total: u64,
    start: Instant,
    results: Rc<RefCell<Vec<Record>>>,
) -> Vec<Record> {
    let queue = Rc::new(Queue {
        due: RefCell::new(VecDeque::new()),
        ready: tokio::sync::Notify::new(),
        closed: std::cell::Cell::new(false),
    });
    let mut tasks = Vec::new();
    for _ in 0..args.conns {
        match TcpStream::connect(args.target).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                tasks.push(tokio::task::spawn_local(client(
                    stream,
                    request.clone(),
                    start,
                    queue.clone(),
                    results.clone(),
                )));
            }
            Err(error) => eprintln!("openloop: connect {}: {error}", args.target),
        }
    }
    // Queue each request when it is due, those due by now at once.
    let mut next = 0u64;
    while next < total {
        let due = next as f64 / args.rate;
        tokio::time::sleep_until(start + Duration::from_secs_f64(due)).await;
        let now = start.elapsed().as_secs_f64();
        let mut queued = 0;
        {
            let mut waiting = queue.due.borrow_mut();
            while next < total && next as f64 / args.rate <= now {
                waiting.push_back(next as f64 / args.rate);
                next += 1;
                queued += 1;
            }
        }
        for _ in 0..queued.min(args.conns) {
            queue.ready.notify_one();
        }
    }
    queue.closed.set(true);
    queue.ready.notify_waiters();
    for task in tasks {
        let _ = task.await;
    }
    // Whatever no connection took (they all failed) never got an answer.
    let end = start.elapsed().as_secs_f64();
    results.borrow_mut().extend(queue.due.borrow_mut().drain(..).map(|due| Record { due, end, status: 0 }));
    let mut records = std::mem::take(&mut *results.borrow_mut());
    records.sort_by(|a, b| a.due.total_cmp(&b.due));
    records
}

/// One connection of `clients` mode: takes a due request, sends it, reads
/// the answer, again.
async fn client(
    mut stream: TcpStream,
    request: Rc<[u8]>,
    start: Instant,
    queue: Rc<Queue>,
    results: Rc<RefCell<Vec<Record>>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let due = loop {
            // Registered before the checks, so neither a request queued nor
            // the close in between is missed.
            let notified = queue.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(due) = queue.due.borrow_mut().pop_front() {
                break Some(due);
            }
            if queue.closed.get() {
                break None;
            }
            notified.await;
        };
        let Some(due) = due else { return };
        let status = match exchange(&mut stream, &request, &mut buf, &mut chunk).await {
            Some(status) => status,
            None => {
                results.borrow_mut().push(Record { due, end: start.elapsed().as_secs_f64(), status: 0 });
                return;
            }
        };
        results.borrow_mut().push(Record { due, end: start.elapsed().as_secs_f64(), status });
    }
}

/// Sends one request and reads its answer; its status, or `None` when the
/// connection failed.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    loop {
        if let Some((status, used)) = parse(buf) {
            buf.drain(..used);
            return Some(status);
        }
        let n = stream.read(chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends this connection's requests when due, those due by now in one write.
async fn sender(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    dues: Vec<f64>,
    start: Instant,
    request: Rc<[u8]>,
    pending: Rc<RefCell<VecDeque<f64>>>,
    finished: tokio::sync::oneshot::Receiver<()>,
) {
    let mut next = 0;
    let mut batch = Vec::new();
    while next < dues.len() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(dues[next])).await;
        let now = start.elapsed().as_secs_f64();
        batch.clear();
        while next < dues.len() && dues[next] <= now {
            batch.extend_from_slice(&request);
            pending.borrow_mut().push_back(dues[next]);
            next += 1;
        }
        if write.write_all(&batch).await.is_err() {
            // The receiver counts the rest as failed.
            pending.borrow_mut().extend(dues[next..].iter().copied());
            return;
        }
    }
    let _ = finished.await;
}

/// Reads responses in order and records each against its due time.
async fn receiver(
    mut read: tokio::net::tcp::OwnedReadHalf,
    start: Instant,
    last_due: f64,
    expected: usize,
    pending: Rc<RefCell<VecDeque<f64>>>,
    results: Rc<RefCell<Vec<Record>>>,
    // Dropped when this returns: the sender may close its half then.
    _done: tokio::sync::oneshot::Sender<()>,
) {
    let mut received = 0;
    let deadline = start + Duration::from_secs_f64(last_due) + GRACE;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Every complete response in the buffer, dropped from it at once.
        let end = start.elapsed().as_secs_f64();
        let mut at = 0;
        while let Some((status, used)) = parse(&buf[at..]) {
            at += used;
            if let Some(due) = pending.borrow_mut().pop_front() {
                results.borrow_mut().push(Record { due, end, status });
                received += 1;
            }
        }
        buf.drain(..at);
        if received == expected {
            return;
        }
        let read_some = tokio::time::timeout_at(deadline, read.read(&mut chunk)).await;
        match read_some {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // Closed, failed, or past the deadline: the rest failed.
            _ => break,
        }
    }
    let end = start.elapsed().as_secs_f64();
    let mut results = results.borrow_mut();
    for due in pending.borrow_mut().drain(..) {
        results.push(Record { due, end, status: 0 });
    }
}

/// A complete response at the start of `buf`: its status and length.
fn parse(buf: &[u8]) -> Option<(u16, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status = head.get(9..12)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + length).then_some((status, head_end + length))
}
