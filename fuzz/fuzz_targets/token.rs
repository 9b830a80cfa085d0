//! Playback tokens and the path prefix that carries them: any text either verifies
//! into claims one of the keys signed, or is refused with a reason; never a panic. A
//! token the fuzzer's input is made into (claims from its bytes, signed) always reads
//! back to the same claims, and fails under any other key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirror::http::auth::split_token;
use mirror::http::auth::token::{Claims, SigningKey, StreamPattern, TokenError, sign, verify};

fuzz_target!(|input: (&str, &str, u64)| {
    let (text, stream, expires) = input;
    let key = SigningKey::new("k1", &[3u8; 32]).expect("key");
    let other = SigningKey::new("k1", &[4u8; 32]).expect("key");
    // Any text: claims only if our key signed it, which the fuzzer cannot forge.
    match verify(text, std::slice::from_ref(&key)) {
        Ok(claims) => panic!("forged: {text:?} {claims:?}"),
        Err(TokenError::Malformed | TokenError::UnknownKey | TokenError::BadSignature) => {}
        Err(error) => panic!("verify never says {error:?}"),
    }
    let (token, rest) = split_token(text);
    if let Some(token) = token {
        assert!(!token.is_empty() && !token.contains('/'));
        assert!(text.ends_with(rest) && rest.starts_with('/'));
    } else {
        assert_eq!(rest, text);
    }
    // Claims made of the input round-trip through a token of ours.
    let claims = Claims {
        key_id: "k1".into(),
        streams: StreamPattern::new(stream),
        expires,
        address: None,
        not_before: expires.checked_sub(3600),
    };
    let made = sign(&claims, &key);
    if made.len() <= mirror::http::auth::token::MAX_TOKEN_BYTES {
        assert_eq!(verify(&made, std::slice::from_ref(&key)), Ok(claims));
        assert_eq!(verify(&made, &[other]), Err(TokenError::BadSignature));
    }
});
