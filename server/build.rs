//! Builds the server again when the site it embeds changes (see `src/http/site.rs`): cargo
//! then watches every file under `target/site`, new ones included. Before any site exists
//! there is nothing to watch; `cargo leptos build` sets `LEPTOS_SITE_ROOT`, which then has
//! this script look again once the site is there.

fn main() {
    let site = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/site");
    if std::path::Path::new(site).is_dir() {
        println!("cargo::rerun-if-changed={site}");
    } else {
        println!("cargo::rerun-if-env-changed=LEPTOS_SITE_ROOT");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
