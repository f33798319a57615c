//! Raw pictures: 8-bit I420 (YUV 4:2:0, planes packed without padding), the format libvpx
//! takes and gives, and Y4M's `C420jpeg`/`C420` files hold.

/// Why plane data does not make a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Odd or zero dimensions (4:2:0 needs even ones), or too large.
    #[error("{width}x{height} is not a valid I420 size (even, 2..=8192 each)")]
    BadSize {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// The bytes given are not the three planes of that size.
    #[error("{got} bytes given, an I420 frame of this size has {expected}")]
    WrongLength {
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Largest width or height accepted.
pub const MAX_DIMENSION: u32 = 8192;

/// One 8-bit I420 picture: Y (`width × height`), then U and V (`width/2 × height/2` each).
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl I420Frame {
    /// The picture in 8-bit RGBA for a window, at `width × height` (each pixel the average
    /// of what it covers), mirrored left to right if `mirror` (a self-view).
    pub fn to_rgba(&self, width: u32, height: u32, mirror: bool) -> Vec<u8> {
        crate::convert::to_rgba(self, width, height, mirror)
    }

    /// Bytes of a `width × height` frame, if the size is valid.
    pub fn byte_len(width: u32, height: u32) -> Result<usize, FrameError> {
        if width < 2 || height < 2 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(FrameError::BadSize { width, height });
        }
        if width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(FrameError::BadSize { width, height });
        }
        let luma = width as usize * height as usize;
        Ok(luma + luma / 2)
    }

    /// A black frame (Y 16, U and V 128: video-range black).
    pub fn black(width: u32, height: u32) -> Result<Self, FrameError> {
        let len = Self::byte_len(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![128u8; len];
        data[..luma].fill(16);
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A frame from its three planes packed one after the other.
    pub fn from_bytes(width: u32, height: u32, data: Vec<u8>) -> Result<Self, FrameError> {
        let expected = Self::byte_len(width, height)?;
        if data.len() != expected {
            return Err(FrameError::WrongLength {
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The three planes, packed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The luma plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    /// The luma plane, writable.
    pub fn y_mut(&mut self) -> &mut [u8] {
        let luma = self.luma_len();
        &mut self.data[..luma]
    }

    /// The U plane.
    pub fn u(&self) -> &[u8] {
        let (luma, chroma) = (self.luma_len(), self.luma_len() / 4);
        &self.data[luma..luma + chroma]
    }

    /// The V plane.
    pub fn v(&self) -> &[u8] {
        let (luma, chroma) = (self.luma_len(), self.luma_len() / 4);
        &self.data[luma + chroma..]
    }

    /// The U and V planes, writable.
    pub fn uv_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let (luma, chroma) = (self.luma_len(), self.luma_len() / 4);
        let (u, v) = self.data[luma..].split_at_mut(chroma);
        (u, v)
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// Peak signal-to-noise ratio of this frame's luma against `reference`'s, in dB
    /// (`f64::INFINITY` when identical); `None` if the sizes differ.
    pub fn psnr_y(&self, reference: &I420Frame) -> Option<f64> {
        if (self.width, self.height) != (reference.width, reference.height) {
            return None;
        }
        let squared: u64 = self
            .y()
            .iter()
            .zip(reference.y())
            .map(|(a, b)| {
                let d = u64::from(a.abs_diff(*b));
                d * d
            })
            .sum();
        if squared == 0 {
            return Some(f64::INFINITY);
        }
        let mse = squared as f64 / self.luma_len() as f64;
        Some(10.0 * (255.0 * 255.0 / mse).log10())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_even_and_bounded() {
        assert!(I420Frame::black(640, 360).is_ok());
        assert!(matches!(
            I420Frame::black(641, 360),
            Err(FrameError::BadSize { .. })
        ));
        assert!(matches!(
            I420Frame::black(0, 0),
            Err(FrameError::BadSize { .. })
        ));
        assert!(I420Frame::black(16384, 2).is_err());
        assert_eq!(
            I420Frame::from_bytes(4, 4, vec![0; 23]),
            Err(FrameError::WrongLength {
                expected: 24,
                got: 23
            })
        );
    }

    #[test]
    fn planes_split_where_i420_puts_them() {
        let mut frame = I420Frame::black(4, 2).expect("valid size");
        assert_eq!(frame.y(), &[16; 8]);
        let (u, v) = frame.uv_mut();
        u.fill(1);
        v.fill(2);
        assert_eq!(frame.u(), &[1, 1]);
        assert_eq!(frame.v(), &[2, 2]);
    }

    #[test]
    fn psnr_is_infinite_for_identical_frames_and_falls_with_noise() {
        let a = I420Frame::black(16, 16).expect("valid size");
        assert_eq!(a.psnr_y(&a), Some(f64::INFINITY));
        let mut b = a.clone();
        b.y_mut()[0] = 255;
        let psnr = b.psnr_y(&a).expect("same size");
        assert!(psnr > 20.0 && psnr < 40.0, "{psnr}");
        assert_eq!(a.psnr_y(&I420Frame::black(8, 8).expect("valid")), None);
    }
}
