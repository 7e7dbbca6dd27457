//! The QR image a `QR` payment's `redirectUrl` points to: it encodes the link to the payer's app screen, so a
//! phone camera or any QR decoder opens it. SVG by default; PNG when the payment asked for `IMAGE/PNG` or the
//! request's `Accept` names `image/png` (not `image/svg+xml`), at `qrFormat.size` or `?size=` pixels (100 to
//! 2000), as the vendor documents; `text/targeturl` in `Accept` answers the link itself as text.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use qrcode::QrCode;
use qrcode::render::svg;
use serde::Deserialize;

use super::pages::{PayerQuery, payer_link, payer_payment};
use crate::platform::Shared as S;
use crate::platform::html::error_page;
use crate::platform::http::RequestMeta;

/// The default image size in pixels.
const DEFAULT_SIZE: u32 = 400;
/// Modules of light margin around the code (the standard's quiet zone).
const QUIET: usize = 4;

/// The image formats the QR endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QrImage {
    /// `image/svg+xml`.
    Svg,
    /// `image/png`.
    Png,
    /// The target URL as text.
    Text,
}

/// Which format to serve: `Accept` first (when it names one), then the payment's `qrFormat`.
pub(super) fn choose(accept: &str, stored: Option<&str>) -> QrImage {
    let a = accept.to_ascii_lowercase();
    if a.contains("image/svg+xml") {
        QrImage::Svg
    } else if a.contains("image/png") {
        QrImage::Png
    } else if a.contains("text/targeturl") {
        QrImage::Text
    } else {
        match stored {
            Some("IMAGE/PNG") => QrImage::Png,
            Some("TEXT/TARGETURL") => QrImage::Text,
            _ => QrImage::Svg,
        }
    }
}

/// An SVG image of `data`, at least `size` pixels wide.
pub(super) fn svg_image(data: &str, size: u32) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::new(data.as_bytes())?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(size, size)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// A greyscale PNG image of `data`, `size` pixels wide or the nearest smaller multiple of the module count (at
/// least one pixel per module).
pub(super) fn png_image(data: &str, size: u32) -> Result<Vec<u8>, String> {
    let code = QrCode::new(data.as_bytes()).map_err(|e| e.to_string())?;
    let modules = code.width();
    let colors = code.to_colors();
    let total = modules + 2 * QUIET;
    let scale = (size as usize / total).max(1);
    let px = total * scale;
    let mut pixels = vec![255u8; px * px];
    for y in 0..modules {
        for x in 0..modules {
            if colors[y * modules + x] == qrcode::Color::Dark {
                for dy in 0..scale {
                    let row = (y + QUIET) * scale + dy;
                    let start = row * px + (x + QUIET) * scale;
                    pixels[start..start + scale].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, px as u32, px as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&pixels).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
pub(super) struct QrQuery {
    #[serde(flatten)]
    payer: PayerQuery,
    size: Option<u32>,
}

/// `GET /_emulator/qr`: the QR image of a payment.
pub(super) async fn qr(
    State(s): State<S>,
    meta: RequestMeta,
    headers: http::HeaderMap,
    Query(q): Query<QrQuery>,
) -> Response {
    let p = match payer_payment(&s, &meta, &q.payer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let size = q.size.or(p.qr_size).unwrap_or(DEFAULT_SIZE);
    if !(100..=2000).contains(&size) {
        return error_page(
            400,
            "Invalid size",
            "size must be between 100 and 2000 pixels",
        );
    }
    let target = payer_link(&s, "_emulator/app", &p, None);
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let no_store = (http::header::CACHE_CONTROL, "no-store");
    match choose(accept, p.qr_format.as_deref()) {
        QrImage::Text => (
            [
                (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                no_store,
            ],
            target,
        )
            .into_response(),
        QrImage::Svg => match svg_image(&target, size) {
            Ok(svg) => (
                [(http::header::CONTENT_TYPE, "image/svg+xml"), no_store],
                svg,
            )
                .into_response(),
            Err(e) => error_page(500, "QR code failed", &e.to_string()),
        },
        QrImage::Png => match png_image(&target, size) {
            Ok(png) => ([(http::header::CONTENT_TYPE, "image/png"), no_store], png).into_response(),
            Err(e) => error_page(500, "QR code failed", &e),
        },
    }
}

#[cfg(test)]
mod tests {
    use vipps_test_support::table::{Case, check, expect_eq};

    use super::*;

    #[derive(Debug)]
    struct Row(&'static str, Option<&'static str>, QrImage);

    impl Case for Row {
        fn name(&self) -> String {
            format!("Accept {:?}, stored {:?}", self.0, self.1)
        }
    }

    #[test]
    fn the_format_follows_accept_then_the_payment() {
        let rows = [
            Row("", None, QrImage::Svg),
            Row("*/*", Some("IMAGE/PNG"), QrImage::Png),
            Row("image/png", None, QrImage::Png),
            Row("image/svg+xml", Some("IMAGE/PNG"), QrImage::Svg),
            Row("text/targetUrl", None, QrImage::Text),
            Row(
                "text/html,application/xhtml+xml,image/avif,image/webp,*/*;q=0.8",
                None,
                QrImage::Svg,
            ),
        ];
        check(&rows, |r| expect_eq("format", choose(r.0, r.1), r.2));
    }

    #[test]
    fn the_png_decodes_to_the_link() {
        let link = "http://127.0.0.1:1234/_emulator/app?msn=123456&reference=order-1&token=abc";
        let png = png_image(link, 300).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, link);
        assert!(svg_image(link, 200).unwrap().starts_with("<?xml"));
    }
}
