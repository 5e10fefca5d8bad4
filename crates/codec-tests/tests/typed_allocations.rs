//! MESSAGE_CREATE is read in one pass: fewer allocations than twilight-model's
//! own seed (whose `#[serde(flatten)]` buffers the object first), the same
//! event.

#![allow(
    unsafe_code,
    reason = "a counting global allocator, passing every call on to the system's"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shardwire_codec::{Decoded, EventFilter, Payload, TypedParser};
use shardwire_corpus::EventGenerator;
use twilight_model::gateway::event::{DispatchEvent, GatewayEvent};

/// The system allocator, counting each thread's allocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The event and the allocations its decoding took.
fn decode(payload: &Payload<'_>, parser: TypedParser) -> (DispatchEvent, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let Decoded::Event(GatewayEvent::Dispatch(_, event)) =
        payload.decode_with(&EventFilter::all(), parser)
    else {
        panic!("{:?} did not decode", payload.event_type());
    };
    (event, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn message_create_takes_fewer_allocations_than_through_twilight_models_flatten() {
    let mut generator = EventGenerator::new(7, 2);
    for seq in 1..=50 {
        let json = format!(
            r#"{{"t":"MESSAGE_CREATE","s":{seq},"op":0,"d":{}}}"#,
            generator.message_create()
        );
        let payload = Payload::scan(json.as_bytes()).unwrap();
        let (ours, one_pass) = decode(&payload, TypedParser::SerdeJson);
        let (theirs, flattened) = decode(&payload, TypedParser::TwilightModel);
        assert_eq!(ours, theirs);
        // The flatten buffer is at least a `Vec` for the object and one for
        // each object inside it (member, author).
        assert!(
            one_pass + 3 <= flattened,
            "one pass took {one_pass} allocations, twilight-model's seed {flattened}"
        );
    }
}
