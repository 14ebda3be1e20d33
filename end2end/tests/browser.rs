//! Real-browser tests. Headless Firefox, a fresh profile per browser, is pointed at the
//! local push service (Mozilla's WebSocket protocol); the real `pushchat` release build
//! serves the real page, driven by its real controls. Firefox subscribes, receives the
//! server's encrypted pushes, decrypts them itself and runs the page's service worker.
//!
//! Needs `cargo leptos build --release` first (the README's test command does it),
//! `firefox-esr` and `geckodriver`. Tests run one at a time (each Firefox is heavy on two
//! cores), wait with deadlines, never fixed sleeps, and kill every process they start,
//! Firefox included, whether they pass or fail. With `PUSHCHAT_SCREENSHOTS=DIR`, tests
//! save what some pages look like as PNG files in DIR, for a person to judge.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use end2end::{eventually, PushchatProcess, Server, ADMIN_TOKEN, DEADLINE, SUBJECT};
use fantoccini::{wd::WebDriverCompatibleCommand, Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use localpush::{Fault, LocalPush, LocalPushClient, ReceivedPush};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    sync::Mutex,
};

const FIREFOX: &str = "/usr/lib/firefox-esr/firefox-esr";
const CHROMIUM: &str = "/usr/bin/chromium";

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

#[path = "browser/a11y.rs"]
mod a11y;
#[path = "browser/alive.rs"]
mod alive;
#[path = "browser/chromium.rs"]
mod chromium;
#[path = "browser/ios.rs"]
mod ios;
#[path = "browser/page.rs"]
mod page;
#[path = "browser/reconnect.rs"]
mod reconnect;
#[path = "browser/scroll_back.rs"]
mod scroll_back;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("end2end is in the workspace")
        .to_owned()
}

/// The local push service and a pushchat server on a fresh data dir.
struct Stack {
    push: LocalPush,
    server: Server,
    _data_dir: tempfile::TempDir,
    /// The site the server serves (the one it carries, built from `target/site` in the
    /// workspace, or a copy).
    site: PathBuf,
}

impl Stack {
    async fn start() -> Stack {
        Self::serving(SiteCopy::No, &[]).await
    }

    /// A server whose site is a copy the test may change (a new service worker, say).
    async fn start_on_a_copy_of_the_site() -> Stack {
        Self::serving(SiteCopy::Yes, &[]).await
    }

    /// A server started with `server_args` too.
    async fn start_with(server_args: &[&str]) -> Stack {
        Self::serving(SiteCopy::No, server_args).await
    }

    /// A server whose admin API is on, behind [`ADMIN_TOKEN`].
    async fn start_with_admin_api() -> Stack {
        Self::start_with(&["--admin-token", ADMIN_TOKEN]).await
    }

    async fn serving(copy: SiteCopy, server_args: &[&str]) -> Stack {
        let root = workspace();
        let binary = root.join("target/release/pushchat");
        assert!(
            binary.exists() && root.join("target/site/sw.js").exists(),
            "build the site first: cargo leptos build --release (bash .ci/test does)"
        );
        let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        // The server serves the site it carries, or the copy it is told of.
        let (server, site) = match copy {
            SiteCopy::No => (
                PushchatProcess::start(&binary, &root, data_dir.path(), server_args).await,
                root.join("target/site"),
            ),
            SiteCopy::Yes => {
                let site = data_dir.path().join("site");
                copy_dir(&root.join("target/site"), &site);
                let server =
                    PushchatProcess::start_on_site(&binary, &site, data_dir.path(), server_args);
                (server.await, site)
            }
        };
        Stack {
            push,
            server: Server::client_of(server),
            _data_dir: data_dir,
            site,
        }
    }

    /// A browser whose person allows notifications when asked.
    async fn firefox(&self) -> Browser {
        self.firefox_with(Setup::default()).await
    }

    async fn firefox_with(&self, setup: Setup) -> Browser {
        self.firefox_at(&self.server.base, setup).await
    }

    /// A browser that reaches the chat at `chat_url` (a relay in front of the server).
    async fn firefox_at(&self, chat_url: &str, setup: Setup) -> Browser {
        let push_url = self.push.url().replacen("http://", "ws://", 1);
        Browser::firefox(&format!("{push_url}/"), chat_url, setup).await
    }

    fn pushes(&self) -> LocalPushClient {
        self.push.client()
    }

    /// The operator removes the member called `name` (and bans the name with `ban`)
    /// through the admin API, which answers 204.
    async fn remove_member(&self, name: &str, ban: bool) {
        let removal = json!({ "name": name, "ban": ban });
        let status = self.server.as_operator("members/remove", &removal).await;
        assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "removing {name}");
    }

    /// The names the admin API lists as members (one line per browser).
    async fn admin_member_names(&self) -> Vec<String> {
        let members: Vec<Value> = self
            .server
            .http
            .get(format!("{}/api/admin/members", self.server.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        members
            .iter()
            .map(|member| member["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[derive(Clone, Copy)]
enum SiteCopy {
    No,
    Yes,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What the person answers when the page asks to show notifications.
#[derive(Clone, Copy)]
enum Permission {
    Allow = 1,
    Block = 2,
}

/// How a test's Firefox is set up.
#[derive(Clone, Copy)]
struct Setup {
    /// What the person answers when the page asks to show notifications.
    permission: Permission,
    /// Whether the test may run privileged (chrome) scripts, to act as Firefox itself
    /// where no WebDriver command reaches (clicking a system notification).
    system_access: bool,
    /// Whether the browser has service workers and the Push API at all.
    push: bool,
    /// The browser it says it is, instead of Firefox.
    user_agent: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            permission: Permission::Allow,
            system_access: false,
            push: true,
            user_agent: None,
        }
    }
}

/// One headless browser with its own WebDriver server and a fresh profile: Firefox
/// (through geckodriver) for everything push, Chromium (through chromedriver) where only
/// its DevTools can tell.
struct Browser {
    client: Client,
    _driver: ProcessGroup,
    chat_url: String,
}

/// A child started as the leader of a new process group. Dropping it kills the whole
/// group: geckodriver, the Firefox it started and Firefox's own child processes.
struct ProcessGroup(Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

impl Browser {
    async fn firefox(push_server_url: &str, chat_url: &str, setup: Setup) -> Browser {
        // geckodriver prints the port it chose only at log level info.
        let mut geckodriver = Command::new("geckodriver");
        geckodriver
            .args(["--port", "0", "--log", "info"])
            .args(setup.system_access.then_some("--allow-system-access"));
        let mut capabilities = json!({
            "moz:firefoxOptions": {
                "binary": FIREFOX,
                "args": ["-headless"],
                "env": { "MOZ_DISABLE_NONLOCAL_CONNECTIONS": "1" },
                "prefs": {
                    "dom.push.serverURL": push_server_url,
                    "dom.push.testing.allowInsecureServerURL": true,
                    "dom.push.connection.enabled": true,
                    "dom.push.retryBaseInterval": 500,
                    // The person's answer to the permission prompt: 1 allow, 2 block.
                    "permissions.default.desktop-notification": setup.permission as u8,
                    "dom.serviceWorkers.enabled": setup.push,
                    "dom.push.enabled": setup.push,
                    "alerts.useSystemBackend": false,
                    // Lets a test's script open a tab, as a person's click would.
                    "dom.disable_open_during_load": false,
                },
            }
        });
        if let Some(user_agent) = setup.user_agent {
            capabilities["moz:firefoxOptions"]["prefs"]["general.useragent.override"] =
                user_agent.into();
        }
        Self::launch(
            geckodriver,
            "Listening on 127.0.0.1:",
            capabilities,
            chat_url,
        )
        .await
    }

    /// Headless Chromium, which has no push service here: for what only its DevTools
    /// tell (whether the site is installable) or do (hand its worker a push).
    async fn chromium(chat_url: &str, profile: &Path) -> Browser {
        let mut chromedriver = Command::new("chromedriver");
        chromedriver.arg("--port=0");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Its sandbox needs user namespaces, which containers and root lack.
                    "--no-sandbox",
                    "--disable-gpu",
                    // No first-run pages, and no calls to Google's servers, which are out
                    // of reach here and would only slow the browser down.
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    // Lets a test's script open a tab, as a person's click would.
                    "--disable-popup-blocking",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        Self::launch(
            chromedriver,
            "was started successfully on port ",
            capabilities,
            chat_url,
        )
        .await
    }

    /// Starts a WebDriver server that picks its own port and prints it after `marker`,
    /// and opens a session with `capabilities`.
    async fn launch(
        mut driver: Command,
        marker: &str,
        capabilities: Value,
        chat_url: &str,
    ) -> Browser {
        let name = driver.as_std().get_program().to_string_lossy().into_owned();
        let mut driver = ProcessGroup(
            driver
                .process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("{name} cannot start ({error}): bash .ci/test installs it")
                }),
        );
        let mut output = BufReader::new(driver.0.stdout.take().expect("piped")).lines();
        let port = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = output.next_line().await.expect("driver output") {
                if let Some((_, port)) = line.split_once(marker) {
                    return port.trim().trim_end_matches('.').to_owned();
                }
            }
            panic!("{name} exited before listening");
        })
        .await
        .unwrap_or_else(|_| panic!("{name} listens within the deadline"));
        // The browser writes to its driver's stdout; keep the pipe drained so it never
        // blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = output.next_line().await {} });

        let Value::Object(capabilities) = capabilities else {
            unreachable!("capabilities are an object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|error| panic!("the browser starts under {name}: {error}"));
        Browser {
            client,
            _driver: driver,
            chat_url: chat_url.to_owned(),
        }
    }

    /// Opens the chat and waits until it is hydrated and has restored its state.
    async fn open_chat(&self) {
        self.open(&self.chat_url).await;
    }

    /// Opens `url`, a page of the chat, and waits for it to hydrate.
    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
        eventually("the page to hydrate", || async {
            let button = self.client.find(Locator::Css("#subscribe")).await.ok()?;
            button.is_enabled().await.ok()?.then_some(())
        })
        .await;
    }

    async fn button_label(&self) -> String {
        self.client
            .find(Locator::Css("#subscribe"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Types a name and presses Subscribe, as a person would.
    async fn join(&self, name: &str) {
        self.type_name_and_press_subscribe(name).await;
        self.wait_for_label("Unsubscribe").await;
    }

    async fn type_name_and_press_subscribe(&self, name: &str) {
        self.client
            .find(Locator::Css("#name"))
            .await
            .unwrap()
            .send_keys(name)
            .await
            .unwrap();
        self.press_subscribe().await;
    }

    /// Presses the Subscribe (or Unsubscribe) button.
    async fn press_subscribe(&self) {
        self.client
            .find(Locator::Css("#subscribe"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    async fn leave(&self) {
        self.press_subscribe().await;
        self.wait_for_label("Subscribe").await;
    }

    /// Waits until the page reports a problem; returns it.
    async fn problem(&self) -> String {
        eventually("the page to report a problem", || async {
            let problem = self.text_of("#problem").await;
            (!problem.is_empty()).then_some(problem)
        })
        .await
    }

    /// Waits until the button reads `label` and can be pressed, and the page reports no
    /// problem.
    async fn wait_for_label(&self, label: &str) {
        self.wait_for_button(label).await;
        let problem = self.text_of("#problem").await;
        assert!(problem.is_empty(), "the page reports a problem: {problem}");
    }

    /// Waits until the button reads `label` and can be pressed.
    async fn wait_for_button(&self, label: &str) {
        eventually(&format!("the button to read {label}"), || async {
            let text = self.button_label().await;
            (text == label && self.is_idle().await).then_some(())
        })
        .await;
    }

    /// What the name field holds.
    async fn name_field(&self) -> String {
        let field = self.client.find(Locator::Css("#name")).await.unwrap();
        field.prop("value").await.unwrap().unwrap_or_default()
    }

    /// Saves what the page looks like as `NAME.png` in the folder `PUSHCHAT_SCREENSHOTS`
    /// names, if it names one.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("PUSHCHAT_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }

    /// Reloads the page as a person would while the server is out of reach (WebDriver's
    /// Refresh would reload past the service worker, as a forced reload does): the page
    /// comes from the worker's cache. Waits until it shows the offline banner and has
    /// hydrated; returns the banner.
    async fn reload_offline(&self) -> String {
        self.client
            .execute("location.reload()", vec![])
            .await
            .unwrap();
        let banner = eventually("the offline banner", || self.text_of_any("#offline")).await;
        eventually("the page to hydrate", || async {
            self.is_idle().await.then_some(())
        })
        .await;
        banner
    }

    async fn is_idle(&self) -> bool {
        let button = self.client.find(Locator::Css("#subscribe")).await.unwrap();
        button.is_enabled().await.unwrap()
    }

    async fn say(&self, msg: &str) {
        let input = self.client.find(Locator::Css("#message")).await.unwrap();
        input.send_keys(msg).await.unwrap();
        self.client
            .find(Locator::Css("#send"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        eventually("the send box to clear", || async {
            let value = input.prop("value").await.ok()??;
            value.is_empty().then_some(())
        })
        .await;
    }

    async fn text_of(&self, selector: &str) -> String {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The text of the element `selector` selects, if there is one.
    async fn text_of_any(&self, selector: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(selector)).await.ok()?;
        element.text().await.ok()
    }

    /// The member list, as text.
    async fn members(&self) -> Vec<String> {
        let script =
            "return [...document.querySelectorAll('#members li')].map(li => li.textContent)";
        serde_json::from_value(self.client.execute(script, vec![]).await.unwrap()).unwrap()
    }

    /// The message list's sent lines, as (sender, text) pairs of text.
    async fn lines(&self) -> Vec<(String, String)> {
        let script = "return [...document.querySelectorAll('#messages li.line:not(.waiting)')]
            .map(li => [li.querySelector('.who').textContent, li.querySelector('.text').textContent])";
        serde_json::from_value(self.client.execute(script, vec![]).await.unwrap()).unwrap()
    }

    /// Waits until the message list shows exactly these (sender, text) lines.
    async fn wait_for_lines(&self, expected: &[(&str, &str)]) {
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(who, msg)| (who.to_string(), msg.to_string()))
            .collect();
        eventually(&format!("the messages to read {expected:?}"), || async {
            (self.lines().await == expected).then_some(())
        })
        .await;
    }

    /// Whether markup in a name or message ran (it would set this global).
    async fn canary(&self) -> Value {
        self.client
            .execute(
                "return window.canary === undefined ? null : window.canary",
                vec![],
            )
            .await
            .unwrap()
    }

    /// The notifications the site's service worker is showing: (title, body) pairs.
    async fn notifications(&self) -> Vec<(String, String)> {
        let script = "const done = arguments[arguments.length - 1];
            navigator.serviceWorker.ready
                .then(registration => registration.getNotifications())
                .then(shown => done(shown.map(n => [n.title, n.body])))
                .catch(error => done([['error', String(error)]]));";
        serde_json::from_value(self.client.execute_async(script, vec![]).await.unwrap()).unwrap()
    }

    /// Opens a blank tab in front of the current one, which the browser then hides
    /// (`document.visibilityState` "hidden"); WebDriver keeps talking to the hidden tab.
    async fn hide_behind_a_new_tab(&self) {
        self.client
            .execute("window.cover = window.open('about:blank')", vec![])
            .await
            .unwrap();
        self.wait_for_visibility("hidden").await;
    }

    /// Closes the tab `hide_behind_a_new_tab` opened: the browser shows this one again.
    async fn close_the_new_tab(&self) {
        self.client
            .execute("window.cover.close()", vec![])
            .await
            .unwrap();
        self.wait_for_visibility("visible").await;
    }

    async fn wait_for_visibility(&self, state: &str) {
        eventually(&format!("the page to be {state}"), || async {
            let now = self.script_value("return document.visibilityState").await;
            (now == state).then_some(())
        })
        .await;
    }

    async fn title(&self) -> String {
        self.script_value("return document.title").await
    }

    async fn script_value(&self, script: &str) -> String {
        let value = self.client.execute(script, vec![]).await.unwrap();
        serde_json::from_value(value).unwrap()
    }

    /// Runs `script` in Firefox's privileged (chrome) context, then returns to the page.
    async fn run_as_firefox(&self, script: &str) -> Value {
        self.set_context("chrome").await;
        let value = self.client.execute(script, vec![]).await;
        self.set_context("content").await;
        value.unwrap()
    }

    async fn set_context(&self, context: &str) {
        let command = SessionCommand::post("moz/context", json!({ "context": context }));
        self.client.issue_cmd(command).await.unwrap();
    }

    /// Takes the place of Firefox's notification backend (the desktop's notification
    /// service in a real session): from now on it keeps every notification the browser
    /// shows, and the browser's own callbacks for it, so a test can click one.
    async fn catch_notifications(&self) {
        self.run_as_firefox(CATCH_NOTIFICATIONS).await;
    }

    /// Clicks the button `action` of the caught notification titled `title`, as the
    /// notification backend reports a person's click: Firefox dispatches a
    /// `notificationclick` event with that action to the site's service worker. False
    /// while no such notification has been shown.
    async fn click_notification_button(&self, title: &str, action: &str) -> bool {
        let script = format!(
            "const title = {}, action = {};
            const caught = window.pushchatNotifications.find(c => c.alert.title === title);
            const button = caught && caught.alert.actions.find(a => a.action === action);
            if (!button) return false;
            caught.listener.observe(button, 'alertclickcallback', caught.alert.cookie);
            return true;",
            json!(title),
            json!(action)
        );
        self.run_as_firefox(&script).await == Value::Bool(true)
    }

    /// The names of the site's shell caches, once a worker controls the page.
    async fn shell_caches(&self) -> Vec<String> {
        let script = "const done = arguments[arguments.length - 1];
            if (!navigator.serviceWorker.controller) return done([]);
            caches.keys()
                .then(names => done(names.filter(name => name.startsWith('pushchat-shell-'))))
                .catch(error => done([String(error)]));";
        serde_json::from_value(self.client.execute_async(script, vec![]).await.unwrap()).unwrap()
    }

    /// The paths in the site's shell caches, once a worker controls the page.
    async fn shell(&self) -> Vec<String> {
        let script = "const done = arguments[arguments.length - 1];
            (async () => {
              const paths = [];
              if (!navigator.serviceWorker.controller) return paths;
              for (const name of await caches.keys()) {
                if (!name.startsWith('pushchat-shell-')) continue;
                const requests = await (await caches.open(name)).keys();
                paths.push(...requests.map((request) => new URL(request.url).pathname));
              }
              return paths;
            })().then(done, (error) => done([String(error)]));";
        serde_json::from_value(self.client.execute_async(script, vec![]).await.unwrap()).unwrap()
    }

    /// This browser's push endpoint for the site, if it has a subscription.
    async fn endpoint(&self) -> Option<String> {
        let script = "const done = arguments[arguments.length - 1];
            navigator.serviceWorker.getRegistration()
                .then(registration => registration && registration.pushManager.getSubscription())
                .then(subscription => done(subscription ? subscription.endpoint : null))
                .catch(() => done(null));";
        serde_json::from_value(self.client.execute_async(script, vec![]).await.unwrap()).unwrap()
    }
}

/// Registers, in Firefox's chrome context, an alerts service that keeps each alert and
/// its listener instead of handing them to the desktop, and tells the listener the alert
/// is shown (Firefox then keeps it in `getNotifications()`) or closed.
const CATCH_NOTIFICATIONS: &str = r#"
    const caught = [];
    const service = {
      QueryInterface: ChromeUtils.generateQI(['nsIAlertsService', 'nsIFactory']),
      createInstance(iid) { return this.QueryInterface(iid); },
      showAlert(alert, listener) {
        caught.push({ alert, listener });
        if (listener) listener.observe(null, 'alertshow', alert.cookie);
      },
      showAlertNotification() {},
      closeAlert(name) {
        const at = caught.findIndex(c => c.alert.name === name);
        if (at < 0) return;
        const [closed] = caught.splice(at, 1);
        if (closed.listener) closed.listener.observe(null, 'alertfinished', closed.alert.cookie);
      },
      teardown() {},
      pbmTeardown() {},
    };
    Components.manager.QueryInterface(Ci.nsIComponentRegistrar).registerFactory(
      Services.uuid.generateUUID(), 'caught alerts', '@mozilla.org/alerts-service;1', service);
    window.pushchatNotifications = caught;
"#;

/// A WebDriver command fantoccini has no method for: `method` on the session's `path`.
#[derive(Debug)]
struct SessionCommand {
    method: http::Method,
    path: &'static str,
    body: Value,
}

impl SessionCommand {
    fn post(path: &'static str, body: Value) -> Self {
        SessionCommand {
            method: http::Method::POST,
            path,
            body,
        }
    }
}

impl WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/{}",
            session.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (self.method.clone(), Some(self.body.to_string()))
    }
}

/// The local push service's id of a browser channel: the last segment of its endpoint.
fn channel_of(endpoint: &str) -> String {
    endpoint.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Waits until the browser acked `count` pushes on `channel` with code 100 (decrypted and
/// handed to the service worker); returns what the channel received.
async fn acked(pushes: &LocalPushClient, channel: &str, count: usize) -> Vec<ReceivedPush> {
    eventually(&format!("Firefox to ack {count} pushes"), || async {
        let got = pushes.received(channel).await.ok()?;
        let acked = got.iter().filter(|push| push.ack == Some(100)).count();
        assert!(
            got.iter()
                .all(|push| push.ack.is_none_or(|code| code == 100)),
            "a push was not decrypted: {got:?}"
        );
        (acked >= count).then_some(got)
    })
    .await
}

/// Alice and Bob in browsers of their own, both members: Bob joined first, then Alice,
/// and Bob's browser acked both joins.
struct Room {
    stack: Stack,
    alice: Browser,
    bob: Browser,
    /// The local push service's id of Bob's subscription.
    bob_channel: String,
}

impl Room {
    async fn open(alice_name: &str) -> Room {
        Self::open_on(Stack::start().await, alice_name).await
    }

    async fn open_on(stack: Stack, alice_name: &str) -> Room {
        // Bob's browser lets tests act as its notification backend.
        let privileged = Setup {
            system_access: true,
            ..Setup::default()
        };
        let (alice, bob) = tokio::join!(stack.firefox(), stack.firefox_with(privileged));
        bob.open_chat().await;
        bob.join("Bob").await;
        let bob_channel = channel_of(&bob.endpoint().await.expect("Bob is subscribed"));
        acked(&stack.pushes(), &bob_channel, 1).await;
        alice.open_chat().await;
        alice.join(alice_name).await;
        acked(&stack.pushes(), &bob_channel, 2).await;
        Room {
            stack,
            alice,
            bob,
            bob_channel,
        }
    }
}

/// A push to `endpoint` is refused with 410: the push service forgot that subscription.
async fn assert_gone(endpoint: &str) {
    let pushed = reqwest::Client::new().post(endpoint).send().await.unwrap();
    assert_eq!(pushed.status(), reqwest::StatusCode::GONE, "{endpoint}");
}

async fn eventually_members(browser: &Browser, expected: &[&str]) {
    eventually(&format!("the member list to read {expected:?}"), || async {
        (browser.members().await == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn test_alice_and_bob_hear_each_other_through_firefox_push() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Markup in a name must stay text everywhere.
    let alice_name = "<img src=x onerror=canary=1>";
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open(alice_name).await;
    let pushes = stack.pushes();

    eventually_members(bob, &[alice_name, "Bob"]).await;
    let joined = format!("{alice_name} joined");
    let notifications = bob.notifications().await;
    assert!(
        notifications.iter().any(|(title, _)| *title == joined),
        "{notifications:?}"
    );

    let msg = "hello <b>Bob</b><script>window.canary=2</script>";
    alice.say(msg).await;
    let got = acked(&pushes, bob_channel, 3).await;
    assert!(got.iter().all(|push| push.vapid_subject == SUBJECT));
    for browser in [alice, bob] {
        browser.wait_for_lines(&[(alice_name, msg)]).await;
        assert_eq!(browser.canary().await, Value::Null);
    }
    assert_eq!(alice.members().await, [alice_name, "Bob"]);
}

#[tokio::test]
async fn test_a_closed_page_gets_the_line_as_a_notification_and_in_its_history() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open("Alice").await;
    let pushes = stack.pushes();

    // Bob closes the chat; his browser keeps running on a blank tab.
    let chat_tab = bob.client.window().await.unwrap();
    let blank = bob.client.new_window(true).await.unwrap();
    bob.client.switch_to_window(chat_tab).await.unwrap();
    bob.client.close_window().await.unwrap();
    bob.client.switch_to_window(blank.handle).await.unwrap();

    let msg = "<i>are you there?</i>";
    alice.say(msg).await;
    acked(&pushes, bob_channel, 3).await;

    bob.open_chat().await;
    let notifications = bob.notifications().await;
    assert!(
        notifications.contains(&("Alice".to_owned(), msg.to_owned())),
        "the worker should have shown the line: {notifications:?}"
    );
    bob.wait_for_lines(&[("Alice", msg)]).await;
    assert_eq!(bob.button_label().await, "Unsubscribe");
}

#[tokio::test]
async fn test_reload_restores_the_membership_and_unsubscribe_removes_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open("Alice").await;
    let pushes = stack.pushes();
    let alice_endpoint = alice.endpoint().await.unwrap();

    // Reload: the page restores itself with init, which pushes nothing to Bob.
    alice.client.refresh().await.unwrap();
    alice.open_chat().await;
    alice.wait_for_label("Unsubscribe").await;
    eventually_members(alice, &["Alice", "Bob"]).await;
    assert_eq!(
        alice.endpoint().await.as_deref(),
        Some(alice_endpoint.as_str())
    );

    alice.leave().await;
    let got = acked(&pushes, bob_channel, 3).await;
    assert_eq!(got.len(), 3, "init must not have pushed anything: {got:?}");
    eventually_members(bob, &["Bob"]).await;
    let notifications = bob.notifications().await;
    assert!(
        notifications.iter().any(|(title, _)| title == "Alice left"),
        "{notifications:?}"
    );
    assert_eq!(alice.endpoint().await, None);
    assert!(alice.members().await.is_empty());

    // The push service forgot Alice's channel: a push to her old endpoint is refused.
    assert_gone(&alice_endpoint).await;
}

#[tokio::test]
async fn test_a_blocked_permission_is_explained_and_subscribes_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let browser = stack
        .firefox_with(Setup {
            permission: Permission::Block,
            ..Setup::default()
        })
        .await;
    browser.open_chat().await;
    browser.type_name_and_press_subscribe("Dee").await;

    // The page explains the blocked permission.
    let problem = browser.problem().await;
    assert!(
        problem.contains("blocked") && problem.contains("site settings"),
        "{problem}"
    );
    assert_eq!(browser.button_label().await, "Subscribe");
    assert!(browser.is_idle().await);
    assert_eq!(browser.endpoint().await, None);
    assert_eq!(stack.pushes().stats().await.unwrap().accepted, 0);
}

#[tokio::test]
async fn test_a_subscription_the_push_service_dropped_is_replaced_without_telling_anyone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open("Alice").await;
    let pushes = stack.pushes();
    let old_endpoint = bob.endpoint().await.unwrap();

    // The push service loses its data: Firefox drops its subscriptions, and Bob's worker
    // subscribes again and moves Bob to the new subscription.
    pushes.reset_browsers().await.unwrap();
    // Both browsers lost their subscriptions; the server counts both moves.
    let resubscribed = r#"pushchat_http_requests_total{route="/api/resubscribe",status="200"}"#;
    stack.server.wait_for_metric(resubscribed, 2.0).await;
    let new_endpoint = bob.endpoint().await.unwrap();
    assert_ne!(new_endpoint, old_endpoint);

    // Alice's line reaches Bob's page through the new subscription; Bob still speaks as Bob.
    alice.say("did you move?").await;
    acked(&pushes, &channel_of(&new_endpoint), 1).await;
    bob.wait_for_lines(&[("Alice", "did you move?")]).await;
    bob.say("without a word").await;
    alice
        .wait_for_lines(&[("Alice", "did you move?"), ("Bob", "without a word")])
        .await;
    // Nobody was told Bob left or joined, and his old endpoint is gone.
    assert_eq!(alice.members().await, ["Alice", "Bob"]);
    let notifications = alice.notifications().await;
    let told = |(title, _): &(String, String)| title == "Bob left" || title == "Bob joined";
    assert!(!notifications.iter().any(told), "{notifications:?}");
    assert_eq!(pushes.received(bob_channel).await.unwrap().len(), 2);
    assert_gone(&old_endpoint).await;
}

#[tokio::test]
async fn test_lines_pushed_while_the_page_is_hidden_are_counted_in_its_title() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room { alice, bob, .. } = &Room::open("Alice").await;
    assert_eq!(bob.title().await, "pushchat");

    // Bob looks at another tab: his chat page is hidden but still open.
    bob.hide_behind_a_new_tab().await;
    alice.say("one").await;
    alice.say("two").await;
    bob.wait_for_lines(&[("Alice", "one"), ("Alice", "two")])
        .await;
    eventually("the hidden page's title to count two lines", || async {
        (bob.title().await == "(2) pushchat").then_some(())
    })
    .await;
    // Alice saw her own lines: her visible page counts nothing.
    assert_eq!(alice.title().await, "pushchat");

    // Bob comes back: the count is cleared.
    bob.close_the_new_tab().await;
    eventually("the shown page's title to drop the count", || async {
        (bob.title().await == "pushchat").then_some(())
    })
    .await;
}

#[tokio::test]
async fn test_mute_by_dispatching_a_synthetic_notificationclick_stops_chat_lines_to_that_member() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open("Alice").await;
    let pushes = stack.pushes();
    bob.catch_notifications().await;
    // Bob looks at another tab, so his worker shows chat lines as notifications.
    bob.hide_behind_a_new_tab().await;

    alice.say("lunch?").await;
    acked(&pushes, bob_channel, 3).await;
    // No browser lets a test click a system notification: the test reports the click on
    // "Mute 1 hour" the way the desktop's notification service would.
    eventually("Bob's notification of the line, to click Mute", || async {
        bob.click_notification_button("Alice", "mute")
            .await
            .then_some(())
    })
    .await;
    let muted = r#"pushchat_http_requests_total{route="/api/mute",status="200"}"#;
    stack.server.wait_for_metric(muted, 1.0).await;
    eventually("the clicked notification to close", || async {
        let shown = bob.notifications().await;
        (!shown.iter().any(|(title, _)| title == "Alice")).then_some(())
    })
    .await;

    // The next line reaches Alice, not Bob: the server no longer pushes lines to him.
    alice.say("anyone?").await;
    alice
        .wait_for_lines(&[("Alice", "lunch?"), ("Alice", "anyone?")])
        .await;
    stack.server.wait_for_fan_outs(4.0).await;
    let got = pushes.received(bob_channel).await.unwrap();
    assert_eq!(got.len(), 3, "Bob was pushed a line after muting: {got:?}");
}

#[tokio::test]
async fn test_without_the_server_a_reload_shows_the_offline_banner_and_the_last_history() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack, alice, bob, ..
    } = Room::open("Alice").await;
    alice.say("see you offline").await;
    bob.wait_for_lines(&[("Alice", "see you offline")]).await;
    assert!(bob.text_of_any("#offline").await.is_none());

    // The server goes away; Bob's browser still has its network.
    stack.server.process.kill().await;
    // The page's own reload, as a person's: WebDriver's Refresh would reload past the
    // service worker, as a forced reload does.
    bob.client
        .execute("location.reload()", vec![])
        .await
        .unwrap();

    // The page comes from the worker's cache, says why it shows what it shows, and shows
    // the last room Bob saw.
    let banner = eventually("the offline banner", || bob.text_of_any("#offline")).await;
    assert!(banner.contains("offline"), "{banner}");
    bob.wait_for_lines(&[("Alice", "see you offline")]).await;
    assert_eq!(bob.members().await, ["Alice", "Bob"]);
    // It hydrated: its controls answer.
    eventually("the page to hydrate", || async {
        bob.is_idle().await.then_some(())
    })
    .await;
    bob.press_subscribe().await;
    let problem = bob.problem().await;
    assert!(problem.contains("offline"), "{problem}");
}

#[tokio::test]
async fn test_a_new_worker_version_takes_over_with_its_own_shell_and_the_page_still_hydrates() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start_on_a_copy_of_the_site().await;
    let worker = stack.site.join("sw.js");
    let text = std::fs::read_to_string(&worker).unwrap();
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("const VERSION = '")?.strip_suffix("';"))
        .expect("sw.js names its version in `const VERSION = '…';`")
        .to_owned();
    let browser = stack.firefox().await;
    browser.open_chat().await;
    // Every visit registers the worker, which caches this version's shell.
    eventually("the first version's shell", || async {
        (browser.shell_caches().await == [format!("pushchat-shell-{version}")]).then_some(())
    })
    .await;

    // A new version of the worker is deployed.
    let next = text.replacen(
        &format!("const VERSION = '{version}';"),
        &format!("const VERSION = '{version}-next';"),
        1,
    );
    std::fs::write(&worker, next).unwrap();

    // A page load finds it; it installs its own shell, takes over and deletes the old one.
    browser
        .client
        .execute("location.reload()", vec![])
        .await
        .unwrap();
    eventually("the new version to take over", || async {
        (browser.shell_caches().await == [format!("pushchat-shell-{version}-next")]).then_some(())
    })
    .await;
    browser.open_chat().await;
    browser.join("Dee").await;
    // Its shell is whole: without the server, the page it serves still hydrates.
    stack.server.process.kill().await;
    browser.reload_offline().await;
    assert_eq!(browser.members().await, ["Dee"]);
}

/// A TCP relay in front of the server that counts the bytes the server sends through
/// it: what a browser downloads, HTTP headers included.
struct CountingRelay {
    url: String,
    received: Arc<AtomicUsize>,
}

impl CountingRelay {
    async fn start(server: &str) -> CountingRelay {
        let upstream = server.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((browser, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(browser, server, Arc::clone(&counter)));
            }
        });
        CountingRelay { url, received }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// Copies one connection both ways, counting what the server sends.
async fn relay(browser: TcpStream, server: TcpStream, counter: Arc<AtomicUsize>) {
    let (mut from_browser, mut to_browser) = browser.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let down = async {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from_server.read(&mut buffer).await {
            counter.fetch_add(read, Ordering::SeqCst);
            if to_browser.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::join!(tokio::io::copy(&mut from_browser, &mut to_server), down);
}

/// The bytes a first visit and a repeat visit download, measured in Firefox through a
/// counting relay; printed for the README. Firefox takes brotli from this loopback
/// address as from an HTTPS site (it counts loopback as secure).
#[tokio::test]
async fn test_a_first_visit_downloads_at_most_250_kb_and_a_repeat_visit_no_bundle() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let relay = CountingRelay::start(&stack.server.base).await;
    let browser = stack.firefox_at(&relay.url, Setup::default()).await;

    // A first visit: the page, its bundle and icon; the worker, and its install.
    browser.open_chat().await;
    let shell = eventually("the worker's whole shell", || async {
        let shell = browser.shell().await;
        (shell.len() == 8).then_some(shell)
    })
    .await;
    let first = relay.received();

    // A repeat visit: the chat opened again, from elsewhere.
    browser.client.goto("about:blank").await.unwrap();
    browser.open_chat().await;
    let repeat = relay.received() - first;
    println!("first visit: {first} bytes; repeat visit: {repeat} bytes");

    let wasm = shell.iter().find(|path| path.ends_with(".wasm")).unwrap();
    let wasm_br = stack.site.join("pkg/pushchat.wasm.br");
    let wasm_br = std::fs::metadata(wasm_br)
        .expect("built with --precompress")
        .len() as usize;
    assert!(
        first <= 250_000,
        "a first visit downloads {first} bytes (the wasm alone {wasm_br} in brotli)"
    );
    assert!(
        first > wasm_br,
        "{first} bytes are less than the wasm in brotli ({wasm_br}): was {wasm} sent?"
    );
    assert!(repeat < wasm_br, "a repeat visit downloads {repeat} bytes");
}

#[tokio::test]
async fn test_chromium_finds_the_site_installable_with_a_controlling_worker_and_loading_icons() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::chromium(&stack.server.base, profile.path()).await;
    browser.open_chat().await;
    // The first visit registers the worker; from the next page load on, it controls it.
    eventually("the worker to control the page", || async {
        browser.client.refresh().await.ok()?;
        let controlled = browser
            .client
            .execute("return navigator.serviceWorker.controller !== null", vec![])
            .await
            .ok()?;
        (controlled == Value::Bool(true)).then_some(())
    })
    .await;

    let answer = browser
        .client
        .issue_cmd(SessionCommand::post(
            "goog/cdp/execute",
            json!({ "cmd": "Page.getInstallabilityErrors", "params": {} }),
        ))
        .await
        .unwrap();
    assert_eq!(
        answer["installabilityErrors"],
        json!([]),
        "Chromium would not install the site: {answer}"
    );

    // Every icon the manifest names loads, as a PNG of the size it claims.
    let script = "const done = arguments[arguments.length - 1];
        (async () => {
          const manifest = await (await fetch('/manifest.webmanifest')).json();
          return Promise.all(manifest.icons.map(async (icon) => {
            const response = await fetch(icon.src);
            const image = await createImageBitmap(await response.blob());
            return [icon.src, response.status, response.headers.get('content-type'),
                    icon.sizes, `${image.width}x${image.height}`];
          }));
        })().then(done, (error) => done(String(error)));";
    let icons = browser.client.execute_async(script, vec![]).await.unwrap();
    let icons: Vec<(String, u16, String, String, String)> = serde_json::from_value(icons.clone())
        .unwrap_or_else(|_| panic!("the icons did not load: {icons}"));
    assert_eq!(icons.len(), 3, "{icons:?}");
    for (src, status, content_type, sizes, loaded) in icons {
        assert_eq!(
            (status, content_type.as_str(), loaded.as_str()),
            (200, "image/png", sizes.as_str()),
            "{src}"
        );
    }
}

#[tokio::test]
async fn test_a_browser_without_service_workers_or_push_reads_the_chat_and_says_why_it_cannot_join()
{
    let _one = ONE_AT_A_TIME.lock().await;
    let Room { stack, alice, .. } = &Room::open("Alice").await;
    alice.say("hello <b>readers</b>").await;
    let reader = stack
        .firefox_with(Setup {
            push: false,
            ..Setup::default()
        })
        .await;
    reader.client.goto(&reader.chat_url).await.unwrap();

    reader
        .wait_for_lines(&[("Alice", "hello <b>readers</b>")])
        .await;
    eventually_members(&reader, &["Alice", "Bob"]).await;
    let status = reader.text_of("#status").await;
    assert!(
        status.contains("cannot receive push messages") && status.contains("read"),
        "{status}"
    );
    // Nothing offers to join: the name field and Subscribe are off.
    for control in ["#name", "#subscribe"] {
        let element = reader.client.find(Locator::Css(control)).await.unwrap();
        assert!(!element.is_enabled().await.unwrap(), "{control} is enabled");
    }
    assert_eq!(reader.canary().await, Value::Null);
}

#[tokio::test]
async fn test_a_second_device_joins_with_the_code_the_first_shows_and_leaves_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack, alice, bob, ..
    } = &Room::open("Alice").await;
    alice
        .client
        .find(Locator::Css("#add-device"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let link = eventually("the device code to show", || async {
        let link = alice
            .client
            .find(Locator::Css("#device-code a"))
            .await
            .ok()?;
        link.attr("href").await.ok()?
    })
    .await;
    assert!(
        link.starts_with(&format!("{}/?device=", stack.server.base)),
        "{link}"
    );
    let code = alice.text_of("#device-code .code").await;
    assert!(link.ends_with(&code), "{link} {code}");

    // The phone opens the link and presses Subscribe without typing a name.
    let phone = stack.firefox().await;
    phone.open(&link).await;
    phone.press_subscribe().await;
    phone.wait_for_label("Unsubscribe").await;
    assert!(phone.text_of("#status").await.contains("as Alice"));
    eventually_members(&phone, &["Alice", "Bob"]).await;

    // Both of Alice's browsers get Bob's line through their own push subscriptions.
    bob.say("to both of your devices").await;
    for device in [alice, &phone] {
        device
            .wait_for_lines(&[("Bob", "to both of your devices")])
            .await;
    }
    // The phone leaves; Alice stays in on the first browser and Bob was not told.
    phone.leave().await;
    alice.say("still here").await;
    bob.wait_for_lines(&[("Bob", "to both of your devices"), ("Alice", "still here")])
        .await;
    assert_eq!(bob.members().await, ["Alice", "Bob"]);
    assert_eq!(alice.button_label().await, "Unsubscribe");
}

#[tokio::test]
async fn test_a_chat_with_a_passphrase_asks_for_it_and_lets_in_only_with_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start_with(&["--join-passphrase", "open sesame"]).await;
    let alice = stack.firefox().await;
    alice.open_chat().await;
    let field = eventually("the passphrase field", || async {
        alice.client.find(Locator::Css("#passphrase")).await.ok()
    })
    .await;
    field.send_keys("open sesamE").await.unwrap();
    alice.type_name_and_press_subscribe("Alice").await;
    // The page says so once it has dropped the browser subscription it made.
    assert!(alice.problem().await.contains("passphrase"));
    assert_eq!(
        alice.endpoint().await,
        None,
        "a refused join keeps no subscription"
    );

    field.clear().await.unwrap();
    field.send_keys("open sesame").await.unwrap();
    alice.press_subscribe().await;
    alice.wait_for_label("Unsubscribe").await;
    eventually_members(&alice, &["Alice"]).await;
}

#[tokio::test]
async fn test_the_operator_removes_a_member_while_its_page_is_open() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open_on(Stack::start_with_admin_api().await, "Alice").await;
    let pushes = stack.pushes();
    let bob_endpoint = bob.endpoint().await.unwrap();

    stack.remove_member("Bob", false).await;

    // The last push to Bob reaches his worker, which relays it to his open page: the page
    // says why he is out and offers Subscribe, under the name he had.
    acked(&pushes, bob_channel, 3).await;
    let problem = bob.problem().await;
    assert!(
        problem.contains("operator removed you") && problem.contains("Subscribe"),
        "{problem}"
    );
    bob.wait_for_button("Subscribe").await;
    assert!(bob.members().await.is_empty());
    assert_eq!(bob.name_field().await, "Bob");
    bob.screenshot("removed-while-open").await;
    // His worker showed it and dropped the browser's subscription.
    let notifications = bob.notifications().await;
    assert!(
        notifications
            .iter()
            .any(|(title, body)| title == "You were removed from the chat"
                && body.contains("removed you")
                && !body.contains("banned")),
        "{notifications:?}"
    );
    eventually("Bob's browser to drop its subscription", || async {
        bob.endpoint().await.is_none().then_some(())
    })
    .await;
    assert_gone(&bob_endpoint).await;

    // Alice was told Bob left.
    eventually_members(alice, &["Alice"]).await;
    let notifications = alice.notifications().await;
    assert!(
        notifications.iter().any(|(title, _)| title == "Bob left"),
        "{notifications:?}"
    );

    // A reload finds no membership to restore: the page stays a visitor's, asks nothing
    // of the server, and the name it kept is forgotten.
    bob.client.refresh().await.unwrap();
    bob.open_chat().await;
    bob.wait_for_label("Subscribe").await;
    assert_eq!(bob.endpoint().await, None);
    assert_eq!(bob.name_field().await, "");
    assert!(bob.members().await.is_empty());
    assert_eq!(stack.admin_member_names().await, ["Alice"]);
}

#[tokio::test]
async fn test_a_page_that_loads_after_its_member_was_banned_says_so_and_drops_its_subscription() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open_on(Stack::start_with_admin_api().await, "Alice").await;
    let pushes = stack.pushes();
    // Bob's push service is out of order while the operator bans him: the last push to him
    // never reaches his browser, and his page still thinks he is in.
    pushes
        .set_fault(bob_channel, Some(Fault::ServerError { times: u32::MAX }))
        .await
        .unwrap();
    stack.remove_member("Bob", true).await;
    eventually_members(alice, &["Alice"]).await;
    assert_eq!(bob.button_label().await, "Unsubscribe");

    // Bob reloads: `init` answers that he was banned. The page says so, drops the
    // browser's subscription and leaves the name field empty (that name cannot join).
    bob.client.refresh().await.unwrap();
    bob.open_chat().await;
    let problem = bob.problem().await;
    assert!(problem.contains("banned your name"), "{problem}");
    bob.wait_for_button("Subscribe").await;
    eventually("Bob's browser to drop its subscription", || async {
        bob.endpoint().await.is_none().then_some(())
    })
    .await;
    assert_eq!(bob.name_field().await, "");
    assert!(bob.members().await.is_empty());
    bob.screenshot("banned-on-reload").await;
    assert_eq!(stack.admin_member_names().await, ["Alice"]);
}

#[tokio::test]
async fn test_a_member_banned_while_its_page_is_closed_is_told_and_its_worker_unsubscribes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Room {
        stack,
        alice,
        bob,
        bob_channel,
    } = &Room::open_on(Stack::start_with_admin_api().await, "Alice").await;
    let pushes = stack.pushes();
    let bob_endpoint = bob.endpoint().await.unwrap();

    // Bob closes the chat; his browser keeps running on a blank tab.
    let chat_tab = bob.client.window().await.unwrap();
    let blank = bob.client.new_window(true).await.unwrap();
    bob.client.switch_to_window(chat_tab).await.unwrap();
    bob.client.close_window().await.unwrap();
    bob.client.switch_to_window(blank.handle).await.unwrap();

    stack.remove_member("Bob", true).await;
    eventually_members(alice, &["Alice"]).await;

    // With no page open, Bob's worker alone handles the last push: it drops the
    // subscription (the push service then refuses pushes to it) and says why.
    acked(&pushes, bob_channel, 3).await;
    eventually("Bob's worker to drop his subscription", || async {
        let pushed = reqwest::Client::new()
            .post(&bob_endpoint)
            .send()
            .await
            .ok()?;
        (pushed.status() == reqwest::StatusCode::GONE).then_some(())
    })
    .await;
    bob.open_chat().await;
    bob.wait_for_label("Subscribe").await;
    assert_eq!(bob.endpoint().await, None);
    let notifications = bob.notifications().await;
    assert!(
        notifications
            .iter()
            .any(|(title, body)| title == "You were removed from the chat"
                && body.contains("banned your name")),
        "{notifications:?}"
    );
    assert_eq!(stack.admin_member_names().await, ["Alice"]);
}
