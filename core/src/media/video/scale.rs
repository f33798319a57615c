//! Smaller pictures for lower layers: I420 scaled down by a whole factor, each output pixel
//! the mean of the block of input pixels it covers (a box filter, which is what a 2:1 or
//! 4:1 reduction needs to avoid aliasing).

use super::I420Frame;
use conclave_vpx::FrameError;

/// The size of a picture of `width × height` divided by `factor`, rounded down to even.
pub fn scaled_size(width: u32, height: u32, factor: u32) -> (u32, u32) {
    let factor = factor.max(1);
    ((width / factor) & !1, (height / factor) & !1)
}

/// `picture` divided by `factor` in each direction ([`scaled_size`]).
pub fn downscale(picture: &I420Frame, factor: u32) -> Result<I420Frame, FrameError> {
    let (width, height) = scaled_size(picture.width(), picture.height(), factor);
    let mut out = I420Frame::black(width, height)?;
    let factor = factor.max(1) as usize;
    let (src_w, dst_w) = (picture.width() as usize, width as usize);
    box_filter(picture.y(), src_w, out.y_mut(), dst_w, factor);
    let (src_cw, dst_cw) = (src_w.div_ceil(2), dst_w.div_ceil(2));
    let (u, v) = out.uv_mut();
    box_filter(picture.u(), src_cw, u, dst_cw, factor);
    box_filter(picture.v(), src_cw, v, dst_cw, factor);
    Ok(out)
}

/// Fills plane `dst` (`dst_w` wide) with the means of `factor × factor` blocks of plane
/// `src` (`src_w` wide), which holds at least `factor` times as many rows and columns.
fn box_filter(src: &[u8], src_w: usize, dst: &mut [u8], dst_w: usize, factor: usize) {
    let area = (factor * factor) as u32;
    for (row, line) in dst.chunks_exact_mut(dst_w).enumerate() {
        for (col, pixel) in line.iter_mut().enumerate() {
            let mut sum = 0u32;
            for dy in 0..factor {
                let start = (row * factor + dy) * src_w + col * factor;
                sum += src
                    .get(start..start + factor)
                    .map_or(0, |block| block.iter().map(|&p| u32::from(p)).sum());
            }
            *pixel = ((sum + area / 2) / area) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_averages_each_block_in_every_plane() {
        let mut picture = I420Frame::black(8, 4).unwrap();
        for (i, y) in picture.y_mut().iter_mut().enumerate() {
            // Columns alternate 10 and 30: every 2×2 block averages 20.
            *y = if i % 2 == 0 { 10 } else { 30 };
        }
        {
            let (u, v) = picture.uv_mut();
            u.fill(100);
            v.fill(200);
        }
        let half = downscale(&picture, 2).unwrap();
        assert_eq!((half.width(), half.height()), (4, 2));
        assert!(half.y().iter().all(|&y| y == 20), "{:?}", half.y());
        assert!(half.u().iter().all(|&u| u == 100));
        assert!(half.v().iter().all(|&v| v == 200));
    }

    #[test]
    fn sizes_round_down_to_even() {
        assert_eq!(scaled_size(640, 360, 2), (320, 180));
        assert_eq!(scaled_size(1920, 1080, 4), (480, 270));
        assert_eq!(scaled_size(1280, 722, 4), (320, 180));
        assert_eq!(scaled_size(640, 360, 1), (640, 360));
        let picture = I420Frame::black(1280, 722).unwrap();
        let quarter = downscale(&picture, 4).unwrap();
        assert_eq!((quarter.width(), quarter.height()), (320, 180));
    }
}
