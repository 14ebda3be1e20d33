//! The pushchat server. `main.rs` parses the command line; [`serve`] does the rest.
//!
//! One folder per concern, each with a header saying what it owns; nothing imports back
//! up into this file:
//! - `config`: the command line (`cli`), the `--config` file (`file`), and the validated
//!   settings the rest of the server sees;
//! - `model`: what the domain is made of: a push subscription and the rules its endpoint
//!   and keys meet, and time as the chat keeps it;
//! - `store`: the chat's durable state behind one trait, on sled or PostgreSQL, with its
//!   format, the queue of fan-outs and the rate limits' allowances;
//! - `chat`: the rules: who may join, speak or leave, and who is told what;
//! - `push`: Web Push delivery (the engine and its status policy), the server's VAPID
//!   identity, and the delivery client's public-only DNS;
//! - `http`: the router and its thin handlers, the operator's admin API and its socket,
//!   the API's errors, the client's address, `/metrics`, TLS, and what handlers share;
//! - `operator`: the operator's subcommands, `pushchat bench` among them.

pub mod chat;
pub mod config;
pub mod http;
pub mod model;
pub mod operator;
pub mod push;
pub mod store;

use std::{
    future::Future,
    net::SocketAddr,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use axum::serve::{Listener, ListenerExt};
use leptos::config::get_configuration;
use tokio::{
    net::{TcpListener, TcpStream, UnixListener},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use crate::{
    chat::Chat,
    config::Config,
    http::{
        admin_socket,
        metrics::Metrics,
        routes,
        site::Site,
        state::AppState,
        tls::{self, TlsListener},
    },
    model::subscription::Subscription,
    push::{vapid::VapidKeys, Delivery, GONE_BATCHES_WAITING},
};

/// How long shutdown waits for fan-outs in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Opens the store, serves until `shutdown` resolves, then lets pushes in flight finish. Prints `pushchat listening on http://ADDR` once it accepts
/// connections (with port 0, ADDR has the port the system chose).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match &config.tls {
        Some(files) => Some(tls::ServedCertificate::load(files)?),
        None => None,
    };
    let state = open(&config).await?;
    state
        .store
        .set_vapid_subject(&config.vapid_subject)
        .await
        .context("cannot record the VAPID contact")?;
    let tcp = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let local = tcp.local_addr()?;
    let admin = match admin_socket::bind(&config.data_dir) {
        Ok(admin) => Some(admin),
        Err(error) => {
            tracing::warn!(%error, "no admin socket: the pushchat subcommands cannot reach this server");
            None
        }
    };
    let served = match tls {
        None => {
            let hangups = tls::answer_hangups_without_tls()?;
            println!("pushchat listening on http://{local}");
            let served = serve_until(tcp, admin, state, shutdown).await;
            hangups.abort();
            served
        }
        Some(certificate) => {
            let listener = TlsListener::new(tcp, certificate)?;
            println!("pushchat listening on https://{local}");
            serve_until(listener, admin, state, shutdown).await
        }
    };
    let _ = std::fs::remove_file(admin_socket::socket_path(&config.data_dir));
    served
}

/// Opens what `config` names (the data dir, the store, the VAPID keys) and builds the
/// state the handlers share.
pub async fn open(config: &Config) -> anyhow::Result<AppState> {
    let data_dir = &config.data_dir;
    // Only its owner may enter it: it holds the private key and the admin socket.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let store = store::open(&config.store, data_dir, config.delivery.max_fan_outs)
        .await
        .with_context(|| format!("cannot open {}", config.store))?;
    let vapid = Arc::new(VapidKeys::load_or_create(&*store, config.vapid_subject.clone()).await?);
    let (gone, gone_heard) = mpsc::channel(GONE_BATCHES_WAITING);
    let delivery = Delivery::new(
        Arc::clone(&vapid),
        store.clone(),
        config.delivery.clone(),
        gone,
    )?;
    let chat = Arc::new(Chat::new(Arc::clone(&store), config.rules.clone()));
    tokio::spawn(end_gone_memberships(Arc::clone(&chat), gone_heard));
    tokio::spawn(chat::pruning::prune_periodically(Arc::clone(&chat)));
    let mut leptos = get_configuration(None)?.leptos_options;
    leptos.site_addr = config.addr;
    let site = Site::locate(
        std::env::var_os("LEPTOS_SITE_ROOT").map(PathBuf::from),
        Path::new(&*leptos.site_root),
        &leptos.output_name,
    );
    tracing::info!("the site is {site}");
    leptos.output_name = site.bundle_name(&leptos.output_name).into();
    let metrics = Arc::new(Metrics::new(delivery.totals()));
    Ok(AppState {
        chat,
        delivery: Arc::new(delivery),
        vapid,
        store,
        metrics,
        trusted_proxies: config.trusted_proxies.clone(),
        admin_token: config.admin_token.clone(),
        leptos,
        site: Arc::new(site),
    })
}

/// Hands the subscriptions push services said are gone to the chat's one way out, until
/// delivery stops. One that is lost (a crash in between) is only found gone again by the
/// next push to it.
pub async fn end_gone_memberships(chat: Arc<Chat>, mut gone: mpsc::Receiver<Vec<Subscription>>) {
    while let Some(subscriptions) = gone.recv().await {
        if let Err(error) = chat.subscriptions_gone(&subscriptions).await {
            tracing::error!(error = ?error, "could not remove browsers whose subscription is gone");
        }
    }
}

/// A connection of the public listener, plain or TLS: both sit on a TCP stream.
pub trait OverTcp {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl OverTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Serves `state` on `listener` (and the admin API on `admin`) until `shutdown`
/// resolves, then lets pushes in flight finish.
pub async fn serve_until<L>(
    listener: L,
    admin: Option<UnixListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: OverTcp,
{
    let stop = CancellationToken::new();
    // Stops taking fan-outs only once the last request has been answered, so that what
    // those requests queued goes out before the drain (on sled; see `Delivery::start`).
    let stop_taking = CancellationToken::new();
    state.delivery.start(stop_taking.clone());
    if let Some(admin) = admin {
        let app = routes::admin_socket_router(state.clone());
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(admin, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!(%error, "the admin socket failed");
            }
        });
    }
    let stopped = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    // API answers are small: send them at once rather than wait to fill a packet.
    let listener = listener.tap_io(|connection| {
        let _ = connection.tcp().set_nodelay(true);
    });
    let app = routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await?;
    stop_taking.cancel();
    if !state.delivery.drain(DRAIN_DEADLINE).await {
        tracing::warn!("shut down with pushes still in flight");
    }
    Ok(())
}
