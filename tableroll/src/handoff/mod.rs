//! One upgrade session, both sides: the owner gives ([`give`]), the newcomer takes
//! ([`take`]). This is the only layer where descriptors and the wire meet.

pub(crate) mod give;
pub(crate) mod take;
