//! Which remote-write message a request carries, from its headers.
//!
//! Remote write 1.0 and 2.0 share one URL and one media type; the
//! `Content-Type` parameter `proto=` names the protobuf message, and the
//! `X-Prometheus-Remote-Write-Version` header names the protocol version.
//! This file owns reading those two headers and deciding whether promraft
//! can store what the body holds. It must never let a request through whose
//! message promraft would decode as something else: a 2.0 body read as a 1.0
//! `WriteRequest` decodes to an empty request (its fields have other
//! numbers), which would be acknowledged with 204 while every sample is
//! lost. Such a request gets 415 with the reason, as the remote write 2.0
//! specification asks of a receiver that does not support the message. Pure
//! string handling: no I/O, no HTTP framework types, no panics.

/// The media type of every remote-write body.
pub const MEDIA_TYPE: &str = "application/x-protobuf";

/// The `proto=` value of remote write 1.0, which is also what a request
/// without the parameter carries.
pub const PROTO_V1: &str = "prometheus.WriteRequest";

/// The `proto=` value of remote write 2.0. Not yet stored by promraft, so
/// refused rather than misread.
pub const PROTO_V2: &str = "io.prometheus.write.v2.Request";

/// Why a request's headers name a message promraft does not store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The media type is not `application/x-protobuf`.
    #[error("unsupported content type {0:?}: remote write requires {MEDIA_TYPE}")]
    MediaType(String),
    /// The message is remote write 2.0's.
    #[error(
        "remote write 2.0 ({PROTO_V2}) is not supported by this receiver; nothing was stored. \
         Configure the sender with protobuf_message: {PROTO_V1} (remote write 1.0)"
    )]
    RemoteWrite2,
    /// The `proto=` parameter names a message that is neither 1.0's nor 2.0's.
    #[error("unsupported remote write message proto={0:?}: this receiver accepts only proto={PROTO_V1}")]
    UnknownProto(String),
    /// No `proto=` parameter, but a protocol version other than 1.x.
    #[error(
        "unsupported remote write version {0:?} (X-Prometheus-Remote-Write-Version): this receiver \
         accepts only remote write 1.0 (proto={PROTO_V1})"
    )]
    UnknownVersion(String),
}

/// Checks that a request's `Content-Type` (if any) and
/// `X-Prometheus-Remote-Write-Version` (if any) name remote write 1.0.
///
/// A request with neither header is taken as 1.0, as Prometheus's own
/// receiver does. Media type and parameter names compare case-insensitively;
/// the `proto` value is compared exactly, quoted or not.
pub fn check(content_type: Option<&str>, version: Option<&str>) -> Result<(), MediaError> {
    let mut proto = None;
    if let Some(ct) = content_type {
        let mut parts = ct.split(';');
        let media = parts.next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case(MEDIA_TYPE) {
            return Err(MediaError::MediaType(ct.to_string()));
        }
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("proto") {
                let value = value.trim();
                proto = Some(
                    value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value),
                );
            }
        }
    }
    match proto {
        Some(PROTO_V1) => Ok(()),
        Some(PROTO_V2) => Err(MediaError::RemoteWrite2),
        Some(other) => Err(MediaError::UnknownProto(other.to_string())),
        None => match version.map(str::trim) {
            None | Some("") => Ok(()),
            Some(v) if v.starts_with("0.") || v.starts_with("1.") => Ok(()),
            Some(v) if v.starts_with("2.") => Err(MediaError::RemoteWrite2),
            Some(v) => Err(MediaError::UnknownVersion(v.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_write_1_forms_are_accepted() {
        for (ct, version) in [
            (None, None),
            (Some("application/x-protobuf"), None),
            (Some("application/x-protobuf"), Some("0.1.0")),
            (Some("Application/X-Protobuf"), Some("1.0")),
            (Some("application/x-protobuf;proto=prometheus.WriteRequest"), None),
            (
                Some("application/x-protobuf; proto=\"prometheus.WriteRequest\""),
                Some("2.0.0"),
            ),
            (
                Some("application/x-protobuf; charset=utf-8; PROTO=prometheus.WriteRequest"),
                None,
            ),
        ] {
            assert_eq!(check(ct, version), Ok(()), "content type {ct:?}, version {version:?}");
        }
    }

    #[test]
    fn remote_write_2_is_refused_whichever_header_says_so() {
        for (ct, version) in [
            (
                Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
                None,
            ),
            (
                Some("application/x-protobuf; proto=\"io.prometheus.write.v2.Request\""),
                Some("2.0.0"),
            ),
            (Some("application/x-protobuf"), Some("2.0.0")),
            (None, Some("2.0.0")),
        ] {
            assert_eq!(
                check(ct, version),
                Err(MediaError::RemoteWrite2),
                "content type {ct:?}, version {version:?}"
            );
        }
    }

    #[test]
    fn other_messages_media_types_and_versions_are_refused_with_their_name() {
        let e = check(Some("application/x-protobuf;proto=io.example.Other"), None).unwrap_err();
        assert_eq!(e, MediaError::UnknownProto("io.example.Other".into()));
        assert!(e.to_string().contains("io.example.Other"), "{e}");
        let e = check(Some("application/json"), None).unwrap_err();
        assert_eq!(e, MediaError::MediaType("application/json".into()));
        let e = check(Some("application/x-protobufs"), None).unwrap_err();
        assert_eq!(e, MediaError::MediaType("application/x-protobufs".into()));
        let e = check(None, Some("3.0.0")).unwrap_err();
        assert_eq!(e, MediaError::UnknownVersion("3.0.0".into()));
    }
}
