//! Property tests of the wire format (placeholder; being written).
