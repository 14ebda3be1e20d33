//! One artifact: the release binary, copied alone into an empty directory and started
//! there, serves the whole site it carries: the page, and the script, wasm and styles
//! the page names, under names that carry their content's digest (kept a year), in the
//! brotli or gzip copy the client takes, with an ETag that a conditional request meets
//! with 304; and the files without a digest in their name (the service worker) are
//! asked for again before every use.
//!
//! Needs `cargo leptos build --release --precompress` first (the README's test command
//! does it).

use std::{io::Read, path::Path};

use end2end::{PushchatProcess, Server};
use reqwest::{
    header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH},
    StatusCode,
};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The release binary, copied into an empty directory and started there (its data dir
/// beside it), with no `LEPTOS_SITE_ROOT` to point it at a site.
struct Alone {
    server: Server,
    _dir: tempfile::TempDir,
}

impl Alone {
    async fn start() -> Alone {
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/pushchat");
        assert!(
            built.exists(),
            "build it first: cargo leptos build --release --precompress (bash .ci/test does)"
        );
        // A hard link, not a copy: a copy holds the new file open for writing, and a child
        // that another test forks meanwhile inherits that descriptor until it execs, so
        // starting the copy could fail with "Text file busy". A link opens nothing. The
        // directory is beside the build, so that the link stays on one file system.
        let dir = tempfile::tempdir_in(built.parent().unwrap()).unwrap();
        let binary = dir.path().join("pushchat");
        std::fs::hard_link(&built, &binary).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(
            std::env::var_os("LEPTOS_SITE_ROOT").is_none(),
            "LEPTOS_SITE_ROOT would point the server at a folder"
        );
        let data_dir = dir.path().join("data");
        let process = PushchatProcess::start(&binary, dir.path(), &data_dir, &[]).await;
        Alone {
            server: Server::client_of(process),
            _dir: dir,
        }
    }

    /// GET `path` with `headers`, as sent: no decoding.
    async fn get(&self, path: &str, headers: &[(reqwest::header::HeaderName, &str)]) -> Got {
        let mut request = self.server.http.get(format!("{}{path}", self.server.base));
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let response = request.send().await.unwrap();
        let header = |name| {
            let value = response.headers().get(name);
            value.map(|value| value.to_str().unwrap().to_owned())
        };
        Got {
            status: response.status(),
            content_type: header(CONTENT_TYPE),
            encoding: header(CONTENT_ENCODING),
            cache: header(CACHE_CONTROL),
            etag: header(ETAG),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// The bundle files the page names (`/pkg/…` links): script, wasm and styles.
    async fn bundle(&self) -> Vec<String> {
        let page = self.get("/", &[]).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.cache.as_deref(), Some("no-cache"), "the page");
        let html = String::from_utf8(page.body).unwrap();
        let mut links: Vec<String> = html
            .split("href=\"")
            .skip(1)
            .filter_map(|rest| Some(rest.split_once('"')?.0.to_owned()))
            .filter(|link| link.starts_with("/pkg/"))
            .collect();
        links.sort();
        links.dedup();
        links
    }
}

struct Got {
    status: StatusCode,
    content_type: Option<String>,
    encoding: Option<String>,
    cache: Option<String>,
    etag: Option<String>,
    body: Vec<u8>,
}

fn brotli_decoded(body: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    brotli_decompressor::Decompressor::new(body, 4096)
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

fn gzip_decoded(body: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

#[tokio::test]
async fn test_the_binary_alone_serves_the_page_and_its_bundle_under_digested_names() {
    let alone = Alone::start().await;
    let bundle = alone.bundle().await;
    let extensions: Vec<&str> = bundle.iter().filter_map(|l| l.rsplit('.').next()).collect();
    assert_eq!(extensions, ["css", "js", "wasm"], "{bundle:?}");
    for link in &bundle {
        let name = link.strip_prefix("/pkg/pushchat.").unwrap();
        let digest = name.split('.').next().unwrap();
        assert!(
            digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{link} carries no digest"
        );
    }

    let wasm = bundle.iter().find(|link| link.ends_with(".wasm")).unwrap();
    let plain = alone.get(wasm, &[(ACCEPT_ENCODING, "identity")]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.body.starts_with(b"\0asm"), "not wasm");
    assert_eq!(plain.content_type.as_deref(), Some("application/wasm"));
    assert_eq!(plain.encoding, None);
    assert_eq!(plain.cache.as_deref(), Some(IMMUTABLE));

    let js = bundle.iter().find(|link| link.ends_with(".js")).unwrap();
    let script = alone.get(js, &[(ACCEPT_ENCODING, "identity")]).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.content_type.unwrap().contains("javascript"));
    assert!(String::from_utf8(script.body)
        .unwrap()
        .contains("WebAssembly"));

    // The bundle of another build is not this one: no such file.
    let stale = format!("/pkg/pushchat.0123456789abcdef.{}", "wasm");
    assert_eq!(alone.get(&stale, &[]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_each_bundle_file_comes_compressed_as_the_client_asks_and_decodes_to_itself() {
    let alone = Alone::start().await;
    for link in alone.bundle().await {
        let plain = alone
            .get(&link, &[(ACCEPT_ENCODING, "identity")])
            .await
            .body;
        let br = alone
            .get(&link, &[(ACCEPT_ENCODING, "gzip, deflate, br, zstd")])
            .await;
        assert_eq!(br.encoding.as_deref(), Some("br"), "{link}");
        assert_eq!(br.cache.as_deref(), Some(IMMUTABLE), "{link}");
        assert!(br.body.len() < plain.len(), "{link}");
        assert!(
            brotli_decoded(&br.body) == plain,
            "{link}: brotli decodes to another file"
        );

        let gzip = alone.get(&link, &[(ACCEPT_ENCODING, "gzip, br;q=0")]).await;
        assert_eq!(gzip.encoding.as_deref(), Some("gzip"), "{link}");
        assert!(
            gzip_decoded(&gzip.body) == plain,
            "{link}: gzip decodes to another file"
        );
        assert_ne!(gzip.etag, br.etag, "{link}: each copy has its own ETag");
    }
}

#[tokio::test]
async fn test_the_worker_and_manifest_are_revalidated_and_an_unchanged_one_answers_304() {
    let alone = Alone::start().await;
    for path in ["/sw.js", "/manifest.webmanifest", "/icons/icon-192.png"] {
        let first = alone.get(path, &[(ACCEPT_ENCODING, "br")]).await;
        assert_eq!(first.status, StatusCode::OK, "{path}");
        assert_eq!(first.cache.as_deref(), Some("no-cache"), "{path}");
        let etag = first.etag.unwrap_or_else(|| panic!("{path} has no ETag"));
        let again = alone
            .get(path, &[(ACCEPT_ENCODING, "br"), (IF_NONE_MATCH, &etag)])
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.body.is_empty(), "{path}");
        let changed = alone
            .get(
                path,
                &[(ACCEPT_ENCODING, "br"), (IF_NONE_MATCH, "\"other\"")],
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{path}");
    }
    let worker = alone.get("/sw.js", &[]).await;
    assert!(worker.content_type.unwrap().contains("javascript"));
    let png = alone.get("/icons/icon-192.png", &[]).await;
    assert_eq!(png.content_type.as_deref(), Some("image/png"));
    assert!(png.body.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn test_no_such_file_is_the_page_saying_so_with_404() {
    let alone = Alone::start().await;
    for path in ["/nothing-here", "/pkg/nothing.wasm", "/sw.js/"] {
        let answer = alone.get(path, &[]).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(String::from_utf8(answer.body)
            .unwrap()
            .contains("There is no such page"));
    }
}
