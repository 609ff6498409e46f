//! Lock descriptors (Conjure base64 strings, legacy `{"bytes":"<b64>"}`) and the lock request
//! bodies that carry them, decoded as the lock handlers do and then used on a real lock service.
//!
//! * any byte string survives base64 + JSON and back, in both shapes;
//! * a JSON string decodes as a descriptor exactly when it is standard base64;
//! * a decoded lock request whose descriptors pass `validate_descriptors` is granted at once
//!   on a fresh lock service (nobody else holds anything: duplicates within one request must
//!   not wait on themselves), unlocks to exactly its token, and can be taken again.
//!
//! Lock waits run on a paused tokio clock, so a request's `acquireTimeoutMs` never stalls the
//! fuzzer: a wait that would end only by timing out ends at once with `TimedOut`, and fails here.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use timelock::fuzzing::{decode_descriptor, decode_lock_request};
use timelock::lock::{LockLimits, LockOutcome, LockService};
use timelock::metrics::Metrics;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    })
}

fn metrics() -> Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new).clone()
}

fuzz_target!(|data: &[u8]| {
    let b64 = base64::engine::general_purpose::STANDARD;
    // Round trips of the input as a descriptor.
    let encoded = b64.encode(data);
    let conjure = serde_json::to_vec(&encoded).unwrap();
    assert_eq!(&decode_descriptor(&conjure).unwrap()[..], data);
    let lock = format!(
        r#"{{"requestId":"0b7d1f4e-9a56-4c1a-8c3e-1f2a3b4c5d6e","lockDescriptors":[{{"bytes":"{encoded}"}}],"acquireTimeoutMs":0}}"#
    );
    let (_, descriptors, _) = decode_lock_request(lock.as_bytes(), true).unwrap();
    assert_eq!(&descriptors[0][..], data);

    // The input as a descriptor's JSON.
    let as_string: Option<String> = serde_json::from_slice(data).ok();
    match decode_descriptor(data) {
        Ok(bytes) => {
            let text = as_string.expect("a descriptor is a JSON string");
            assert_eq!(b64.decode(text.as_bytes()).unwrap(), &bytes[..]);
        }
        Err(_) => {
            if let Some(text) = as_string {
                assert!(b64.decode(text.as_bytes()).is_err(), "{text:?} refused");
            }
        }
    }

    // The input as a lock request, both shapes, then locked for real.
    for legacy in [false, true] {
        let Ok((request_id, descriptors, timeout_ms)) = decode_lock_request(data, legacy) else {
            continue;
        };
        let Ok(timeout) = u64::try_from(timeout_ms).map(Duration::from_millis) else {
            continue; // the handler answers 400
        };
        let service = LockService::new(LockLimits::default(), metrics());
        if service.validate_descriptors(&descriptors).is_err() {
            continue; // 400
        }
        runtime().block_on(async {
            let outcome = service
                .lock(request_id, descriptors.clone(), timeout)
                .await
                .expect("lock on an open service");
            assert!(
                matches!(outcome, LockOutcome::Acquired(_)),
                "uncontended lock of {} descriptors not granted",
                descriptors.len()
            );
            assert_eq!(service.unlock(&[request_id]).unwrap(), vec![request_id]);
            let again = uuid::Uuid::from_u128(request_id.as_u128() ^ 1);
            let outcome = service.lock(again, descriptors, timeout).await.unwrap();
            assert!(
                matches!(outcome, LockOutcome::Acquired(_)),
                "not granted after unlock"
            );
            assert_eq!(service.unlock(&[again]).unwrap(), vec![again]);
            service.close();
        });
    }
});
