//! The wire layer: every request and response body of the AtlasDB contract, in one place.
//!
//! * [`decode`] — the [`decode::Decode`] trait every body type implements: serde is the
//!   definition of each shape, and the hottest requests add a strict hand-written decoder that
//!   serde backs up.
//! * [`write`](mod@write) — the hand-written JSON writer of the hottest answers, checked against serde.
//! * [`timestamp`], [`transactions`], [`lock`], [`lock_v1`] — the body types of the handlers
//!   of the same names in [`crate::http`], with their strict decoders and writers.
//!
//! Handlers take one extractor, [`crate::http::extract::JsonBody`], whatever the type: it asks
//! the strict decoder first and serde otherwise, so the fast path is a property of the type,
//! not a choice in a handler's signature.

pub mod decode;
pub mod lock;
pub mod lock_v1;
pub mod timestamp;
pub mod transactions;
pub mod write;
