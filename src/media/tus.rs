//! The tus 1.0.0 protocol's vocabulary: header names, the version check, number headers and
//! `Upload-Metadata` (https://tus.io/protocols/resumable-upload).

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

use super::error::RequestError;

/// The protocol version this server speaks.
pub const VERSION: &str = "1.0.0";
/// Extensions this server supports, as advertised in `Tus-Extension`.
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
/// The only content type of upload bodies.
pub const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// Header names (lowercase, as `http` stores them).
pub mod header {
    /// Version of every request and response.
    pub const TUS_RESUMABLE: &str = "tus-resumable";
    /// Versions the server supports (OPTIONS, 412).
    pub const TUS_VERSION: &str = "tus-version";
    /// Extensions the server supports (OPTIONS).
    pub const TUS_EXTENSION: &str = "tus-extension";
    /// Largest upload (OPTIONS).
    pub const TUS_MAX_SIZE: &str = "tus-max-size";
    /// Bytes received so far.
    pub const UPLOAD_OFFSET: &str = "upload-offset";
    /// Size of the whole upload.
    pub const UPLOAD_LENGTH: &str = "upload-length";
    /// Client key/value pairs.
    pub const UPLOAD_METADATA: &str = "upload-metadata";
    /// When an unfinished upload will be deleted.
    pub const UPLOAD_EXPIRES: &str = "upload-expires";
    /// Length given later (creation-defer-length; not supported).
    pub const UPLOAD_DEFER_LENGTH: &str = "upload-defer-length";
}

/// Longest accepted `Upload-Metadata` header, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Longest media type kept from the metadata, in bytes.
const MAX_MIME_BYTES: usize = 127;

/// The media type of uploads whose metadata names none (or an invalid one).
pub const DEFAULT_MIME: &str = "application/octet-stream";

/// Metadata keys that name the media type, in order of preference (tus-js-client and Uppy send
/// `filetype`, others `type` or `mimetype`).
const MIME_KEYS: [&str; 5] = [
    "filetype",
    "type",
    "mimetype",
    "contentType",
    "content-type",
];

/// True when the request carries `Tus-Resumable` (of any version).
pub fn is_tus_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TUS_RESUMABLE)
}

/// Refuses requests without `Tus-Resumable: 1.0.0` (412, with `Tus-Version`).
pub fn check_version(headers: &HeaderMap) -> Result<(), RequestError> {
    match headers.get(header::TUS_RESUMABLE) {
        Some(value) if value.as_bytes() == VERSION.as_bytes() => Ok(()),
        _ => Err(RequestError::VersionMismatch),
    }
}

/// A non-negative decimal header; `Ok(None)` when absent, 400 when malformed.
pub fn number_header(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, RequestError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::BadRequest(format!(
            "{name} must be a non-negative integer"
        )));
    }
    text.parse()
        .map(Some)
        .map_err(|_| RequestError::BadRequest(format!("{name} is out of range")))
}

/// True when the request body is an upload stream (`Content-Type: application/offset+octet-stream`).
pub fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case(OFFSET_STREAM))
}

/// Checks an `Upload-Metadata` header and returns the media type it names (or the default).
pub fn metadata_mime(raw: &str) -> Result<String, RequestError> {
    let bad = |why: &str| RequestError::BadRequest(format!("Upload-Metadata: {why}"));
    if raw.len() > MAX_METADATA_BYTES {
        return Err(bad("longer than 4096 bytes"));
    }
    let mut keys: Vec<&str> = Vec::new();
    let mut mime = None;
    for pair in raw
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, Some(value.trim())),
            None => (pair, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(bad("invalid key"));
        }
        if keys.contains(&key) {
            return Err(bad("duplicate key"));
        }
        keys.push(key);
        let decoded = match value {
            Some(value) => STANDARD
                .decode(value)
                .or_else(|_| STANDARD_NO_PAD.decode(value))
                .map_err(|_| bad("value is not base64"))?,
            None => Vec::new(),
        };
        if let Some(rank) = MIME_KEYS.iter().position(|candidate| *candidate == key) {
            let better = match mime {
                Some((best, _)) => rank < best,
                None => true,
            };
            if better {
                mime = Some((rank, decoded));
            }
        }
    }
    Ok(mime
        .and_then(|(_, value)| String::from_utf8(value).ok())
        .filter(|value| valid_mime(value))
        .unwrap_or_else(|| DEFAULT_MIME.to_owned()))
}

/// A media type usable as a `Content-Type` value: `type/subtype[; params]` in printable ASCII.
fn valid_mime(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default();
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    value.len() <= MAX_MIME_BYTES
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(kind, subtype)| token(kind) && token(subtype))
}

/// An HTTP date (`Upload-Expires`), from seconds since the epoch.
pub fn http_date(epoch_secs: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        STANDARD.encode(text)
    }

    #[test]
    fn metadata_names_the_mime_type() {
        let raw = format!("filename {},filetype {}", b64("a.jpg"), b64("image/jpeg"));
        assert_eq!(metadata_mime(&raw).unwrap(), "image/jpeg");
        let raw = format!("type {}, filetype {}", b64("text/plain"), b64("image/png"));
        assert_eq!(metadata_mime(&raw).unwrap(), "image/png");
        let raw = format!("is_confidential,mimetype {}", b64("audio/ogg; codecs=opus"));
        assert_eq!(metadata_mime(&raw).unwrap(), "audio/ogg; codecs=opus");
        assert_eq!(metadata_mime("").unwrap(), DEFAULT_MIME);
        let raw = format!("filetype {}", b64("not a type"));
        assert_eq!(metadata_mime(&raw).unwrap(), DEFAULT_MIME);
        let raw = format!("filetype {}", b64("text/html\r\nX: y"));
        assert_eq!(metadata_mime(&raw).unwrap(), DEFAULT_MIME);
    }

    #[test]
    fn malformed_metadata_is_refused() {
        assert!(metadata_mime("filetype !!!").is_err());
        assert!(metadata_mime(&format!("a {},a {}", b64("x"), b64("y"))).is_err());
        assert!(metadata_mime(&"k ".repeat(3000)).is_err());
    }

    #[test]
    fn number_headers() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            number_header(&headers, header::UPLOAD_LENGTH),
            Ok(None)
        ));
        headers.insert(header::UPLOAD_LENGTH, "42".parse().unwrap());
        assert!(matches!(
            number_header(&headers, header::UPLOAD_LENGTH),
            Ok(Some(42))
        ));
        for bad in ["-1", "1.5", "", "99999999999999999999999"] {
            headers.insert(header::UPLOAD_LENGTH, bad.parse().unwrap());
            assert!(
                number_header(&headers, header::UPLOAD_LENGTH).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
