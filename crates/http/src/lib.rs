//! Kickstand's HTTP front: boot scripts (`/boot/<mac>.ipxe`), kickstarts
//! (`/ks/<mac>`), install callbacks and the host API (`/api/hosts`), the
//! repo proxy routes (`/repo/<mirror>/<path>`), the status page and metrics.
//!
//! A tour: `route` turns a request target into a [`route::Route`] (pure,
//! table-tested); [`App`] holds what handlers read — the current
//! [`Site`] (swapped whole on reload, so each request sees one snapshot),
//! the install-state store and the repo proxy; [`serve`] runs hyper on a
//! listener it is given until the shutdown token fires, then drains.
//!
//! The protocol logic of the other modules stays there: this crate decides
//! nothing about DHCP or caching. An unknown MAC never gets a kickstart.

mod app;
pub mod route;

pub use app::{App, Body, ReloadStatus, serve};
pub use kickstand_render::Site;
