//! Media given by reference in OpenAI requests (image URLs, data URLs, file ids) as Gemini
//! parts: `inlineData` for data URLs, `fileData` for URLs Gemini fetches or files it holds.

use crate::error::TranslateError;
use crate::gemini::request::{Blob, FileData, Part, PartData};

/// Inline media limit of the Gemini API, in decoded bytes.
pub(crate) const MAX_INLINE_BYTES: usize = 100 * 1024 * 1024;

/// A data URL becomes `inlineData`; an http(s) URL becomes `fileData` (Gemini fetches public
/// and signed URLs itself since January 2026). A data URL's data stays in `url`'s buffer, its
/// header cut off in place: inline media is most of a large request, and is not copied.
pub(crate) fn media_reference(
    mut url: String,
    param: &str,
    inline_bytes: &mut usize,
) -> Result<Part, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest.split_once(',').ok_or_else(|| {
            TranslateError::invalid("The data URL has no ',' before its data.", param)
        })?;
        let mime = header.strip_suffix(";base64").ok_or_else(|| {
            TranslateError::invalid(
                "Only base64 data URLs (data:<mime>;base64,<data>) are supported.",
                param,
            )
        })?;
        // Clients commonly write the non-standard `image/jpg`.
        let mime = if mime.eq_ignore_ascii_case("image/jpg") {
            "image/jpeg"
        } else {
            mime
        };
        // Gemini would refuse it with a vaguer message, after a round trip.
        if !is_base64(data) {
            return Err(TranslateError::invalid(
                "The data URL's data is not valid base64.",
                param,
            ));
        }
        *inline_bytes += data.len() / 4 * 3;
        let mime_type = mime.to_owned();
        // `data:` + the header + `,`, all ASCII before the data.
        let header_len = "data:".len() + header.len() + 1;
        url.drain(..header_len);
        return Ok(Part::new(PartData::InlineData(Blob {
            mime_type,
            data: url,
        })));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        let mime_type = mime_from_extension(&url).map(str::to_owned);
        return Ok(Part::new(PartData::FileData(FileData {
            file_uri: url,
            mime_type,
        })));
    }
    Err(TranslateError::invalid(
        "Media must be a data URL or an http(s) URL.",
        param,
    ))
}

/// Standard or URL-safe base64, padded or not: one pass over the bytes, no copy.
pub(crate) fn is_base64(data: &str) -> bool {
    let data = data.trim_end_matches('=');
    !data.is_empty()
        && data.len() % 4 != 1
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}

pub(crate) fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => return None,
    })
}
