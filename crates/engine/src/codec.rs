//! The stored event codec: the one place that turns an event into the bytes the log keeps, and back.
//!
//! Format 1 (this Berth) is the JSON of [`Event`], which begins `{"seq":`. A later format will begin
//! `{"v":N,`: a Berth that meets a format newer than it reads refuses the event (and so stops replaying)
//! rather than misread it. New optional fields do not need a new format (older events decode with their
//! defaults); what changes the meaning of an existing field does. Consumers outside the process never read
//! this form: they read the public one (`berth_model::public`), versioned on its own.

use berth_model::Event;

use crate::StateError;

/// The event format this Berth writes and the newest it reads.
pub const FORMAT: u64 = 1;

/// The bytes the log keeps for `event`.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::with_capacity(1024);
    serde_json::to_writer(&mut buf, event)?;
    Ok(buf)
}

/// The format a stored event declares (1 when it declares none).
fn format_of(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(b"{\"v\":")?;
    let digits: Vec<u8> = rest.iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Decodes an event as stored at `seq`, checking that it says it is that event and that this Berth reads its
/// format.
pub fn decode_event(seq: u64, payload: &[u8]) -> Result<Event, StateError> {
    if let Some(format) = format_of(payload) {
        if format > FORMAT {
            return Err(StateError::Invalid {
                seq,
                message: format!(
                    "the event was written by a newer Berth (event format {format}; this one reads up to {FORMAT})"
                ),
            });
        }
    }
    let event: Event =
        serde_json::from_slice(payload).map_err(|e| StateError::Invalid { seq, message: e.to_string() })?;
    if event.seq != seq {
        return Err(StateError::Invalid {
            seq,
            message: format!("the event stored at {seq} says it is {}", event.seq),
        });
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::{Change, Origin, Timestamp};

    fn event(seq: u64) -> Event {
        Event {
            seq,
            time: Timestamp::from_millis(1),
            actor: "me".into(),
            origin: Origin::Api,
            run_id: None,
            change: Change::TeamDeleted { name: "t".into() },
            before: None,
        }
    }

    #[test]
    fn events_round_trip_and_newer_formats_are_refused() {
        let bytes = encode_event(&event(7)).expect("encodes");
        assert!(bytes.starts_with(b"{\"seq\":"), "format 1 begins with the sequence number");
        assert_eq!(decode_event(7, &bytes).expect("decodes"), event(7));
        assert!(decode_event(8, &bytes).is_err(), "an event stored at the wrong place is refused");
        let newer = br#"{"v":2,"seq":7,"time":"1970-01-01T00:00:00.001Z","actor":"me","origin":"API","change":{"type":"team_deleted","name":"t"}}"#;
        let err = decode_event(7, newer).expect_err("a newer format is refused");
        assert!(err.to_string().contains("newer Berth"), "{err}");
        let same = br#"{"v":1,"seq":7,"time":"1970-01-01T00:00:00.001Z","actor":"me","origin":"API","change":{"type":"team_deleted","name":"t"}}"#;
        assert_eq!(decode_event(7, same).expect("format 1, declared"), event(7));
    }
}
