//! MPEG-TS as encoders push it (over SRT): demultiplexed with mpeg2ts-reader into PES
//! packets of the first H.264 stream (stream type 0x1B) and the first ADTS AAC stream
//! (0x0F), with their PTS/DTS; and ADTS frames become raw AAC frames and an
//! AudioSpecificConfig (H.264's Annex B is `cmaf::codec::annexb_to_length_prefixed`'s,
//! as for Mirror's own encoders). No I/O; bounded: a PES larger than [`MAX_PES_BYTES`]
//! is dropped.

use bytes::Bytes;
use mpeg2ts_reader::demultiplex::{
    self, DemuxContext, FilterChangeset, FilterRequest, NullPacketFilter, PatPacketFilter,
    PmtPacketFilter,
};
use mpeg2ts_reader::pes::{self, ElementaryStreamConsumer, PesContents, PesHeader, PtsDts};
use mpeg2ts_reader::{StreamType, psi};

use crate::cmaf::AacConfig;

/// The largest PES packet taken (a 4K intra picture fits many times over).
pub const MAX_PES_BYTES: usize = 8 << 20;

const PACKET: usize = 188;

/// An elementary stream's unit: a PES packet's payload with its timestamps (33-bit,
/// 90 kHz, as carried).
#[derive(Debug, PartialEq, Eq)]
pub enum EsUnit {
    /// An H.264 access unit, Annex B.
    Video {
        /// Presentation time.
        pts: u64,
        /// Decode time (the PTS when the PES gives none).
        dts: u64,
        /// The byte stream.
        data: Vec<u8>,
    },
    /// One or more ADTS frames.
    Audio {
        /// Presentation time of the first.
        pts: u64,
        /// The frames, headers included.
        data: Vec<u8>,
    },
}

/// The packet filters the demultiplexer dispatches to (the macro's enum, undocumented
/// by it).
mod filter {
    #![allow(missing_docs, unreachable_pub)]
    use super::{Context, Elementary, NullPacketFilter, PatPacketFilter, PmtPacketFilter, pes};
    mpeg2ts_reader::packet_filter_switch! {
        Filter<Context> {
            Pes: pes::PesPacketFilter<Context, Elementary>,
            Pat: PatPacketFilter<Context>,
            Pmt: PmtPacketFilter<Context>,
            Null: NullPacketFilter<Context>,
        }
    }
}
use filter::Filter;

/// The demultiplexer's context: where finished units go, and which streams are taken.
#[allow(unreachable_pub)]
pub struct Context {
    changeset: FilterChangeset<Filter>,
    units: Vec<EsUnit>,
    have_video: bool,
    have_audio: bool,
}

impl DemuxContext for Context {
    type F = Filter;

    fn filter_changeset(&mut self) -> &mut FilterChangeset<Filter> {
        &mut self.changeset
    }

    fn construct(&mut self, request: FilterRequest<'_, '_>) -> Filter {
        match request {
            FilterRequest::ByPid(psi::pat::PAT_PID) => Filter::Pat(PatPacketFilter::default()),
            FilterRequest::Pmt {
                pid,
                program_number,
            } => Filter::Pmt(PmtPacketFilter::new(pid, program_number)),
            FilterRequest::ByStream {
                stream_type: StreamType::H264,
                ..
            } if !self.have_video => {
                self.have_video = true;
                Filter::Pes(pes::PesPacketFilter::new(Elementary::new(true)))
            }
            FilterRequest::ByStream {
                stream_type: StreamType::ADTS,
                ..
            } if !self.have_audio => {
                self.have_audio = true;
                Filter::Pes(pes::PesPacketFilter::new(Elementary::new(false)))
            }
            _ => Filter::Null(NullPacketFilter::default()),
        }
    }
}

/// One elementary stream's PES packets being put together.
#[allow(unreachable_pub)]
pub struct Elementary {
    video: bool,
    current: Option<(u64, u64, Vec<u8>)>,
    /// The current packet grew past [`MAX_PES_BYTES`]: it is dropped.
    oversized: bool,
}

impl Elementary {
    fn new(video: bool) -> Self {
        Self {
            video,
            current: None,
            oversized: false,
        }
    }

    fn append(&mut self, data: &[u8]) {
        if let Some((_, _, bytes)) = &mut self.current {
            if bytes.len() + data.len() > MAX_PES_BYTES {
                self.oversized = true;
                bytes.clear();
            } else if !self.oversized {
                bytes.extend_from_slice(data);
            }
        }
    }
}

impl ElementaryStreamConsumer<Context> for Elementary {
    fn start_stream(&mut self, _: &mut Context) {}

    fn begin_packet(&mut self, _: &mut Context, header: PesHeader<'_>) {
        self.current = None;
        self.oversized = false;
        let PesContents::Parsed(Some(parsed)) = header.contents() else {
            return;
        };
        let (pts, dts) = match parsed.pts_dts() {
            Ok(PtsDts::PtsOnly(Ok(pts))) => (pts.value(), pts.value()),
            Ok(PtsDts::Both {
                pts: Ok(pts),
                dts: Ok(dts),
            }) => (pts.value(), dts.value()),
            // A unit without a time cannot be placed.
            _ => return,
        };
        self.current = Some((pts, dts, Vec::new()));
        self.append(parsed.payload());
    }

    fn continue_packet(&mut self, _: &mut Context, data: &[u8]) {
        self.append(data);
    }

    fn end_packet(&mut self, context: &mut Context) {
        let Some((pts, dts, data)) = self.current.take() else {
            return;
        };
        if self.oversized || data.is_empty() {
            return;
        }
        context.units.push(if self.video {
            EsUnit::Video { pts, dts, data }
        } else {
            EsUnit::Audio { pts, data }
        });
    }

    fn continuity_error(&mut self, _: &mut Context) {
        // A lost TS packet: the unit being put together is damaged.
        self.current = None;
    }
}

/// See the module docs.
pub struct TsDemuxer {
    context: Context,
    demux: demultiplex::Demultiplex<Context>,
    /// Bytes of a packet split across two pushes.
    carry: Vec<u8>,
}

impl Default for TsDemuxer {
    fn default() -> Self {
        let mut context = Context {
            changeset: FilterChangeset::default(),
            units: Vec::new(),
            have_video: false,
            have_audio: false,
        };
        let demux = demultiplex::Demultiplex::new(&mut context);
        Self {
            context,
            demux,
            carry: Vec::new(),
        }
    }
}

impl TsDemuxer {
    /// Takes `bytes` of the stream; returns the units they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<EsUnit> {
        self.carry.extend_from_slice(bytes);
        let mut at = 0;
        while at + PACKET <= self.carry.len() {
            if self.carry[at] != 0x47 {
                // Lost sync: find the next sync byte.
                at += 1;
                continue;
            }
            // The reader stops at the first packet without a sync byte, so runs of
            // whole, synchronised packets are handed over.
            let mut end = at;
            while end + PACKET <= self.carry.len() && self.carry[end] == 0x47 {
                end += PACKET;
            }
            self.demux.push(&mut self.context, &self.carry[at..end]);
            at = end;
        }
        self.carry.drain(..at);
        std::mem::take(&mut self.context.units)
    }
}

/// The frames of an ADTS run (ISO/IEC 13818-7 6.2), without their headers, and the
/// configuration the first header gives. `None` when the first header does not parse.
pub fn adts_frames(mut data: &[u8]) -> Option<(AacConfig, Vec<Bytes>)> {
    let mut config = None;
    let mut frames = Vec::new();
    while data.len() >= 7 {
        if data[0] != 0xff || data[1] & 0xf0 != 0xf0 {
            break;
        }
        let protection_absent = data[1] & 1 == 1;
        let header = if protection_absent { 7 } else { 9 };
        let length = (usize::from(data[3] & 0x03) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        if length < header || length > data.len() {
            break;
        }
        if config.is_none() {
            let object_type = (data[2] >> 6) + 1;
            let frequency_index = (data[2] >> 2) & 0x0f;
            let channels = ((data[2] & 1) << 2) | (data[3] >> 6);
            let asc = [
                (object_type << 3) | (frequency_index >> 1),
                ((frequency_index & 1) << 7) | (channels << 3),
            ];
            config = Some(AacConfig::from_audio_specific_config(&asc).ok()?);
        }
        frames.push(Bytes::copy_from_slice(&data[header..length]));
        data = &data[length..];
    }
    Some((config?, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_frames_and_their_configuration() {
        // AAC-LC, 48 kHz (index 3), stereo; two frames of 2 payload bytes each.
        let header = |len: usize| {
            let total = len + 7;
            [
                0xff,
                0xf1,
                (1 << 6) | (3 << 2),
                (2 << 6) | ((total >> 11) & 3) as u8,
                ((total >> 3) & 0xff) as u8,
                (((total & 7) << 5) | 0x1f) as u8,
                0xfc,
            ]
        };
        let mut data = header(2).to_vec();
        data.extend([1, 2]);
        data.extend(header(2));
        data.extend([3, 4]);
        let (config, frames) = adts_frames(&data).expect("parses");
        assert_eq!((config.sample_rate, config.channels), (48_000, 2));
        assert_eq!(
            frames,
            [Bytes::from_static(&[1, 2]), Bytes::from_static(&[3, 4])]
        );
        assert!(adts_frames(&[0xff, 0xf1, 0]).is_none());
        assert!(adts_frames(b"not adts at all").is_none());
    }

    #[test]
    fn garbage_and_split_packets_do_not_panic() {
        let mut demuxer = TsDemuxer::default();
        assert!(demuxer.push(&[0x47; 1000]).is_empty());
        assert!(demuxer.push(&[0xff; 500]).is_empty());
        let mut packet = vec![0x47, 0x40, 0x00, 0x10];
        packet.resize(PACKET, 0xff);
        assert!(demuxer.push(&packet[..100]).is_empty());
        assert!(demuxer.push(&packet[100..]).is_empty());
    }
}
