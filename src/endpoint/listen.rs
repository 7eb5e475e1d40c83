//! Waking up when changes are captured. A PostgreSQL endpoint LISTENs on the channel its
//! capture trigger notifies (`capture::postgres::CHANGES_CHANNEL`) and reports, at commit,
//! the table named in each notification. SQLite and MySQL have no such signal: [`listen`]
//! returns `None` there ([`EndpointSpec::can_listen`] says so beforehand) and the caller
//! polls the changelog instead.
//!
//! Owns the listening connection only. Its URL never leaves it: driver messages are
//! redacted before they are logged or returned.

use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{EndpointError, EndpointSpec, redact, url_secrets};
use crate::capture::postgres::CHANGES_CHANNEL;

/// A live LISTEN session. Notifications stop when it is dropped or its connection breaks
/// (see [`Listener::is_closed`]; listen again to resume).
pub struct Listener {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub fn is_closed(&self) -> bool {
        self.client.is_closed() || self.task.is_finished()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EndpointSpec {
    /// Whether [`listen`] can wake on this endpoint's captured changes; the others are
    /// polled.
    pub fn can_listen(&self) -> bool {
        self.listen_url().is_some()
    }

    /// The URL a LISTEN session connects to, for the engines that notify.
    fn listen_url(&self) -> Option<&str> {
        match self {
            EndpointSpec::Postgres { url } => Some(url),
            EndpointSpec::Sqlite { .. } | EndpointSpec::Mysql { .. } => None,
        }
    }
}

/// Starts listening on `spec` and sends each changed table's name (as written in the map,
/// `table` or `schema.table`) to `tables`. `Ok(None)` for engines without notifications.
/// Fails with [`EndpointError::Listen`] (class Network), whose message is the driver's,
/// redacted.
pub async fn listen(
    spec: &EndpointSpec,
    tables: UnboundedSender<String>,
) -> Result<Option<Listener>, EndpointError> {
    let Some(url) = spec.listen_url() else {
        return Ok(None);
    };
    let secrets = url_secrets(url);
    // The driver's error is kept as its redacted text only: its own may carry the URL.
    let fail = |e: tokio_postgres::Error| EndpointError::Listen {
        engine: "postgres",
        message: redact(&e.to_string(), &secrets),
    };
    let mut config: tokio_postgres::Config = url.parse().map_err(fail)?;
    config.application_name("dualwrite listen");
    config.connect_timeout(std::time::Duration::from_secs(10));
    let (client, mut connection) = config.connect(NoTls).await.map_err(fail)?;
    let task_secrets = secrets.clone();
    let task = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tables.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let error = redact(&e.to_string(), &task_secrets);
                    tracing::warn!(%error, "change notifications: connection closed");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .await
        .map_err(fail)?;
    Ok(Some(Listener { client, task }))
}
