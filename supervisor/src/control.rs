//! The control socket: a Unix socket, mode 0600, on which `drover ctl` asks
//! the supervisor for its status, a reload, or a stop. One JSON request per
//! connection, one JSON answer ([`drover_protocol::ctl`]).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use drover_protocol::ctl::{Answer, Reply, Request, MAX_REQUEST};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A request and where its answer goes.
pub(crate) type Pending = (Request, oneshot::Sender<Reply>);

/// The bound socket; the file is removed when this is dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Remove the socket file on drop (not when a successor has taken it).
    remove_on_drop: std::cell::Cell<bool>,
}

impl ControlSocket {
    /// Binds `path`, replacing a stale socket file but refusing one that a
    /// running supervisor still answers on.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use: is another drover running?", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
        // Anyone who can connect can stop the server.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self { listener, path: path.to_owned(), remove_on_drop: std::cell::Cell::new(true) })
    }

    /// Serves on a listener handed over by the previous supervisor.
    pub fn adopt(listener: std::os::unix::net::UnixListener, path: &Path) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: UnixListener::from_std(listener)?,
            path: path.to_owned(),
            remove_on_drop: std::cell::Cell::new(true),
        })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    /// Leaves the socket file in place on drop: a successor serves on it.
    pub fn keep_file(&self) {
        self.remove_on_drop.set(false);
    }

    /// Accepts connections for ever, handing each request to the
    /// supervisor's loop through `requests`.
    pub(crate) async fn serve(&self, requests: mpsc::UnboundedSender<Pending>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else { continue };
            let requests = requests.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, requests).await {
                    tracing::debug!(%error, "control connection failed");
                }
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if self.remove_on_drop.get() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn answer(stream: UnixStream, requests: mpsc::UnboundedSender<Pending>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    reader.read_until(b'\n', &mut line).await?;
    let response = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            let _ = requests.send((request, reply));
            answer.await.unwrap_or_else(|_| Reply::Answer(Answer::failed("supervisor is stopping")))
        }
        Err(error) => Reply::Answer(Answer::failed(format!("bad request: {error}"))),
    };
    let mut bytes = serde_json::to_vec(&response)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

/// Sends one request to the supervisor at `path` and returns its answer.
pub async fn request(path: &Path, request: &Request) -> io::Result<Reply> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot connect to {}: {e} (is drover running?)", path.display()))
    })?;
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(request)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    let mut line = Vec::new();
    BufReader::new(read).read_until(b'\n', &mut line).await?;
    serde_json::from_slice(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
