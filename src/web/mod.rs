//! The HTTP edge of a node: Prometheus's web configuration file (TLS,
//! basic auth, response headers) with promraft's roles, and the server
//! that accepts connections under the abuse limits.
//!
//! - [`file`]: the web configuration file, parsed strictly and turned into
//!   a [`file::WebSettings`] (a rustls server configuration, users, roles,
//!   headers). Pure: reading files, no sockets.
//! - [`state`]: the settings in force, re-read when the file or a file it
//!   names changes (a bad new file keeps the old settings), the password
//!   cache, and the edge's own metrics.
//! - [`auth`]: who may call what: the role a path needs and the check of
//!   a request's credentials against it.
//! - [`server`]: the accept loop (connection cap, TLS handshakes in their
//!   own tasks with a deadline, header and body read timeouts) under
//!   hyper's HTTP/1 and HTTP/2 server, with graceful shutdown.
//!
//! This module knows nothing of the API's handlers: `api` asks it whether a
//! request may pass, and `main` hands the API's router to its server.

pub mod auth;
pub mod file;
pub mod server;
pub mod state;
