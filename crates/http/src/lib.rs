//! Kickstand's HTTP front: routes and handlers for boot scripts
//! (`/boot/<mac>.ipxe`), boot loaders (`/boot/<file>`), kickstarts
//! (`/ks/<mac>`), install callbacks and the host API (`/api/hosts`), the
//! repo proxy (`/repo/<mirror>/<path>`), cache operations, the status page
//! and metrics.
//!
//! A tour: [`route`] turns a request target into a [`route::Route`] (pure,
//! table-tested); [`Front`] is what the handlers ask of the daemon — one
//! method per use case, answered from the daemon's generation in force, so
//! this crate holds no live state and depends on no other protocol crate;
//! [`ApiError`] is the one error type and its one mapping to a response;
//! [`serve`] runs hyper on a listener it is given until the shutdown token
//! fires, then drains; [`serve_tls`] does the same over TLS, the operator's
//! [`Channel`].
//!
//! An unknown MAC never gets a kickstart: that rule is the daemon's boot
//! decision, and this crate only carries its answer.

mod assets;
mod error;
mod front;
mod metrics;
pub mod route;
mod server;

pub use error::{ApiError, Body};
pub use front::{Channel, Front, Loader, OperatorAct, Reply, RouteKind, token_id};
pub use metrics::{Metrics, prometheus_text};
pub use server::{ConnectionStats, Limits, handle, serve, serve_tls, serve_with};
