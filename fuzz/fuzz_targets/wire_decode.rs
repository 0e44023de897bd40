//! Decodes arbitrary bytes as a datagram. Decoding must never panic, and what
//! decodes must be canonical: re-encoding the decoded envelope gives back the
//! same authenticated part (everything before the tag count) and the same total
//! length. The encoder leaves the tags zeroed, so tag bytes are not compared.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pbft::wire;
use pbft::Digest;

/// `Config::new(f).max_message_bytes`.
const MAX_MESSAGE_BYTES: usize = 65_000;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = wire::decode(Bytes::copy_from_slice(data), MAX_MESSAGE_BYTES) else { return };
    let (buf, authenticated_len) = wire::encode_unauthenticated(env.sender, &env.message, env.tags.len());
    assert_eq!(buf.len(), data.len(), "re-encoding changed the length");
    assert!(authenticated_len <= data.len());
    assert_eq!(&buf[..authenticated_len], &data[..authenticated_len], "non-canonical encoding accepted");
    // The tag count follows the authenticated part.
    assert_eq!(data[authenticated_len] as usize, env.tags.len());
    // The MAC covers the authenticated bytes, DATA's pages through their digests.
    assert_eq!(env.auth_digest, wire::auth_digest(&env.message, &data[..authenticated_len]));
    if !matches!(env.message, wire::Message::Data(_)) {
        assert_eq!(env.auth_digest, Digest::of(&data[..authenticated_len]));
    }
    assert_eq!(&env.raw[..], data);
    // The decoder and the encoder agree on the message as well.
    let again = wire::decode(buf.freeze(), MAX_MESSAGE_BYTES).expect("re-encoded envelope decodes");
    assert_eq!(again.message, env.message);
    assert_eq!(again.sender, env.sender);
});
