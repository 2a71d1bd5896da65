//! AdmissionReview parsing under arbitrary input: any bytes give a review or a clear
//! error, never a panic, and what a review says (its uid, its request) comes back intact.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::IncomingReview;

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = IncomingReview::parse(&bytes);
    }

    #[test]
    fn any_json_around_the_request_parses_or_fails_cleanly(
        request in json_value(),
        api_version in json_value(),
    ) {
        let body = serde_json::to_vec(&json!({"apiVersion": api_version, "request": request})).unwrap();
        if let Ok(review) = IncomingReview::parse(&body) {
            prop_assert!(review.request.get().starts_with('{'), "request is not an object");
        }
    }

    #[test]
    fn the_uid_and_request_come_back_exactly(
        uid in "\\PC{0,40}",
        object in json_value(),
        kind in prop_oneof![Just("Pod"), Just("Secret"), Just("ConfigMap")],
    ) {
        let request = json!({"uid": uid, "kind": {"group": "", "version": "v1", "kind": kind}, "object": object});
        let body = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "request": request})).unwrap();
        let review = IncomingReview::parse(&body).unwrap();
        prop_assert_eq!(&review.uid, &uid);
        prop_assert_eq!(review.reviews_secret, kind == "Secret");
        // Both sides through the same parser: floats are compared as parsed, not as built.
        let echoed: Value = serde_json::from_str(review.request.get()).unwrap();
        let sent: Value = serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        prop_assert_eq!(echoed, sent);
    }
}
