//! The site the page loads (its wasm bundle, script and styles, the service worker, the
//! manifest, the icons): the folder `cargo leptos build` writes, and where the server
//! finds it.
//!
//! - Embedded: a release build made after the site, as `cargo leptos build` makes it,
//!   carries the whole folder (its brotli and gzip copies too), so the binary alone is the
//!   deployment. `build.rs` has cargo build the server again whenever the folder changes.
//! - A folder read at run time: the one `LEPTOS_SITE_ROOT` names (`cargo leptos watch`, a
//!   test serving a changed copy), or `target/site` under the working directory when the
//!   binary was built before any site existed (a plain `cargo build`).
//!
//! An embedded site cannot change under the running server, so its bundle is also served
//! under names that carry a digest of the bundle, `pkg/pushchat.DIGEST.wasm`, which
//! browsers may keep for a year; the page names those (see [`Site::bundle_name`]). A
//! folder may change while the server runs, so it keeps the plain names. (cargo-leptos's
//! own `hash-files` writes its hashes to a file beside the binary that Leptos reads on
//! every render: a copied binary has no such file, and its names could not drift from
//! the content here.)

use std::{
    borrow::Cow,
    fmt,
    path::{Path, PathBuf},
};

use rust_embed::{EmbeddedFile, RustEmbed};
use sha2::{Digest, Sha256};

#[derive(RustEmbed)]
#[folder = "../target/site"]
#[allow_missing = true]
struct Embedded;

/// Where the site's files come from, and the digest its bundle is named with.
pub struct Site {
    source: Source,
    digest: Option<String>,
}

enum Source {
    Embedded,
    Folder(PathBuf),
}

/// The file a request names.
#[derive(Debug, PartialEq, Eq)]
pub struct Named {
    /// Its path in the site, `pkg/pushchat.wasm`.
    pub path: String,
    /// Whether the name carries the content's digest, so the content never changes.
    pub immutable: bool,
}

impl Site {
    /// The folder `named` when given (`LEPTOS_SITE_ROOT`), else the embedded site, else
    /// (nothing was embedded) `fallback` under the working directory. `output_name` is
    /// the bundle's plain name (`pushchat`).
    pub fn locate(named: Option<PathBuf>, fallback: &Path, output_name: &str) -> Site {
        match named {
            Some(folder) => Site::folder(folder),
            None if Embedded::iter().next().is_some() => Site {
                source: Source::Embedded,
                digest: bundle_digest(output_name),
            },
            None => Site::folder(fallback.to_owned()),
        }
    }

    /// The site in `folder`, read at every request, under its plain names.
    pub fn folder(folder: PathBuf) -> Site {
        Site {
            source: Source::Folder(folder),
            digest: None,
        }
    }

    /// Whether its files cannot change while the server runs (it is embedded): only then
    /// do the brotli and gzip copies beside a file surely match it.
    pub fn is_embedded(&self) -> bool {
        matches!(self.source, Source::Embedded)
    }

    /// The name the page gives the bundle (`output_name` is Leptos's, `pushchat`):
    /// `pushchat.DIGEST` for an embedded site, else `output_name` itself.
    pub fn bundle_name(&self, output_name: &str) -> String {
        match &self.digest {
            Some(digest) => format!("{output_name}.{digest}"),
            None => output_name.to_owned(),
        }
    }

    /// The file `request_path` (`/pkg/pushchat.DIGEST.wasm`) names, if it is a path the
    /// site may have: relative, without `.` or `..` segments.
    pub fn name(&self, request_path: &str) -> Option<Named> {
        let path = request_path.strip_prefix('/')?;
        let plain = path
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | "..") && !segment.contains('\\'));
        if !plain {
            return None;
        }
        let undigested = self.digest.as_ref().and_then(|digest| {
            let (folder, file) = path.rsplit_once('/')?;
            let (stem, extension) = file.split_once(&format!(".{digest}."))?;
            Some(format!("{folder}/{stem}.{extension}"))
        });
        Some(match undigested {
            Some(path) => Named {
                path,
                immutable: true,
            },
            None => Named {
                path: path.to_owned(),
                immutable: false,
            },
        })
    }

    /// The file at `path` in the site (as [`name`](Self::name) gives it), with its
    /// SHA-256 and media type.
    pub async fn file(&self, path: &str) -> Option<EmbeddedFile> {
        match &self.source {
            Source::Embedded => Embedded::get(path),
            Source::Folder(folder) => {
                let path = folder.join(path);
                tokio::task::spawn_blocking(move || {
                    rust_embed::utils::read_file_from_fs(&path).ok()
                })
                .await
                .ok()
                .flatten()
            }
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Embedded => write!(f, "embedded in the binary"),
            Source::Folder(folder) => write!(f, "the folder {}", folder.display()),
        }
    }
}

/// A digest of the embedded bundle (script, wasm and styles together: the page and its
/// wasm must be of one build), short enough for a file name; none if it lacks a file.
fn bundle_digest(output_name: &str) -> Option<String> {
    let mut digest = Sha256::new();
    for extension in ["js", "wasm", "css"] {
        let file = Embedded::get(&format!("pkg/{output_name}.{extension}"))?;
        digest.update(file.metadata.sha256_hash());
    }
    Some(hex::encode(&digest.finalize()[..8]))
}

/// The bytes of `file`, shared when embedded.
pub fn bytes_of(file: EmbeddedFile) -> axum::body::Bytes {
    match file.data {
        Cow::Borrowed(bytes) => axum::body::Bytes::from_static(bytes),
        Cow::Owned(bytes) => axum::body::Bytes::from(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digested() -> Site {
        Site {
            source: Source::Embedded,
            digest: Some("0123abcd".to_owned()),
        }
    }

    #[test]
    fn test_a_digested_name_names_the_plain_file_and_is_immutable() {
        assert_eq!(
            digested().name("/pkg/pushchat.0123abcd.wasm"),
            Some(Named {
                path: "pkg/pushchat.wasm".to_owned(),
                immutable: true
            })
        );
        assert_eq!(digested().bundle_name("pushchat"), "pushchat.0123abcd");
    }

    #[test]
    fn test_another_digest_or_a_plain_name_is_not_immutable() {
        for path in [
            "/pkg/pushchat.99999999.wasm",
            "/pkg/pushchat.wasm",
            "/sw.js",
        ] {
            let named = digested().name(path).unwrap();
            assert!(!named.immutable, "{path}");
            assert_eq!(named.path, path[1..], "{path}");
        }
    }

    #[test]
    fn test_a_folder_keeps_plain_names() {
        let site = Site::folder(PathBuf::from("target/site"));
        assert_eq!(site.bundle_name("pushchat"), "pushchat");
        assert!(!site.name("/pkg/pushchat.0123abcd.wasm").unwrap().immutable);
    }

    #[test]
    fn test_paths_that_could_leave_the_site_name_nothing() {
        for path in [
            "/../secret",
            "/pkg/../../x",
            "/pkg//x",
            "/./sw.js",
            "/a\\b",
            "sw.js",
            "/",
        ] {
            assert_eq!(digested().name(path), None, "{path}");
        }
    }
}
