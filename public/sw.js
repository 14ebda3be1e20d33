// pushchat's service worker.
//
// Every push is a Declarative Web Push message (W3C Push API):
//   {"web_push": 8030, "notification": {"title", "body", "navigate", "tag", "mutable"},
//    "mutable": true, "pushchat": {"action": ..., ...}}
// `notification` is what a person sees; `pushchat` is the status update (tagged by
// `action`: subscribe, unsubscribe, chatMsg, notice, removed, stale), whose text, if any, is the
// notification's body. Safari shows such a push by itself; being mutable, it still fires
// this `push` event (with `event.notification`), and shows its own notification only if
// the worker shows none. Chromium and Firefox fire an ordinary `push` event. Either way the
// worker relays the push's JSON text to every open page of the site and shows a
// notification from the same JSON: always for member-list changes, and for chat lines only
// when no window of the site is focused (the focused page shows the line). Safari would
// show a suppressed line anyway, so there the worker shows it silently instead.
//
// Only Subscribe (on the page) makes a member. When the server says this browser is no
// longer one (a `removed` push, or a 404 to one of the worker's own requests), the worker
// forgets the member it keeps and drops the push subscription, and never rejoins.
//
// At most once a day, a push also makes the worker tell the server that pushes reach this
// browser (`/api/alive`): a sign of life, like the page's own calls, so that a browser whose
// person only reads notifications is not pruned as stale.
//
// It also keeps the app shell (the page, its wasm, script and styles, the manifest and
// icons) so that the installed app opens without the network: every page load and shell
// file comes from the network first, and from the cache only when the server cannot be
// reached. The page and its wasm must come from the same build, or hydration fails, so
// the shell is cached as a whole at install: the page, and the bundle files it names
// (their names carry their content's digest), under a name that carries VERSION; old
// versions are deleted on activate. A new VERSION (any change to this file makes the
// browser install it) fetches a new, matching shell before it takes over.
//
// event.waitUntil(promise): the browser may stop a worker as soon as an event handler
// returns. waitUntil keeps it alive until the promise settles, so each handler below
// hands all of its work to it.

const ICON = '/icons/icon-192.png';
const VERSION = 'v4';
const SHELL_CACHE_PREFIX = 'pushchat-shell-';
const SHELL_CACHE = `${SHELL_CACHE_PREFIX}${VERSION}`;
// The shell besides the page and the bundle it names (under /pkg/).
const SHELL_FILES = [
  '/manifest.webmanifest',
  '/icons/icon-192.png',
  '/icons/icon-512.png',
  '/icons/icon-maskable-512.png',
];
const BUNDLE = '/pkg/';
// How often the worker reports that pushes arrive, at most.
const ALIVE_EVERY_MS = 24 * 60 * 60 * 1000;

// The MessagePort each open page handed over, by the page's client id. They are lost
// when the browser stops an idle worker; pages are then reached with client.postMessage.
const ports = new Map();

async function handlePush(event) {
  const text = event.data ? event.data.text() : '';
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  relay(windows, text);

  let push = null;
  try {
    push = JSON.parse(text);
  } catch (_) {
    // Not ours to read; it still has to end in a notification.
  }
  const shown = push && push.notification;
  const update = push && push.pushchat;
  if (!shown || !update) {
    return self.registration.showNotification('pushchat', { body: 'Something new in the chat.', icon: ICON });
  }
  switch (update.action) {
    case 'subscribe':
    case 'unsubscribe':
      return showMemberChange(shown);
    case 'removed':
      return handleRemoved(shown);
    case 'chatMsg':
      return showChatLine(shown, update, windows, Boolean(event.notification));
    default:
      return self.registration.showNotification(shown.title, notificationOptions(shown));
  }
}

// Tells the server this browser still receives pushes, unless it was told less than a day
// ago (the time of the last report is kept beside the member). A failure waits for the
// next push; a 404 means the server no longer knows this member.
async function reportAlive() {
  try {
    const member = await loadMember();
    if (!member) return;
    const reported = (await loadReported()) || 0;
    if (Date.now() - reported < ALIVE_EVERY_MS) return;
    const response = await postJson('/api/alive', { endpoint: member.endpoint, auth: member.auth });
    if (response.status === 404) return leaveChat();
    if (response.ok) await saveReported(Date.now());
  } catch (_) {
    // The server or the network is away: the next push tries again.
  }
}

// The options of the notification `shown` describes. `navigate` (where a click goes) is
// what Safari asks of a notification that replaces a declarative one; other browsers
// ignore it and click through handleNotificationClick.
function notificationOptions(shown) {
  return { body: shown.body, icon: ICON, tag: shown.tag, navigate: shown.navigate };
}

// Hands the push to every open page: over its port when the page gave us one, else
// through the client itself. Ports of pages that are gone are dropped.
function relay(windows, text) {
  const open = new Set(windows.map((client) => client.id));
  for (const id of ports.keys()) {
    if (!open.has(id)) ports.delete(id);
  }
  for (const client of windows) {
    const port = ports.get(client.id);
    if (port) port.postMessage(text);
    else client.postMessage(text);
  }
}

// The operator removed this member (and maybe banned its name). The server already
// forgot it; so does this browser, and the push subscription goes, so that Subscribe on
// the page starts clean. Open pages got the push too and show why.
function handleRemoved(shown) {
  return Promise.all([showMemberChange(shown), leaveChat()]);
}

// What this browser keeps of a membership the server no longer knows: the member in
// IndexedDB and the push subscription.
async function leaveChat() {
  await forgetMember();
  const subscription = await self.registration.pushManager.getSubscription();
  if (subscription) await subscription.unsubscribe();
}

// One notification for the member list (its tag is `members`): a newer change replaces
// an older unseen one.
function showMemberChange(shown) {
  return self.registration.showNotification(shown.title, { ...notificationOptions(shown), renotify: true });
}

// A chat line, unless a window of the site is focused: then the page shows it, and only
// a browser that would show the declarative notification anyway (`declarative`: Safari)
// gets a silent one in its place. Lines from one sender (one tag) collapse into one
// notification that counts them; a line sent again after a server restart (same id) is
// not counted twice.
async function showChatLine(shown, line, windows, declarative) {
  const focused = windows.some((client) => client.focused);
  if (focused && !declarative) return;
  const [previous] = await self.registration.getNotifications({ tag: shown.tag });
  const seen = (previous && previous.data) || { count: 0, id: -1 };
  const count = line.id > seen.id ? seen.count + 1 : seen.count;
  const title = count === 1 ? shown.title : 'pushchat';
  const body = count === 1 ? shown.body : `${count} new messages from ${line.name}`;
  return self.registration.showNotification(title, {
    ...notificationOptions(shown),
    body,
    renotify: !focused && count > seen.count && count > 1,
    silent: focused,
    data: { count, id: Math.max(line.id, seen.id) },
    actions: [{ action: 'mute', title: 'Mute 1 hour' }],
  });
}

// "Mute 1 hour" asks the server to skip this member's chat lines for an hour (the worker
// cannot drop them itself: every push must end in a notification). A click elsewhere
// focuses an open window of the site, or opens one.
async function handleNotificationClick(event) {
  event.notification.close();
  if (event.action === 'mute') return mute();
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((client) => 'focus' in client);
  if (open) return open.focus();
  return self.clients.openWindow('/');
}

// A 404 means the server no longer knows this member (removed, or dropped when its push
// service said the subscription was gone): this browser forgets it too.
async function mute() {
  const member = await loadMember();
  if (!member) return;
  const response = await postJson('/api/mute', { endpoint: member.endpoint, auth: member.auth });
  if (response.status === 404) return leaveChat();
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
}

// A page hands over one end of a MessageChannel, through which pushes are relayed, and
// the member this browser is; or says this browser is no longer a member.
function handleMessage(event) {
  const data = event.data;
  if (data && data.type === 'connect' && event.ports[0] && event.source) {
    ports.set(event.source.id, event.ports[0]);
    if (data.member) event.waitUntil(saveMember(data.member));
  } else if (data && data.type === 'forget') {
    event.waitUntil(forgetMember());
  }
}

// The browser replaced the push subscription on its own (its push service forgot it,
// say): subscribe again with the server's key and move the member to the new
// subscription, proving who it is with the old one's credentials. If the server no
// longer knows the member (404: a push to the old endpoint answered 410 in between, or
// the operator removed it), the worker does not rejoin (only Subscribe makes a member,
// and the others are told): it forgets the member and drops the new subscription.
async function handleSubscriptionChange() {
  const member = await loadMember();
  if (!member) return;
  const { publicKey } = await (await fetch('/api/vapid-public-key')).json();
  const subscription = await self.registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: base64UrlToBytes(publicKey),
  });
  const fresh = subscription.toJSON();
  const response = await postJson('/api/resubscribe', {
    endpoint: member.endpoint,
    auth: member.auth,
    subscription: fresh,
  });
  if (response.status === 404) return leaveChat();
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
  await saveMember({ ...member, endpoint: fresh.endpoint, auth: fresh.keys.auth });
}

function postJson(path, body) {
  return fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
}

function base64UrlToBytes(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

// The member, kept in IndexedDB: a worker woken for pushsubscriptionchange has no page
// to ask.
function memberStore(mode, use) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open('pushchat', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('member');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const request = use(open.result.transaction('member', mode).objectStore('member'));
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    };
  });
}

const saveMember = (member) => memberStore('readwrite', (store) => store.put(member, 'self'));
const loadMember = () => memberStore('readonly', (store) => store.get('self'));
const forgetMember = () => memberStore('readwrite', (store) => store.delete('self'));
const saveReported = (time) => memberStore('readwrite', (store) => store.put(time, 'reported'));
const loadReported = () => memberStore('readonly', (store) => store.get('reported'));

// Caches this version's shell, then takes over from an older worker without waiting for
// its pages to close. The page is fetched anew (the server says never to use it unchecked)
// and the bundle it names is of its build by name, so most of it comes from the HTTP
// cache the page just filled: only what is not there yet crosses the network.
async function handleInstall() {
  const page = await fetch('/');
  if (!page.ok) throw new Error(`the page answered ${page.status}`);
  const bundle = bundleOf(await page.clone().text());
  const cache = await caches.open(SHELL_CACHE);
  await cache.addAll([...bundle, ...SHELL_FILES]);
  await cache.put('/', page);
  await self.skipWaiting();
}

// The bundle files (script, wasm, styles) a page names in its links.
function bundleOf(html) {
  const links = html.matchAll(/href="(\/pkg\/[^"]+)"/g);
  return [...new Set(Array.from(links, (link) => link[1]))];
}

// Deletes the shells of older versions, then controls the open pages.
async function handleActivate() {
  const names = await caches.keys();
  const old = names.filter((name) => name.startsWith(SHELL_CACHE_PREFIX) && name !== SHELL_CACHE);
  await Promise.all(old.map((name) => caches.delete(name)));
  await self.clients.claim();
}

// Page loads and shell files: the network first; the cached shell when the server cannot
// be reached (every page of the site is the one chat page). The API is never cached.
async function handleFetch(request) {
  try {
    return await fetch(request);
  } catch (unreachable) {
    const cache = await caches.open(SHELL_CACHE);
    const cached = await cache.match(request.mode === 'navigate' ? '/' : request, { ignoreSearch: true });
    if (cached) return cached;
    throw unreachable;
  }
}

function isShell(request) {
  if (request.method !== 'GET') return false;
  if (request.mode === 'navigate') return true;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return false;
  return url.pathname.startsWith(BUNDLE) || SHELL_FILES.includes(url.pathname);
}

self.addEventListener('install', (event) => event.waitUntil(handleInstall()));
self.addEventListener('activate', (event) => event.waitUntil(handleActivate()));
self.addEventListener('fetch', (event) => {
  if (isShell(event.request)) event.respondWith(handleFetch(event.request));
});
self.addEventListener('push', (event) => event.waitUntil(Promise.all([handlePush(event), reportAlive()])));
self.addEventListener('notificationclick', (event) => event.waitUntil(handleNotificationClick(event)));
self.addEventListener('message', handleMessage);
self.addEventListener('pushsubscriptionchange', (event) =>
  event.waitUntil(handleSubscriptionChange()),
);
