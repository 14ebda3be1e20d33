//! The HTTP surface: the router every route is in (`routes`), the operator's API
//! (`admin`) and the Unix socket it is also served on (`admin_socket`), the API's one
//! error type (`error`), who sent a request (`client_address`), `/metrics`, HTTPS
//! (`tls`), and what handlers share (`state`). Handlers are thin: they parse, call the
//! chat's rules, and answer.

pub mod admin;
pub mod admin_socket;
pub mod client_address;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod state;
pub mod tls;
