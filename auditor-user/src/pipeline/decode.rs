//! Ring-buffer records to typed kernel records: the decoder lives beside the
//! ABI it reads (`auditor_common::decode`, the `user` feature) and is tested
//! there with round trips of every record.

pub use auditor_common::decode::{DecodeError, RawRecord, decode};
