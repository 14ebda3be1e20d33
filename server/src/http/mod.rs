//! The HTTP surface: the router every route is in (`routes`), the operator's API
//! (`admin`) and the Unix socket it is also served on (`admin_socket`), the API's one
//! error type (`error`), who sent a request (`client_address`), `/metrics`, HTTPS
//! (`tls`), the site's files (`site`: embedded or in a folder) and how they are served
//! (`static_files`), and what handlers share (`state`). Handlers are thin: they parse, call the
//! chat's rules, and answer.

pub mod admin;
pub mod admin_socket;
pub mod client_address;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod site;
pub mod state;
pub mod static_files;
pub mod tls;
