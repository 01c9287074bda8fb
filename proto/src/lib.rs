//! hanse-proto: the `hanse.v1` protobuf contract (`proto/hanse/v1/*.proto`) and its
//! generated tonic/prost code. Clients in other languages generate from the same files.

/// The gRPC metadata key under which a client names its region (for example
/// `eu-hamburg`); shard leaders count requests by it for the planner.
pub const REGION_HEADER: &str = "hanse-region";

/// The gRPC metadata key of a token from `Admin.Login`, sent as `Bearer TOKEN` by a
/// client without a certificate of its own.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// What precedes the token in the [`AUTHORIZATION_HEADER`].
pub const BEARER: &str = "Bearer ";

#[cfg(feature = "shard")]
pub mod convert;

/// Package `hanse.v1`: messages, the `Kv` client and server.
pub mod v1 {
    tonic::include_proto!("hanse.v1");
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn requests_survive_the_wire_format() {
        let request = CompareAndSwapRequest {
            route: Some(RouteContext {
                shard_id: 3,
                epoch: Some(Epoch {
                    version: 2,
                    conf_ver: 1,
                }),
            }),
            key: b"k".to_vec(),
            expected_value: None,
            new_value: Some(b"v".to_vec()),
        };
        let decoded = CompareAndSwapRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(
            decoded.expected_value, None,
            "absent and empty values stay distinct"
        );
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_default() {
        let bytes = PutRequest {
            route: None,
            key: b"key".to_vec(),
            value: vec![7; 100],
        }
        .encode_to_vec();
        assert!(PutRequest::decode(&bytes[..bytes.len() - 10]).is_err());
    }
}
