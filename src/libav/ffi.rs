//! The one place Mirror steps outside ffmpeg-next's safe API: it exposes no
//! accessor for a codec context's `extradata`, where encoders put their global headers
//! (libx264's SPS/PPS with GLOBAL_HEADER, the AAC encoder's AudioSpecificConfig), and
//! its swscale context is not `Send`, though the pipeline only ever moves one to the
//! media thread and uses it there.
#![allow(unsafe_code)]

use ffmpeg_next as ffmpeg;

/// A copy of the context's `extradata` (empty when it has none).
pub(crate) fn extradata(context: &ffmpeg::codec::Context) -> Vec<u8> {
    // SAFETY: `as_ptr` is a valid AVCodecContext for the life of `context`; libav keeps
    // `extradata` either null or pointing at `extradata_size` readable bytes, and nothing
    // mutates it while we hold a shared reference to the opened encoder.
    unsafe {
        let ctx = context.as_ptr();
        let data = (*ctx).extradata;
        let len = usize::try_from((*ctx).extradata_size).unwrap_or(0);
        if data.is_null() || len == 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(data, len).to_vec()
    }
}

/// A swscale context that may move to another thread.
pub(crate) struct SendScaler(pub(crate) ffmpeg::software::scaling::Context);

// SAFETY: an SwsContext holds no thread-local state and no reference to the thread that
// made it; libav only forbids using one from two threads at once, which `&mut self`
// access through this owner already rules out. It is created on one thread and then
// used only by the media thread that owns it.
unsafe impl Send for SendScaler {}
