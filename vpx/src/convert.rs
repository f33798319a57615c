//! I420 to RGBA for a window (at the size it is drawn), and one pixel of YUV to RGB (limited-range BT.601, as VP8
//! carries it), in integer arithmetic: per-pixel work for every picture shown, so it lives
//! in this crate, which is built optimised even in debug builds.

use crate::I420Frame;

/// One pixel of limited-range BT.601 YUV (as VP8 carries it) in RGB, in integer
/// arithmetic (coefficients × 2¹⁴).
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let luma = (i32::from(y) - 16) * 19_071; // 1.164
    let cb = i32::from(u) - 128;
    let cr = i32::from(v) - 128;
    let round = 1 << 13;
    let to_byte = |value: i32| ((value + round) >> 14).clamp(0, 255) as u8;
    [
        to_byte(luma + 26_149 * cr),              // 1.596
        to_byte(luma - 6_423 * cb - 13_320 * cr), // 0.392, 0.813
        to_byte(luma + 33_050 * cb),              // 2.017
    ]
}

/// `picture` in RGBA at `out_width × out_height` (each output pixel the average of the
/// source pixels it covers, so text and edges stay clean when made smaller), mirrored left
/// to right if `mirror`. A size larger than the picture takes the nearest source pixel.
pub(crate) fn to_rgba(
    picture: &I420Frame,
    out_width: u32,
    out_height: u32,
    mirror: bool,
) -> Vec<u8> {
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    let (out_width, out_height) = (out_width.max(1) as usize, out_height.max(1) as usize);
    let (chroma_width, chroma_height) = (width.div_ceil(2), height.div_ceil(2));
    // The source span [start, end) of each output column and row, in luma and chroma.
    let spans = |out: usize, source: usize| -> Vec<(usize, usize)> {
        (0..out)
            .map(|i| {
                let start = (i * source / out).min(source - 1);
                let end = ((i + 1) * source / out).clamp(start + 1, source);
                (start, end)
            })
            .collect()
    };
    let (columns, rows) = (spans(out_width, width), spans(out_height, height));
    let (chroma_columns, chroma_rows) = (
        spans(out_width, chroma_width),
        spans(out_height, chroma_height),
    );
    let average =
        |plane: &[u8], stride: usize, (x0, x1): (usize, usize), (y0, y1): (usize, usize)| {
            let mut sum = 0u32;
            for row in y0..y1 {
                sum += plane[row * stride + x0..row * stride + x1]
                    .iter()
                    .map(|&p| u32::from(p))
                    .sum::<u32>();
            }
            let count = ((x1 - x0) * (y1 - y0)) as u32;
            ((sum + count / 2) / count) as u8
        };
    let (y, u, v) = (picture.y(), picture.u(), picture.v());
    let mut rgba = Vec::with_capacity(out_width * out_height * 4);
    for (row, chroma_row) in rows.iter().zip(&chroma_rows) {
        for col in 0..out_width {
            let shown = if mirror { out_width - 1 - col } else { col };
            let luma = average(y, width, columns[shown], *row);
            let cb = average(u, chroma_width, chroma_columns[shown], *chroma_row);
            let cr = average(v, chroma_width, chroma_columns[shown], *chroma_row);
            let [r, g, b] = yuv_to_rgb(luma, cb, cr);
            rgba.extend_from_slice(&[r, g, b, 255]);
        }
    }
    rgba
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture whose left half is one colour and right half another.
    fn halves(width: u32, height: u32, left: (u8, u8, u8), right: (u8, u8, u8)) -> I420Frame {
        let (w, h) = (width as usize, height as usize);
        let mut data = Vec::new();
        for _ in 0..h {
            for col in 0..w {
                data.push(if col < w / 2 { left.0 } else { right.0 });
            }
        }
        for plane in [1, 2] {
            for _ in 0..h / 2 {
                for col in 0..w / 2 {
                    let (l, r) = match plane {
                        1 => (left.1, right.1),
                        _ => (left.2, right.2),
                    };
                    data.push(if col < w / 4 { l } else { r });
                }
            }
        }
        I420Frame::from_bytes(width, height, data).expect("a valid picture")
    }

    #[test]
    fn limited_range_colours_convert_as_bt601_says() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        // BT.601 limited-range red, green and blue (rounded by the standard's table).
        let red = yuv_to_rgb(81, 90, 240);
        assert!(red[0] >= 250 && red[1] <= 3 && red[2] <= 3, "{red:?}");
        let green = yuv_to_rgb(145, 54, 34);
        assert!(
            green[1] >= 250 && green[0] <= 3 && green[2] <= 3,
            "{green:?}"
        );
        let blue = yuv_to_rgb(41, 240, 110);
        assert!(blue[2] >= 250 && blue[0] <= 3 && blue[1] <= 3, "{blue:?}");
    }

    #[test]
    fn the_self_view_is_mirrored_and_a_picture_made_smaller_averages_what_it_covers() {
        let black = (16, 128, 128);
        let white = (235, 128, 128);
        let picture = halves(1280, 720, black, white);
        let plain = picture.to_rgba(640, 360, false);
        assert_eq!(plain.len(), 640 * 360 * 4);
        assert_eq!(&plain[..4], &[0, 0, 0, 255], "left is black");
        let mirrored = picture.to_rgba(640, 360, true);
        assert_eq!(&mirrored[..4], &[255, 255, 255, 255], "left is white");
        let last = mirrored.len() - 4;
        assert_eq!(&mirrored[last..], &[0, 0, 0, 255]);
        // A size that is no power of two: the pixel across the edge is the average.
        let odd = picture.to_rgba(3, 1, false);
        assert_eq!(&odd[..4], &[0, 0, 0, 255]);
        assert!((120..=135).contains(&odd[4]), "{:?}", &odd[4..8]);
        assert_eq!(&odd[8..], &[255, 255, 255, 255]);
    }
}
