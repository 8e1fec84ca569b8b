//! PostgreSQL's LISTEN on a connection of its own: a job process learns
//! that events were committed to the outbox (a trigger on `outbox` calls
//! `pg_notify`, delivered at the commit: migration 0013) and relays them at once instead
//! of at its next poll. Polling stays the fallback: a lost connection only
//! costs latency while it reconnects.

use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{info, warn};

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Wakes `wake` on every notification on `channel`, for the process's
/// life (run it on its own task).
pub async fn listen(url: String, channel: &'static str, wake: Rc<Notify>) {
    let config: tokio_postgres::Config = match url.parse() {
        Ok(config) => config,
        Err(error) => {
            warn!(%error, "cannot listen for outbox events: invalid PostgreSQL URL; polling only");
            return;
        }
    };
    let mut delay = RECONNECT_MIN;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!("LISTEN {channel}");
                let listen = client.batch_execute(&statement);
                tokio::pin!(listen);
                let mut listening = false;
                let ended = loop {
                    tokio::select! {
                        done = &mut listen, if !listening => match done {
                            Ok(()) => {
                                listening = true;
                                delay = RECONNECT_MIN;
                                info!(channel, "listening for outbox events");
                                // Anything committed while not listening.
                                wake.notify_one();
                            }
                            Err(error) => break error.to_string(),
                        },
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(error)) => break error.to_string(),
                            None => break "connection closed".to_owned(),
                        },
                    }
                };
                warn!(error = %ended, "lost the connection listening for outbox events; polling meanwhile");
            }
            Err(error) => warn!(%error, "cannot listen for outbox events; polling meanwhile"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}
