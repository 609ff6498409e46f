//! The timestamp endpoints' bodies (`src/http/timestamp.rs`); their answers are one or two
//! numbers, written by [`super::write`].

use serde::Deserialize;

use super::decode::decoded_by_serde;

// Request bodies decoded by serde alone (see `JsonBody`).
decoded_by_serde!(GetFreshTimestampsRequest);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetFreshTimestampsRequest {
    pub(crate) num_timestamps: i64,
}
