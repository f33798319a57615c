//! The VP8 decoder: one per received stream.

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint};

use vpx_sys as ffi;

use crate::frame::MAX_DIMENSION;
use crate::{I420Frame, VpxError, error_text};

/// A VP8 decoder (libvpx).
pub struct Decoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
    decoded: u64,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

// SAFETY: the context is owned by this value and only reached through `&mut self`; a libvpx
// context has no affinity to the thread that made it.
unsafe impl Send for Decoder {}

impl Decoder {
    /// A VP8 decoder.
    pub fn new() -> Result<Self, VpxError> {
        let cfg = ffi::vpx_codec_dec_cfg {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: an all-zero context is the uninitialised state libvpx expects; the decoder
        // copies `cfg` during initialisation (it keeps no pointer to it past the call).
        let ctx = unsafe {
            let mut ctx = Box::new(MaybeUninit::<ffi::vpx_codec_ctx_t>::zeroed().assume_init());
            let code = ffi::vpx_codec_dec_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_dx(),
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            );
            if code != ffi::VPX_CODEC_OK {
                return Err(VpxError::Init {
                    what: "VP8 decoder",
                    reason: format!("{code:?}"),
                });
            }
            ctx
        };
        Ok(Self { ctx, decoded: 0 })
    }

    /// Frames decoded so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Decodes one VP8 frame; `Ok(None)` if it produced no picture (a frame the decoder
    /// holds back). Corrupt, truncated or reference-less data is an error and leaves the
    /// decoder usable: the next keyframe decodes.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, VpxError> {
        if data.is_empty() {
            return Err(VpxError::Decode("empty frame".into()));
        }
        let len =
            c_uint::try_from(data.len()).map_err(|_| VpxError::Decode("frame too large".into()))?;
        // SAFETY: `ctx` is initialised; libvpx reads `len` bytes from `data` during the
        // call only.
        let code = unsafe {
            ffi::vpx_codec_decode(&mut *self.ctx, data.as_ptr(), len, std::ptr::null_mut(), 0)
        };
        if code != ffi::VPX_CODEC_OK {
            return Err(VpxError::Decode(error_text(&mut self.ctx, code)));
        }
        let mut picture = None;
        let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: `ctx` is initialised and `iter` starts null; a returned image and its
            // planes stay valid until the next call on the context, and are copied out
            // (`copy_out`) before it.
            let image = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if image.is_null() {
                break;
            }
            // SAFETY: as above: `image` is a valid, initialised image until the next call.
            picture = Some(unsafe { copy_out(&*image) }?);
        }
        if picture.is_some() {
            self.decoded += 1;
        }
        Ok(picture)
    }
}

/// Copies a decoded 8-bit I420 image into a packed frame.
///
/// # Safety
/// `image` must be a valid image returned by libvpx whose planes are live: each plane
/// pointer addresses at least `stride × rows` bytes of that plane.
unsafe fn copy_out(image: &ffi::vpx_image_t) -> Result<I420Frame, VpxError> {
    if image.fmt != ffi::vpx_img_fmt::VPX_IMG_FMT_I420 {
        return Err(VpxError::Decode(format!(
            "unexpected picture format {:?}",
            image.fmt
        )));
    }
    let (width, height) = (image.d_w, image.d_h);
    if !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || width > MAX_DIMENSION
        || height > MAX_DIMENSION
    {
        return Err(VpxError::Decode(format!(
            "unsupported picture size {width}x{height}"
        )));
    }
    let len = I420Frame::byte_len(width, height).map_err(|e| VpxError::Decode(e.to_string()))?;
    let planes = [
        (0usize, width as usize, height as usize),
        (1, width as usize / 2, height as usize / 2),
        (2, width as usize / 2, height as usize / 2),
    ];
    let mut packed = Vec::with_capacity(len);
    for (plane, cols, rows) in planes {
        let stride = usize::try_from(image.stride[plane])
            .map_err(|_| VpxError::Decode("negative stride".into()))?;
        if stride < cols || image.planes[plane].is_null() {
            return Err(VpxError::Decode("malformed picture planes".into()));
        }
        for row in 0..rows {
            // SAFETY: per this function's contract the plane holds `stride × rows` bytes,
            // and `cols <= stride`.
            let line =
                unsafe { std::slice::from_raw_parts(image.planes[plane].add(row * stride), cols) };
            packed.extend_from_slice(line);
        }
    }
    I420Frame::from_bytes(width, height, packed).map_err(|e| VpxError::Decode(e.to_string()))
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed exactly once, here.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}
