//! `--video-in testsrc`: a deterministic moving picture that carries, in a block of large
//! black and white squares at its top left, its frame number and the time it was captured.
//!
//! A receiver reads the block back from the decoded picture ([`read_stamp`]), which gives
//! end-to-end latency (capture time against its own clock), lost and frozen frames (gaps
//! and repeats of the frame number), and — by drawing the same frame again with
//! [`TestSource::draw`] — the exact reference to measure quality (PSNR) against.
//!
//! The stamp: three rows of 32 squares of [`CELL`] × [`CELL`] pixels, one bit each (white
//! = 1), most significant first: the frame number, the capture time (Unix milliseconds,
//! low 32 bits), and their XOR with [`CHECK_MASK`], so that a misread stamp is detected.
//! Video compression keeps squares this large and this contrasted intact.

use super::I420Frame;

/// Side of one bit's square, in pixels.
pub const CELL: u32 = 8;
/// Bits per stamp row.
const BITS: u32 = 32;
/// The check row is `frame ^ time ^ CHECK_MASK`.
const CHECK_MASK: u32 = 0xA5C3_5A3C;
/// Luma of a 0 bit and a 1 bit.
const DARK: u8 = 16;
const LIGHT: u8 = 235;

/// Smallest picture that holds the stamp.
pub const MIN_WIDTH: u32 = CELL * BITS;
/// Smallest height (the stamp plus a band of picture).
pub const MIN_HEIGHT: u32 = CELL * 3 + 16;

/// What a testsrc picture carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The frame number, from 0.
    pub frame: u32,
    /// When it was captured: Unix milliseconds, low 32 bits.
    pub captured_ms: u32,
}

impl Stamp {
    /// Milliseconds from capture to `now_unix_ms` (wrapping with the 32-bit clock).
    pub fn age_ms(&self, now_unix_ms: u64) -> u32 {
        (now_unix_ms as u32).wrapping_sub(self.captured_ms)
    }
}

/// The testsrc generator for one size.
#[derive(Debug, Clone)]
pub struct TestSource {
    /// A black picture of the size, drawn over.
    blank: I420Frame,
}

impl TestSource {
    /// A generator of `width × height` pictures (even, at least [`MIN_WIDTH`] ×
    /// [`MIN_HEIGHT`]).
    pub fn new(width: u32, height: u32) -> Result<Self, super::VideoSourceError> {
        let blank = I420Frame::black(width, height)?;
        if width < MIN_WIDTH || height < MIN_HEIGHT {
            return Err(conclave_vpx::FrameError::BadSize { width, height }.into());
        }
        Ok(Self { blank })
    }

    /// The size of the pictures drawn.
    pub fn size(&self) -> (u32, u32) {
        (self.blank.width(), self.blank.height())
    }

    /// Draws frame `stamp.frame` with `stamp` in its corner. The same stamp always gives
    /// the same picture.
    pub fn draw(&self, stamp: Stamp) -> I420Frame {
        let mut picture = self.blank.clone();
        let (width, height) = (picture.width() as usize, picture.height() as usize);
        let t = stamp.frame as usize;
        // Diagonal bands that slide with time: the luma of pixel (row, col) depends on
        // row + col only, so each row is a window of one line of bands (rows are copied,
        // which keeps drawing cheap even in unoptimised builds).
        let bands: Vec<u8> = (0..width + height)
            .map(|diagonal| 50 + 35 * (((diagonal + t * 3) / 24) % 4) as u8)
            .collect();
        // And a bright square crossing the picture.
        let square = 48.min(height / 3);
        let square_x = (t * 6) % (width + square);
        let square_y = height / 2;
        let square_cols = square_x.saturating_sub(square)..square_x.min(width);
        for (row, line) in picture.y_mut().chunks_exact_mut(width).enumerate() {
            line.copy_from_slice(&bands[row..row + width]);
            if (square_y..square_y + square).contains(&row) {
                line[square_cols.clone()].fill(220);
            }
        }
        let chroma_width = width / 2;
        let u_line: Vec<u8> = (0..chroma_width)
            .map(|col| 64 + ((col * 128 / chroma_width.max(1)) as u8))
            .collect();
        let (u, v) = picture.uv_mut();
        for (row, (u, v)) in u
            .chunks_exact_mut(chroma_width)
            .zip(v.chunks_exact_mut(chroma_width))
            .enumerate()
        {
            u.copy_from_slice(&u_line);
            v.fill(64 + (((row + t) * 2 % 128) as u8));
        }
        write_stamp(&mut picture, stamp);
        picture
    }
}

fn rows(stamp: Stamp) -> [u32; 3] {
    [
        stamp.frame,
        stamp.captured_ms,
        stamp.frame ^ stamp.captured_ms ^ CHECK_MASK,
    ]
}

fn write_stamp(picture: &mut I420Frame, stamp: Stamp) {
    let width = picture.width() as usize;
    let cell = CELL as usize;
    let luma = picture.y_mut();
    for (r, value) in rows(stamp).into_iter().enumerate() {
        for bit in 0..BITS as usize {
            let on = value >> (BITS as usize - 1 - bit) & 1 == 1;
            for row in r * cell..(r + 1) * cell {
                let start = row * width + bit * cell;
                luma[start..start + cell].fill(if on { LIGHT } else { DARK });
            }
        }
    }
    // The stamp's chroma is neutral, so colour never bleeds into the luma decision.
    let chroma_width = width / 2;
    let (u, v) = picture.uv_mut();
    for row in 0..3 * cell / 2 {
        let start = row * chroma_width;
        let end = start + BITS as usize * cell / 2;
        u[start..end].fill(128);
        v[start..end].fill(128);
    }
}

/// Reads the stamp back from a (decoded) picture: `None` if the picture is too small or
/// the check row does not match.
pub fn read_stamp(picture: &I420Frame) -> Option<Stamp> {
    if picture.width() < MIN_WIDTH || picture.height() < MIN_HEIGHT {
        return None;
    }
    let width = picture.width() as usize;
    let cell = CELL as usize;
    let luma = picture.y();
    let mut values = [0u32; 3];
    for (r, value) in values.iter_mut().enumerate() {
        for bit in 0..BITS as usize {
            // The mean of the square's inner half, away from its blurred edges.
            let mut sum = 0u32;
            let mut count = 0u32;
            for row in r * cell + cell / 4..(r + 1) * cell - cell / 4 {
                for col in bit * cell + cell / 4..(bit + 1) * cell - cell / 4 {
                    sum += u32::from(luma[row * width + col]);
                    count += 1;
                }
            }
            let on = sum / count.max(1) > u32::from(DARK / 2 + LIGHT / 2);
            *value = *value << 1 | u32::from(on);
        }
    }
    let stamp = Stamp {
        frame: values[0],
        captured_ms: values[1],
    };
    (values[2] == rows(stamp)[2]).then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_reads_back_and_the_picture_is_deterministic() {
        let source = TestSource::new(640, 360).expect("valid size");
        let stamp = Stamp {
            frame: 1234,
            captured_ms: 0xDEAD_BEEF,
        };
        let picture = source.draw(stamp);
        assert_eq!(read_stamp(&picture), Some(stamp));
        assert_eq!(
            source.draw(stamp),
            picture,
            "the same stamp, the same picture"
        );
        let next = source.draw(Stamp {
            frame: 1235,
            ..stamp
        });
        assert_ne!(next.y(), picture.y(), "the picture moves");
    }

    #[test]
    fn a_damaged_stamp_is_detected() {
        let source = TestSource::new(320, 180).expect("valid size");
        let mut picture = source.draw(Stamp {
            frame: 7,
            captured_ms: 99,
        });
        // Flip the top bit of the frame number row (0 for frame 7) to 1.
        let width = picture.width() as usize;
        for row in 0..CELL as usize {
            let start = row * width;
            picture.y_mut()[start..start + CELL as usize].fill(LIGHT);
        }
        assert_eq!(read_stamp(&picture), None);
    }

    #[test]
    fn the_stamp_survives_vp8_and_psnr_against_the_redrawn_reference_is_high() {
        let source = TestSource::new(640, 360).expect("valid size");
        let mut encoder =
            super::super::Encoder::new(super::super::EncoderConfig::realtime(640, 360))
                .expect("encoder");
        let mut decoder = super::super::Decoder::new().expect("decoder");
        for frame in 0..20 {
            let stamp = Stamp {
                frame,
                captured_ms: 1_000 + frame * 33,
            };
            let sent = source.draw(stamp);
            let encoded = encoder.encode(&sent, false).expect("encodes");
            let got = decoder
                .decode(&encoded[0].data)
                .expect("decodes")
                .expect("a picture");
            let read = read_stamp(&got).expect("the stamp survives compression");
            assert_eq!(read, stamp);
            if frame >= 5 {
                let psnr = got.psnr_y(&source.draw(read)).expect("same size");
                assert!(psnr >= 32.0, "frame {frame}: {psnr:.1} dB");
            }
        }
    }

    #[test]
    fn sizes_too_small_for_the_stamp_are_refused() {
        assert!(TestSource::new(160, 90).is_err());
        assert!(TestSource::new(641, 360).is_err());
    }

    #[test]
    fn age_wraps_with_the_clock() {
        let stamp = Stamp {
            frame: 0,
            captured_ms: u32::MAX - 10,
        };
        assert_eq!(stamp.age_ms((1u64 << 32) + 20), 31);
    }
}
