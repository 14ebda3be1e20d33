//! A client of Chromium's DevTools protocol over the browser's own websocket, for what
//! WebDriver cannot do: hand a service worker a push, stop workers, run a script inside
//! a worker.
//!
//! chromedriver's `goog:cdp` endpoint answers commands but drops the events DevTools
//! sends, and some answers come only as events (a service worker's registration and
//! version ids). So this client connects to the browser's DevTools websocket itself (the
//! address is the WebDriver session's `goog:chromeOptions.debuggerAddress`), keeps every
//! event it receives for tests to read, and reaches pages and workers through flat
//! sessions (`Target.attachToTarget` with `flatten`) on that one connection. Every command
//! is answered within [`DEADLINE`] or fails.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use futures::{stream::SplitSink, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

use crate::DEADLINE;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What can go wrong talking to DevTools.
#[derive(Debug, thiserror::Error)]
pub enum DevToolsError {
    #[error("cannot ask DevTools at {address} for its websocket: {source}")]
    Unreachable {
        address: String,
        source: reqwest::Error,
    },
    #[error("DevTools at {0} named no browser websocket")]
    NoBrowserSocket(String),
    #[error("DevTools' websocket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("DevTools refused {method}: {error}")]
    Refused { method: String, error: Value },
    #[error("DevTools did not answer {0} within the deadline")]
    NoAnswer(String),
    #[error("DevTools closed the connection before answering {0}")]
    Closed(String),
}

/// One event DevTools sent: its method (`ServiceWorker.workerVersionUpdated`), its
/// parameters, and the session it came on (`None` for the browser's own).
struct Event {
    method: String,
    params: Value,
    session: Option<String>,
}

/// A DevTools session: the browser's own, or one attached to a page or a worker. Cheap to
/// clone; the connection closes when the last session of it is dropped.
#[derive(Clone)]
pub struct DevTools {
    connection: Arc<Connection>,
    session: Option<String>,
}

/// The websocket's sending half, and what its reader task shares.
struct Connection {
    outgoing: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    next_id: AtomicU64,
    received: Arc<Received>,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What the reader task hands over: answers to the commands waiting for them, and every
/// event in the order it came.
#[derive(Default)]
struct Received {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>,
    events: Mutex<Vec<Event>>,
}

impl Received {
    fn take(&self, message: &str) {
        let Ok(mut message) = serde_json::from_str::<Value>(message) else {
            return;
        };
        if let Some(id) = message["id"].as_u64() {
            let answer = match message.get_mut("error") {
                Some(error) => Err(error.take()),
                None => Ok(message["result"].take()),
            };
            if let Some(waiting) = lock(&self.waiting).remove(&id) {
                let _ = waiting.send(answer);
            }
        } else if let Some(method) = message["method"].as_str() {
            let event = Event {
                method: method.to_owned(),
                params: message["params"].take(),
                session: message["sessionId"].as_str().map(str::to_owned),
            };
            lock(&self.events).push(event);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DevTools {
    /// The browser's own session, on the DevTools server at `address` (`HOST:PORT`).
    pub async fn connect(address: &str) -> Result<DevTools, DevToolsError> {
        let unreachable = |source| DevToolsError::Unreachable {
            address: address.to_owned(),
            source,
        };
        let version: Value = reqwest::get(format!("http://{address}/json/version"))
            .await
            .map_err(unreachable)?
            .json()
            .await
            .map_err(unreachable)?;
        let url = version["webSocketDebuggerUrl"]
            .as_str()
            .ok_or_else(|| DevToolsError::NoBrowserSocket(address.to_owned()))?;
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        let (outgoing, mut incoming) = socket.split();
        let received = Arc::new(Received::default());
        let reader = tokio::spawn({
            let received = Arc::clone(&received);
            async move {
                while let Some(Ok(message)) = incoming.next().await {
                    if let Message::Text(text) = message {
                        received.take(text.as_str());
                    }
                }
                // Closed: commands still waiting learn it from their dropped senders.
                lock(&received.waiting).clear();
            }
        });
        let connection = Connection {
            outgoing: tokio::sync::Mutex::new(outgoing),
            next_id: AtomicU64::new(1),
            received,
            reader,
        };
        Ok(DevTools {
            connection: Arc::new(connection),
            session: None,
        })
    }

    /// Sends `method` with `params` on this session; its answer's `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, DevToolsError> {
        let connection = &self.connection;
        let id = connection.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        let (answer, answered) = oneshot::channel();
        lock(&connection.received.waiting).insert(id, answer);
        let sent = connection
            .outgoing
            .lock()
            .await
            .send(Message::text(command.to_string()))
            .await;
        if let Err(error) = sent {
            lock(&connection.received.waiting).remove(&id);
            return Err(error.into());
        }
        match tokio::time::timeout(DEADLINE, answered).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => Err(DevToolsError::Refused {
                method: method.to_owned(),
                error,
            }),
            Ok(Err(_)) => Err(DevToolsError::Closed(method.to_owned())),
            Err(_) => {
                lock(&connection.received.waiting).remove(&id);
                Err(DevToolsError::NoAnswer(method.to_owned()))
            }
        }
    }

    /// A session of its own on the target `target_id` (a page, a service worker), on the
    /// same connection.
    pub async fn attach(&self, target_id: &str) -> Result<DevTools, DevToolsError> {
        let params = json!({ "targetId": target_id, "flatten": true });
        let attached = self.call("Target.attachToTarget", params).await?;
        Ok(DevTools {
            connection: Arc::clone(&self.connection),
            session: attached["sessionId"].as_str().map(str::to_owned),
        })
    }

    /// The browser's targets (`Target.getTargets`): each with `targetId`, `type` ("page",
    /// "service_worker", …) and `url`.
    pub async fn targets(&self) -> Result<Vec<Value>, DevToolsError> {
        let mut answer = self.call("Target.getTargets", json!({})).await?;
        Ok(serde_json::from_value(answer["targetInfos"].take()).unwrap_or_default())
    }

    /// The parameters of every event named `method` received on this session so far,
    /// oldest first.
    pub fn events(&self, method: &str) -> Vec<Value> {
        lock(&self.connection.received.events)
            .iter()
            .filter(|event| event.method == method && event.session == self.session)
            .map(|event| event.params.clone())
            .collect()
    }
}
