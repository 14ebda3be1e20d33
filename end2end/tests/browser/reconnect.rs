//! A page that loads while the server is briefly out of reach: it shows the room it kept,
//! says it is reconnecting, and once the server answers again it rejoins the chat and
//! receives pushes, without a reload.
//!
//! The outage is a relay in front of the server that stops listening (connections to its
//! port are refused, as to a server that is down) and later listens again on the same
//! port, so the page's origin and its worker stay the same throughout.

use std::net::SocketAddr;

use end2end::eventually;
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

use super::{eventually_members, Setup, Stack, ONE_AT_A_TIME};

/// A TCP relay to the server that can be switched off and on again on one port.
struct Outage {
    address: SocketAddr,
    upstream: String,
    /// The relay while it listens; aborting it drops its listener and every connection.
    relay: Option<JoinHandle<()>>,
}

impl Outage {
    async fn relay_to(server: &str) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut outage = Outage {
            address: listener.local_addr().unwrap(),
            upstream: server.trim_start_matches("http://").to_owned(),
            relay: None,
        };
        outage.relay = Some(tokio::spawn(relay(listener, outage.upstream.clone())));
        outage
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The server can no longer be reached: connections are refused or cut.
    fn begin(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
    }

    /// The server can be reached again, at the same address.
    async fn end(&mut self) {
        let address = self.address;
        let listener = eventually("the relay's port to be free again", || async move {
            TcpListener::bind(address).await.ok()
        })
        .await;
        self.relay = Some(tokio::spawn(relay(listener, self.upstream.clone())));
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.begin();
    }
}

async fn relay(listener: TcpListener, upstream: String) {
    // Owned here, so that aborting the relay also cuts the connections it opened.
    let mut connections = JoinSet::new();
    while let Ok((mut browser, _)) = listener.accept().await {
        let Ok(mut server) = TcpStream::connect(&upstream).await else {
            continue;
        };
        connections.spawn(async move {
            let _ = copy_bidirectional(&mut browser, &mut server).await;
        });
    }
}

#[tokio::test]
async fn test_a_page_loaded_while_the_server_is_down_rejoins_and_hears_pushes_once_it_is_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let mut outage = Outage::relay_to(&stack.server.base).await;
    let bob_url = outage.url();
    let (alice, bob) = tokio::join!(
        stack.firefox(),
        stack.firefox_at(&bob_url, Setup::default())
    );
    bob.open_chat().await;
    bob.join("Bob").await;
    alice.open_chat().await;
    alice.join("Alice").await;
    eventually_members(&bob, &["Alice", "Bob"]).await;

    // Bob's page loads (from his worker's cache) while the server is out of reach.
    outage.begin();
    let banner = bob.reload_offline().await;
    assert!(banner.contains("Reconnecting"), "{banner}");
    assert_eq!(bob.members().await, ["Alice", "Bob"]);

    // The server is back: without a reload the page rejoins and hears the chat again.
    outage.end().await;
    eventually("the offline banner to go", || async {
        bob.text_of_any("#offline").await.is_none().then_some(())
    })
    .await;
    bob.wait_for_label("Unsubscribe").await;
    alice.say("Welcome back, Bob").await;
    bob.wait_for_lines(&[("Alice", "Welcome back, Bob")]).await;
}
