//! Tests of the wire and storage encoding of the shard layer's types.

use crate::{Epoch, Mutation, ShardRequest};

/// How postcard wrote a byte string before `crate::bytes`: a length, then each byte.
fn as_sequence(bytes: &[u8]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Plain<'a>(&'a Vec<u8>);
    postcard::to_stdvec(&Plain(&bytes.to_vec())).unwrap()
}

#[test]
fn byte_strings_encode_as_they_always_did_and_read_back() {
    let value = vec![7u8; 300];
    let put = Mutation::Put {
        key: b"k".to_vec(),
        value: value.clone(),
    };
    let encoded = postcard::to_stdvec(&put).unwrap();
    // Variant index, then the key and the value as before.
    let mut expected = vec![0];
    expected.extend(as_sequence(b"k"));
    expected.extend(as_sequence(&value));
    assert_eq!(encoded, expected);
    assert_eq!(postcard::from_bytes::<Mutation>(&encoded).unwrap(), put);

    let cas = ShardRequest::CompareAndSwap {
        epoch: Epoch::default(),
        key: b"k".to_vec(),
        expected: None,
        new: Some(b"v".to_vec()),
    };
    let encoded = postcard::to_stdvec(&cas).unwrap();
    assert_eq!(postcard::from_bytes::<ShardRequest>(&encoded).unwrap(), cas);
    let json = serde_json::to_string(&cas).unwrap();
    assert_eq!(serde_json::from_str::<ShardRequest>(&json).unwrap(), cas);
}
